// Image ops on NCHW tensors: convolution, transposed convolution, pooling, batch normalisation and
// nearest upsampling, with their pullbacks. Geometry is validated here; kernels live in the backends.

extension Tensor {
    /// The device's image op set, or a clear error when its backend lacks one.
    package func imageBackend(_ op: String) throws -> any ImageBackend {
        guard let backend = backend as? any ImageBackend else {
            throw TensorError.device("\(op) is not available on \(device.name) (\(device.backend.deviceDescription))")
        }
        return backend
    }

    private func requireImage(_ op: String) throws {
        try requireFloat(op)
        guard rank == 4 else {
            throw TensorError.invalidShape(op: op, shape: shape, reason: "expected an NCHW tensor [batch, channels, height, width]")
        }
    }

    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`).
    ///
    /// - Parameters:
    ///   - weight: [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
    ///   - bias: [outputChannels] or nil
    /// - Returns: [batch, outputChannels, outputHeight, outputWidth]
    public func conv2D(weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                       dilation: (Int, Int) = (1, 1), groups: Int = 1) throws -> Tensor {
        let op = "conv2D"
        try requireImage(op); try weight.requireFloat(op); try requireSameDevice(weight, op)
        guard weight.rank == 4, weight.shape[1] * groups == shape[1] else {
            throw TensorError.shapeMismatch(op: "conv2D (input [N, C, H, W], weight [Cout, C/groups, kH, kW])",
                                            lhs: shape, rhs: weight.shape)
        }
        let descriptor = Conv2DDescriptor(
            batch: shape[0], inputChannels: shape[1], inputHeight: shape[2], inputWidth: shape[3],
            outputChannels: weight.shape[0], kernelHeight: weight.shape[2], kernelWidth: weight.shape[3],
            strideHeight: stride.0, strideWidth: stride.1, paddingHeight: padding.0, paddingWidth: padding.1,
            dilationHeight: dilation.0, dilationWidth: dilation.1, groups: groups)
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: "\(descriptor): \(problem)") }
        if let bias {
            try bias.requireFloat(op); try requireSameDevice(bias, op)
            guard bias.shape == [descriptor.outputChannels] else {
                throw TensorError.shapeMismatch(op: "conv2D bias [outputChannels]", lhs: bias.shape, rhs: [descriptor.outputChannels])
            }
        }
        let backend = try imageBackend(op)
        let y = try Tensor.empty([descriptor.batch, descriptor.outputChannels, descriptor.outputHeight, descriptor.outputWidth],
                                 on: device)
        try backend.conv2D(buffer, weight.buffer, bias?.buffer, y.buffer, descriptor: descriptor)
        let x = self
        return Tensor.recorded(y, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g, needs in
            var gradients: [Tensor?] = [nil, nil, nil]
            if needs[0] {
                let dx = try Tensor.empty(x.shape, on: x.device)
                try backend.conv2DBackwardData(g.buffer, weight.buffer, dx.buffer, descriptor: descriptor)
                gradients[0] = dx
            }
            if needs[1] {
                let dw = try Tensor.empty(weight.shape, on: x.device)
                try backend.conv2DBackwardWeight(x.buffer, g.buffer, dw.buffer, descriptor: descriptor)
                gradients[1] = dw
            }
            if needs.count > 2 && needs[2] {
                gradients[2] = try g.reducedSum(alongAxes: [0, 2, 3]).reshapedView([descriptor.outputChannels])
            }
            return Array(gradients.prefix(needs.count))
        }
    }

    /// 2-D transposed convolution (PyTorch's `conv_transpose2d`), the adjoint of `conv2D`.
    ///
    /// - Parameters:
    ///   - weight: [inputChannels, outputChannels / groups, kernelHeight, kernelWidth]
    ///   - outputPadding: added to one side of the output to pick among the sizes that map to the input
    /// - Returns: [batch, outputChannels, (H − 1)·s − 2p + d·(k − 1) + outputPadding + 1, …]
    public func convTranspose2D(weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1),
                                padding: (Int, Int) = (0, 0), outputPadding: (Int, Int) = (0, 0),
                                dilation: (Int, Int) = (1, 1), groups: Int = 1) throws -> Tensor {
        let op = "convTranspose2D"
        try requireImage(op); try weight.requireFloat(op); try requireSameDevice(weight, op)
        guard weight.rank == 4, weight.shape[0] == shape[1] else {
            throw TensorError.shapeMismatch(op: "convTranspose2D (input [N, C, H, W], weight [C, Cout/groups, kH, kW])",
                                            lhs: shape, rhs: weight.shape)
        }
        guard outputPadding.0 >= 0, outputPadding.1 >= 0,
              outputPadding.0 < Swift.max(stride.0, dilation.0), outputPadding.1 < Swift.max(stride.1, dilation.1) else {
            throw TensorError.invalidArgument(op: op, reason: "output padding \(outputPadding) must be ≥ 0 and smaller than the stride or the dilation")
        }
        let outputChannels = weight.shape[1] * groups
        let outputHeight = (shape[2] - 1) * stride.0 - 2 * padding.0 + dilation.0 * (weight.shape[2] - 1) + outputPadding.0 + 1
        let outputWidth = (shape[3] - 1) * stride.1 - 2 * padding.1 + dilation.1 * (weight.shape[3] - 1) + outputPadding.1 + 1
        // The convolution whose backward-data pass this is: it maps the output back onto the input.
        let descriptor = Conv2DDescriptor(
            batch: shape[0], inputChannels: outputChannels, inputHeight: outputHeight, inputWidth: outputWidth,
            outputChannels: shape[1], kernelHeight: weight.shape[2], kernelWidth: weight.shape[3],
            strideHeight: stride.0, strideWidth: stride.1, paddingHeight: padding.0, paddingWidth: padding.1,
            dilationHeight: dilation.0, dilationWidth: dilation.1, groups: groups)
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: "\(descriptor): \(problem)") }
        guard descriptor.outputHeight == shape[2], descriptor.outputWidth == shape[3] else {
            throw TensorError.invalidArgument(op: op, reason: "the geometry does not invert to the input size \(shape[2])×\(shape[3])")
        }
        let backend = try imageBackend(op)
        let raw = try Tensor.empty([shape[0], outputChannels, outputHeight, outputWidth], on: device)
        try backend.conv2DBackwardData(buffer, weight.buffer, raw.buffer, descriptor: descriptor)
        let x = self
        let y = Tensor.recorded(raw, inputs: [x, weight]) { g, needs in
            var dx: Tensor?, dw: Tensor?
            if needs[0] {
                dx = try Tensor.empty(x.shape, on: x.device)
                try backend.conv2D(g.buffer, weight.buffer, nil, dx!.buffer, descriptor: descriptor)
            }
            if needs[1] {
                dw = try Tensor.empty(weight.shape, on: x.device)
                try backend.conv2DBackwardWeight(g.buffer, x.buffer, dw!.buffer, descriptor: descriptor)
            }
            return [dx, dw]
        }
        guard let bias else { return y }
        guard bias.shape == [outputChannels] else {
            throw TensorError.shapeMismatch(op: "convTranspose2D bias [outputChannels]", lhs: bias.shape, rhs: [outputChannels])
        }
        return try y + bias.reshaped(to: [outputChannels, 1, 1])
    }

    private func poolDescriptor(_ op: String, kernel: (Int, Int), stride: (Int, Int)?, padding: (Int, Int)) throws -> Pool2DDescriptor {
        try requireImage(op)
        let stride = stride ?? kernel
        let descriptor = Pool2DDescriptor(batch: shape[0], channels: shape[1], inputHeight: shape[2], inputWidth: shape[3],
                                          kernelHeight: kernel.0, kernelWidth: kernel.1, strideHeight: stride.0,
                                          strideWidth: stride.1, paddingHeight: padding.0, paddingWidth: padding.1)
        if let problem = descriptor.problem {
            throw TensorError.invalidArgument(op: op, reason: "\(problem) (input \(shape), kernel \(kernel), stride \(stride), padding \(padding))")
        }
        return descriptor
    }

    /// Max pooling over `kernel` windows (stride defaults to the kernel size). The gradient goes to
    /// the maximum of each window (the first one on ties).
    public func maxPool2D(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws -> Tensor {
        let descriptor = try poolDescriptor("maxPool2D", kernel: kernel, stride: stride, padding: padding)
        let backend = try imageBackend("maxPool2D")
        let outShape: Shape = [descriptor.batch, descriptor.channels, descriptor.outputHeight, descriptor.outputWidth]
        let y = try Tensor.empty(outShape, on: device)
        let indices = try Tensor.empty(outShape, dtype: .int32, on: device)
        try backend.maxPool2D(buffer, y.buffer, indices.buffer, descriptor: descriptor)
        let inputShape = shape
        return Tensor.recorded(y, inputs: [self]) { g, _ in
            let dx = try Tensor.empty(inputShape, on: g.device)
            try backend.maxPool2DBackward(g.buffer, indices.buffer, dx.buffer, descriptor: descriptor)
            return [dx]
        }
    }

    /// Average pooling over `kernel` windows (padding counts as zeros).
    public func avgPool2D(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws -> Tensor {
        let descriptor = try poolDescriptor("avgPool2D", kernel: kernel, stride: stride, padding: padding)
        let backend = try imageBackend("avgPool2D")
        let y = try Tensor.empty([descriptor.batch, descriptor.channels, descriptor.outputHeight, descriptor.outputWidth],
                                 on: device)
        try backend.avgPool2D(buffer, y.buffer, descriptor: descriptor)
        let inputShape = shape
        return Tensor.recorded(y, inputs: [self]) { g, _ in
            let dx = try Tensor.empty(inputShape, on: g.device)
            try backend.avgPool2DBackward(g.buffer, dx.buffer, descriptor: descriptor)
            return [dx]
        }
    }

    /// Training-mode batch normalisation over every axis but axis 1 (channels).
    ///
    /// `y = (x − mean_c) / √(var_c + ε) · γ_c + β_c` with batch statistics (biased variance).
    /// - Parameters: gamma, beta: [channels]; the input: [batch, channels, …].
    /// - Returns: the output and the batch `mean` and biased `variance` ([channels], not recorded),
    ///   for the running statistics.
    public func batchNormalized(gamma: Tensor, beta: Tensor, epsilon: Float = 1e-5) throws
        -> (output: Tensor, mean: Tensor, variance: Tensor) {
        let op = "batchNorm"
        try requireFloat(op); try requireSameDevice(gamma, op); try requireSameDevice(beta, op)
        guard rank >= 2 else { throw TensorError.invalidShape(op: op, shape: shape, reason: "expected [batch, channels, …]") }
        let channels = shape[1]
        guard gamma.shape == [channels], beta.shape == [channels] else {
            throw TensorError.shapeMismatch(op: "batchNorm gamma/beta [channels]", lhs: gamma.shape, rhs: [channels])
        }
        let descriptor = BatchNormDescriptor(batch: shape[0], channels: channels,
                                             spatial: shape.dimensions.dropFirst(2).reduce(1, *), epsilon: epsilon)
        guard descriptor.batch * descriptor.spatial > 1 else {
            throw TensorError.invalidShape(op: op, shape: shape, reason: "training statistics need more than one value per channel")
        }
        let backend = try imageBackend(op)
        let y = try Tensor.empty(shape, on: device)
        let mean = try Tensor.empty([channels], on: device)
        let inverseStandardDeviation = try Tensor.empty([channels], on: device)
        try backend.batchNormForward(buffer, gamma.buffer, beta.buffer, y.buffer, mean: mean.buffer,
                                     inverseStandardDeviation: inverseStandardDeviation.buffer, descriptor: descriptor)
        let x = self
        let output = Tensor.recorded(y, inputs: [x, gamma, beta]) { g, _ in
            let dx = try Tensor.empty(x.shape, on: x.device)
            let dGamma = try Tensor.empty([channels], on: x.device)
            let dBeta = try Tensor.empty([channels], on: x.device)
            try backend.batchNormBackward(x.buffer, g.buffer, gamma.buffer, mean: mean.buffer,
                                          inverseStandardDeviation: inverseStandardDeviation.buffer,
                                          dx.buffer, dGamma.buffer, dBeta.buffer, descriptor: descriptor)
            return [dx, dGamma, dBeta]
        }
        // var = 1/invstd² − ε
        let variance = try inverseStandardDeviation.mapped(.power(-2)).mapped(.affine(scale: 1, shift: -epsilon))
        return (output, mean, variance)
    }

    /// Nearest-neighbour upsampling by integer factors: [N, C, H, W] → [N, C, H·fH, W·fW].
    public func upsampledNearest(factor: (Int, Int)) throws -> Tensor {
        try requireImage("upsampledNearest")
        guard factor.0 >= 1, factor.1 >= 1 else {
            throw TensorError.invalidArgument(op: "upsampledNearest", reason: "factors must be ≥ 1, got \(factor)")
        }
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        return try reshaped(to: [n, c, h, 1, w, 1])
            .expanded(to: [n, c, h, factor.0, w, factor.1])
            .reshaped(to: [n, c, h * factor.0, w * factor.1])
    }
}
