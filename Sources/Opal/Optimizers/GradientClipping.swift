/// Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`: with
/// `norm = √(Σ over every gradient element g²)`, every gradient is scaled by
/// `min(1, maximumNorm / (norm + 1e-6))`.
///
/// Everything runs on the device: the norm and the scale stay device scalars and nothing is read
/// back, so a training step that clips still makes no host round trip.
public enum GradientClipping {
    /// Clips the gradients of `parameters` in place (parameters without a gradient are skipped) and
    /// returns the global norm before clipping, as a device scalar (shape []) that is not read.
    /// Returns nil when no parameter has a gradient.
    /// - Throws: `TensorError.invalidArgument` when `maximumNorm` is not positive and finite, or the
    ///   gradients live on different devices.
    @discardableResult
    public static func clipByGlobalNorm(_ parameters: [Parameter], maximumNorm: Float) throws -> Tensor? {
        guard maximumNorm > 0, maximumNorm.isFinite else {
            throw TensorError.invalidArgument(op: "clipByGlobalNorm", reason: "the maximum norm must be positive and finite, got \(maximumNorm)")
        }
        let withGradients = parameters.filter { $0.gradient != nil }
        guard let first = withGradients.first?.gradient else { return nil }
        return try withoutGradients {
            var sumOfSquares = try Tensor.zeros([], on: first.device)
            for parameter in withGradients {
                let gradient = parameter.gradient!
                try first.requireSameDevice(gradient, "clipByGlobalNorm")
                sumOfSquares = try sumOfSquares + gradient.squared().sum()
            }
            let norm = try sumOfSquares.sqrt()
            // scale = min(1, maximumNorm / (norm + 1e-6)), a device scalar.
            let scale = try ((norm + 1e-6).reciprocal() * maximumNorm).minimum(try Tensor.ones([], on: first.device))
            for parameter in withGradients {
                parameter.value.node?.gradient = try parameter.gradient! * scale
            }
            return norm
        }
    }
}
