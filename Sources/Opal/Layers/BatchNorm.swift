/// Batch normalisation over axis 1 (channels) of [N, C] or [N, C, H, W] input, as
/// `nn.BatchNorm1d` / `nn.BatchNorm2d`.
///
/// Training: `y = (x − mean_B)/√(var_B + ε)·γ + β` with batch statistics, and the running statistics
/// move by `momentum` towards them (the running variance is the unbiased one, as PyTorch).
/// Evaluation: the running statistics replace the batch's.
/// Parameters `weight` (γ, ones) and `bias` (β, zeros); buffers `running_mean`, `running_var`.
public final class BatchNorm: Layer {
    public let channels: Int
    public let epsilon: Float, momentum: Float
    public let weight: Parameter, bias: Parameter
    public let runningMean: Parameter, runningVariance: Parameter
    public var isTraining = true

    public init(channels: Int, epsilon: Float = 1e-5, momentum: Float = 0.1, on device: Device = .cpu) throws {
        guard channels > 0 else { throw TensorError.invalidArgument(op: "BatchNorm", reason: "channels must be positive") }
        self.channels = channels; self.epsilon = epsilon; self.momentum = momentum
        weight = Parameter(try Tensor.ones([channels], on: device))
        bias = Parameter(try Tensor.zeros([channels], on: device))
        runningMean = Parameter(buffer: try Tensor.zeros([channels], on: device))
        runningVariance = Parameter(buffer: try Tensor.ones([channels], on: device))
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight), ("bias", bias), ("running_mean", runningMean), ("running_var", runningVariance)]
    }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        guard input.rank >= 2, input.shape[1] == channels else {
            throw TensorError.shapeMismatch(op: "BatchNorm(\(channels)) input [N, \(channels), …]", lhs: input.shape, rhs: [channels])
        }
        let broadcastShape = Shape([channels] + [Int](repeating: 1, count: input.rank - 2))
        guard isTraining else {
            let scale = try (runningVariance.value + epsilon).pow(-0.5) * weight.value
            let shift = try bias.value - runningMean.value * scale
            return try input * scale.reshaped(to: broadcastShape) + shift.reshaped(to: broadcastShape)
        }
        let (output, mean, variance) = try input.batchNormalized(gamma: weight.value, beta: bias.value, epsilon: epsilon)
        let m = Float(input.count / channels)
        try withoutGradients {
            try runningMean.assign(try runningMean.value * (1 - momentum) + mean * momentum)
            try runningVariance.assign(try runningVariance.value * (1 - momentum) + variance * (momentum * m / (m - 1)))
        }
        return output
    }
}
