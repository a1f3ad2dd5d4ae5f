/// Layer normalisation over the last axis, as `torch.nn.LayerNorm(featureCount)`:
/// `y = (x − μ)/√(σ² + ε) · weight + bias`, with μ and the biased variance σ² over each row's features.
///
/// - `weight` (γ) [featureCount], initialised to ones; `bias` (β) [featureCount], zeros.
/// - Input [..., featureCount] → output of the same shape. One fused kernel forward and one backward
///   (`Tensor.layerNormalized`).
public final class LayerNorm: Layer {
    public let featureCount: Int
    public let epsilon: Float
    public let weight: Parameter
    public let bias: Parameter
    public var isTraining = true

    public init(featureCount: Int, epsilon: Float = 1e-5, on device: Device = .cpu) throws {
        guard featureCount > 0 else {
            throw TensorError.invalidArgument(op: "LayerNorm", reason: "the feature count must be positive, got \(featureCount)")
        }
        guard epsilon > 0 else { throw TensorError.invalidArgument(op: "LayerNorm", reason: "epsilon must be positive, got \(epsilon)") }
        self.featureCount = featureCount; self.epsilon = epsilon
        weight = Parameter(try Tensor.ones([featureCount], on: device))
        bias = Parameter(try Tensor.zeros([featureCount], on: device))
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight), ("bias", bias)] }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        guard input.rank >= 1, input.shape[input.rank - 1] == featureCount else {
            throw TensorError.shapeMismatch(op: "LayerNorm(\(featureCount)) input [..., \(featureCount)]",
                                            lhs: input.shape, rhs: [featureCount])
        }
        return try input.layerNormalized(gamma: weight.value, beta: bias.value, epsilon: epsilon)
    }
}
