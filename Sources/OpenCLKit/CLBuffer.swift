import COpenCL

/// A device buffer (`CL_MEM_READ_WRITE`) of `byteCount` bytes.
///
/// `@unchecked Sendable`: memory objects may be retained, released and passed to commands from any
/// thread; the handle and size are immutable. Ordering of reads and writes is the caller's job
/// (through a command queue).
public final class CLBuffer: @unchecked Sendable {
    /// The raw memory object, released in `deinit`.
    public let raw: cl_mem
    /// The size requested by the caller. A request of 0 bytes allocates 4 bytes on the device
    /// (OpenCL forbids empty buffers) but still reports 0 here.
    public let byteCount: Int
    /// The context the buffer belongs to.
    public let context: CLContext

    /// Allocates an uninitialised read-write buffer.
    /// - Throws: `CLError.invalidArgument` for a negative size; `CLError.status` from `clCreateBuffer`
    ///   (e.g. `CL_INVALID_BUFFER_SIZE` beyond `maxAllocationBytes`).
    public init(context: CLContext, byteCount: Int) throws {
        guard byteCount >= 0 else {
            throw CLError.invalidArgument("buffer byteCount must be ≥ 0, got \(byteCount)")
        }
        var status: cl_int = CL_SUCCESS
        let memory = clCreateBuffer(context.raw, cl_mem_flags(CL_MEM_READ_WRITE),
                                    max(byteCount, 4), nil, &status)
        try check(status, "clCreateBuffer")
        guard let memory else {
            throw CLError.status(code: CL_MEM_OBJECT_ALLOCATION_FAILURE, operation: "clCreateBuffer")
        }
        self.raw = memory
        self.byteCount = byteCount
        self.context = context
    }

    deinit {
        clReleaseMemObject(raw)
    }
}
