import Foundation
import Glibc
import Opal
import OpalCPU
import OpalOpenCL
import Synchronization

/// K3: causal multi-head self-attention, forward and backward (B 8, H 8, D 64, N ∈ {256, 1024, 4096}).
///
/// One run: `O = attention(Q, K, V)` for Q, K, V [B, H, N, D] (causal, scale 1/√D), `loss = Σ O`, and
/// `loss.backward()`, which computes dQ, dK and dV. Each N is timed twice on the same operands: the fused
/// `Tensor.scaledDotProductAttention` (the backend's `AttentionBackend` kernels: no N×N matrix) and
/// `Tensor.scaledDotProductAttentionComposed` (matmul, mask, softmax, matmul: several [B, H, N, N] tensors).
/// The composed form is skipped when its estimated need exceeds `memoryBudgetBytes`, and reported as out of
/// memory when an allocation fails.
///
/// Peak memory of a run: one extra untimed run with a sampler thread reading the device's allocated bytes
/// every 50 µs (see `MemorySampler`); the figure is the highest reading minus the reading before the run.
/// `Benchmarks/peers/pytorch_reference.py` times `torch.nn.functional.scaled_dot_product_attention` (K3).
public struct AttentionBenchmark {
    /// The issue's K3 geometry for sequence length N.
    public static func descriptor(sequenceLength n: Int, batch: Int = 8, heads: Int = 8,
                                  headDimension: Int = 64) -> AttentionDescriptor {
        AttentionDescriptor(batch: batch, heads: heads, queryLength: n, keyLength: n, headDimension: headDimension,
                            causal: true)
    }

    /// The issue's sequence lengths.
    public static let issueSizes = [256, 1024, 4096]

    /// FLOPs of one forward + backward run: `AttentionDescriptor.forwardFLOPs` × 3.5 (the backward does 2.5×
    /// the forward's GEMM work).
    public static func flops(_ d: AttentionDescriptor) -> Double { d.forwardFLOPs * 3.5 }

    /// Estimated peak bytes of the composed form: seven [B, H, Nq, Nk] float tensors (scores, scaled and
    /// masked scores, probabilities, their masked product, and the backward's gradients of those), as measured
    /// on the native CPU at N = 1024 (1.85 GiB, 7.2 × the 256 MiB of one score tensor).
    public static func composedBytes(_ d: AttentionDescriptor) -> Double {
        7 * 4 * Double(d.problems) * Double(d.queryLength) * Double(d.keyLength)
    }

    /// One implementation at one N: its time, or why it did not run.
    public struct Entry: Sendable, Codable {
        public var time: Measurement?
        public var gigaflops: Double?
        /// Share of the device's measured fp32 peak, when one is known.
        public var percentOfPeak: Double?
        /// Highest allocated bytes during a run above those before it (see `MemorySampler`).
        public var peakMemoryBytes: Int?
        /// "out of memory", "skipped (needs X GiB)", or nil when it ran.
        public var note: String?
    }

    public struct Row: Sendable, Codable {
        public var sequenceLength: Int
        public var flops: Double
        public var fused: Entry
        public var composed: Entry
        /// Fused time / composed time (below 1: the fused kernels are faster); nil when the composed form did not run.
        public var fusedOverComposed: Double?
    }

    public struct Result: Sendable, Codable {
        public var workload = "K3"
        public var device: String
        public var deviceDescription: String
        public var batch: Int, heads: Int, headDimension: Int
        public var causal = true
        /// The device peak the "% peak" figures use, in GFLOP/s; nil when none is known.
        public var peakGigaflops: Double?
        /// How the peak memory was measured on this device.
        public var memoryMethod: String
        public var rows: [Row]
    }

    public var sizes: [Int]
    public var batch = 8, heads = 8, headDimension = 64
    /// Timed runs per implementation; nil: 10 on GPUs, 3 elsewhere.
    public var runs: Int?
    /// Untimed runs before timing (the first also builds the OpenCL programs).
    public var warmup = 1
    /// Also time the composed form.
    public var includeComposed = true
    /// The composed form is skipped when `composedBytes` exceeds this (default 4 GiB).
    public var memoryBudgetBytes: Double = 4 * 1024 * 1024 * 1024
    /// The device's fp32 peak for the "% peak" figures (nil: leave them out).
    public var peak: DevicePeak?

    public init(sizes: [Int] = AttentionBenchmark.issueSizes, runs: Int? = nil) {
        self.sizes = sizes; self.runs = runs
    }

    /// Runs every size on `device`, reporting progress through `progress`.
    public func run(on device: Device, progress: (String) -> Void = { _ in }) throws -> Result {
        let runs = self.runs ?? (device.kind == .gpu ? 10 : 3)
        let sampler = MemorySampler(device)
        var rows: [Row] = []
        for n in sizes {
            let d = Self.descriptor(sequenceLength: n, batch: batch, heads: heads, headDimension: headDimension)
            if let problem = d.problem { throw TensorError.invalidArgument(op: "bench attention", reason: problem) }
            let shape: Shape = [batch, heads, n, headDimension]
            let query = try Tensor.uniform(shape, in: -1...1, seed: 1, on: device).requiringGradient()
            let key = try Tensor.uniform(shape, in: -1...1, seed: 2, on: device).requiringGradient()
            let value = try Tensor.uniform(shape, in: -1...1, seed: 3, on: device).requiringGradient()
            let flops = Self.flops(d)

            func timed(_ composed: Bool) throws -> Entry {
                let step = {
                    for tensor in [query, key, value] { tensor.zeroGradient() }
                    let output = composed
                        ? try Tensor.scaledDotProductAttentionComposed(query: query, key: key, value: value, causal: true)
                        : try Tensor.scaledDotProductAttention(query: query, key: key, value: value, causal: true)
                    try output.sum().backward()
                }
                let label = "K3 N\(n) \(composed ? "composed" : "fused") on \(device.name)"
                progress("\(label): \(warmup) warm-up + \(runs) timed runs…")
                let time = try measure(on: device, warmup: warmup, runs: runs, step)
                progress("  \(label): median \(String(format: "%.2f", time.medianMilliseconds)) ms; measuring peak memory…")
                // The last timed run's gradients would count in the baseline and be reused: drop them first.
                for tensor in [query, key, value] { tensor.zeroGradient() }
                let memory = try sampler.peakBytes(step)
                for tensor in [query, key, value] { tensor.zeroGradient() }
                let rate = gigaflops(flops, milliseconds: time.medianMilliseconds)
                return Entry(time: time, gigaflops: rate, percentOfPeak: peak.map { 100 * rate / $0.gigaflops },
                             peakMemoryBytes: memory, note: nil)
            }

            let fused = try timed(false)
            var composed = Entry()
            if !includeComposed {
                composed.note = "skipped"
            } else if Self.composedBytes(d) > memoryBudgetBytes {
                composed.note = "skipped (needs \(String(format: "%.1f", Self.composedBytes(d) / 1_073_741_824)) GiB)"
                progress("K3 N\(n) composed on \(device.name): \(composed.note!)")
            } else {
                do {
                    composed = try timed(true)
                } catch where "\(error)".lowercased().contains("memory") {
                    composed.note = "out of memory"
                    progress("K3 N\(n) composed on \(device.name): out of memory (\(error))")
                }
            }
            let ratio = composed.time.map { fused.time!.medianMilliseconds / $0.medianMilliseconds }
            rows.append(Row(sequenceLength: n, flops: flops, fused: fused, composed: composed, fusedOverComposed: ratio))
        }
        return Result(device: device.name, deviceDescription: device.backend.deviceDescription, batch: batch,
                      heads: heads, headDimension: headDimension, peakGigaflops: peak?.gigaflops,
                      memoryMethod: sampler.method, rows: rows)
    }
}

/// The bytes a device has allocated, read from a sampler thread while a run goes on.
///
/// - OpenCL: `BufferPool.liveBytes` (buffers handed out and not yet recycled; the pool keeps no high-water
///   mark, hence the sampling).
/// - Native CPU: the process's resident memory (`/proc/self/statm`), after the backend's buffer cache is
///   emptied and glibc is told to map every allocation of 128 KiB or more on its own (`mallopt`
///   M_MMAP_THRESHOLD), so that freed tensors leave the resident set instead of staying in the heap. Buffers
///   freed during the run go back to the backend's cache (up to its capacity) and so still count: the figure
///   is the memory the backend holds, an upper bound on the bytes of tensors alive.
/// Readings every ~100 µs can miss a shorter peak; the large tensors of attention live for whole ops.
struct MemorySampler {
    let read: @Sendable () -> Int
    let prepare: () -> Void
    let method: String

    init(_ device: Device) {
        if let backend = device.backend as? OpenCLBackend {
            let pool = backend.pool
            read = { pool.liveBytes }
            prepare = {}
            method = "BufferPool.liveBytes sampled every ~100 µs during one run, minus the bytes live before it"
        } else {
            read = { MemorySampler.residentBytes() }
            let cpu = device.backend as? CPUBackend
            prepare = {
                cpu?.trimCache()
                MemorySampler.mapLargeAllocations()
            }
            method = "resident memory (/proc/self/statm, large allocations mmapped) sampled every ~100 µs during one run after emptying the buffer cache, minus that before it"
        }
    }

    /// Resident bytes of this process (0 where /proc is missing).
    static func residentBytes() -> Int {
        let descriptor = open("/proc/self/statm", O_RDONLY)
        guard descriptor >= 0 else { return 0 }
        defer { close(descriptor) }
        var text = [UInt8](repeating: 0, count: 128)
        let count = Glibc.read(descriptor, &text, text.count - 1)
        guard count > 0 else { return 0 }
        let fields = String(decoding: text[0..<count], as: UTF8.self).split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// `mallopt(M_MMAP_THRESHOLD, 128 KiB)` (looked up at run time: Swift's Glibc module lacks malloc.h),
    /// then `malloc_trim(0)`.
    static func mapLargeAllocations() {
        typealias MallOpt = @convention(c) (Int32, Int32) -> Int32
        typealias MallocTrim = @convention(c) (Int) -> Int32
        let library = dlopen(nil, RTLD_NOW)
        if let symbol = dlsym(library, "mallopt") {
            _ = unsafeBitCast(symbol, to: MallOpt.self)(-3, 128 * 1024)   // M_MMAP_THRESHOLD
        }
        if let symbol = dlsym(library, "malloc_trim") {
            _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
        }
    }

    private final class State: Sendable {
        let peak = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let done = DispatchSemaphore(value: 0)
    }

    /// Runs `body` once and returns the highest reading during it minus the reading before it.
    func peakBytes(_ body: () throws -> Void) throws -> Int {
        prepare()
        let baseline = read()
        let state = State()
        state.peak.store(baseline, ordering: .relaxed)
        let read = self.read
        let thread = Thread {
            while !state.stop.load(ordering: .relaxed) {
                state.peak.max(read(), ordering: .relaxed)
                usleep(100)
            }
            state.done.signal()
        }
        thread.start()
        defer {
            state.stop.store(true, ordering: .relaxed)
            state.done.wait()
        }
        try body()
        state.peak.max(read(), ordering: .relaxed)
        return max(0, state.peak.load(ordering: .relaxed) - baseline)
    }
}
