import COpenCL

/// The kind of an OpenCL device.
public enum CLDeviceType: String, Sendable {
    case cpu, gpu, accelerator, other
}

/// One OpenCL device with its properties read once at creation.
///
/// `@unchecked Sendable`: a `cl_device_id` of a root device is never released and OpenCL
/// guarantees device queries are thread-safe; every stored property is an immutable value.
public final class CLDevice: @unchecked Sendable {
    /// The raw device identifier.
    public let id: cl_device_id
    /// `CL_PLATFORM_NAME` of the platform this device belongs to.
    public let platformName: String
    /// `CL_DEVICE_NAME`.
    public let name: String
    /// `CL_DEVICE_VENDOR`.
    public let vendor: String
    /// `CL_DEVICE_VERSION`, e.g. "OpenCL 3.0 PoCL …".
    public let version: String
    /// `CL_DRIVER_VERSION`.
    public let driverVersion: String
    /// `CL_DEVICE_OPENCL_C_VERSION`, e.g. "OpenCL C 1.2 PoCL".
    public let openCLCVersion: String
    /// `CL_DEVICE_TYPE`, reduced to one kind.
    public let type: CLDeviceType
    /// `CL_DEVICE_MAX_COMPUTE_UNITS`.
    public let computeUnits: Int
    /// `CL_DEVICE_MAX_CLOCK_FREQUENCY` in MHz.
    public let maxClockMHz: Int
    /// `CL_DEVICE_GLOBAL_MEM_SIZE` in bytes.
    public let globalMemoryBytes: UInt64
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes (per work-group).
    public let localMemoryBytes: UInt64
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE`: the largest single buffer in bytes.
    public let maxAllocationBytes: UInt64
    /// `CL_DEVICE_MAX_WORK_GROUP_SIZE`.
    public let maxWorkGroupSize: Int
    /// `CL_DEVICE_EXTENSIONS`, split on spaces.
    public let extensions: [String]

    init(id: cl_device_id, platformName: String) throws {
        self.id = id
        self.platformName = platformName
        name = try deviceString(id, CL_DEVICE_NAME)
        vendor = try deviceString(id, CL_DEVICE_VENDOR)
        version = try deviceString(id, CL_DEVICE_VERSION)
        driverVersion = try deviceString(id, CL_DRIVER_VERSION)
        openCLCVersion = try deviceString(id, CL_DEVICE_OPENCL_C_VERSION)
        let rawType: cl_device_type = try deviceScalar(id, CL_DEVICE_TYPE)
        if rawType & cl_device_type(CL_DEVICE_TYPE_GPU) != 0 {
            type = .gpu
        } else if rawType & cl_device_type(CL_DEVICE_TYPE_CPU) != 0 {
            type = .cpu
        } else if rawType & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 {
            type = .accelerator
        } else {
            type = .other
        }
        computeUnits = Int(try deviceScalar(id, CL_DEVICE_MAX_COMPUTE_UNITS) as cl_uint)
        maxClockMHz = Int(try deviceScalar(id, CL_DEVICE_MAX_CLOCK_FREQUENCY) as cl_uint)
        globalMemoryBytes = UInt64(try deviceScalar(id, CL_DEVICE_GLOBAL_MEM_SIZE) as cl_ulong)
        localMemoryBytes = UInt64(try deviceScalar(id, CL_DEVICE_LOCAL_MEM_SIZE) as cl_ulong)
        maxAllocationBytes = UInt64(try deviceScalar(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE) as cl_ulong)
        maxWorkGroupSize = try deviceScalar(id, CL_DEVICE_MAX_WORK_GROUP_SIZE) as Int
        extensions = try deviceString(id, CL_DEVICE_EXTENSIONS)
            .split(separator: " ").map(String.init)
    }

    /// Whether `CL_DEVICE_EXTENSIONS` lists `name` (e.g. "cl_khr_fp16").
    public func supports(extension name: String) -> Bool {
        extensions.contains(name)
    }
}

extension CLDevice: CustomStringConvertible {
    public var description: String {
        "\(name) (\(platformName), \(type.rawValue), \(computeUnits) compute units, "
            + "\(formatBytes(globalMemoryBytes)) global memory)"
    }
}

private func deviceString(_ id: cl_device_id, _ info: Int32) throws -> String {
    let info = cl_device_info(info)
    var size = 0
    try check(clGetDeviceInfo(id, info, 0, nil, &size), "clGetDeviceInfo")
    var bytes = [CChar](repeating: 0, count: max(size, 1))
    try check(clGetDeviceInfo(id, info, size, &bytes, nil), "clGetDeviceInfo")
    return cString(bytes)
}

private func deviceScalar<T: BitwiseCopyable>(_ id: cl_device_id, _ info: Int32) throws -> T {
    return try withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { pointer in
        let raw = UnsafeMutableRawPointer(pointer.baseAddress!)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
        try check(clGetDeviceInfo(id, cl_device_info(info), MemoryLayout<T>.size, raw, nil),
                  "clGetDeviceInfo")
        return raw.load(as: T.self)
    }
}
