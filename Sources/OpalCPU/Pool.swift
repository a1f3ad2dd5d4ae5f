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
        parallelRanges(count: d.batch * d.channels, minimumChunk: max(1, ParallelGrain.cheap / work)) { start, end in
            for plane in start..<end {
                maxPoolPlane(x + plane * inputPlane, y + plane * outputPlane, index + plane * outputPlane, d)
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
        parallelRanges(count: d.batch * d.channels,
                       minimumChunk: max(1, ParallelGrain.cheap / max(1, inputPlane + outputPlane))) { start, end in
            for plane in start..<end {
                let dxp = dx + plane * inputPlane, dyp = dy + plane * outputPlane, ip = index + plane * outputPlane
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
    /// Throws `TensorError.invalidArgument` naming `op` when the geometry is invalid.
    func validate(_ op: String) throws {
        if let problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(self))") }
    }
}
