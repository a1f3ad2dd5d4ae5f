import COpenCL

/// The timestamps an event records when its queue has profiling enabled.
public enum CLProfilingInfo: Sendable {
    /// The command was enqueued by the host.
    case queued
    /// The command was submitted to the device.
    case submitted
    /// The command started executing.
    case start
    /// The command finished executing.
    case end

    var raw: cl_profiling_info {
        switch self {
        case .queued: return cl_profiling_info(CL_PROFILING_COMMAND_QUEUED)
        case .submitted: return cl_profiling_info(CL_PROFILING_COMMAND_SUBMIT)
        case .start: return cl_profiling_info(CL_PROFILING_COMMAND_START)
        case .end: return cl_profiling_info(CL_PROFILING_COMMAND_END)
        }
    }
}

/// A command's completion event.
///
/// `@unchecked Sendable`: OpenCL events are thread-safe to wait on, query and release; the stored
/// properties are immutable.
public final class CLEvent: @unchecked Sendable {
    /// The raw event handle, released in `deinit`.
    public let raw: cl_event
    /// The queue the command was enqueued on; `wait()` counts as one of its host waits.
    let queue: CLCommandQueue?

    init(raw: cl_event, queue: CLCommandQueue?) {
        self.raw = raw
        self.queue = queue
    }

    deinit {
        clReleaseEvent(raw)
    }

    /// Blocks the calling thread until the command completes. Counts as a host wait on its queue.
    public func wait() throws {
        queue?.countHostWait()
        var event: cl_event? = raw
        try check(clWaitForEvents(1, &event), "clWaitForEvents")
    }

    /// A device timestamp of the command in nanoseconds.
    /// - Throws: `CL_PROFILING_INFO_NOT_AVAILABLE` when the queue was created without profiling
    ///   or the command has not completed.
    public func profilingNanoseconds(_ info: CLProfilingInfo) throws -> UInt64 {
        var value: cl_ulong = 0
        try check(clGetEventProfilingInfo(raw, info.raw, MemoryLayout<cl_ulong>.size, &value, nil),
                  "clGetEventProfilingInfo")
        return UInt64(value)
    }

    /// `end − start` in nanoseconds (0 if the clock went backwards).
    public func durationNanoseconds() throws -> UInt64 {
        let start = try profilingNanoseconds(.start)
        let end = try profilingNanoseconds(.end)
        return end >= start ? end - start : 0
    }
}
