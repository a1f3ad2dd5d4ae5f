import CBLAS
import Dispatch
import OpalCore

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
//   forward          out[Mg, nb·P] = W_g · col_g, then y[n0 + j, g·Mg + m, p] = out[m, j·P + p] + bias   (scatter)
//   backward data    dyT[Mg, nb·P] (gathered dy), colGrad_g = W_gᵀ · dyT, then col2im sums colGrad into dx
//   backward weight  dW_g += dyT · col_gᵀ   (beta = 1 after the first chunk)
// im2col, col2im, scatter and gather run over (batch element, channel) planes on all cores; each plane
// is a pointer loop whose valid output-column range is computed up front, so the inner loops are
// branch-free copies (memcpy when the stride is 1) that the compiler vectorises.
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

    func conv2D(_ input: any DeviceBuffer, _ weight: any DeviceBuffer, _ bias: (any DeviceBuffer)?,
                _ output: any DeviceBuffer, descriptor d: Conv2DDescriptor, columnBudget: Int) throws {
        let plan = try ConvolutionPlan(d, op: "conv2D", columnBudget: columnBudget)
        let x = try cpuBuffer(input, op: "conv2D", elements: d.inputCount).floats
        let w = try cpuBuffer(weight, op: "conv2D", elements: d.weightCount).floats
        let b = try bias.map { try cpuBuffer($0, op: "conv2D", elements: d.outputChannels).floats }
        let y = try cpuBuffer(output, op: "conv2D", elements: d.outputCount).floats
        let col = plan.needsColumns ? cache.buffer(count: plan.columnCount) : nil
        let product = cache.buffer(count: plan.productCount)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        for n0 in stride(from: 0, to: d.batch, by: plan.chunk) {
            let nb = min(plan.chunk, d.batch - n0)
            let columns = nb * p
            if let col { im2col(x, col.floats, d, plan, first: n0, count: nb) }
            for g in 0..<d.groups {
                // B = col_g [K, nb·P], or x itself for a 1×1 kernel (then nb == 1).
                let (source, ldb) = col.map { ($0.floats + g * k * columns, columns) }
                    ?? (x + (n0 * d.inputChannels + g * d.inputChannelsPerGroup) * p, p)
                // One batch element: the GEMM writes y's planes directly and the bias is added in place.
                let direct = nb == 1 ? y + (n0 * d.outputChannels + g * mg) * p : nil
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(mg), blasint(columns), blasint(k), 1,
                            w + g * mg * k, blasint(k), source, blasint(ldb),
                            0, direct ?? product.floats, blasint(columns))
                scatter(direct ?? product.floats, y, bias: b.map { $0 + g * mg }, d, first: n0, count: nb, group: g)
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
                            _ gradInput: any DeviceBuffer, descriptor d: Conv2DDescriptor, columnBudget: Int) throws {
        let plan = try ConvolutionPlan(d, op: "conv2DBackwardData", columnBudget: columnBudget)
        let dy = try cpuBuffer(gradOutput, op: "conv2DBackwardData", elements: d.outputCount).floats
        let w = try cpuBuffer(weight, op: "conv2DBackwardData", elements: d.weightCount).floats
        let dx = try cpuBuffer(gradInput, op: "conv2DBackwardData", elements: d.inputCount).floats
        let col = cache.buffer(count: plan.needsColumns ? plan.columnCount : 0)
        let gathered = cache.buffer(count: plan.productCount)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        for n0 in stride(from: 0, to: d.batch, by: plan.chunk) {
            let nb = min(plan.chunk, d.batch - n0)
            let columns = nb * p
            for g in 0..<d.groups {
                gather(dy, gathered.floats, d, first: n0, count: nb, group: g)
                // colGrad_g [K, nb·P] = W_gᵀ · dyT; a 1×1 kernel writes dx's planes directly (nb == 1).
                let (target, ldc) = plan.needsColumns ? (col.floats + g * k * columns, columns)
                    : (dx + (n0 * d.inputChannels + g * d.inputChannelsPerGroup) * p, p)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(k), blasint(columns), blasint(mg), 1,
                            w + g * mg * k, blasint(k), gathered.floats, blasint(columns),
                            0, target, blasint(ldc))
            }
            if plan.needsColumns { col2im(col.floats, dx, d, plan, first: n0, count: nb) }
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
                              _ gradWeight: any DeviceBuffer, descriptor d: Conv2DDescriptor, columnBudget: Int) throws {
        let plan = try ConvolutionPlan(d, op: "conv2DBackwardWeight", columnBudget: columnBudget)
        let x = try cpuBuffer(input, op: "conv2DBackwardWeight", elements: d.inputCount).floats
        let dy = try cpuBuffer(gradOutput, op: "conv2DBackwardWeight", elements: d.outputCount).floats
        let dw = try cpuBuffer(gradWeight, op: "conv2DBackwardWeight", elements: d.weightCount).floats
        let col = plan.needsColumns ? cache.buffer(count: plan.columnCount) : nil
        let gathered = cache.buffer(count: plan.productCount)
        let (mg, k, p) = (d.outputChannelsPerGroup, plan.depth, plan.positions)
        for n0 in stride(from: 0, to: d.batch, by: plan.chunk) {
            let nb = min(plan.chunk, d.batch - n0)
            let columns = nb * p
            if let col { im2col(x, col.floats, d, plan, first: n0, count: nb) }
            for g in 0..<d.groups {
                gather(dy, gathered.floats, d, first: n0, count: nb, group: g)
                let (source, ldb) = col.map { ($0.floats + g * k * columns, columns) }
                    ?? (x + (n0 * d.inputChannels + g * d.inputChannelsPerGroup) * p, p)
                // dW_g [Mg, K] (+)= dyT [Mg, nb·P] · col_gᵀ [nb·P, K]
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(mg), blasint(k), blasint(columns), 1,
                            gathered.floats, blasint(columns), source, blasint(ldb),
                            n0 == 0 ? 0 : 1, dw + g * mg * k, blasint(k))
            }
        }
    }

    // MARK: Column-matrix kernels

    /// col[(ci·kH + kh)·kW + kw, j·P + oh·oW + ow] = x[first + j, ci, ih, iw] (0 outside the input) for j < count.
    private func im2col(_ x: UnsafeMutablePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                        _ plan: ConvolutionPlan, first: Int, count: Int) {
        let (h, w, oh, ow, p) = (d.inputHeight, d.inputWidth, d.outputHeight, d.outputWidth, plan.positions)
        let columns = count * p
        let grain = max(1, ParallelGrain.cheap / max(1, d.kernelHeight * d.kernelWidth * p))
        parallelRanges(count: count * d.inputChannels, minimumChunk: grain) { start, end in
            for plane in start..<end {
                let (j, c) = plane.quotientAndRemainder(dividingBy: d.inputChannels)
                let source = x + ((first + j) * d.inputChannels + c) * h * w
                for kh in 0..<d.kernelHeight {
                    for kw in 0..<d.kernelWidth {
                        let row = col + ((c * d.kernelHeight + kh) * d.kernelWidth + kw) * columns + j * p
                        let span = plan.validColumns(kw: kw)
                        let columnOffset = kw * d.dilationWidth - d.paddingWidth
                        for outRow in 0..<oh {
                            let target = row + outRow * ow
                            let ih = outRow * d.strideHeight - d.paddingHeight + kh * d.dilationHeight
                            guard ih >= 0, ih < h, span.lowerBound < span.upperBound else {
                                target.update(repeating: 0, count: ow)
                                continue
                            }
                            let line = source + ih * w + columnOffset
                            (target).update(repeating: 0, count: span.lowerBound)
                            if d.strideWidth == 1 {
                                (target + span.lowerBound).update(from: line + span.lowerBound,
                                                                  count: span.count)
                            } else {
                                let sw = d.strideWidth
                                for o in span { target[o] = line[o * sw] }
                            }
                            (target + span.upperBound).update(repeating: 0, count: ow - span.upperBound)
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`: dx[first + j, ci, ih, iw] = Σ of the col entries that im2col copied from there.
    private func col2im(_ col: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ d: Conv2DDescriptor,
                        _ plan: ConvolutionPlan, first: Int, count: Int) {
        let (h, w, oh, ow, p) = (d.inputHeight, d.inputWidth, d.outputHeight, d.outputWidth, plan.positions)
        let columns = count * p
        let grain = max(1, ParallelGrain.cheap / max(1, d.kernelHeight * d.kernelWidth * p))
        parallelRanges(count: count * d.inputChannels, minimumChunk: grain) { start, end in
            for plane in start..<end {
                let (j, c) = plane.quotientAndRemainder(dividingBy: d.inputChannels)
                let target = dx + ((first + j) * d.inputChannels + c) * h * w
                target.update(repeating: 0, count: h * w)
                for kh in 0..<d.kernelHeight {
                    for kw in 0..<d.kernelWidth {
                        let row = col + ((c * d.kernelHeight + kh) * d.kernelWidth + kw) * columns + j * p
                        let span = plan.validColumns(kw: kw)
                        guard span.lowerBound < span.upperBound else { continue }
                        let columnOffset = kw * d.dilationWidth - d.paddingWidth
                        for outRow in 0..<oh {
                            let ih = outRow * d.strideHeight - d.paddingHeight + kh * d.dilationHeight
                            guard ih >= 0, ih < h else { continue }
                            let source = row + outRow * ow
                            let line = target + ih * w + columnOffset
                            if d.strideWidth == 1 {
                                for o in span { line[o] += source[o] }
                            } else {
                                let sw = d.strideWidth
                                for o in span { line[o * sw] += source[o] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// y[first + j, g·Mg + m, p] = product[m, j·P + p] + bias[m] for j < count; when `product` already is
    /// y's slice (one batch element, GEMM written in place) only the bias is added.
    private func scatter(_ product: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                         bias: UnsafeMutablePointer<Float>?, _ d: Conv2DDescriptor, first: Int, count: Int, group: Int) {
        let (mg, p) = (d.outputChannelsPerGroup, d.outputHeight * d.outputWidth)
        let columns = count * p
        let inPlace = product == y + (first * d.outputChannels + group * mg) * p
        if inPlace && bias == nil { return }
        parallelRanges(count: count * mg, minimumChunk: max(1, ParallelGrain.cheap / p)) { start, end in
            for plane in start..<end {
                let (j, m) = plane.quotientAndRemainder(dividingBy: mg)
                let source = product + m * columns + j * p
                let target = y + ((first + j) * d.outputChannels + group * mg + m) * p
                if inPlace {
                    if let bias { let value = bias[m]; for index in 0..<p { target[index] += value } }
                } else if let bias {
                    let value = bias[m]
                    for index in 0..<p { target[index] = source[index] + value }
                } else {
                    target.update(from: source, count: p)
                }
            }
        }
    }

    /// gathered[m, j·P + p] = dy[first + j, g·Mg + m, p] for j < count (the inverse of `scatter`).
    private func gather(_ dy: UnsafeMutablePointer<Float>, _ gathered: UnsafeMutablePointer<Float>,
                        _ d: Conv2DDescriptor, first: Int, count: Int, group: Int) {
        let (mg, p) = (d.outputChannelsPerGroup, d.outputHeight * d.outputWidth)
        let columns = count * p
        if count == 1 {
            gathered.update(from: dy + (first * d.outputChannels + group * mg) * p, count: mg * p)
            return
        }
        parallelRanges(count: count * mg, minimumChunk: max(1, ParallelGrain.cheap / p)) { start, end in
            for plane in start..<end {
                let (j, m) = plane.quotientAndRemainder(dividingBy: mg)
                (gathered + m * columns + j * p).update(from: dy + ((first + j) * d.outputChannels + group * mg + m) * p,
                                                        count: p)
            }
        }
    }
}

/// How the CPU fast path splits a convolution: batch chunks of `chunk` elements whose column matrix
/// stays under `maximumColumnElements`, and the output columns each kernel column kw can fill.
struct ConvolutionPlan {
    /// Column-matrix budget: 8 Mi floats (32 MiB), large enough for one big GEMM per group on the
    /// usual layer sizes, small enough to stay in memory comfortably.
    static let maximumColumnElements = 8 << 20

    let chunk: Int
    /// K = Cg·kH·kW: the GEMM depth of the forward pass.
    let depth: Int
    /// P = oH·oW.
    let positions: Int
    /// A 1×1 kernel with stride 1 and no padding reads x directly (one batch element per GEMM).
    let needsColumns: Bool
    let columnCount: Int
    let productCount: Int
    private let ranges: [Range<Int>]

    /// - Parameter columnBudget: the most elements of the column matrix (tests pass small values to force chunking).
    init(_ d: Conv2DDescriptor, op: String, columnBudget: Int = ConvolutionPlan.maximumColumnElements) throws {
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: "\(d): \(problem)") }
        depth = d.inputChannelsPerGroup * d.kernelHeight * d.kernelWidth
        positions = d.outputHeight * d.outputWidth
        needsColumns = !(d.kernelHeight == 1 && d.kernelWidth == 1 && d.strideHeight == 1 && d.strideWidth == 1
                         && d.paddingHeight == 0 && d.paddingWidth == 0)
        let perElement = d.inputChannels * d.kernelHeight * d.kernelWidth * positions
        chunk = needsColumns ? max(1, min(d.batch, columnBudget / max(perElement, 1))) : 1
        columnCount = needsColumns ? perElement * chunk : 0
        productCount = d.outputChannelsPerGroup * positions * chunk
        guard [depth, positions * chunk, d.outputChannelsPerGroup].allSatisfy({ $0 <= Int(Int32.max) }) else {
            throw TensorError.invalidArgument(op: op, reason: "\(d): a GEMM extent exceeds the 32-bit range of BLAS")
        }
        // Output columns ow with 0 ≤ ow·sW − pW + kw·dW < inputWidth, for each kw.
        ranges = (0..<d.kernelWidth).map { kw in
            let offset = kw * d.dilationWidth - d.paddingWidth
            // smallest ow with ow·sW + offset ≥ 0, and the end where ow·sW + offset ≥ inputWidth
            let lower = offset >= 0 ? 0 : (-offset + d.strideWidth - 1) / d.strideWidth
            let upperLimit = d.inputWidth - offset   // ow·sW < upperLimit
            let upper = upperLimit <= 0 ? 0 : (upperLimit + d.strideWidth - 1) / d.strideWidth
            let clampedLower = min(lower, d.outputWidth), clampedUpper = min(max(upper, clampedLower), d.outputWidth)
            return clampedLower..<clampedUpper
        }
    }

    func validColumns(kw: Int) -> Range<Int> { ranges[kw] }
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
