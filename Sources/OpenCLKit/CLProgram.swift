import COpenCL

/// An OpenCL program for its context's device, created from source or from a device binary.
///
/// `@unchecked Sendable`: OpenCL program objects are thread-safe to query, build-once and create
/// kernels from; the stored properties are immutable. Build a program once before sharing it.
public final class CLProgram: @unchecked Sendable {
    /// The raw program handle, released in `deinit`.
    public let raw: cl_program
    /// The context the program belongs to.
    public let context: CLContext

    /// Creates an (unbuilt) program from OpenCL C source.
    public init(context: CLContext, source: String) throws {
        var status: cl_int = CL_SUCCESS
        var length = source.utf8.count
        let program: cl_program? = source.withCString { pointer in
            var string: UnsafePointer<CChar>? = pointer
            return clCreateProgramWithSource(context.raw, 1, &string, &length, &status)
        }
        try check(status, "clCreateProgramWithSource")
        guard let program else { throw CLError.status(code: CL_INVALID_PROGRAM, operation: "clCreateProgramWithSource") }
        self.raw = program
        self.context = context
    }

    /// Creates an (unbuilt) program from a binary previously returned by `binary()` for the same
    /// device. Call `build(options:)` before creating kernels.
    /// - Throws: `CL_INVALID_BINARY` when the device rejects it.
    public init(context: CLContext, binary: [UInt8]) throws {
        guard !binary.isEmpty else { throw CLError.invalidArgument("empty program binary") }
        var status: cl_int = CL_SUCCESS
        var binaryStatus: cl_int = CL_SUCCESS
        var deviceID: cl_device_id? = context.device.id
        let program: cl_program? = binary.withUnsafeBufferPointer { bytes in
            var pointer: UnsafePointer<UInt8>? = bytes.baseAddress
            var length = bytes.count
            return clCreateProgramWithBinary(context.raw, 1, &deviceID, &length, &pointer, &binaryStatus, &status)
        }
        try check(status, "clCreateProgramWithBinary")
        try check(binaryStatus, "clCreateProgramWithBinary (binary status)")
        guard let program else { throw CLError.status(code: CL_INVALID_BINARY, operation: "clCreateProgramWithBinary") }
        self.raw = program
        self.context = context
    }

    deinit {
        clReleaseProgram(raw)
    }

    /// Compiles (source) or links (binary) the program for the context's device.
    /// - Parameter options: compiler options, e.g. `"-cl-fast-relaxed-math -DWGS=64"`.
    /// - Throws: `CLError.buildFailed(log:options:)` with the device's build log when compilation
    ///   fails; `CLError.status` for other failures.
    public func build(options: String) throws {
        var deviceID: cl_device_id? = context.device.id
        let status = clBuildProgram(raw, 1, &deviceID, options, nil, nil)
        if status == CL_BUILD_PROGRAM_FAILURE || status == CL_COMPILE_PROGRAM_FAILURE
            || status == CL_LINK_PROGRAM_FAILURE || status == CL_INVALID_BUILD_OPTIONS {
            let log = (try? buildLog()) ?? ""
            throw CLError.buildFailed(
                log: log.isEmpty ? "\(CLError.name(of: status)) (\(status)), no build log" : log,
                options: options)
        }
        try check(status, "clBuildProgram")
    }

    /// The device's build log (compiler warnings and errors).
    public func buildLog() throws -> String {
        let deviceID = context.device.id
        let info = cl_program_build_info(CL_PROGRAM_BUILD_LOG)
        var size = 0
        try check(clGetProgramBuildInfo(raw, deviceID, info, 0, nil, &size), "clGetProgramBuildInfo")
        var bytes = [CChar](repeating: 0, count: max(size, 1))
        try check(clGetProgramBuildInfo(raw, deviceID, info, size, &bytes, nil), "clGetProgramBuildInfo")
        return cString(bytes)
    }

    /// The built program's device binary (`CL_PROGRAM_BINARIES` for the context's device).
    public func binary() throws -> [UInt8] {
        var deviceCount: cl_uint = 0
        try check(clGetProgramInfo(raw, cl_program_info(CL_PROGRAM_NUM_DEVICES), MemoryLayout<cl_uint>.size,
                                   &deviceCount, nil), "clGetProgramInfo(CL_PROGRAM_NUM_DEVICES)")
        guard deviceCount > 0 else { throw CLError.noDevice }
        var sizes = [Int](repeating: 0, count: Int(deviceCount))
        try check(clGetProgramInfo(raw, cl_program_info(CL_PROGRAM_BINARY_SIZES),
                                   MemoryLayout<Int>.stride * sizes.count, &sizes, nil),
                  "clGetProgramInfo(CL_PROGRAM_BINARY_SIZES)")
        var pointers: [UnsafeMutablePointer<UInt8>?] = sizes.map { UnsafeMutablePointer<UInt8>.allocate(capacity: max($0, 1)) }
        defer { pointers.forEach { $0?.deallocate() } }
        try check(clGetProgramInfo(raw, cl_program_info(CL_PROGRAM_BINARIES),
                                   MemoryLayout<UnsafeMutablePointer<UInt8>?>.stride * pointers.count,
                                   &pointers, nil),
                  "clGetProgramInfo(CL_PROGRAM_BINARIES)")
        // One device per context: the first binary is ours.
        guard sizes[0] > 0, let first = pointers[0] else {
            throw CLError.status(code: CL_INVALID_PROGRAM_EXECUTABLE, operation: "clGetProgramInfo(CL_PROGRAM_BINARIES)")
        }
        return Array(UnsafeBufferPointer(start: first, count: sizes[0]))
    }
}
