/// Fully connected layer: `y = x · Wᵀ + b`.
///
/// - `weight`: [outputSize, inputSize] (PyTorch's layout), `bias`: [outputSize].
/// - Input [..., inputSize] → output [..., outputSize].
/// - Initialisation as PyTorch: W, b ~ U(−1/√inputSize, 1/√inputSize).
public final class Linear: Layer {
    public let inputSize: Int, outputSize: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    public init(inputSize: Int, outputSize: Int, bias: Bool = true, seed: UInt32? = nil,
                on device: Device = .cpu) throws {
        guard inputSize > 0, outputSize > 0 else {
            throw TensorError.invalidArgument(op: "Linear", reason: "sizes must be positive, got \(inputSize)→\(outputSize)")
        }
        self.inputSize = inputSize; self.outputSize = outputSize
        let bound = 1 / Float(inputSize).squareRoot()
        weight = Parameter(try Tensor.uniform([outputSize, inputSize], in: -bound...bound,
                                              seed: seed ?? Random.nextSeed(), on: device))
        self.bias = bias ? Parameter(try Tensor.uniform([outputSize], in: -bound...bound,
                                                        seed: seed.map { $0 &+ 1 } ?? Random.nextSeed(), on: device)) : nil
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        guard input.rank >= 1, input.shape[input.rank - 1] == inputSize else {
            throw TensorError.shapeMismatch(op: "Linear(\(inputSize)→\(outputSize)) input [..., \(inputSize)]",
                                            lhs: input.shape, rhs: weight.shape)
        }
        return try input.linear(weight: weight.value, bias: bias?.value)
    }
}
