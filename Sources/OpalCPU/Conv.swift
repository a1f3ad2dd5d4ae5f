import CBLAS
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
// im2col walks each (element, channel) plane tap by tap, each tap a stride-1 window whose valid output
// rows/columns are computed up front (`ConvolutionPlan.TapWindow`). A strided plane is first split into its
// stride² phase planes (rows ih ≡ a mod sH, columns iw ≡ b mod sW), in which a strided tap is a stride-1
// window. Where the window's source is as wide as the output (the "same" stride-1 convolution, DCGAN's
// 4×4 stride-2 ones) a tap's rows are one contiguous copy whose padding columns are zeroed afterwards.
// `referenceConv2D…` below are the direct loops (Double accumulation) the fast path is tested against
// (Tests/OpalCPUTests/ConvTests.swift).

extension CPUBackend {
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
        let columns = cache.buffer(count: plan.workers * plan.columnCount)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        let productCount = plan.batchesGEMMs ? mg * p * plan.chunk : 0
        let products = cache.buffer(count: plan.workers * productCount)
        forEachChunk(plan, batch: d.batch) { first, count, worker in
            let col = columns.floats + worker * plan.columnCount
            let pitch = count * p
            if plan.needsColumns { im2col(x, col, d, plan, first: first, count: count) }
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
        let gatheredCount = plan.batchesGEMMs ? mg * p * plan.chunk : 0
        let gathered = cache.buffer(count: plan.workers * gatheredCount)
        forEachChunk(plan, batch: d.batch) { first, count, worker in
            let col = columns.floats + worker * plan.columnCount
            let pitch = count * p
            if plan.batchesGEMMs {
                // Small planes: dy gathered side by side [Mg, nb·P], then col_g = W_gᵀ · dyT in one GEMM.
                let a = gathered.floats + worker * gatheredCount
                for g in 0..<d.groups {
                    gather(dy, a, d, first: first, count: count, group: g, parallel: plan.workers == 1)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(k), blasint(pitch), blasint(mg), 1,
                                w + g * mg * k, blasint(k), a, blasint(pitch), 0, col + g * k * pitch, blasint(pitch))
                }
                col2im(col, dx, d, plan, first: first, count: count)
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
            if plan.needsColumns { col2im(col, dx, d, plan, first: first, count: count) }
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
        let columns = cache.buffer(count: plan.workers * plan.columnCount)
        let gatheredCount = d.outputChannelsPerGroup * plan.positions * plan.chunk
        let gathered = cache.buffer(count: plan.chunk > 1 ? plan.workers * gatheredCount : 0)
        // Worker 0 accumulates into dw itself, worker i > 0 into partials[i − 1]; they are summed at the end.
        let partials = cache.buffer(count: (plan.workers - 1) * d.weightCount)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        // started[i]: worker i has written its first chunk (later chunks accumulate with β = 1).
        let started = UnsafeMutablePointer<Bool>.allocate(capacity: plan.workers)
        started.initialize(repeating: false, count: plan.workers)
        defer { started.deallocate() }
        forEachChunk(plan, batch: d.batch) { first, count, worker in
            let col = columns.floats + worker * plan.columnCount
            let target = worker == 0 ? dw : partials.floats + (worker - 1) * d.weightCount
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
                            started[worker] ? 1 : 0, target + g * mg * k, blasint(k))
            }
            started[worker] = true
        }
        if !started[0] { dw.update(repeating: 0, count: d.weightCount) }
        for worker in 1..<max(plan.workers, 1) where started[worker] {
            let partial = partials.floats + (worker - 1) * d.weightCount
            for index in 0..<d.weightCount { dw[index] += partial[index] }
        }
    }

    // MARK: Scheduling

    /// Runs `body(first, count, worker)` over the batch in chunks of at most `plan.chunk` elements. With one
    /// worker the chunks run in order on the calling thread. With several, the workers take chunks in order
    /// from a shared counter (a worker that starts late, or a core taken by another process, only means
    /// fewer chunks for that worker) and OpenBLAS runs single-threaded meanwhile (the cores are busy with
    /// the workers: a threaded GEMM would oversubscribe them).
    private func forEachChunk(_ plan: ConvolutionPlan, batch: Int, _ body: (Int, Int, Int) -> Void) {
        if plan.workers == 1 {
            for first in stride(from: 0, to: batch, by: plan.chunk) { body(first, min(plan.chunk, batch - first), 0) }
            return
        }
        // The thread count is process-wide in OpenBLAS; another thread's GEMM meanwhile runs single-threaded
        // too (still correct, only slower).
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threadCount)) }
        let next = Atomic<Int>(0)
        let chunks = (batch + plan.chunk - 1) / plan.chunk
        // The chunks write disjoint batch ranges, each worker its own scratch, and concurrentPerform returns
        // only when all have finished, so handing the non-Sendable body (it captures raw pointers) to the
        // workers is safe.
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: plan.workers) { worker in
                while true {
                    let index = next.add(1, ordering: .relaxed).oldValue
                    guard index < chunks else { return }
                    let first = index * plan.chunk
                    body(first, min(plan.chunk, batch - first), worker)
                }
            }
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

    // MARK: Column-matrix kernels

    /// col[(ci·kH + kh)·kW + kw, j·P + oh·oW + ow] = x[first + j, ci, ih, iw] (0 outside the input) for j < count.
    private func im2col(_ x: UnsafeMutablePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                        _ plan: ConvolutionPlan, first: Int, count: Int) {
        let (planeSize, p, taps) = (d.inputHeight * d.inputWidth, plan.positions, d.kernelHeight * d.kernelWidth)
        let pitch = count * p
        forEachPlane(plan, count: count * d.inputChannels, workPerPlane: taps * p) { start, end in
            plan.withPhaseScratch { phases in
                for plane in start..<end {
                    let (j, c) = plane.quotientAndRemainder(dividingBy: d.inputChannels)
                    im2colPlane(x + ((first + j) * d.inputChannels + c) * planeSize, col + c * taps * pitch + j * p,
                                pitch: pitch, phases: phases, d, plan)
                }
            }
        }
    }

    /// The adjoint of `im2col`: dx[first + j, ci, ih, iw] = Σ of the col entries that im2col copied from there.
    private func col2im(_ col: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                        _ plan: ConvolutionPlan, first: Int, count: Int) {
        let (planeSize, p, taps) = (d.inputHeight * d.inputWidth, plan.positions, d.kernelHeight * d.kernelWidth)
        let pitch = count * p
        forEachPlane(plan, count: count * d.inputChannels, workPerPlane: taps * p) { start, end in
            plan.withPhaseScratch { phases in
                for plane in start..<end {
                    let (j, c) = plane.quotientAndRemainder(dividingBy: d.inputChannels)
                    col2imPlane(col + c * taps * pitch + j * p, dx + ((first + j) * d.inputChannels + c) * planeSize,
                                pitch: pitch, phases: phases, d, plan)
                }
            }
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

/// im2col of one input plane: rows[(kh·kW + kw)·pitch + oh·oW + ow] = plane[ih, iw], 0 outside the plane.
/// A strided plane is first split into its phase planes (`ConvolutionPlan.TapWindow`), after which every
/// tap is a stride-1 window copy: one block copy when the source is as wide as the output.
@inline(__always)
private func im2colPlane(_ plane: UnsafeMutablePointer<Float>, _ rows: UnsafeMutablePointer<Float>, pitch: Int,
                         phases: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor, _ plan: ConvolutionPlan) {
    let source: UnsafeMutablePointer<Float>
    if plan.isStrided {
        plan.splitPhases(plane, into: phases)
        source = phases
    } else {
        source = plane
    }
    let (outputHeight, outputWidth) = (d.outputHeight, d.outputWidth)
    for (tap, window) in plan.windows.enumerated() {
        let target = rows + tap * pitch
        let (r0, r1, c0, c1) = (window.rows.lowerBound, window.rows.upperBound,
                                window.columns.lowerBound, window.columns.upperBound)
        guard r0 < r1, c0 < c1 else {
            target.update(repeating: 0, count: outputHeight * outputWidth)
            continue
        }
        let from = source + window.source + window.shift
        if r0 > 0 { target.update(repeating: 0, count: r0 * outputWidth) }
        if r1 < outputHeight { (target + r1 * outputWidth).update(repeating: 0, count: (outputHeight - r1) * outputWidth) }
        if window.sourceWidth == outputWidth {
            // Output position t reads from[t] on every valid row: one block copy, then the padding columns.
            let (start, end) = (r0 * outputWidth + c0, (r1 - 1) * outputWidth + c1)
            (target + start).update(from: from + start, count: end - start)
            zeroPaddingColumns(target, rows: r0..<r1, columns: c0..<c1, width: outputWidth)
        } else {
            for outputRow in r0..<r1 {
                let line = target + outputRow * outputWidth
                let read = from + outputRow * window.sourceWidth
                var o = 0
                while o < c0 { line[o] = 0; o += 1 }
                (line + c0).update(from: read + c0, count: c1 - c0)
                o = c1
                while o < outputWidth { line[o] = 0; o += 1 }
            }
        }
    }
}

/// col2im of one input plane (the adjoint of `im2colPlane`): adds every column entry back where im2col
/// copied it from, window by window into the plane (stride 1) or into zeroed phase planes that are then
/// interleaved into it (strided; every element of the plane belongs to exactly one phase). Where a window's
/// source is as wide as the output, the column matrix's padding entries are zeroed (`rows` is scratch) so
/// that the tap is one long add.
@inline(__always)
private func col2imPlane(_ rows: UnsafeMutablePointer<Float>, _ plane: UnsafeMutablePointer<Float>, pitch: Int,
                         phases: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor, _ plan: ConvolutionPlan) {
    let target = plan.isStrided ? phases : plane
    target.update(repeating: 0, count: d.inputHeight * d.inputWidth)
    let outputWidth = d.outputWidth
    for (tap, window) in plan.windows.enumerated() {
        let (r0, r1, c0, c1) = (window.rows.lowerBound, window.rows.upperBound,
                                window.columns.lowerBound, window.columns.upperBound)
        guard r0 < r1, c0 < c1 else { continue }
        let source = rows + tap * pitch
        let into = target + window.source + window.shift
        if window.sourceWidth == outputWidth {
            zeroPaddingColumns(source, rows: r0..<r1, columns: c0..<c1, width: outputWidth)
            let (start, end) = (r0 * outputWidth + c0, (r1 - 1) * outputWidth + c1)
            addRows(source + start, into + start, count: end - start)
        } else {
            for outputRow in r0..<r1 {
                addRows(source + outputRow * outputWidth + c0, into + outputRow * window.sourceWidth + c0,
                        count: c1 - c0)
            }
        }
    }
    if plan.isStrided { plan.mergePhases(phases, into: plane) }
}

/// Zeroes the columns outside `columns` on the rows `rows` of a [·, width] tap row of the column matrix (the
/// padding columns that a tap's one block copy or add passes over).
@inline(__always)
private func zeroPaddingColumns(_ tap: UnsafeMutablePointer<Float>, rows: Range<Int>, columns: Range<Int>, width: Int) {
    guard columns.lowerBound > 0 || columns.upperBound < width else { return }
    for row in rows {
        let line = tap + row * width
        var o = 0
        while o < columns.lowerBound { line[o] = 0; o += 1 }
        o = columns.upperBound
        while o < width { line[o] = 0; o += 1 }
    }
}

/// `target[i] += source[i]` for i < count (the two never overlap: one is scratch, the other dx).
@inline(__always)
private func addRows(_ source: UnsafeMutablePointer<Float>, _ target: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count {
        let sum = UnsafeRawPointer(target + i).loadUnaligned(as: SIMD8<Float>.self)
            + UnsafeRawPointer(source + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(target + i).storeBytes(of: sum, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { target[i] += source[i]; i += 1 }
}

/// How the CPU fast path splits a convolution: how many batch-split workers, batch chunks of `chunk`
/// elements whose column matrix stays within budget, and the output rows/columns each tap can fill.
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
    /// A stride above 1 on either axis: im2col reads phase planes instead of the input plane.
    let isStrided: Bool
    /// Where each tap (kh·kW + kw) reads: see `TapWindow`.
    let windows: [TapWindow]
    /// Phase plane extents along each axis (index a < sH: rows ih ≡ a mod sH), and their offsets in the
    /// phase scratch, phase (a, b) at phaseOffsets[a·sW + b].
    private let phaseHeights: [Int]
    private let phaseWidths: [Int]
    private let phaseOffsets: [Int]
    private let inputHeight: Int, inputWidth: Int, strideHeight: Int, strideWidth: Int

    /// Every tap's window is as wide as the output ("same" stride-1 convolutions, and stride-s ones whose
    /// output is the input's width / s): each tap's valid rows are one contiguous run of its source.
    var contiguousRows: Bool { windows.allSatisfy { $0.sourceWidth == outputWidth } }
    private let outputWidth: Int

    /// One tap of the kernel as a stride-1 window. With stride s, input row ih = oh·s + r (r = kh·dH − pH)
    /// lies in phase a = r mod s at phase row oh + ⌊r / s⌋, so the tap reads
    ///   col[tap, oh·oW + ow] = source[(oh·Ws + ow) + shift]   for oh ∈ rows, ow ∈ columns (0 elsewhere)
    /// where source is the phase plane (a, b) (the input plane itself at stride 1), Ws its width and
    /// shift = ⌊r_h / sH⌋·Ws + ⌊r_w / sW⌋. The same holds for any dilation.
    struct TapWindow {
        /// Offset of the source phase plane in the phase scratch (0 at stride 1: the plane itself).
        let source: Int
        let sourceWidth: Int
        let shift: Int
        /// The output rows and columns whose source element lies inside the (phase) plane.
        let rows: Range<Int>
        let columns: Range<Int>
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
        (inputHeight, inputWidth, strideHeight, strideWidth) = (d.inputHeight, d.inputWidth, d.strideHeight, d.strideWidth)
        outputWidth = d.outputWidth
        isStrided = d.strideHeight > 1 || d.strideWidth > 1
        // Phase a along an axis of extent n with stride s holds indices a, a + s, …: ⌈(n − a) / s⌉ of them.
        let heights = (0..<d.strideHeight).map { max(0, (d.inputHeight - $0 + d.strideHeight - 1) / d.strideHeight) }
        let widths = (0..<d.strideWidth).map { max(0, (d.inputWidth - $0 + d.strideWidth - 1) / d.strideWidth) }
        var offsets: [Int] = [], total = 0
        for height in heights {
            for width in widths { offsets.append(total); total += height * width }
        }
        (phaseHeights, phaseWidths, phaseOffsets) = (heights, widths, offsets)
        // Along one axis, tap offset r = k·dilation − padding: (phase, shift within the phase, valid outputs).
        func axis(_ r: Int, stride: Int, extents: [Int], output: Int) -> (phase: Int, shift: Int, valid: Range<Int>) {
            let phase = ((r % stride) + stride) % stride
            let shift = (r - phase) / stride
            let extent = extents[phase]
            // 0 ≤ o + shift < extent
            let lower = min(max(0, -shift), output)
            return (phase, shift, lower..<max(lower, min(output, extent - shift)))
        }
        var windows: [TapWindow] = []
        for kh in 0..<d.kernelHeight {
            let row = axis(kh * d.dilationHeight - d.paddingHeight, stride: d.strideHeight, extents: heights,
                           output: d.outputHeight)
            for kw in 0..<d.kernelWidth {
                let column = axis(kw * d.dilationWidth - d.paddingWidth, stride: d.strideWidth, extents: widths,
                                  output: d.outputWidth)
                let width = widths[column.phase]
                windows.append(TapWindow(source: offsets[row.phase * d.strideWidth + column.phase], sourceWidth: width,
                                         shift: row.shift * width + column.shift, rows: row.valid,
                                         columns: column.valid))
            }
        }
        self.windows = windows
    }

    /// Runs `body` with scratch for one plane's phases (unused, and empty, at stride 1).
    @inline(__always)
    func withPhaseScratch(_ body: (UnsafeMutablePointer<Float>) -> Void) {
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: isStrided ? inputHeight * inputWidth : 1)
        defer { scratch.deallocate() }
        body(scratch)
    }

    /// phase(a, b)[i, j] = plane[i·sH + a, j·sW + b].
    func splitPhases(_ plane: UnsafeMutablePointer<Float>, into phases: UnsafeMutablePointer<Float>) {
        for a in 0..<strideHeight {
            for b in 0..<strideWidth {
                let (phase, width) = (phases + phaseOffsets[a * strideWidth + b], phaseWidths[b])
                for i in 0..<phaseHeights[a] {
                    let (source, target) = (plane + (i * strideHeight + a) * inputWidth + b, phase + i * width)
                    for j in 0..<width { target[j] = source[j * strideWidth] }
                }
            }
        }
    }

    /// The inverse of `splitPhases`: plane[i·sH + a, j·sW + b] = phase(a, b)[i, j] (writes every element).
    func mergePhases(_ phases: UnsafeMutablePointer<Float>, into plane: UnsafeMutablePointer<Float>) {
        for a in 0..<strideHeight {
            for b in 0..<strideWidth {
                let (phase, width) = (phases + phaseOffsets[a * strideWidth + b], phaseWidths[b])
                for i in 0..<phaseHeights[a] {
                    let (source, target) = (phase + i * width, plane + (i * strideHeight + a) * inputWidth + b)
                    for j in 0..<width { target[j * strideWidth] = source[j] }
                }
            }
        }
    }
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
