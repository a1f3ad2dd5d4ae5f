import COpenCL
import Synchronization

/// An in-order command queue on its context's device.
///
/// `@unchecked Sendable`: OpenCL command queues are thread-safe (commands may be enqueued from any
/// thread; they run in enqueue order), the handle is immutable and the host-wait counter is atomic.
public final class CLCommandQueue: @unchecked Sendable {
    /// The raw queue handle, released in `deinit` (after `clFinish`).
    public let raw: cl_command_queue
    /// The context whose device runs the commands.
    public let context: CLContext
    /// Whether events of this queue carry profiling timestamps.
    public let profiling: Bool
    private let hostWaits = Atomic<Int>(0)

    /// Creates an in-order queue on `context.device`.
    /// - Parameter profiling: enables `CL_QUEUE_PROFILING_ENABLE` so events report timestamps.
    public init(context: CLContext, profiling: Bool = true) throws {
        var status: cl_int = CL_SUCCESS
        let properties = profiling ? cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE) : 0
        let queue = clCreateCommandQueue(context.raw, context.device.id, properties, &status)
        try check(status, "clCreateCommandQueue")
        guard let queue else {
            throw CLError.status(code: CL_INVALID_COMMAND_QUEUE, operation: "clCreateCommandQueue")
        }
        self.raw = queue
        self.context = context
        self.profiling = profiling
    }

    deinit {
        clFinish(raw)
        clReleaseCommandQueue(raw)
    }

    /// How many times the host blocked on this queue so far: blocking reads, `finish()` and
    /// `CLEvent.wait()` on its events. Thread-safe.
    public var hostWaitCount: Int { hostWaits.load(ordering: .relaxed) }

    func countHostWait() {
        hostWaits.wrappingAdd(1, ordering: .relaxed)
    }

    private func checkRange(_ buffer: CLBuffer, offset: Int, byteCount: Int, _ operation: String) throws {
        guard offset >= 0, byteCount >= 0, offset + byteCount <= max(buffer.byteCount, 0) || byteCount == 0 else {
            throw CLError.invalidArgument(
                "\(operation): range offset \(offset) + \(byteCount) bytes exceeds buffer of \(buffer.byteCount) bytes")
        }
    }

    /// Copies `bytes` from host memory into `buffer` at `offset`; returns when the copy is done.
    public func write(_ buffer: CLBuffer, offset: Int = 0, from bytes: UnsafeRawBufferPointer) throws {
        try checkRange(buffer, offset: offset, byteCount: bytes.count, "write")
        guard bytes.count > 0, let base = bytes.baseAddress else { return }
        try check(clEnqueueWriteBuffer(raw, buffer.raw, cl_bool(CL_TRUE), offset, bytes.count, base,
                                       0, nil, nil), "clEnqueueWriteBuffer")
    }

    /// Copies `bytes.count` bytes of `buffer` at `offset` into host memory, after every earlier
    /// command has finished. Blocks; counts as a host wait.
    public func read(_ buffer: CLBuffer, offset: Int = 0, into bytes: UnsafeMutableRawBufferPointer) throws {
        try checkRange(buffer, offset: offset, byteCount: bytes.count, "read")
        countHostWait()
        guard bytes.count > 0, let base = bytes.baseAddress else {
            try check(clFinish(raw), "clFinish")
            return
        }
        try check(clEnqueueReadBuffer(raw, buffer.raw, cl_bool(CL_TRUE), offset, bytes.count, base,
                                      0, nil, nil), "clEnqueueReadBuffer")
    }

    /// Enqueues a device-side copy of `byteCount` bytes (does not block).
    public func copy(from source: CLBuffer, to destination: CLBuffer, sourceOffset: Int = 0,
                     destinationOffset: Int = 0, byteCount: Int) throws {
        try checkRange(source, offset: sourceOffset, byteCount: byteCount, "copy source")
        try checkRange(destination, offset: destinationOffset, byteCount: byteCount, "copy destination")
        guard byteCount > 0 else { return }
        try check(clEnqueueCopyBuffer(raw, source.raw, destination.raw, sourceOffset, destinationOffset,
                                      byteCount, 0, nil, nil), "clEnqueueCopyBuffer")
    }

    /// Enqueues filling `byteCount` bytes at `offset` with the 4-byte pattern of `value`
    /// (does not block). `offset` and `byteCount` must be multiples of 4.
    public func fill(_ buffer: CLBuffer, with value: Float, offset: Int = 0, byteCount: Int) throws {
        try checkRange(buffer, offset: offset, byteCount: byteCount, "fill")
        guard offset % 4 == 0, byteCount % 4 == 0 else {
            throw CLError.invalidArgument("fill: offset \(offset) and byteCount \(byteCount) must be multiples of 4")
        }
        guard byteCount > 0 else { return }
        var pattern = value
        try check(clEnqueueFillBuffer(raw, buffer.raw, &pattern, MemoryLayout<Float>.size, offset, byteCount,
                                      0, nil, nil), "clEnqueueFillBuffer")
    }

    /// Enqueues an N-dimensional launch of `kernel` (N = `global.count`, 1…3).
    /// - Parameters:
    ///   - global: total work-items per dimension (each > 0).
    ///   - local: work-group size per dimension, or nil to let the driver choose. When given, each
    ///     `global[i]` must be a multiple of `local[i]` (OpenCL 1.2).
    ///   - wantsEvent: return the launch's event (for waiting or profiling).
    @discardableResult
    public func enqueue(_ kernel: CLKernel, global: [Int], local: [Int]? = nil,
                        wantsEvent: Bool = false) throws -> CLEvent? {
        guard (1...3).contains(global.count), global.allSatisfy({ $0 > 0 }) else {
            throw CLError.invalidArgument("enqueue \(kernel.name): global size \(global) must have 1…3 positive entries")
        }
        if let local {
            guard local.count == global.count, local.allSatisfy({ $0 > 0 }) else {
                throw CLError.invalidArgument(
                    "enqueue \(kernel.name): local size \(local) must match global size \(global) in rank")
            }
            for (g, l) in zip(global, local) where g % l != 0 {
                throw CLError.invalidArgument(
                    "enqueue \(kernel.name): global size \(global) is not a multiple of local size \(local)")
            }
        }
        var event: cl_event? = nil
        let status: cl_int = withUnsafeMutablePointer(to: &event) { eventPointer in
            let eventOut = wantsEvent ? eventPointer : nil
            return global.withUnsafeBufferPointer { globalPointer in
                if let local {
                    return local.withUnsafeBufferPointer { localPointer in
                        clEnqueueNDRangeKernel(raw, kernel.raw, cl_uint(global.count), nil, globalPointer.baseAddress,
                                               localPointer.baseAddress, 0, nil, eventOut)
                    }
                }
                return clEnqueueNDRangeKernel(raw, kernel.raw, cl_uint(global.count), nil, globalPointer.baseAddress,
                                              nil, 0, nil, eventOut)
            }
        }
        try check(status, "clEnqueueNDRangeKernel(\(kernel.name))")
        guard wantsEvent, let event else { return nil }
        return CLEvent(raw: event, queue: self)
    }

    /// Enqueues a marker that completes when every earlier command has; its profiling timestamps
    /// mark a point in the queue (use two markers to time a span).
    public func marker() throws -> CLEvent {
        var event: cl_event? = nil
        try check(clEnqueueMarkerWithWaitList(raw, 0, nil, &event), "clEnqueueMarkerWithWaitList")
        guard let event else {
            throw CLError.status(code: CL_INVALID_EVENT, operation: "clEnqueueMarkerWithWaitList")
        }
        return CLEvent(raw: event, queue: self)
    }

    /// Submits every enqueued command to the device without waiting.
    public func flush() throws {
        try check(clFlush(raw), "clFlush")
    }

    /// Blocks until every enqueued command has completed. Counts as a host wait.
    public func finish() throws {
        countHostWait()
        try check(clFinish(raw), "clFinish")
    }
}
