import OpalCore

// 2-D max / average pooling of the CPU backend (mirrors Kernels/pool.cl). Tensors are NCHW and
// each of the batch·channels planes is pooled on its own, so the planes are split across threads.
//   x, dx: [batch, channels, inputHeight, inputWidth]
//   y, dy, indices: [batch, channels, outputHeight, outputWidth]
// A window starts at (oh·sH − pH, ow·sW − pW) and is clipped to the input: padding never wins a
// maximum and counts as zero in an average (divisor kH·kW, PyTorch's count_include_pad).
// The backward passes scatter each output's gradient into a zeroed input plane, visiting the outputs in
// row-major order, so every input element receives its terms in the same order as the gather of pool.cl.
// The simple references are the Double loops in Tests/OpalCPUTests/PoolTests.swift.

extension CPUBackend {
    /// Max pooling; `indices[n, c, oh, ow]` = `ih·inputWidth + iw` of the window's maximum (the first
    /// in row-major order on ties; a NaN counts as the maximum, the first NaN wins).
    public func maxPool2D(_ input: any DeviceBuffer, _ output: any DeviceBuffer, _ indices: any DeviceBuffer,
                          descriptor d: Pool2DDescriptor) throws {
        try d.validate("maxPool2D")
        let x = try cpuBuffer(input, op: "maxPool2D", elements: d.inputCount).floats
        let y = try cpuBuffer(output, op: "maxPool2D", elements: d.outputCount).floats
        let index = try cpuBuffer(indices, op: "maxPool2D", elements: d.outputCount).ints
        let (inputPlane, outputPlane) = (d.inputHeight * d.inputWidth, d.outputHeight * d.outputWidth)
        let work = max(1, outputPlane * d.kernelHeight * d.kernelWidth)
        let fast = d.isTwoByTwoStrideTwo
        parallelRanges(count: d.batch * d.channels, minimumChunk: max(1, ParallelGrain.cheap / work)) { start, end in
            for plane in start..<end {
                if fast {
                    maxPool2x2Plane(x + plane * inputPlane, y + plane * outputPlane, index + plane * outputPlane,
                                    width: d.inputWidth, outputHeight: d.outputHeight, outputWidth: d.outputWidth)
                } else {
                    maxPoolPlane(x + plane * inputPlane, y + plane * outputPlane, index + plane * outputPlane, d)
                }
            }
        }
    }

    /// `dx[n, c, p] = Σ_{outputs o with indices[n, c, o] = p} dy[n, c, o]`; every element of dx is written.
    /// Indices outside the plane (never produced by `maxPool2D`) are ignored.
    public func maxPool2DBackward(_ gradOutput: any DeviceBuffer, _ indices: any DeviceBuffer,
                                  _ gradInput: any DeviceBuffer, descriptor d: Pool2DDescriptor) throws {
        try d.validate("maxPool2DBackward")
        let dy = try cpuBuffer(gradOutput, op: "maxPool2DBackward", elements: d.outputCount).floats
        let index = try cpuBuffer(indices, op: "maxPool2DBackward", elements: d.outputCount).ints
        let dx = try cpuBuffer(gradInput, op: "maxPool2DBackward", elements: d.inputCount).floats
        let (inputPlane, outputPlane) = (d.inputHeight * d.inputWidth, d.outputHeight * d.outputWidth)
        let fast = d.isTwoByTwoStrideTwo
        parallelRanges(count: d.batch * d.channels,
                       minimumChunk: max(1, ParallelGrain.cheap / max(1, inputPlane + outputPlane))) { start, end in
            for plane in start..<end {
                let dxp = dx + plane * inputPlane, dyp = dy + plane * outputPlane, ip = index + plane * outputPlane
                // The fast path handles indices inside their own window (all that maxPool2D produces); a plane
                // with any other index is redone by the general scatter.
                if fast && maxPool2x2BackwardPlane(dyp, ip, dxp, height: d.inputHeight, width: d.inputWidth,
                                                   outputHeight: d.outputHeight, outputWidth: d.outputWidth) {
                    continue
                }
                dxp.update(repeating: 0, count: inputPlane)
                for o in 0..<outputPlane {
                    let p = Int(ip[o])
                    if p >= 0 && p < inputPlane { dxp[p] += dyp[o] }
                }
            }
        }
    }

    /// Average pooling: `y[n, c, oh, ow] = (Σ_window x) / (kH·kW)`, padded positions counting as zeros.
    public func avgPool2D(_ input: any DeviceBuffer, _ output: any DeviceBuffer, descriptor d: Pool2DDescriptor) throws {
        try d.validate("avgPool2D")
        let x = try cpuBuffer(input, op: "avgPool2D", elements: d.inputCount).floats
        let y = try cpuBuffer(output, op: "avgPool2D", elements: d.outputCount).floats
        let (inputPlane, outputPlane) = (d.inputHeight * d.inputWidth, d.outputHeight * d.outputWidth)
        let inverse = 1 / Float(d.kernelHeight * d.kernelWidth)
        let work = max(1, outputPlane * d.kernelHeight * d.kernelWidth)
        parallelRanges(count: d.batch * d.channels, minimumChunk: max(1, ParallelGrain.cheap / work)) { start, end in
            for plane in start..<end {
                avgPoolPlane(x + plane * inputPlane, y + plane * outputPlane, d, inverse: inverse)
            }
        }
    }

    /// `dx[n, c, ih, iw] = Σ_{windows containing (ih, iw)} dy[n, c, oh, ow] / (kH·kW)`; every element written.
    public func avgPool2DBackward(_ gradOutput: any DeviceBuffer, _ gradInput: any DeviceBuffer,
                                  descriptor d: Pool2DDescriptor) throws {
        try d.validate("avgPool2DBackward")
        let dy = try cpuBuffer(gradOutput, op: "avgPool2DBackward", elements: d.outputCount).floats
        let dx = try cpuBuffer(gradInput, op: "avgPool2DBackward", elements: d.inputCount).floats
        let (inputPlane, outputPlane) = (d.inputHeight * d.inputWidth, d.outputHeight * d.outputWidth)
        let inverse = 1 / Float(d.kernelHeight * d.kernelWidth)
        let work = max(1, outputPlane * d.kernelHeight * d.kernelWidth + inputPlane)
        parallelRanges(count: d.batch * d.channels, minimumChunk: max(1, ParallelGrain.cheap / work)) { start, end in
            for plane in start..<end {
                avgPoolBackwardPlane(dy + plane * outputPlane, dx + plane * inputPlane, d, inverse: inverse)
            }
        }
    }
}

/// Max pooling of one plane (see `maxPool2D`). The geometry is copied into locals and the loops are
/// `while` loops: this keeps the optimiser's code free of range checks in the innermost loop.
@inline(__always)
private func maxPoolPlane(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                          _ index: UnsafeMutablePointer<Int32>, _ d: Pool2DDescriptor) {
    let (inputHeight, width) = (d.inputHeight, d.inputWidth)
    let (outputHeight, outputWidth) = (d.outputHeight, d.outputWidth)
    let (kernelHeight, kernelWidth) = (d.kernelHeight, d.kernelWidth)
    let (strideHeight, strideWidth) = (d.strideHeight, d.strideWidth)
    let (paddingHeight, paddingWidth) = (d.paddingHeight, d.paddingWidth)
    for oh in 0..<outputHeight {
        let h0 = oh * strideHeight - paddingHeight
        let hStart = max(h0, 0), hEnd = min(h0 + kernelHeight, inputHeight)
        for ow in 0..<outputWidth {
            let w0 = ow * strideWidth - paddingWidth
            let wStart = max(w0, 0), wEnd = min(w0 + kernelWidth, width)
            // Fast scan with a single compare (a NaN never wins it); `probe` turns NaN when the window holds
            // a NaN or an infinity, and only then is the window scanned again for its first NaN.
            var bestIndex = hStart * width + wStart
            var best = x[bestIndex]
            var probe: Float = 0
            var h = hStart
            while h < hEnd {
                var w = wStart
                while w < wEnd {
                    let position = h * width + w
                    let value = x[position]
                    let take = value > best
                    best = take ? value : best
                    bestIndex = take ? position : bestIndex
                    probe += value - value
                    w += 1
                }
                h += 1
            }
            if probe.isNaN && !best.isNaN {
                scan: for h in hStart..<hEnd {
                    for w in wStart..<wEnd where x[h * width + w].isNaN {
                        best = x[h * width + w]; bestIndex = h * width + w
                        break scan
                    }
                }
            }
            y[oh * outputWidth + ow] = best
            index[oh * outputWidth + ow] = Int32(truncatingIfNeeded: bestIndex)
        }
    }
}

/// `maxPoolPlane` for a 2×2 window with stride 2 and no padding, four outputs at a time: two SIMD8 loads
/// (one per input row) hold four windows, split into their even and odd columns; a branch-free tournament
/// (left against right in each row, then top against bottom) keeps the first maximum in row-major order
/// because a later candidate replaces the best only when it is strictly better (greater, or a NaN against a
/// non-NaN). A row whose width is not a multiple of four ends with a group that overlaps the previous one
/// (the overlapped outputs are written twice with the same values); rows narrower than four outputs take
/// the scalar form of the same tournament.
@inline(__always)
private func maxPool2x2Plane(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                             _ index: UnsafeMutablePointer<Int32>, width: Int, outputHeight: Int, outputWidth: Int) {
    let columns = SIMD4<Int32>(0, 2, 4, 6)
    let below = Int32(truncatingIfNeeded: width)
    var oh = 0
    while oh < outputHeight {
        let top = x + 2 * oh * width
        let rowOutput = y + oh * outputWidth, rowIndex = index + oh * outputWidth
        let topIndex = Int32(truncatingIfNeeded: 2 * oh * width)
        if outputWidth >= 4 {
            var ow = 0
            while ow < outputWidth {
                let start = min(ow, outputWidth - 4)
                let upper = UnsafeRawPointer(top + 2 * start).loadUnaligned(as: SIMD8<Float>.self)
                let lower = UnsafeRawPointer(top + width + 2 * start).loadUnaligned(as: SIMD8<Float>.self)
                let base = SIMD4<Int32>(repeating: topIndex &+ Int32(truncatingIfNeeded: 2 * start)) &+ columns
                var (best, bestIndex) = (upper.evenHalf, base)
                var take = strictlyBetter(upper.oddHalf, than: best)
                best = select(take, upper.oddHalf, best)
                bestIndex = select(take, base &+ 1, bestIndex)
                var (second, secondIndex) = (lower.evenHalf, base &+ below)
                take = strictlyBetter(lower.oddHalf, than: second)
                second = select(take, lower.oddHalf, second)
                secondIndex = select(take, base &+ (below &+ 1), secondIndex)
                take = strictlyBetter(second, than: best)
                best = select(take, second, best)
                bestIndex = select(take, secondIndex, bestIndex)
                UnsafeMutableRawPointer(rowOutput + start).storeBytes(of: best, as: SIMD4<Float>.self)
                UnsafeMutableRawPointer(rowIndex + start).storeBytes(of: bestIndex, as: SIMD4<Int32>.self)
                ow += 4
            }
        } else {
            for ow in 0..<outputWidth {
                let position = 2 * oh * width + 2 * ow
                var (best, bestIndex) = (x[position], position)
                if strictlyBetter(x[position + 1], than: best) { (best, bestIndex) = (x[position + 1], position + 1) }
                var (second, secondIndex) = (x[position + width], position + width)
                if strictlyBetter(x[position + width + 1], than: second) {
                    (second, secondIndex) = (x[position + width + 1], position + width + 1)
                }
                if strictlyBetter(second, than: best) { (best, bestIndex) = (second, secondIndex) }
                rowOutput[ow] = best
                rowIndex[ow] = Int32(truncatingIfNeeded: bestIndex)
            }
        }
        oh += 1
    }
}

/// A later window element replaces the current best: greater, or a NaN where the best is not one.
/// The masks are lanes of all ones (true) or zeros, kept as integers: left as `SIMDMask`, their logic
/// compiles to per-lane bit packing here.
@inline(__always)
private func strictlyBetter(_ value: SIMD4<Float>, than best: SIMD4<Float>) -> SIMD4<Int32> {
    lanes(value .> best) | (lanes(value .!= value) & lanes(best .== best))
}

@inline(__always)
private func lanes(_ mask: SIMDMask<SIMD4<Int32>>) -> SIMD4<Int32> { unsafeBitCast(mask, to: SIMD4<Int32>.self) }

@inline(__always)
private func strictlyBetter(_ value: Float, than best: Float) -> Bool {
    value > best || (value.isNaN && !best.isNaN)
}

/// `mask ? a : b` lane by lane (mask lanes all ones or zeros), as bit operations: the standard library's
/// `replacing(with:where:)` compiles to a branch per lane here.
@inline(__always)
private func select(_ bits: SIMD4<Int32>, _ a: SIMD4<Int32>, _ b: SIMD4<Int32>) -> SIMD4<Int32> {
    (a & bits) | (b & ~bits)
}

@inline(__always)
private func select(_ mask: SIMD4<Int32>, _ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> {
    unsafeBitCast(select(mask, unsafeBitCast(a, to: SIMD4<Int32>.self), unsafeBitCast(b, to: SIMD4<Int32>.self)),
                  to: SIMD4<Float>.self)
}

/// The backward pass of `maxPool2x2Plane`: the windows do not overlap, so each input element is written
/// once, `dx = dy` of its window where the window's index points at it and 0 elsewhere (the column and row
/// that no window covers, at an odd width or height, are zeroed), with no zeroing pass and no scatter.
/// Returns false, with dx partly written, when some index lies outside its own window (then the caller
/// runs the general scatter on the plane).
@inline(__always)
private func maxPool2x2BackwardPlane(_ dy: UnsafeMutablePointer<Float>, _ index: UnsafeMutablePointer<Int32>,
                                     _ dx: UnsafeMutablePointer<Float>, height: Int, width: Int,
                                     outputHeight: Int, outputWidth: Int) -> Bool {
    let columns = SIMD4<Int32>(0, 2, 4, 6)
    let below = Int32(truncatingIfNeeded: width)
    let zero = SIMD4<Float>()
    var inside = SIMD4<Int32>(repeating: -1)
    var scalarInside = true
    var oh = 0
    while oh < outputHeight {
        let top = dx + 2 * oh * width
        let rowGradient = dy + oh * outputWidth, rowIndex = index + oh * outputWidth
        let topIndex = Int32(truncatingIfNeeded: 2 * oh * width)
        if outputWidth >= 4 {
            var ow = 0
            while ow < outputWidth {
                let start = min(ow, outputWidth - 4)
                let gradient = UnsafeRawPointer(rowGradient + start).loadUnaligned(as: SIMD4<Float>.self)
                let selected = UnsafeRawPointer(rowIndex + start).loadUnaligned(as: SIMD4<Int32>.self)
                let base = SIMD4<Int32>(repeating: topIndex &+ Int32(truncatingIfNeeded: 2 * start)) &+ columns
                let (m0, m1) = (lanes(selected .== base), lanes(selected .== base &+ 1))
                let (m2, m3) = (lanes(selected .== base &+ below), lanes(selected .== base &+ (below &+ 1)))
                inside &= m0 | m1 | m2 | m3
                var upper = SIMD8<Float>(), lower = SIMD8<Float>()
                upper.evenHalf = select(m0, gradient, zero)
                upper.oddHalf = select(m1, gradient, zero)
                lower.evenHalf = select(m2, gradient, zero)
                lower.oddHalf = select(m3, gradient, zero)
                UnsafeMutableRawPointer(top + 2 * start).storeBytes(of: upper, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(top + width + 2 * start).storeBytes(of: lower, as: SIMD8<Float>.self)
                ow += 4
            }
        } else {
            for ow in 0..<outputWidth {
                let position = 2 * oh * width + 2 * ow
                let (gradient, selected) = (rowGradient[ow], Int(rowIndex[ow]))
                dx[position] = selected == position ? gradient : 0
                dx[position + 1] = selected == position + 1 ? gradient : 0
                dx[position + width] = selected == position + width ? gradient : 0
                dx[position + width + 1] = selected == position + width + 1 ? gradient : 0
                scalarInside = scalarInside && (selected == position || selected == position + 1
                    || selected == position + width || selected == position + width + 1)
            }
        }
        if width > 2 * outputWidth {   // odd width: the last column of both rows
            top[width - 1] = 0
            top[2 * width - 1] = 0
        }
        oh += 1
    }
    if height > 2 * outputHeight {   // odd height: the last row
        (dx + 2 * outputHeight * width).update(repeating: 0, count: width)
    }
    return scalarInside && inside == SIMD4(repeating: -1)
}

/// Average pooling of one plane (see `avgPool2D`), written like `maxPoolPlane`.
@inline(__always)
private func avgPoolPlane(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ d: Pool2DDescriptor,
                          inverse: Float) {
    let (inputHeight, width) = (d.inputHeight, d.inputWidth)
    let (outputHeight, outputWidth) = (d.outputHeight, d.outputWidth)
    let (kernelHeight, kernelWidth) = (d.kernelHeight, d.kernelWidth)
    let (strideHeight, strideWidth) = (d.strideHeight, d.strideWidth)
    let (paddingHeight, paddingWidth) = (d.paddingHeight, d.paddingWidth)
    for oh in 0..<outputHeight {
        let h0 = oh * strideHeight - paddingHeight
        let hStart = max(h0, 0), hEnd = min(h0 + kernelHeight, inputHeight)
        for ow in 0..<outputWidth {
            let w0 = ow * strideWidth - paddingWidth
            let wStart = max(w0, 0), wEnd = min(w0 + kernelWidth, width)
            var sum: Float = 0
            var h = hStart
            while h < hEnd {
                var w = wStart
                while w < wEnd { sum += x[h * width + w]; w += 1 }
                h += 1
            }
            y[oh * outputWidth + ow] = sum * inverse
        }
    }
}

/// The backward pass of `avgPoolPlane`: zeroes dx, then adds each output's dy/(kH·kW) to its window, the
/// outputs taken in row-major order.
@inline(__always)
private func avgPoolBackwardPlane(_ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                  _ d: Pool2DDescriptor, inverse: Float) {
    let (inputHeight, width) = (d.inputHeight, d.inputWidth)
    let (outputHeight, outputWidth) = (d.outputHeight, d.outputWidth)
    let (kernelHeight, kernelWidth) = (d.kernelHeight, d.kernelWidth)
    let (strideHeight, strideWidth) = (d.strideHeight, d.strideWidth)
    let (paddingHeight, paddingWidth) = (d.paddingHeight, d.paddingWidth)
    dx.update(repeating: 0, count: inputHeight * width)
    for oh in 0..<outputHeight {
        let h0 = oh * strideHeight - paddingHeight
        let hStart = max(h0, 0), hEnd = min(h0 + kernelHeight, inputHeight)
        for ow in 0..<outputWidth {
            let w0 = ow * strideWidth - paddingWidth
            let wStart = max(w0, 0), wEnd = min(w0 + kernelWidth, width)
            let gradient = dy[oh * outputWidth + ow] * inverse
            var h = hStart
            while h < hEnd {
                var w = wStart
                while w < wEnd { dx[h * width + w] += gradient; w += 1 }
                h += 1
            }
        }
    }
}

extension Pool2DDescriptor {
    /// A 2×2 window with stride 2 and no padding: the case of `maxPool2x2Plane`.
    var isTwoByTwoStrideTwo: Bool {
        kernelHeight == 2 && kernelWidth == 2 && strideHeight == 2 && strideWidth == 2
            && paddingHeight == 0 && paddingWidth == 0
    }

    /// Throws `TensorError.invalidArgument` naming `op` when the geometry is invalid.
    func validate(_ op: String) throws {
        if let problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(self))") }
    }
}
