/// Parameter-free layers: activations, dropout, flatten.

public final class ReLU: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.relu() }
}

public final class LeakyReLU: Layer {
    public var isTraining = true
    public let slope: Float
    public init(slope: Float = 0.01) { self.slope = slope }
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.leakyRelu(slope: slope) }
}

public final class Sigmoid: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.sigmoid() }
}

public final class Tanh: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.tanh() }
}

/// GELU (tanh approximation).
public final class GELU: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.gelu() }
}

/// Softmax over the last axis.
public final class Softmax: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.softmax() }
}

/// `[batch, d1, d2, …]` → `[batch, d1·d2·…]`.
public final class Flatten: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.flattened(fromAxis: 1) }
}

/// Inverted dropout, active only in training mode. Each call draws a fresh mask from the
/// seeded sequence (`Random`), identical on every device for the same seed.
public final class Dropout: Layer {
    public var isTraining = true
    public let probability: Float
    /// The base seed of this layer's masks (drawn from `Random` when not given).
    public internal(set) var seed: UInt32
    /// Training-mode calls so far: call `k` uses the mask seeded by `seed &+ k &* 0x9E37_79B9`.
    /// Part of a training checkpoint (restored on resume), so resumed runs draw the same masks.
    public internal(set) var callCount: UInt32 = 0

    public init(probability: Float, seed: UInt32? = nil) throws {
        guard probability >= 0, probability < 1 else {
            throw TensorError.invalidArgument(op: "Dropout", reason: "probability \(probability) is outside [0, 1)")
        }
        self.probability = probability
        self.seed = seed ?? Random.nextSeed()
    }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        guard isTraining, probability > 0 else { return input }
        callCount &+= 1
        return try input.dropout(probability: probability, seed: seed &+ callCount &* 0x9E37_79B9)
    }
}
