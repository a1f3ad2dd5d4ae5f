import Foundation
import OpenCLKit

/// Caching allocator: released buffers are kept by size class and reused; on
/// CL_MEM_OBJECT_ALLOCATION_FAILURE / CL_OUT_OF_RESOURCES / CL_OUT_OF_HOST_MEMORY it frees the cache
/// and retries once, then throws `CLError.outOfMemory`.
///
/// Size classes: requests up to 1 MiB round up to a power of two (at least 256 bytes); larger ones
/// round up to a multiple of 1 MiB. A buffer from `allocate(byteCount:)` therefore has
/// `byteCount ≥` the request. Hand it back with `recycle(_:)` when done; a buffer dropped without
/// recycling is simply freed by OpenCL.
///
/// `@unchecked Sendable`: all mutable state (free lists, live table) is guarded by `lock`.
public final class BufferPool: @unchecked Sendable {
    /// The context buffers are allocated in.
    public let context: CLContext
    /// Cached (free) bytes beyond this are released instead of kept. Default: half of the device's
    /// global memory.
    public var cacheLimitBytes: Int {
        get { lock.withLock { _cacheLimitBytes } }
        set { lock.withLock { _cacheLimitBytes = newValue; trimLocked(to: newValue) } }
    }

    /// A memory budget below the device's: an allocation that would take live + cached bytes beyond it
    /// fails as the device itself would (CL_MEM_OBJECT_ALLOCATION_FAILURE), so the cache is released and
    /// the request retried once. Nil (the default) leaves the limit to the device. Use it to keep Opal
    /// to a share of a shared GPU, and to exercise the out-of-memory path on devices that allocate lazily
    /// (PoCL reserves host memory only when a buffer is first used).
    public var budgetBytes: Int? {
        get { lock.withLock { _budgetBytes } }
        set { lock.withLock { _budgetBytes = newValue } }
    }

    private let lock = NSLock()
    private var _cacheLimitBytes: Int
    private var _budgetBytes: Int?
    private var freeLists: [Int: [CLBuffer]] = [:]       // size class → free buffers
    private var _cachedBytes = 0
    private var live: [ObjectIdentifier: LiveEntry] = [:] // handed-out buffers, held weakly
    private var _reuseCount = 0

    private struct LiveEntry {
        weak var buffer: CLBuffer?
        let byteCount: Int
    }

    /// Smallest size class in bytes.
    public static let minimumClassBytes = 256
    /// Above this, classes are multiples of it instead of powers of two.
    public static let largeClassStepBytes = 1 << 20

    public init(context: CLContext) {
        self.context = context
        self._cacheLimitBytes = Int(clamping: context.device.globalMemoryBytes / 2)
    }

    /// The size class a request of `byteCount` bytes is rounded up to.
    public static func sizeClass(for byteCount: Int) -> Int {
        if byteCount <= minimumClassBytes { return minimumClassBytes }
        if byteCount <= largeClassStepBytes {
            return 1 << (Int.bitWidth - (byteCount - 1).leadingZeroBitCount)
        }
        let (quotient, remainder) = byteCount.quotientAndRemainder(dividingBy: largeClassStepBytes)
        let steps = remainder == 0 ? quotient : quotient + 1
        let (bytes, overflow) = steps.multipliedReportingOverflow(by: largeClassStepBytes)
        return overflow ? byteCount : bytes
    }

    /// A buffer of at least `byteCount` bytes (uninitialised), reused from the cache when one of its
    /// size class is free.
    /// - Throws: `CLError.outOfMemory` when the request exceeds the device's largest allocation or
    ///   the device cannot satisfy it even after the cache is released; `CLError.invalidArgument`
    ///   for a negative size.
    public func allocate(byteCount: Int) throws -> CLBuffer {
        guard byteCount >= 0 else {
            throw CLError.invalidArgument("BufferPool.allocate: byteCount must be ≥ 0, got \(byteCount)")
        }
        let device = context.device
        guard UInt64(byteCount) <= device.maxAllocationBytes else {
            throw outOfMemory(byteCount)
        }
        var size = BufferPool.sizeClass(for: byteCount)
        if UInt64(size) > device.maxAllocationBytes { size = byteCount }  // rounding must not exceed the limit

        if let reused = lock.withLock({ takeFree(size) }) { return reused }
        do {
            return try create(size)
        } catch let error as CLError where BufferPool.isOutOfMemory(error) {
            trim()
            do {
                return try create(size)
            } catch let retryError as CLError where BufferPool.isOutOfMemory(retryError) {
                throw outOfMemory(byteCount)
            }
        }
    }

    /// Returns `buffer` to the cache for reuse. Buffers not from this pool, or recycled twice, are
    /// ignored (and freed when the caller drops them).
    public func recycle(_ buffer: CLBuffer) {
        lock.withLock {
            let id = ObjectIdentifier(buffer)
            guard let entry = live[id], entry.buffer === buffer else { return }
            live[id] = nil
            guard _cachedBytes + entry.byteCount <= _cacheLimitBytes else { return }
            freeLists[entry.byteCount, default: []].append(buffer)
            _cachedBytes += entry.byteCount
        }
    }

    /// Releases every cached buffer.
    public func trim() {
        lock.withLock { trimLocked(to: 0) }
    }

    /// Bytes held in free lists, ready for reuse.
    public var cachedBytes: Int { lock.withLock { _cachedBytes } }

    /// Bytes handed out by `allocate` whose buffers are still alive and not recycled.
    public var liveBytes: Int {
        lock.withLock { liveBytesLocked() }
    }

    /// How many allocations were served from the cache.
    public var reuseCount: Int { lock.withLock { _reuseCount } }

    // MARK: - Private

    static func isOutOfMemory(_ error: CLError) -> Bool {
        guard case .status(let code, _) = error else { return false }
        return code == -4 || code == -5 || code == -6  // MEM_OBJECT_ALLOCATION_FAILURE, OUT_OF_RESOURCES, OUT_OF_HOST_MEMORY
    }

    private func outOfMemory(_ byteCount: Int) -> CLError {
        lock.withLock {
            .outOfMemory(requestedBytes: byteCount, cachedBytes: _cachedBytes, liveBytes: liveBytesLocked(),
                         deviceBytes: context.device.globalMemoryBytes)
        }
    }

    private func create(_ size: Int) throws -> CLBuffer {
        let overBudget = lock.withLock { _budgetBytes.map { liveBytesLocked() + _cachedBytes + size > $0 } ?? false }
        if overBudget { throw CLError.status(code: -4, operation: "clCreateBuffer (\(size) bytes beyond the pool's memory budget)") }
        let buffer = try CLBuffer(context: context, byteCount: size)
        lock.withLock { register(buffer) }
        return buffer
    }

    private func takeFree(_ size: Int) -> CLBuffer? {
        guard var list = freeLists[size], let buffer = list.popLast() else { return nil }
        freeLists[size] = list.isEmpty ? nil : list
        _cachedBytes -= size
        _reuseCount += 1
        register(buffer)
        return buffer
    }

    private func register(_ buffer: CLBuffer) {
        live[ObjectIdentifier(buffer)] = LiveEntry(buffer: buffer, byteCount: buffer.byteCount)
    }

    private func liveBytesLocked() -> Int {
        live = live.filter { $0.value.buffer != nil }  // forget buffers dropped without recycling
        return live.values.reduce(0) { $0 + $1.byteCount }
    }

    private func trimLocked(to limit: Int) {
        guard _cachedBytes > limit else { return }
        for size in freeLists.keys.sorted(by: >) {
            while _cachedBytes > limit, var list = freeLists[size], !list.isEmpty {
                list.removeLast()
                freeLists[size] = list.isEmpty ? nil : list
                _cachedBytes -= size
            }
        }
    }
}
