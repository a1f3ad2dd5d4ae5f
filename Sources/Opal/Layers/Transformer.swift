import Foundation

/// The position-wise MLP of a Transformer block: `fc2(GELU(fc1(x)))`, E → hiddenSize → E
/// (hiddenSize is 4E by convention; GELU in its tanh form).
public final class FeedForward: Layer {
    public let fc1: Linear
    public let fc2: Linear
    public var isTraining = true

    public init(modelSize: Int, hiddenSize: Int, on device: Device = .cpu) throws {
        fc1 = try Linear(inputSize: modelSize, outputSize: hiddenSize, on: device)
        fc2 = try Linear(inputSize: hiddenSize, outputSize: modelSize, on: device)
    }

    public var children: [(name: String, module: any Module)] { [("fc1", fc1), ("fc2", fc2)] }

    public func callAsFunction(_ input: Tensor) throws -> Tensor { try fc2(fc1(input).gelu()) }
}

/// A pre-LN Transformer block:
/// `x ← x + SelfAttention(LN₁(x))`, then (decoder blocks only) `x ← x + CrossAttention(LN_c(x), memory)`,
/// then `x ← x + MLP(LN₂(x))`.
///
/// Encoder blocks attend in both directions (with a key-padding mask); decoder blocks are causal and,
/// in an encoder–decoder model, attend the encoder's output (`crossAttention`). A decoder-only model
/// (GPT) uses causal blocks without cross-attention.
///
/// Parameter names: `ln1`, `attn`, `ln_cross`, `cross_attn`, `ln2`, `mlp.fc1`, `mlp.fc2`.
public final class TransformerBlock: Module {
    public let modelSize: Int
    public let causal: Bool
    public let norm1: LayerNorm
    public let attention: MultiHeadAttention
    public let crossNorm: LayerNorm?
    public let crossAttention: MultiHeadAttention?
    public let norm2: LayerNorm
    public let feedForward: FeedForward
    /// Dropout after each sub-layer during training (0: none).
    public let dropout: Float
    public var isTraining = true

    /// - Throws: `TensorError.invalidArgument` when `headCount` does not divide `modelSize`.
    public init(modelSize: Int, headCount: Int, feedForwardSize: Int? = nil, causal: Bool,
                crossAttention hasCrossAttention: Bool = false, dropout: Float = 0, on device: Device = .cpu) throws {
        guard (0..<1).contains(dropout) else {
            throw TensorError.invalidArgument(op: "TransformerBlock", reason: "dropout must be in [0, 1), got \(dropout)")
        }
        self.modelSize = modelSize; self.causal = causal; self.dropout = dropout
        attention = try MultiHeadAttention(modelSize: modelSize, headCount: headCount, on: device)
        norm1 = try LayerNorm(featureCount: modelSize, on: device)
        norm2 = try LayerNorm(featureCount: modelSize, on: device)
        if hasCrossAttention {
            crossNorm = try LayerNorm(featureCount: modelSize, on: device)
            crossAttention = try MultiHeadAttention(modelSize: modelSize, headCount: headCount, on: device)
        } else {
            crossNorm = nil; crossAttention = nil
        }
        feedForward = try FeedForward(modelSize: modelSize, hiddenSize: feedForwardSize ?? 4 * modelSize, on: device)
    }

    public var children: [(name: String, module: any Module)] {
        var result: [(name: String, module: any Module)] = [("ln1", norm1), ("attn", attention)]
        if let crossNorm, let crossAttention { result += [("ln_cross", crossNorm), ("cross_attn", crossAttention)] }
        return result + [("ln2", norm2), ("mlp", feedForward)]
    }

    private func dropped(_ x: Tensor) throws -> Tensor {
        guard isTraining, dropout > 0 else { return x }
        return try x.dropout(probability: dropout, seed: Random.nextSeed())
    }

    /// - Parameters:
    ///   - input: [B, N, E].
    ///   - keyMask: int32 [B, keys] for the self-attention (padding), or nil.
    ///   - memory: the encoder output [B, M, E] for the cross-attention (required exactly when the
    ///     block has one), with `memoryMask` int32 [B, M].
    ///   - cache: self-attention keys/values of earlier positions (step-by-step decoding); `crossCache`
    ///     the projected memory.
    /// - Returns: [B, N, E].
    public func callAsFunction(_ input: Tensor, keyMask: Tensor? = nil, memory: Tensor? = nil, memoryMask: Tensor? = nil,
                               cache: KeyValueCache? = nil, crossCache: KeyValueCache? = nil) throws -> Tensor {
        var x = try input + dropped(attention(norm1(input), keyMask: keyMask, causal: causal, cache: cache))
        if let crossAttention, let crossNorm {
            guard let memory else {
                throw TensorError.invalidArgument(op: "TransformerBlock", reason: "a block with cross-attention needs the encoder memory")
            }
            x = try x + dropped(crossAttention(crossNorm(x), memory: memory, keyMask: memoryMask, cache: crossCache))
        } else if memory != nil {
            throw TensorError.invalidArgument(op: "TransformerBlock", reason: "memory given to a block without cross-attention")
        }
        return try x + dropped(feedForward(norm2(x)))
    }
}

/// Fixed sinusoidal position encodings (Vaswani et al.): `PE[p, 2i] = sin(p / 10000^{2i/E})`,
/// `PE[p, 2i+1] = cos(p / 10000^{2i/E})`. No parameters.
public enum SinusoidalPositionalEncoding {
    /// Rows `positions` of the table, [positions.count, modelSize], on `device`.
    public static func table(positions: Range<Int>, modelSize: Int, on device: Device) throws -> Tensor {
        var values = [Float](repeating: 0, count: positions.count * modelSize)
        for (row, p) in positions.enumerated() {
            for column in 0..<modelSize {
                let exponent = Double(2 * (column / 2)) / Double(modelSize)
                let angle = Double(p) / Foundation.pow(10_000, exponent)
                values[row * modelSize + column] = Float(column % 2 == 0 ? Foundation.sin(angle) : Foundation.cos(angle))
            }
        }
        return try Tensor(values, shape: [positions.count, modelSize], on: device)
    }
}
