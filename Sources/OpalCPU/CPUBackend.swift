import CBLAS
import CParallel
import Dispatch
import Foundation
import OpalCore
import Synchronization

/// The native CPU backend: OpenBLAS `sgemm` for matrix products and tight loops over raw pointers
/// for everything else. It runs synchronously (every call has finished when it returns), so it is
/// also the oracle the other backends are tested against.
///
/// The op families live in one file each, mirroring `Kernels/*.cl`: `Elementwise.swift`,
/// `Reduce.swift`, `Softmax.swift`, `Loss.swift`, `Optim.swift`, `Gemm.swift`.
///
/// `@unchecked Sendable`: the backend's mutable state is the buffer cache, which is guarded by a lock,
/// and the convolution engine, an atomic; the ops themselves touch only the buffers they are given.
public final class CPUBackend: Backend, @unchecked Sendable {
    public let name = "cpu"
    public let kind = DeviceKind.cpu
    public let deviceDescription: String
    /// Threads used by OpenBLAS and by the parallel elementwise loops.
    public let threadCount: Int
    private let selectedConvolutionEngine = Atomic<Int>(CPUConvolutionEngine.automatic.rawValue)

    /// How convolutions multiply (`.automatic`: CVectorMath's packed GEMM where it serves, see
    /// `convolutionAlgorithm`); benchmarks set `.openBLAS` to time the im2col + OpenBLAS reference.
    public var convolutionEngine: CPUConvolutionEngine {
        get { CPUConvolutionEngine(rawValue: selectedConvolutionEngine.load(ordering: .relaxed)) ?? .automatic }
        set { selectedConvolutionEngine.store(newValue.rawValue, ordering: .relaxed) }
    }
    let cache: CPUBufferCache

    /// - Parameter cacheCapacityBytes: how many bytes of freed large buffers are kept for reuse.
    public init(cacheCapacityBytes: Int = 256 << 20) {
        threadCount = CPUBackend.blasThreads
        // The kernel family OpenBLAS chose (or OPENBLAS_CORETYPE forced), e.g. "Haswell" or "Cooperlake".
        var core = ", \(OpenBLASKernels.current) kernels"
        if let better = OpenBLASKernels.recommendedCoreType() {
            core += ": OpenBLAS did not recognise this CPU; set OPENBLAS_CORETYPE=\(better) for its faster kernels"
        } else if let forced = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"],
                  let better = OpenBLASKernels.recommendedCoreType(environment: [:]), better != forced {
            // The environment chose the family (and Opal keeps a choice it was given): say what it costs.
            core += " as OPENBLAS_CORETYPE=\(forced) asks; this CPU runs the faster \(better) kernels"
        }
        deviceDescription = "Native CPU (OpenBLAS\(core), \(threadCount) thread\(threadCount == 1 ? "" : "s"))"
        cache = CPUBufferCache(capacityBytes: cacheCapacityBytes)
    }

    /// Sets OpenBLAS's thread count once per process, to the number of active processors.
    private static let blasThreads: Int = {
        let count = max(1, ProcessInfo.processInfo.activeProcessorCount)
        openblas_set_num_threads(Int32(count))
        return count
    }()

    // MARK: Memory

    public func allocate(count: Int) throws -> any DeviceBuffer {
        guard count >= 0 else {
            throw TensorError.invalidArgument(op: "allocate", reason: "negative element count \(count)")
        }
        return cache.buffer(count: count)
    }

    public func write(_ values: [Float], to buffer: any DeviceBuffer) throws {
        let destination = try cpuBuffer(buffer, op: "write", elements: values.count)
        values.withUnsafeBufferPointer { source in
            guard let base = source.baseAddress else { return }
            destination.floats.update(from: base, count: source.count)
        }
    }

    public func write(_ values: [Int32], to buffer: any DeviceBuffer) throws {
        let destination = try cpuBuffer(buffer, op: "write", elements: values.count)
        values.withUnsafeBufferPointer { source in
            guard let base = source.baseAddress else { return }
            destination.ints.update(from: base, count: source.count)
        }
    }

    public func readFloats(_ buffer: any DeviceBuffer, count: Int) throws -> [Float] {
        let source = try cpuBuffer(buffer, op: "readFloats", elements: count)
        return Array(UnsafeBufferPointer(start: source.floats, count: count))
    }

    public func readInts(_ buffer: any DeviceBuffer, count: Int) throws -> [Int32] {
        let source = try cpuBuffer(buffer, op: "readInts", elements: count)
        return Array(UnsafeBufferPointer(start: source.ints, count: count))
    }

    public func fill(_ buffer: any DeviceBuffer, value: Float, count: Int) throws {
        let destination = try cpuBuffer(buffer, op: "fill", elements: count).floats
        if value == 0 && value.sign == .plus {
            destination.update(repeating: 0, count: count)   // memset
        } else {
            for index in 0..<count { destination[index] = value }
        }
    }

    /// Every call has already finished: the CPU backend executes synchronously.
    public func synchronize() throws {}

    // MARK: Helpers shared by the op files

    /// Downcasts a buffer and checks that it holds at least `elements` elements.
    @inline(__always)
    func cpuBuffer(_ buffer: any DeviceBuffer, op: String, elements: Int) throws -> CPUBuffer {
        guard let buffer = buffer as? CPUBuffer else {
            throw TensorError.device("\(op): the CPU backend was given a buffer of another backend (\(type(of: buffer)))")
        }
        guard elements >= 0, elements <= buffer.count else {
            throw TensorError.invalidArgument(
                op: op, reason: "needs \(elements) elements but the buffer holds \(buffer.count)")
        }
        return buffer
    }

    /// Runs `body(start, end)` over `0..<count` split into at most `threadCount` chunks of at least
    /// `minimumChunk` elements; small ranges run inline on the calling thread.
    @inline(__always)
    func parallelRanges(count: Int, minimumChunk: Int, _ body: (Int, Int) -> Void) {
        let chunks = min(threadCount, count / max(minimumChunk, 1))
        if chunks <= 1 {
            body(0, count)
            return
        }
        parallelFor(iterations: chunks, threads: chunks) { chunk in
            body(chunk * count / chunks, (chunk + 1) * count / chunks)
        }
    }

    /// Runs `body(i)` for every `i < iterations` on up to `threads` threads (the caller and the workers of
    /// CParallel's pool, which spin briefly between loops instead of sleeping at once) and returns when all
    /// calls have returned. A loop started inside another runs inline.
    func parallelFor(iterations: Int, threads: Int, _ body: (Int) -> Void) {
        // The pool runs `body` only until this call returns, so passing the non-escaping closure (which
        // captures raw pointers) through a C context pointer is safe.
        withoutActuallyEscaping(body) { body in
            var task = body
            withUnsafeMutablePointer(to: &task) { pointer in
                opal_parallel_run(iterations, threads, { context, index in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(index)
                }, pointer)
            }
        }
    }
}

/// Chunk sizes (in elements) below which a loop stays on one thread: cheap memory-bound loops need
/// far more work than transcendental ones to pay for a second thread. (A quarter of what they were with
/// GCD's concurrentPerform, whose sleeping workers took tens of µs to wake: CParallel's spin between
/// loops. R5 on two cores: 3 of 3 alternating runs faster.)
enum ParallelGrain {
    static let cheap = 64 * 1024
    static let expensive = 16 * 1024
    /// Batch norm's passes each read the input twice or more (statistics, then normalisation; the
    /// gradient's sums, then dx): DCGAN's BatchNorm(128) over 64×128×7×7 ran on one core at 256 Ki.
    static let normalisation = 64 * 1024
    /// Multiply-adds (m·n·k) from which a GEMM is split over the cores.
    static let gemm = 1 << 20
}

/// Host memory of the CPU backend: `count` 4-byte elements, 64-byte aligned.
/// Freed memory returns to the backend's cache when the last reference goes away.
///
/// `@unchecked Sendable`: the pointer never changes; synchronising access to the contents is the
/// caller's job, exactly as for device memory of other backends.
public final class CPUBuffer: DeviceBuffer, @unchecked Sendable {
    public let count: Int
    /// Start of the memory (`count · 4` bytes, at least 64).
    public let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    private let cache: CPUBufferCache?

    init(count: Int, pointer: UnsafeMutableRawPointer, byteCount: Int, cache: CPUBufferCache?) {
        self.count = count; self.pointer = pointer; self.byteCount = byteCount; self.cache = cache
    }

    /// Allocates uncached memory for `count` elements.
    public convenience init(count: Int) {
        let bytes = CPUBufferCache.byteCount(forElements: count)
        self.init(count: count, pointer: .allocate(byteCount: bytes, alignment: CPUBufferCache.alignment),
                  byteCount: bytes, cache: nil)
    }

    /// The memory as Float elements.
    public var floats: UnsafeMutablePointer<Float> { pointer.assumingMemoryBound(to: Float.self) }
    /// The memory as Int32 elements.
    public var ints: UnsafeMutablePointer<Int32> { pointer.assumingMemoryBound(to: Int32.self) }
    /// The memory as raw 32-bit words (moves Float or Int32 data bit-exactly).
    var words: UnsafeMutablePointer<UInt32> { pointer.assumingMemoryBound(to: UInt32.self) }

    deinit {
        if let cache {
            cache.recycle(pointer, byteCount: byteCount)
        } else {
            pointer.deallocate()
        }
    }
}

/// A small free-list cache keyed by byte size: a training step allocates the same sizes every step,
/// so large buffers are reused instead of going back to `malloc` (which would `mmap`/`munmap` them).
/// Small buffers are not cached (malloc is fast for them). Thread-safe through one lock.
final class CPUBufferCache: @unchecked Sendable {
    static let alignment = 64
    /// Buffers smaller than this go straight to and from the system allocator.
    static let minimumCachedBytes = 64 * 1024

    private let lock = NSLock()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var cachedBytes = 0
    private let capacityBytes: Int

    init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    /// Bytes for `count` elements, rounded up to the alignment (at least one cache line).
    static func byteCount(forElements count: Int) -> Int {
        max(alignment, (count * 4 + alignment - 1) / alignment * alignment)
    }

    func buffer(count: Int) -> CPUBuffer {
        let bytes = CPUBufferCache.byteCount(forElements: count)
        if bytes >= CPUBufferCache.minimumCachedBytes {
            lock.lock()
            let reused = free[bytes]?.popLast()
            if reused != nil { cachedBytes -= bytes }
            lock.unlock()
            if let reused { return CPUBuffer(count: count, pointer: reused, byteCount: bytes, cache: self) }
        }
        return CPUBuffer(count: count, pointer: .allocate(byteCount: bytes, alignment: CPUBufferCache.alignment),
                         byteCount: bytes, cache: self)
    }

    func recycle(_ pointer: UnsafeMutableRawPointer, byteCount bytes: Int) {
        if bytes >= CPUBufferCache.minimumCachedBytes {
            lock.lock()
            if cachedBytes + bytes <= capacityBytes {
                free[bytes, default: []].append(pointer)
                cachedBytes += bytes
                lock.unlock()
                return
            }
            lock.unlock()
        }
        pointer.deallocate()
    }

    /// Returns every cached block to the system.
    func trim() {
        lock.lock()
        let blocks = free.values.flatMap { $0 }
        free.removeAll()
        cachedBytes = 0
        lock.unlock()
        for block in blocks { block.deallocate() }
    }

    deinit { for block in free.values.joined() { block.deallocate() } }
}

extension CPUBackend {
    /// Returns the memory kept for reuse to the system.
    public func trimCache() { cache.trim() }
}
