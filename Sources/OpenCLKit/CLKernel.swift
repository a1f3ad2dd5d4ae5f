import COpenCL

/// A kernel function of a built program, with its arguments.
///
/// `@unchecked Sendable` so it can be cached and handed between threads, but NOT safe to use from
/// two threads at once: `clSetKernelArg` mutates the kernel and is not thread-safe in OpenCL, so a
/// `CLKernel` must be used (arguments set and enqueued) by one thread at a time.
public final class CLKernel: @unchecked Sendable {
    /// The raw kernel handle, released in `deinit`.
    public let raw: cl_kernel
    /// The kernel function's name.
    public let name: String
    /// The program the kernel was created from (kept alive by the kernel).
    public let program: CLProgram

    /// Creates the kernel `name` of a built program.
    /// - Throws: `CL_INVALID_KERNEL_NAME` when the program has no such kernel.
    public init(program: CLProgram, name: String) throws {
        var status: cl_int = CL_SUCCESS
        let kernel = clCreateKernel(program.raw, name, &status)
        try check(status, "clCreateKernel(\(name))")
        guard let kernel else { throw CLError.status(code: CL_INVALID_KERNEL, operation: "clCreateKernel(\(name))") }
        self.raw = kernel
        self.name = name
        self.program = program
    }

    deinit {
        clReleaseKernel(raw)
    }

    /// Binds `buffer` to the `__global` pointer argument at `index`.
    public func setArgument(_ index: Int, _ buffer: CLBuffer) throws {
        var memory: cl_mem? = buffer.raw
        try check(clSetKernelArg(raw, cl_uint(index), MemoryLayout<cl_mem>.size, &memory),
                  "clSetKernelArg(\(name), \(index))")
    }

    /// Sets a by-value argument. The Swift type's size must match the kernel parameter:
    /// `Int32`/`UInt32` for `int`/`uint`, `Float` for `float`, `SIMD4<Float>` for `float4`, …
    /// (passing a Swift `Int` to an `int` parameter fails with `CL_INVALID_ARG_SIZE`).
    public func setArgument<T: BitwiseCopyable>(_ index: Int, _ value: T) throws {
        var copy = value
        try withUnsafeBytes(of: &copy) { bytes in
            try check(clSetKernelArg(raw, cl_uint(index), bytes.count, bytes.baseAddress),
                      "clSetKernelArg(\(name), \(index))")
        }
    }

    /// Reserves `byteCount` bytes of `__local` memory for the argument at `index`.
    public func setLocalMemory(_ index: Int, byteCount: Int) throws {
        guard byteCount > 0 else {
            throw CLError.invalidArgument("local memory for \(name) argument \(index) must be > 0 bytes")
        }
        try check(clSetKernelArg(raw, cl_uint(index), byteCount, nil), "clSetKernelArg(\(name), \(index), local)")
    }

    /// `CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE` on `device` (the warp/wavefront/SIMD width).
    public func preferredWorkGroupSizeMultiple(device: CLDevice) throws -> Int {
        try workGroupInfo(device, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE)
    }

    /// `CL_KERNEL_WORK_GROUP_SIZE`: the largest work-group this kernel can run with on `device`.
    public func maxWorkGroupSize(device: CLDevice) throws -> Int {
        try workGroupInfo(device, CL_KERNEL_WORK_GROUP_SIZE)
    }

    private func workGroupInfo(_ device: CLDevice, _ info: Int32) throws -> Int {
        var value = 0
        try check(clGetKernelWorkGroupInfo(raw, device.id, cl_kernel_work_group_info(info),
                                           MemoryLayout<Int>.size, &value, nil),
                  "clGetKernelWorkGroupInfo(\(name))")
        return value
    }
}
