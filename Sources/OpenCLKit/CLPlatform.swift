import COpenCL

/// An OpenCL platform (one installed driver, e.g. PoCL).
///
/// `@unchecked Sendable`: a `cl_platform_id` is an immutable, never-released identifier and every
/// stored property is an immutable value read once at creation.
public final class CLPlatform: @unchecked Sendable {
    /// The raw platform identifier.
    public let id: cl_platform_id
    /// `CL_PLATFORM_NAME`, e.g. "Portable Computing Language".
    public let name: String
    /// `CL_PLATFORM_VENDOR`.
    public let vendor: String
    /// `CL_PLATFORM_VERSION`, e.g. "OpenCL 3.0 PoCL 6.0 …".
    public let version: String

    init(id: cl_platform_id) throws {
        self.id = id
        name = try platformString(id, cl_platform_info(CL_PLATFORM_NAME))
        vendor = try platformString(id, cl_platform_info(CL_PLATFORM_VENDOR))
        version = try platformString(id, cl_platform_info(CL_PLATFORM_VERSION))
    }

    /// Every platform the ICD loader knows. Returns `[]` when the loader reports none
    /// (`CL_PLATFORM_NOT_FOUND_KHR`); other failures throw.
    public static func all() throws -> [CLPlatform] {
        var count: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &count)
        if status == -1001 || (status == CL_SUCCESS && count == 0) { return [] }
        try check(status, "clGetPlatformIDs")
        var ids = [cl_platform_id?](repeating: nil, count: Int(count))
        try check(clGetPlatformIDs(count, &ids, nil), "clGetPlatformIDs")
        return try ids.compactMap { $0 }.map { try CLPlatform(id: $0) }
    }

    /// All devices of this platform, of every type. Returns `[]` when it has none.
    public func devices() throws -> [CLDevice] {
        var count: cl_uint = 0
        let all = cl_device_type(CL_DEVICE_TYPE_ALL)
        let status = clGetDeviceIDs(id, all, 0, nil, &count)
        if status == CL_DEVICE_NOT_FOUND || (status == CL_SUCCESS && count == 0) { return [] }
        try check(status, "clGetDeviceIDs")
        var ids = [cl_device_id?](repeating: nil, count: Int(count))
        try check(clGetDeviceIDs(id, all, count, &ids, nil), "clGetDeviceIDs")
        return try ids.compactMap { $0 }.map { try CLDevice(id: $0, platformName: name) }
    }

    /// The first device of the preferred type across all platforms (GPU, then accelerator, then any).
    /// - Throws: `CLError.noPlatform` when there is no platform, `CLError.noDevice` when no device.
    public static func defaultDevice() throws -> CLDevice {
        let platforms = try all()
        if platforms.isEmpty { throw CLError.noPlatform }
        let devices = try platforms.flatMap { try $0.devices() }
        let order: [CLDeviceType] = [.gpu, .accelerator, .cpu, .other]
        for type in order {
            if let device = devices.first(where: { $0.type == type }) { return device }
        }
        throw CLError.noDevice
    }
}

private func platformString(_ id: cl_platform_id, _ info: cl_platform_info) throws -> String {
    var size = 0
    try check(clGetPlatformInfo(id, info, 0, nil, &size), "clGetPlatformInfo")
    var bytes = [CChar](repeating: 0, count: max(size, 1))
    try check(clGetPlatformInfo(id, info, size, &bytes, nil), "clGetPlatformInfo")
    return cString(bytes)
}

/// Decodes a NUL-terminated C string held in an array, trimming surrounding whitespace.
func cString(_ bytes: [CChar]) -> String {
    let end = bytes.firstIndex(of: 0) ?? bytes.count
    let string = String(decoding: bytes[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return string.trimmingWhitespace()
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
