import OpalCore

// Max and average pooling on OpenCL (Kernels/pool.cl). One work-item per output element in the
// forward passes and per input element in the backward passes, which gather from the windows that
// contain their element, so no two work-items write the same place and no atomics are needed.

extension OpenCLBackend {
    /// Max pooling; `indices[n, c, oh, ow]` = `ih·inputWidth + iw` of the maximum (first on ties).
    public func maxPool2D(_ input: any DeviceBuffer, _ output: any DeviceBuffer, _ indices: any DeviceBuffer,
                          descriptor d: Pool2DDescriptor) throws {
        try d.validate("maxPool2D")
        let x = try own(input, "maxPool2D", elements: d.inputCount)
        let y = try own(output, "maxPool2D", elements: d.outputCount)
        let index = try own(indices, "maxPool2D", elements: d.outputCount)
        if d.isTwoByTwoTiling {
            try launchPlanes(.maxPool2D2x2, [.buffer(x.buffer), .buffer(y.buffer), .buffer(index.buffer)]
                             + d.planeArguments, width: d.outputWidth, height: d.outputHeight, planes: d.batch * d.channels)
            return
        }
        try launchPlanes(.maxPool2D, [.buffer(x.buffer), .buffer(y.buffer), .buffer(index.buffer)] + d.kernelArguments,
                         width: d.outputWidth, height: d.outputHeight, planes: d.batch * d.channels)
    }

    /// `dx[n, c, p] = Σ dy[n, c, o]` over the outputs o whose window contains p and whose index is p.
    public func maxPool2DBackward(_ gradOutput: any DeviceBuffer, _ indices: any DeviceBuffer,
                                  _ gradInput: any DeviceBuffer, descriptor d: Pool2DDescriptor) throws {
        try d.validate("maxPool2DBackward")
        let dy = try own(gradOutput, "maxPool2DBackward", elements: d.outputCount)
        let index = try own(indices, "maxPool2DBackward", elements: d.outputCount)
        let dx = try own(gradInput, "maxPool2DBackward", elements: d.inputCount)
        let (kernel, geometry) = d.isTwoByTwoTiling ? (OpenCLKernel.maxPool2D2x2Backward, d.planeArguments)
            : (.maxPool2DBackward, d.kernelArguments)
        try launchPlanes(kernel, [.buffer(dy.buffer), .buffer(index.buffer), .buffer(dx.buffer)] + geometry,
                         width: d.inputWidth, height: d.inputHeight, planes: d.batch * d.channels)
    }

    /// Average pooling (padding counts as zeros: divisor kH·kW).
    public func avgPool2D(_ input: any DeviceBuffer, _ output: any DeviceBuffer, descriptor d: Pool2DDescriptor) throws {
        try d.validate("avgPool2D")
        let x = try own(input, "avgPool2D", elements: d.inputCount)
        let y = try own(output, "avgPool2D", elements: d.outputCount)
        try launchPlanes(.avgPool2D, [.buffer(x.buffer), .buffer(y.buffer)] + d.kernelArguments,
                         width: d.outputWidth, height: d.outputHeight, planes: d.batch * d.channels)
    }

    /// `dx[n, c, ih, iw] = Σ_{windows containing (ih, iw)} dy[n, c, oh, ow] / (kH·kW)`.
    public func avgPool2DBackward(_ gradOutput: any DeviceBuffer, _ gradInput: any DeviceBuffer,
                                  descriptor d: Pool2DDescriptor) throws {
        try d.validate("avgPool2DBackward")
        let dy = try own(gradOutput, "avgPool2DBackward", elements: d.outputCount)
        let dx = try own(gradInput, "avgPool2DBackward", elements: d.inputCount)
        try launchPlanes(.avgPool2DBackward, [.buffer(dy.buffer), .buffer(dx.buffer)] + d.kernelArguments,
                         width: d.inputWidth, height: d.inputHeight, planes: d.batch * d.channels)
    }

    /// 3-D launch over `planes` images of `height × width` elements: local (Lx, Ly, 1) with Lx ≤ 32 along
    /// the width, global (width rounded up to Lx, height rounded up to Ly, planes).
    private func launchPlanes(_ kernel: OpenCLKernel, _ arguments: [KernelArgument], width: Int, height: Int,
                              planes: Int) throws {
        let preferredWidth = min(32, smallestPowerOfTwo(atLeast: width))
        let workGroupSize = parameters.workGroupSize
        try enqueue(kernel, arguments, global: { total in
            // total = Lx·Ly; Lx = min(preferredWidth, total) recovers the split chosen below.
            let localWidth = min(preferredWidth, total)
            let localHeight = total / localWidth
            return [roundUp(width, to: localWidth), roundUp(height, to: localHeight), planes]
        }, local: { limit in
            let cap = largestPowerOfTwo(atMost: min(workGroupSize, limit))
            let localWidth = min(preferredWidth, cap)
            let localHeight = min(smallestPowerOfTwo(atLeast: height), cap / localWidth)
            return [localWidth, localHeight, 1]
        })
    }
}

extension Pool2DDescriptor {
    /// Throws `TensorError.invalidArgument` naming `op` when the geometry is invalid.
    func validate(_ op: String) throws {
        if let problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(self))") }
        guard inputHeight * inputWidth <= Int(Int32.max) else {
            throw TensorError.invalidArgument(
                op: op, reason: "\(inputHeight)×\(inputWidth) planes exceed the kernels' 32-bit indexing")
        }
    }

    /// The geometry arguments shared by every general kernel of pool.cl, after the buffers.
    var kernelArguments: [OpenCLBackend.KernelArgument] {
        planeArguments + [.int(kernelHeight), .int(kernelWidth), .int(strideHeight), .int(strideWidth),
                          .int(paddingHeight), .int(paddingWidth)]
    }

    /// Planes and extents: the arguments of the fixed-window kernels (`max_pool_2d_2x2…`).
    var planeArguments: [OpenCLBackend.KernelArgument] {
        [.int(batch * channels), .int(inputHeight), .int(inputWidth), .int(outputHeight), .int(outputWidth)]
    }

    /// 2×2 windows at stride 2 without padding, which the loop-free kernels handle.
    var isTwoByTwoTiling: Bool {
        kernelHeight == 2 && kernelWidth == 2 && strideHeight == 2 && strideWidth == 2
            && paddingHeight == 0 && paddingWidth == 0
    }
}
