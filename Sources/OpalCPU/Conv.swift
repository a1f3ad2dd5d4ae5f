import CBLAS
import CVectorMath
import Dispatch
import OpalCore
import Synchronization

// 2-D convolution of the CPU backend over NCHW tensors (mirrors Kernels/conv.cl), per Conv2DDescriptor:
//   forward          y[n, co, oh, ow] = bias[co] + Σ_{ci ∈ group(co), kh, kw} x[n, ci, ih, iw] · w[co, ci − g·Cg, kh, kw]
//   backward data    dx[n, ci, ih, iw] = Σ dy[n, co, oh, ow] · w[co, ci − g·Cg, kh, kw]
//   backward weight  dw[co, ci − g·Cg, kh, kw] = Σ_{n, oh, ow} dy[n, co, oh, ow] · x[n, ci, ih, iw]
// with ih = oh·sH − pH + kh·dH, iw = ow·sW − pW + kw·dW (positions outside the input count as zero).
//
// The fast path lowers each op to OpenBLAS GEMMs over a column matrix ("im2col") that holds a chunk of
// `nb` batch elements side by side:
//   col: [C·kH·kW, nb·P]   col[(ci·kH + kh)·kW + kw, j·P + oh·oW + ow] = x[n0 + j, ci, ih, iw]   (P = oH·oW)
// Group g owns the K = Cg·kH·kW rows starting at g·K, and W_g = w[g·Mg ..< (g+1)·Mg] is [Mg, K] row-major.
//   forward          y_{n,g} [Mg, P] = W_g · col_g[:, j·P ..< (j+1)·P]   (one GEMM per element: y is NCHW already)
//   backward data    col_g[:, j·P ..< (j+1)·P] = W_gᵀ · dy_{n,g}, then col2im sums col into dx
//   (for small planes, P < 512, both run as one GEMM over the chunk through a [Mg, nb·P] scratch that is
//   scattered into y or gathered from dy: `ConvolutionPlan.batchesGEMMs`)
//   backward weight  dW_g (+)= dyT · col_gᵀ, dyT [Mg, nb·P] gathered from dy (one GEMM of depth nb·P per chunk)
// Work is split across the cores in one of two ways (`ConvolutionPlan.workers`):
//   - batch split (the usual training case): each core takes a contiguous range of batch elements and runs
//     im2col, single-threaded OpenBLAS GEMMs and col2im on chunks small enough to stay in its L2 cache; the
//     cores meet once at the end (backward weight then sums their partial dW). No NCHW scatter is needed.
//   - one worker (batch too small to split evenly): chunks run in order, im2col/col2im/gather split over
//     (element, channel) planes on all cores and OpenBLAS threaded.
// im2col and col2im are C loops (CVectorMath's gather.c). With AVX-512, on shapes whose phase planes (rows
// ih ≡ a mod sH, columns iw ≡ b mod sW) are as wide as the output and sW ≤ 2 ("same" convolutions, DCGAN's
// 4×4 stride-2 ones), each tap is a masked copy (im2col) or masked add (col2im) of a contiguous window of
// the phase planes (`ConvolutionWindows`, built once per call). Elsewhere index tables computed once per
// call (`ConvolutionPlan.tapOffsets`, `ConvolutionPlan.SumTable`) are applied with AVX2 gathers, or a scalar
// loop. Either way col2im writes each element of dx once (no zero fill beforehand).
// With AVX-512, small planes (P < 512) and K ≥ 64 (`usesPackedGEMM`), CVectorMath's own packed SGEMM
// replaces OpenBLAS, with the weights packed once per call. On contiguous shapes of at most 64 taps it runs
// as implicit GEMMs, no column matrix at all (`implicitConv2D…` below): the forward pass over the whole batch,
// B's panels packed from phase planes split per element into a small per-thread ring; backward data summing
// each block of W_gᵀ · dy into dx's phase planes; backward weight packing colᵀ's panels from the phases.
// Elsewhere the packed GEMM reads the chunk's column matrix and writes y or col through blocked layouts.
// `referenceConv2D…` below are the direct loops (Double accumulation) the fast path is tested against
// (Tests/OpalCPUTests/ConvTests.swift).

/// How the CPU backend's convolutions multiply: `.automatic` runs CVectorMath's packed GEMM where it serves
/// (`CPUBackend.convolutionAlgorithm`), `.openBLAS` always im2col/col2im + OpenBLAS (the reference).
public enum CPUConvolutionEngine: Int, Sendable {
    case automatic, openBLAS
}

extension CPUBackend {
    /// The algorithm a convolution pass runs on this machine, for reports: "implicit GEMM" (B's panels
    /// packed straight from the planes, no column matrix), "im2col + packed GEMM", or "im2col + OpenBLAS".
    public func convolutionAlgorithm(_ d: Conv2DDescriptor, backwardWeight: Bool = false) -> String {
        guard let plan = try? ConvolutionPlan(d, op: "convolutionAlgorithm"), usesPackedGEMM(plan) else {
            return "im2col + OpenBLAS"
        }
        if let windows = plan.windows, opal_conv_windows_implicit(windows.pointer) != 0 { return "implicit GEMM" }
        return backwardWeight ? "im2col + OpenBLAS" : (plan.needsColumns ? "im2col + packed GEMM" : "packed GEMM")
    }

    /// Whether CVectorMath's packed GEMM serves the plan's convolution: with the automatic engine, AVX-512,
    /// output planes of fewer than 512 positions and at least 64 rows of col (K = Cg·kH·kW). Small planes
    /// are what it was built for: OpenBLAS then either repacks the weights for a few columns per element or
    /// needs the column matrix of a whole chunk. On large planes OpenBLAS's per-element GEMMs are wide and
    /// were faster (K2's 3×3 on 56×56: 22 vs 30 ms forward); shallower products are mostly packing and
    /// stores (R2's 1→32 3×3 ran 40 % slower on it), and a backward weight pass would leave its 32-row
    /// tiles half empty.
    func usesPackedGEMM(_ plan: ConvolutionPlan) -> Bool {
        convolutionEngine == .automatic && plan.depth >= 64 && plan.positions < ConvolutionPlan.batchedPositions
            && opal_packed_gemm_available() != 0
    }

    /// `y = conv2D(x, w) + bias` (see `Conv2DDescriptor`).
    /// - Parameters:
    ///   - input: x, [batch, inputChannels, inputHeight, inputWidth]
    ///   - weight: w, [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
    ///   - bias: [outputChannels], or nil
    ///   - output: y, [batch, outputChannels, outputHeight, outputWidth] (fully overwritten)
    public func conv2D(_ input: any DeviceBuffer, _ weight: any DeviceBuffer, _ bias: (any DeviceBuffer)?,
                       _ output: any DeviceBuffer, descriptor d: Conv2DDescriptor) throws {
        try conv2D(input, weight, bias, output, descriptor: d, columnBudget: ConvolutionPlan.maximumColumnElements)
    }

    /// - Parameters:
    ///   - columnBudget: the most column-matrix elements per chunk (tests pass small values to force chunking).
    ///   - workers: forces the number of batch-split workers (tests); nil lets `ConvolutionPlan` choose.
    func conv2D(_ input: any DeviceBuffer, _ weight: any DeviceBuffer, _ bias: (any DeviceBuffer)?,
                _ output: any DeviceBuffer, descriptor d: Conv2DDescriptor, columnBudget: Int,
                workers: Int? = nil) throws {
        let plan = try ConvolutionPlan(d, op: "conv2D", columnBudget: columnBudget, threads: threadCount,
                                       workers: workers)
        let x = try cpuBuffer(input, op: "conv2D", elements: d.inputCount).floats
        let w = try cpuBuffer(weight, op: "conv2D", elements: d.weightCount).floats
        let b = try bias.map { try cpuBuffer($0, op: "conv2D", elements: d.outputChannels).floats }
        let y = try cpuBuffer(output, op: "conv2D", elements: d.outputCount).floats
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        let packed = packedWeights(w, d, plan, m: mg, k: k, transposed: false)
        if let packed, let windows = plan.windows?.pointer, opal_conv_windows_implicit(windows) != 0 {
            implicitConv2D(x, y, b, d, plan, windows, packed)
            return
        }
        let columns = cache.buffer(count: plan.workers * plan.columnCount)
        let productCount = plan.batchesGEMMs && packed == nil ? mg * p * plan.chunk : 0
        let products = cache.buffer(count: plan.workers * productCount)
        forEachChunk(plan, batch: d.batch) { first, count, worker in
            let col = columns.floats + worker * plan.columnCount
            let pitch = count * p
            if plan.needsColumns { im2col(x, col, d, plan, first: first, count: count) }
            if let packed {
                // y_{chunk, g} [Mg, nb·P] = W_g · col_g (or x itself for a 1×1 kernel), stored straight into NCHW.
                for g in 0..<d.groups {
                    let source = plan.needsColumns ? Blocked.rows(col + g * k * pitch, width: pitch)
                        : Blocked.planes(x + (first * d.inputChannels + g * d.inputChannelsPerGroup) * p, plane: p,
                                         elementStride: d.inputChannels * p)
                    let target = Blocked.planes(y + (first * d.outputChannels + g * mg) * p, plane: p,
                                                elementStride: d.outputChannels * p)
                    let a = packed.packed.floats + g * packed.perGroup
                    packedGEMM(packed, plan, n: pitch, worker: worker) { begin, end, scratch in
                        opal_packed_gemm(mg, pitch, k, a, source, target, b.map { $0 + g * mg }, 0, begin, end, scratch)
                    }
                }
                return
            }
            if plan.batchesGEMMs {
                // Small planes: one GEMM over the chunk, y_g [Mg, nb·P] = W_g · col_g, then scattered into NCHW.
                let product = products.floats + worker * productCount
                for g in 0..<d.groups {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(mg), blasint(pitch), blasint(k), 1,
                                w + g * mg * k, blasint(k), col + g * k * pitch, blasint(pitch), 0, product,
                                blasint(pitch))
                    for j in 0..<count {
                        for m in 0..<mg {
                            let (source, target) = (product + m * pitch + j * p,
                                                    y + ((first + j) * d.outputChannels + g * mg + m) * p)
                            if let b {
                                let value = b[g * mg + m]
                                for index in 0..<p { target[index] = source[index] + value }
                            } else {
                                target.update(from: source, count: p)
                            }
                        }
                    }
                }
                return
            }
            for j in 0..<count {
                let n = first + j
                for g in 0..<d.groups {
                    // B = col_g's slice of element j [K, P] (row pitch nb·P), or x_n itself for a 1×1 kernel.
                    let (source, ldb) = plan.needsColumns ? (col + g * k * pitch + j * p, pitch)
                        : (x + (n * d.inputChannels + g * d.inputChannelsPerGroup) * p, p)
                    let target = y + (n * d.outputChannels + g * mg) * p
                    if let b {
                        for m in 0..<mg { (target + m * p).update(repeating: b[g * mg + m], count: p) }
                    }
                    // y_{n,g} [Mg, P] (+)= W_g [Mg, K] · B [K, P]
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(mg), blasint(p), blasint(k), 1,
                                w + g * mg * k, blasint(k), source, blasint(ldb), b == nil ? 0 : 1, target, blasint(p))
                }
            }
        }
    }

    /// `dx = conv2Dᵀ(dy, w)`, the gradient of `conv2D` with respect to its input (overwrites dx).
    /// - Parameters:
    ///   - gradOutput: dy, [batch, outputChannels, outputHeight, outputWidth]
    ///   - weight: w, [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
    ///   - gradInput: dx, [batch, inputChannels, inputHeight, inputWidth]
    public func conv2DBackwardData(_ gradOutput: any DeviceBuffer, _ weight: any DeviceBuffer,
                                   _ gradInput: any DeviceBuffer, descriptor d: Conv2DDescriptor) throws {
        try conv2DBackwardData(gradOutput, weight, gradInput, descriptor: d,
                               columnBudget: ConvolutionPlan.maximumColumnElements)
    }

    func conv2DBackwardData(_ gradOutput: any DeviceBuffer, _ weight: any DeviceBuffer,
                            _ gradInput: any DeviceBuffer, descriptor d: Conv2DDescriptor, columnBudget: Int,
                            workers: Int? = nil) throws {
        let plan = try ConvolutionPlan(d, op: "conv2DBackwardData", columnBudget: columnBudget, threads: threadCount,
                                       workers: workers)
        let dy = try cpuBuffer(gradOutput, op: "conv2DBackwardData", elements: d.outputCount).floats
        let w = try cpuBuffer(weight, op: "conv2DBackwardData", elements: d.weightCount).floats
        let dx = try cpuBuffer(gradInput, op: "conv2DBackwardData", elements: d.inputCount).floats
        let columns = cache.buffer(count: plan.workers * plan.columnCount)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        let packed = packedWeights(w, d, plan, m: k, k: mg, transposed: true)
        if let packed, let windows = plan.windows?.pointer, opal_conv_windows_implicit(windows) != 0 {
            implicitConv2DBackwardData(dy, dx, d, plan, windows, packed)
            return
        }
        let gatheredCount = plan.batchesGEMMs && packed == nil ? mg * p * plan.chunk : 0
        let gathered = cache.buffer(count: plan.workers * gatheredCount)
        // The table of a full chunk (a shorter last chunk builds its own).
        let table = plan.needsColumns ? plan.sumTable(count: plan.chunk) : nil
        forEachChunk(plan, batch: d.batch) { first, count, worker in
            let col = columns.floats + worker * plan.columnCount
            let pitch = count * p
            if let packed {
                // col_g [K, nb·P] = W_gᵀ · dy_{chunk, g}, read straight from NCHW (a 1×1 kernel writes dx).
                for g in 0..<d.groups {
                    let source = Blocked.planes(dy + (first * d.outputChannels + g * mg) * p, plane: p,
                                                elementStride: d.outputChannels * p)
                    let target = plan.needsColumns ? Blocked.rows(col + g * k * pitch, width: pitch)
                        : Blocked.planes(dx + (first * d.inputChannels + g * d.inputChannelsPerGroup) * p, plane: p,
                                         elementStride: d.inputChannels * p)
                    let a = packed.packed.floats + g * packed.perGroup
                    packedGEMM(packed, plan, n: pitch, worker: worker) { begin, end, scratch in
                        opal_packed_gemm(k, pitch, mg, a, source, target, nil, 0, begin, end, scratch)
                    }
                }
                if plan.needsColumns {
                    col2im(col, dx, d, plan, table: count == plan.chunk ? table! : plan.sumTable(count: count),
                           first: first, count: count)
                }
                return
            }
            if plan.batchesGEMMs {
                // Small planes: dy gathered side by side [Mg, nb·P], then col_g = W_gᵀ · dyT in one GEMM.
                let a = gathered.floats + worker * gatheredCount
                for g in 0..<d.groups {
                    gather(dy, a, d, first: first, count: count, group: g, parallel: plan.workers == 1)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(k), blasint(pitch), blasint(mg), 1,
                                w + g * mg * k, blasint(k), a, blasint(pitch), 0, col + g * k * pitch, blasint(pitch))
                }
                col2im(col, dx, d, plan, table: count == plan.chunk ? table! : plan.sumTable(count: count),
                       first: first, count: count)
                return
            }
            for j in 0..<count {
                let n = first + j
                for g in 0..<d.groups {
                    // col_g's slice of element j [K, P] = W_gᵀ [K, Mg] · dy_{n,g} [Mg, P]; a 1×1 kernel writes dx_n.
                    let (target, ldc) = plan.needsColumns ? (col + g * k * pitch + j * p, pitch)
                        : (dx + (n * d.inputChannels + g * d.inputChannelsPerGroup) * p, p)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(k), blasint(p), blasint(mg), 1,
                                w + g * mg * k, blasint(k), dy + (n * d.outputChannels + g * mg) * p, blasint(p),
                                0, target, blasint(ldc))
                }
            }
            if plan.needsColumns {
                col2im(col, dx, d, plan, table: count == plan.chunk ? table! : plan.sumTable(count: count),
                       first: first, count: count)
            }
        }
    }

    /// `dw = Σ_n dy_n ⋆ x_n`, the gradient of `conv2D` with respect to its weight (overwrites dw).
    /// - Parameters:
    ///   - input: x, [batch, inputChannels, inputHeight, inputWidth]
    ///   - gradOutput: dy, [batch, outputChannels, outputHeight, outputWidth]
    ///   - gradWeight: dw, [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
    public func conv2DBackwardWeight(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer,
                                     _ gradWeight: any DeviceBuffer, descriptor d: Conv2DDescriptor) throws {
        try conv2DBackwardWeight(input, gradOutput, gradWeight, descriptor: d,
                                 columnBudget: ConvolutionPlan.maximumColumnElements)
    }

    func conv2DBackwardWeight(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer,
                              _ gradWeight: any DeviceBuffer, descriptor d: Conv2DDescriptor, columnBudget: Int,
                              workers: Int? = nil) throws {
        let plan = try ConvolutionPlan(d, op: "conv2DBackwardWeight", columnBudget: columnBudget,
                                       threads: threadCount, workers: workers)
        let x = try cpuBuffer(input, op: "conv2DBackwardWeight", elements: d.inputCount).floats
        let dy = try cpuBuffer(gradOutput, op: "conv2DBackwardWeight", elements: d.outputCount).floats
        let dw = try cpuBuffer(gradWeight, op: "conv2DBackwardWeight", elements: d.weightCount).floats
        if usesPackedGEMM(plan), let windows = plan.windows?.pointer,
           opal_conv_windows_implicit(windows) != 0 {
            implicitConv2DBackwardWeight(x, dy, dw, d, plan, windows)
            return
        }
        let columns = cache.buffer(count: plan.workers * plan.columnCount)
        let gatheredCount = d.outputChannelsPerGroup * plan.positions * plan.chunk
        let gathered = cache.buffer(count: plan.chunk > 1 ? plan.workers * gatheredCount : 0)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        forEachChunkIntoPartials(plan, batch: d.batch, chunk: plan.chunk, dw, count: d.weightCount) {
            first, count, worker, target, accumulate in
            let col = columns.floats + worker * plan.columnCount
            let pitch = count * p
            if plan.needsColumns { im2col(x, col, d, plan, first: first, count: count) }
            for g in 0..<d.groups {
                // A = dyT [Mg, nb·P]: dy_{n,g} itself for one element, else gathered side by side.
                let (a, lda): (UnsafeMutablePointer<Float>, Int)
                if count == 1 {
                    (a, lda) = (dy + (first * d.outputChannels + g * mg) * p, p)
                } else {
                    a = gathered.floats + worker * gatheredCount
                    lda = pitch
                    gather(dy, a, d, first: first, count: count, group: g, parallel: plan.workers == 1)
                }
                let (source, ldb) = plan.needsColumns ? (col + g * k * pitch, pitch)
                    : (x + (first * d.inputChannels + g * d.inputChannelsPerGroup) * p, p)
                // dW_g [Mg, K] (+)= dyT [Mg, nb·P] · col_gᵀ [nb·P, K]
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(mg), blasint(k), blasint(pitch), 1,
                            a, blasint(lda), source, blasint(ldb),
                            accumulate ? 1 : 0, target + g * mg * k, blasint(k))
            }
        }
    }

    // MARK: Scheduling

    /// Runs `body(first, count, worker)` over the batch in chunks of at most `chunk` (default `plan.chunk`) elements. With one
    /// worker the chunks run in order on the calling thread. With several, the workers take chunks in order
    /// from a shared counter (a worker that starts late, or a core taken by another process, only means
    /// fewer chunks for that worker) and OpenBLAS runs single-threaded meanwhile (the cores are busy with
    /// the workers: a threaded GEMM would oversubscribe them).
    private func forEachChunk(_ plan: ConvolutionPlan, batch: Int, chunk: Int? = nil,
                              _ body: (Int, Int, Int) -> Void) {
        let chunk = chunk ?? plan.chunk
        if plan.workers == 1 {
            for first in stride(from: 0, to: batch, by: chunk) { body(first, min(chunk, batch - first), 0) }
            return
        }
        // The thread count is process-wide in OpenBLAS; another thread's GEMM meanwhile runs single-threaded
        // too (still correct, only slower).
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threadCount)) }
        let next = Atomic<Int>(0)
        let chunks = (batch + chunk - 1) / chunk
        // The chunks write disjoint batch ranges and each worker slot its own scratch.
        parallelFor(iterations: plan.workers, threads: plan.workers) { worker in
            while true {
                let index = next.add(1, ordering: .relaxed).oldValue
                guard index < chunks else { return }
                let first = index * chunk
                body(first, min(chunk, batch - first), worker)
            }
        }
    }

    /// `forEachChunk` for a sum over the batch into `result` (`count` floats): `body(first, count, worker,
    /// target, accumulate)` adds the chunk's terms to `target`, which is `result` itself for worker 0 and a
    /// partial of its own for each other worker, overwriting it where `accumulate` is false (the worker's
    /// first chunk). The partials are summed into `result` at the end (zeroed if worker 0 had no chunk).
    private func forEachChunkIntoPartials(_ plan: ConvolutionPlan, batch: Int, chunk: Int,
                                          _ result: UnsafeMutablePointer<Float>, count: Int,
                                          _ body: (Int, Int, Int, UnsafeMutablePointer<Float>, Bool) -> Void) {
        let partials = cache.buffer(count: (plan.workers - 1) * count)
        let started = UnsafeMutablePointer<Bool>.allocate(capacity: plan.workers)
        started.initialize(repeating: false, count: plan.workers)
        defer { started.deallocate() }
        forEachChunk(plan, batch: batch, chunk: chunk) { first, elements, worker in
            body(first, elements, worker, worker == 0 ? result : partials.floats + (worker - 1) * count, started[worker])
            started[worker] = true
        }
        if !started[0] { result.update(repeating: 0, count: count) }
        for worker in 1..<max(plan.workers, 1) where started[worker] {
            let partial = partials.floats + (worker - 1) * count
            for index in 0..<count { result[index] += partial[index] }
        }
    }

    /// Runs `body(start, end)` over `0..<count` planes: split over all cores when the plan has one worker
    /// (the chunk is the whole machine's), inline when it runs inside a batch-split worker.
    @inline(__always)
    private func forEachPlane(_ plan: ConvolutionPlan, count: Int, workPerPlane: Int, _ body: (Int, Int) -> Void) {
        if plan.workers == 1 {
            parallelRanges(count: count, minimumChunk: max(1, ParallelGrain.cheap / max(1, workPerPlane)), body)
        } else {
            body(0, count)
        }
    }

    // MARK: Packed GEMM (CVectorMath's packed_gemm.c)

    /// The weights of every group packed once per call for CVectorMath's GEMM, as A_g = W_g [Mg, K]
    /// (forward) or W_gᵀ [K, Mg] (`transposed`, backward data), with per-thread scratch for B's panels;
    /// nil where the packed GEMM is not available (no AVX-512): OpenBLAS serves instead.
    private func packedWeights(_ w: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor, _ plan: ConvolutionPlan,
                               m: Int, k: Int, transposed: Bool) -> PackedWeights? {
        guard usesPackedGEMM(plan) else { return nil }
        let perGroup = opal_packed_a_count(m, k)
        let panels = perGroup / (Int(OPAL_PACKED_ROWS) * max(k, 1))
        let weights = PackedWeights(
            packed: cache.buffer(count: d.groups * perGroup), perGroup: perGroup, m: m, k: k,
            scratch: cache.buffer(count: max(plan.workers, threadCount) * k * Int(OPAL_PACKED_COLUMNS)))
        let groupSize = d.outputChannelsPerGroup * plan.depth
        let (rowStride, columnStride) = transposed ? (1, m) : (k, 1)
        parallelRanges(count: d.groups * panels,
                       minimumChunk: max(1, ParallelGrain.cheap / (Int(OPAL_PACKED_ROWS) * max(k, 1)))) { start, end in
            for index in start..<end {
                let (g, panel) = index.quotientAndRemainder(dividingBy: panels)
                opal_pack_a(w + g * groupSize, rowStride, columnStride, m, k, panel, panel + 1,
                            weights.packed.floats + g * perGroup)
            }
        }
        return weights
    }

    /// Runs `gemm(tileBegin, tileEnd, scratch)`, one of CVectorMath's packed GEMMs over n columns: all its
    /// column tiles in a batch-split worker, the tiles split over the cores with one worker.
    private func packedGEMM(_ weights: PackedWeights, _ plan: ConvolutionPlan, n: Int, worker: Int,
                            _ gemm: (Int, Int, UnsafeMutablePointer<Float>) -> Int32) {
        guard plan.workers > 1 else {
            withoutActuallyEscaping(gemm) { gemm in forEachTileRange(weights, n: n) { _ in (gemm, {}) } }
            return
        }
        let tiles = (n + Int(OPAL_PACKED_COLUMNS) - 1) / Int(OPAL_PACKED_COLUMNS)
        let done = gemm(0, tiles, weights.scratch.floats + worker * weights.k * Int(OPAL_PACKED_COLUMNS))
        precondition(done == 1, "conv2D: the packed GEMM became unavailable during a call")
    }

    /// The forward pass as one implicit GEMM per group over the whole batch, y_g [Mg, N·P] = W_g · col_g, where
    /// B's panels are packed straight from the (phase) planes of x: no column matrix, so no batch chunks
    /// either. The column tiles go to the cores from a shared counter (a core slowed by another process
    /// just takes fewer).
    private func implicitConv2D(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                _ bias: UnsafeMutablePointer<Float>?, _ d: Conv2DDescriptor, _ plan: ConvolutionPlan,
                                _ windows: OpaquePointer, _ packed: PackedWeights) {
        let planeSize = d.inputHeight * d.inputWidth, p = d.outputHeight * d.outputWidth
        let cg = d.inputChannelsPerGroup
        // Strided shapes split each element's planes into phases lazily, into a small ring per thread, right
        // before the first tile that reads them packs them (still in cache then).
        let ring = opal_conv_windows_strided(windows) != 0 ? Int(OPAL_PACKED_COLUMNS) / p + 2 : 0
        let rings = cache.buffer(count: threadCount * ring * cg * planeSize)
        var geometry = plan.geometry
        let n = d.batch * p
        for g in 0..<d.groups {
            let target = Blocked.planes(y + g * d.outputChannelsPerGroup * p, plane: p,
                                        elementStride: d.outputChannels * p)
            let a = packed.packed.floats + g * packed.perGroup
            let groupBias = bias.map { $0 + g * d.outputChannelsPerGroup }
            withUnsafeMutablePointer(to: &geometry) { geometry in
                forEachTileRange(packed, n: n) { slot in
                    let resident = UnsafeMutablePointer<Int>.allocate(capacity: max(ring, 1))
                    resident.initialize(repeating: -1, count: max(ring, 1))
                    var source = ring > 0
                        ? opal_conv_columns(windows: windows, phases: rings.floats + slot * ring * cg * planeSize,
                                            channels: cg, source: x + g * cg * planeSize,
                                            sourceStride: d.inputChannels * planeSize, geometry: geometry, ring: ring,
                                            resident: resident)
                        : opal_conv_columns(windows: windows, phases: x + g * cg * planeSize, channels: d.inputChannels,
                                            source: nil, sourceStride: 0, geometry: nil, ring: 0, resident: nil)
                    return ({ begin, end, scratch in
                        opal_packed_conv_gemm(packed.m, n, packed.k, a, &source, target, groupBias, 0, begin, end, scratch)
                    }, { resident.deallocate() })
                }
            }
        }
    }

    /// The backward data pass as implicit GEMMs whose products are summed straight into dx's phase planes
    /// (col2im without the column matrix): per unit of batch elements, the phases zeroed, then for each group
    /// the product W_gᵀ · dy_{unit, g} added into them, then merged into dx. The units (two per worker, so that
    /// a worker slowed by another process takes fewer) go to the workers from a shared counter; each unit's
    /// columns stay on one thread, as their sums meet.
    private func implicitConv2DBackwardData(_ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                            _ d: Conv2DDescriptor, _ plan: ConvolutionPlan, _ windows: OpaquePointer,
                                            _ packed: PackedWeights) {
        let planeSize = d.inputHeight * d.inputWidth, p = d.outputHeight * d.outputWidth
        let mg = d.outputChannelsPerGroup
        let unit = plan.workers > 1 ? (d.batch + 2 * plan.workers - 1) / (2 * plan.workers) : d.batch
        let strided = opal_conv_windows_strided(windows) != 0
        let phaseCount = strided ? unit * d.inputChannels * planeSize : 0
        let phases = cache.buffer(count: plan.workers * phaseCount)
        let scratchCount = packed.k * Int(OPAL_PACKED_COLUMNS)
        var geometry = plan.geometry
        forEachChunk(plan, batch: d.batch, chunk: unit) { first, count, worker in
            let planes = count * d.inputChannels
            let target = dx + first * d.inputChannels * planeSize
            let sums = strided ? phases.floats + worker * phaseCount : target
            sums.update(repeating: 0, count: planes * planeSize)
            let n = count * p
            let tiles = (n + Int(OPAL_PACKED_COLUMNS) - 1) / Int(OPAL_PACKED_COLUMNS)
            for g in 0..<d.groups {
                let source = Blocked.planes(dy + (first * d.outputChannels + g * mg) * p, plane: p,
                                            elementStride: d.outputChannels * p)
                var columns = opal_conv_columns(windows: windows, phases: sums + g * d.inputChannelsPerGroup * planeSize,
                                                channels: d.inputChannels, source: nil, sourceStride: 0,
                                                geometry: nil, ring: 0, resident: nil)
                let done = opal_packed_conv_gemm_adjoint(packed.m, n, packed.k, packed.packed.floats + g * packed.perGroup,
                                                         source, &columns, 0, tiles,
                                                         packed.scratch.floats + worker * scratchCount)
                precondition(done == 1, "conv2DBackwardData: the packed GEMM became unavailable during a call")
            }
            if strided { opal_conv_merge_phases(sums, &geometry, windows, 0, planes, target) }
        }
    }

    /// The backward weight pass as implicit GEMMs, dW_g = Σ dy_g · col_gᵀ with col's panels packed (and
    /// transposed) straight from the phase planes: per unit of batch elements and group, the unit's product
    /// added to the worker's partial dW (worker 0's is dw itself), in depth blocks of whole elements whose
    /// planes are split into phases right before the block is packed. The units (two per worker) go to the
    /// workers from a shared counter; the partials are summed at the end.
    private func implicitConv2DBackwardWeight(_ x: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                                              _ dw: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                                              _ plan: ConvolutionPlan, _ windows: OpaquePointer) {
        let planeSize = d.inputHeight * d.inputWidth, p = d.outputHeight * d.outputWidth
        let (mg, k) = (d.outputChannelsPerGroup, plan.depth)
        let unit = plan.workers > 1 ? (d.batch + 2 * plan.workers - 1) / (2 * plan.workers) : d.batch
        let cg = d.inputChannelsPerGroup
        // Strided shapes split each depth block's elements into phases right before packing them (a ring
        // of one block per worker, still in cache when the block's tiles read it).
        let block = opal_conv_weight_block(p), depth = block * p
        let ring = opal_conv_windows_strided(windows) != 0 ? block : 0
        let ringCount = ring * cg * planeSize
        let packedCount = opal_packed_a_count(mg, depth), panelCount = depth * Int(OPAL_PACKED_COLUMNS)
        let perWorker = packedCount + panelCount + ringCount
        let scratch = cache.buffer(count: plan.workers * perWorker)
        var geometry = plan.geometry
        let resident = UnsafeMutablePointer<Int>.allocate(capacity: plan.workers * max(ring, 1))
        defer { resident.deallocate() }
        withUnsafeMutablePointer(to: &geometry) { geometry in
            forEachChunkIntoPartials(plan, batch: d.batch, chunk: unit, dw, count: d.weightCount) {
                first, count, worker, target, accumulate in
                let packedA = scratch.floats + worker * perWorker, panel = packedA + packedCount
                let phases = panel + panelCount, resident = resident + worker * max(ring, 1)
                let planes = x + (first * d.inputChannels) * planeSize
                for g in 0..<d.groups {
                    resident.initialize(repeating: -1, count: max(ring, 1))
                    var columns = ring > 0
                        ? opal_conv_columns(windows: windows, phases: phases, channels: cg,
                                            source: planes + g * cg * planeSize,
                                            sourceStride: d.inputChannels * planeSize, geometry: geometry,
                                            ring: ring, resident: resident)
                        : opal_conv_columns(windows: windows, phases: planes + g * cg * planeSize,
                                            channels: d.inputChannels, source: nil, sourceStride: 0, geometry: nil,
                                            ring: 0, resident: nil)
                    let done = opal_packed_conv_gemm_weight(mg, k, dy + (first * d.outputChannels + g * mg) * p, p,
                                                            d.outputChannels * p, &columns, count, target + g * mg * k,
                                                            k, accumulate ? 1 : 0, packedA, panel)
                    precondition(done == 1, "conv2DBackwardWeight: the packed GEMM became unavailable during a call")
                }
            }
        }
    }

    /// Runs an n-column packed GEMM over all its column tiles, on as many cores as the work pays for, each
    /// taking a few tiles at a time from a shared counter: `start(slot)` gives thread `slot` its
    /// `gemm(tileBegin, tileEnd, scratch)` (which may keep per-thread state) and a clean-up to run after.
    private func forEachTileRange(_ weights: PackedWeights, n: Int,
                                  _ start: (Int) -> ((Int, Int, UnsafeMutablePointer<Float>) -> Int32, () -> Void)) {
        let tiles = (n + Int(OPAL_PACKED_COLUMNS) - 1) / Int(OPAL_PACKED_COLUMNS)
        let scratchCount = weights.k * Int(OPAL_PACKED_COLUMNS)
        let threads = min(threadCount, max(1, weights.m * n * weights.k / ParallelGrain.gemm), tiles)
        let step = max(1, tiles / (threads * 8))
        let next = Atomic<Int>(0)
        parallelFor(iterations: threads, threads: threads) { slot in
            let (gemm, finish) = start(slot)
            defer { finish() }
            while true {
                let begin = next.add(step, ordering: .relaxed).oldValue
                guard begin < tiles else { return }
                let done = gemm(begin, min(begin + step, tiles), weights.scratch.floats + slot * scratchCount)
                precondition(done == 1, "conv2D: the packed GEMM became unavailable during a call")
            }
        }
    }

    // MARK: Column-matrix kernels

    /// col[(ci·kH + kh)·kW + kw, j·P + oh·oW + ow] = x[first + j, ci, ih, iw] (0 outside the input) for j < count.
    private func im2col(_ x: UnsafeMutablePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                        _ plan: ConvolutionPlan, first: Int, count: Int) {
        let planeSize = d.inputHeight * d.inputWidth
        let source = x + first * d.inputChannels * planeSize
        var geometry = plan.geometry
        plan.tapOffsets.withUnsafeBufferPointer { offsets in
            forEachPlaneRange(plan, count * d.inputChannels, d) { start, end, scratch in
                opal_im2col(source, &geometry, plan.windows?.pointer, offsets.baseAddress, d.inputChannels, start, end,
                            col, count * plan.positions, scratch)
            }
        }
    }

    /// The adjoint of `im2col`: dx[first + j, ci, ih, iw] = Σ of the col entries that im2col copied from there
    /// (each element of dx written once, from `ConvolutionPlan.SumTable`).
    private func col2im(_ col: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                        _ plan: ConvolutionPlan, table: ConvolutionPlan.SumTable, first: Int, count: Int) {
        let planeSize = d.inputHeight * d.inputWidth
        let pitch = count * plan.positions
        precondition(table.pitch == pitch, "col2im: sum table built for pitch \(table.pitch), used at \(pitch)")
        let target = dx + first * d.inputChannels * planeSize
        var geometry = plan.geometry
        table.entries.withUnsafeBufferPointer { entries in
            forEachPlaneRange(plan, count * d.inputChannels, d) { start, end, scratch in
                opal_col2im(col, plan.windows?.pointer, entries.baseAddress, table.slots, &geometry, d.inputChannels,
                            start, end, target, pitch, scratch)
            }
        }
    }

    /// Runs `body(start, end, scratch)` over ranges of `count` (element, channel) planes (`forEachPlane`),
    /// each range with scratch for one input plane (the phase planes of CVectorMath's im2col/col2im).
    private func forEachPlaneRange(_ plan: ConvolutionPlan, _ count: Int, _ d: Conv2DDescriptor,
                                   _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let planeSize = d.inputHeight * d.inputWidth
        forEachPlane(plan, count: count, workPerPlane: d.kernelHeight * d.kernelWidth * plan.positions) { start, end in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: planeSize)
            defer { scratch.deallocate() }
            body(start, end, scratch)
        }
    }

    /// gathered[m, j·P + p] = dy[first + j, g·Mg + m, p] for j < count.
    private func gather(_ dy: UnsafeMutablePointer<Float>, _ gathered: UnsafeMutablePointer<Float>,
                        _ d: Conv2DDescriptor, first: Int, count: Int, group: Int, parallel: Bool) {
        let (mg, p) = (d.outputChannelsPerGroup, d.outputHeight * d.outputWidth)
        let pitch = count * p
        let body: (Int, Int) -> Void = { start, end in
            for plane in start..<end {
                let (j, m) = plane.quotientAndRemainder(dividingBy: mg)
                (gathered + m * pitch + j * p).update(from: dy + ((first + j) * d.outputChannels + group * mg + m) * p,
                                                      count: p)
            }
        }
        if parallel {
            parallelRanges(count: count * mg, minimumChunk: max(1, ParallelGrain.cheap / p), body)
        } else {
            body(0, count * mg)
        }
    }
}

/// How the CPU fast path splits a convolution: how many batch-split workers, batch chunks of `chunk`
/// elements whose column matrix stays within budget, and how im2col/col2im read each plane.
struct ConvolutionPlan {
    /// Column-matrix budget with one worker: 8 Mi floats (32 MiB), large enough for one big GEMM per group
    /// on the usual layer sizes, small enough to stay in memory comfortably.
    static let maximumColumnElements = 8 << 20
    /// Column-matrix budget of each batch-split worker: 256 Ki floats (1 MiB), so that a chunk's column
    /// matrix stays in the core's L2 cache between im2col and the GEMM.
    static let workerColumnElements = 256 << 10

    /// Batch-split workers (1: chunks in order, work split inside each op).
    let workers: Int
    /// Batch elements per chunk.
    let chunk: Int
    /// K = Cg·kH·kW: the GEMM depth of the forward pass.
    let depth: Int
    /// P = oH·oW.
    let positions: Int
    /// A 1×1 kernel with stride 1 and no padding reads x directly (one batch element per GEMM).
    let needsColumns: Bool
    /// Planes too small for a GEMM per batch element (P < `batchedPositions`, DCGAN's 7×7 and 14×14):
    /// forward and backward data run one GEMM over the whole chunk (N = nb·P) through a [Mg, nb·P] scratch
    /// that is scattered into (forward) or gathered from (backward data) NCHW, instead of a GEMM of N = P per
    /// element, which would repack the weights for every few columns.
    let batchesGEMMs: Bool
    static let batchedPositions = 512
    /// Column-matrix elements of one worker.
    let columnCount: Int
    /// im2col's source offsets, [taps, P] (tap = kh·kW + kw): the input-plane offset ih·W + iw that
    /// output position t = oh·oW + ow reads through that tap, or −1 where (ih, iw) is padding.
    /// Empty where `windows` serve instead.
    let tapOffsets: [Int32]
    /// CVectorMath's AVX-512 windows of a contiguous shape (nil elsewhere: the tables serve).
    let windows: ConvolutionWindows?
    private let inputPlane: Int, taps: Int
    /// The descriptor's plane geometry for CVectorMath's im2col.
    let geometry: opal_conv_geometry

    /// col2im's table for one pitch (nb·P) of the column matrix: entries[s·HW + i] is the column entry
    /// (tap·pitch + t) that is input element i's s-th term, or −1; `slots` is the most terms any element has.
    struct SumTable {
        let pitch: Int
        let slots: Int
        let entries: [Int32]
    }

    /// - Parameters:
    ///   - columnBudget: the most elements of a chunk's column matrix (tests pass small values to force chunking).
    ///   - threads: the cores available.
    ///   - workers: forces the worker count (clamped to 1…batch); nil uses `threads` workers when the batch
    ///     has at least that many elements, else one.
    init(_ d: Conv2DDescriptor, op: String, columnBudget: Int = ConvolutionPlan.maximumColumnElements,
         threads: Int = 1, workers forced: Int? = nil) throws {
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: "\(d): \(problem)") }
        depth = d.inputChannelsPerGroup * d.kernelHeight * d.kernelWidth
        positions = d.outputHeight * d.outputWidth
        needsColumns = !(d.kernelHeight == 1 && d.kernelWidth == 1 && d.strideHeight == 1 && d.strideWidth == 1
                         && d.paddingHeight == 0 && d.paddingWidth == 0)
        if let forced {
            workers = max(1, min(forced, d.batch))
        } else if threads > 1 && d.batch >= threads {
            workers = threads
        } else {
            workers = 1
        }
        let perElement = d.inputChannels * d.kernelHeight * d.kernelWidth * positions
        // Several workers: at least four chunks each, so that they finish together.
        let perWorker = workers > 1 ? (d.batch + 4 * workers - 1) / (4 * workers) : d.batch
        let budget = workers > 1 ? min(columnBudget, ConvolutionPlan.workerColumnElements) : columnBudget
        chunk = needsColumns ? max(1, min(perWorker, budget / max(perElement, 1))) : 1
        columnCount = needsColumns ? perElement * chunk : 0
        batchesGEMMs = needsColumns && chunk > 1 && positions < ConvolutionPlan.batchedPositions
        guard [depth, positions * chunk, d.outputChannelsPerGroup].allSatisfy({ $0 <= Int(Int32.max) }) else {
            throw TensorError.invalidArgument(op: op, reason: "\(d): a GEMM extent exceeds the 32-bit range of BLAS")
        }
        (inputPlane, taps) = (d.inputHeight * d.inputWidth, d.kernelHeight * d.kernelWidth)
        geometry = opal_conv_geometry(
            height: d.inputHeight, width: d.inputWidth, outputHeight: d.outputHeight, outputWidth: d.outputWidth,
            kernelHeight: d.kernelHeight, kernelWidth: d.kernelWidth, strideHeight: d.strideHeight,
            strideWidth: d.strideWidth, paddingHeight: d.paddingHeight, paddingWidth: d.paddingWidth,
            dilationHeight: d.dilationHeight, dilationWidth: d.dilationWidth)
        windows = needsColumns ? ConvolutionWindows(geometry) : nil
        guard needsColumns, windows == nil else { tapOffsets = []; return }
        var offsets = [Int32](repeating: -1, count: taps * positions)
        for kh in 0..<d.kernelHeight {
            for kw in 0..<d.kernelWidth {
                let row = (kh * d.kernelWidth + kw) * positions
                for oh in 0..<d.outputHeight {
                    let ih = oh * d.strideHeight - d.paddingHeight + kh * d.dilationHeight
                    guard ih >= 0, ih < d.inputHeight else { continue }
                    for ow in 0..<d.outputWidth {
                        let iw = ow * d.strideWidth - d.paddingWidth + kw * d.dilationWidth
                        guard iw >= 0, iw < d.inputWidth else { continue }
                        offsets[row + oh * d.outputWidth + ow] = Int32(ih * d.inputWidth + iw)
                    }
                }
            }
        }
        tapOffsets = offsets
    }

    /// The col2im table for a chunk of `count` batch elements (pitch count·P): `tapOffsets` inverted (empty
    /// where the windows serve col2im).
    func sumTable(count: Int) -> SumTable {
        let pitch = count * positions
        if windows != nil { return SumTable(pitch: pitch, slots: 0, entries: []) }
        var terms = [Int](repeating: 0, count: inputPlane)
        for offset in tapOffsets where offset >= 0 { terms[Int(offset)] += 1 }
        let slots = terms.max() ?? 0
        var entries = [Int32](repeating: -1, count: slots * inputPlane)
        terms = [Int](repeating: 0, count: inputPlane)
        for tap in 0..<taps {
            for t in 0..<positions {
                let offset = Int(tapOffsets[tap * positions + t])
                guard offset >= 0 else { continue }
                entries[terms[offset] * inputPlane + offset] = Int32(tap * pitch + t)
                terms[offset] += 1
            }
        }
        return SumTable(pitch: pitch, slots: slots, entries: entries)
    }
}

/// The weights of a convolution packed for CVectorMath's GEMM (`CPUBackend.packedWeights`): group g's A
/// (m × k) at `packed + g · perGroup`, and k × 32 floats of scratch per thread.
struct PackedWeights {
    let packed: CPUBuffer
    let perGroup: Int, m: Int, k: Int
    let scratch: CPUBuffer
}

/// CVectorMath's blocked matrices over the CPU backend's buffers.
enum Blocked {
    /// A row-major matrix with `width` columns.
    static func rows(_ base: UnsafeMutablePointer<Float>, width: Int) -> opal_blocked_matrix {
        opal_blocked_matrix(base: base, rowStride: width, blockWidth: max(width, 1), blockStride: 0)
    }

    /// Channel planes of consecutive batch elements side by side: row r (a channel), column j·plane + i
    /// is base[j · elementStride + r · plane + i].
    static func planes(_ base: UnsafeMutablePointer<Float>, plane: Int, elementStride: Int) -> opal_blocked_matrix {
        opal_blocked_matrix(base: base, rowStride: plane, blockWidth: max(plane, 1), blockStride: elementStride)
    }
}

/// Owns CVectorMath's windows of one convolution shape (built once per call, freed with it).
final class ConvolutionWindows {
    let pointer: OpaquePointer
    init?(_ geometry: opal_conv_geometry) {
        var geometry = geometry
        guard let pointer = opal_conv_windows_create(&geometry) else { return nil }
        self.pointer = pointer
    }
    deinit { opal_conv_windows_free(pointer) }
}

// MARK: - Reference

extension CPUBackend {
    /// The simple reference for `conv2D`: the direct seven-deep loop of `Conv2DDescriptor`'s formula,
    /// accumulating in Double. Returns y as Double, [batch, outputChannels, outputHeight, outputWidth].
    public static func referenceConv2D(_ x: [Float], _ w: [Float], _ bias: [Float]?,
                                       descriptor d: Conv2DDescriptor) -> [Double] {
        var y = [Double](repeating: 0, count: d.outputCount)
        forEachTap(d) { yIndex, xIndex, wIndex in y[yIndex] += Double(x[xIndex]) * Double(w[wIndex]) }
        if let bias {
            let p = d.outputHeight * d.outputWidth
            for index in y.indices { y[index] += Double(bias[(index / p) % d.outputChannels]) }
        }
        return y
    }

    /// The simple reference for `conv2DBackwardData`: dx[x-index] += dy[y-index] · w[w-index] over every tap.
    public static func referenceConv2DBackwardData(_ dy: [Float], _ w: [Float],
                                                   descriptor d: Conv2DDescriptor) -> [Double] {
        var dx = [Double](repeating: 0, count: d.inputCount)
        forEachTap(d) { yIndex, xIndex, wIndex in dx[xIndex] += Double(dy[yIndex]) * Double(w[wIndex]) }
        return dx
    }

    /// The simple reference for `conv2DBackwardWeight`: dw[w-index] += dy[y-index] · x[x-index] over every tap.
    public static func referenceConv2DBackwardWeight(_ x: [Float], _ dy: [Float],
                                                     descriptor d: Conv2DDescriptor) -> [Double] {
        var dw = [Double](repeating: 0, count: d.weightCount)
        forEachTap(d) { yIndex, xIndex, wIndex in dw[wIndex] += Double(dy[yIndex]) * Double(x[xIndex]) }
        return dw
    }

    /// Calls `body(yIndex, xIndex, wIndex)` for every (output, in-range input, weight) triple of the convolution.
    static func forEachTap(_ d: Conv2DDescriptor, _ body: (Int, Int, Int) -> Void) {
        let (cg, mg) = (d.inputChannelsPerGroup, d.outputChannelsPerGroup)
        for n in 0..<d.batch {
            for co in 0..<d.outputChannels {
                let g = co / mg
                for oh in 0..<d.outputHeight {
                    for ow in 0..<d.outputWidth {
                        let yIndex = ((n * d.outputChannels + co) * d.outputHeight + oh) * d.outputWidth + ow
                        for cl in 0..<cg {
                            let ci = g * cg + cl
                            for kh in 0..<d.kernelHeight {
                                let ih = oh * d.strideHeight - d.paddingHeight + kh * d.dilationHeight
                                guard ih >= 0, ih < d.inputHeight else { continue }
                                for kw in 0..<d.kernelWidth {
                                    let iw = ow * d.strideWidth - d.paddingWidth + kw * d.dilationWidth
                                    guard iw >= 0, iw < d.inputWidth else { continue }
                                    let xIndex = ((n * d.inputChannels + ci) * d.inputHeight + ih) * d.inputWidth + iw
                                    let wIndex = ((co * cg + cl) * d.kernelHeight + kh) * d.kernelWidth + kw
                                    body(yIndex, xIndex, wIndex)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
