/// Keys and values kept between calls of a `MultiHeadAttention` during step-by-step decoding, so
/// each new token costs one step (its own projections plus attention over the cached keys), not a
/// re-run of the whole prefix.
///
/// A self-attention appends the new positions' keys and values; a cross-attention projects the
/// encoder memory once, at its first call, and reuses it.
public final class KeyValueCache {
    /// [B, H, T, D] each, nil before the first call.
    public internal(set) var keys: Tensor?
    public internal(set) var values: Tensor?

    public init() {}

    /// Positions held: T.
    public var length: Int { keys?.shape[2] ?? 0 }

    /// Forgets everything (a new sequence starts).
    public func reset() { keys = nil; values = nil }
}

/// Multi-head attention, as `torch.nn.MultiheadAttention(modelSize, headCount, batch_first=True)`:
/// `MHA(x, m) = concat_h(softmax(Q_h·K_hᵀ/√D + mask)·V_h) · W_oᵀ + b_o` with `Q = x·W_qᵀ + b_q`,
/// `K = m·W_kᵀ + b_k`, `V = m·W_vᵀ + b_v`, m = x for self-attention, D = modelSize / headCount.
///
/// - `in_proj_weight` [3E, E] = (W_q | W_k | W_v) stacked by rows, Xavier-uniform; `in_proj_bias` [3E], zeros;
///   `out_proj.weight` [E, E], `out_proj.bias` [E] (zeros) — PyTorch's names and layout.
/// - The attention itself is the fused kernel (`Tensor.scaledDotProductAttention`): no [N, N] matrix.
public final class MultiHeadAttention: Module {
    public let modelSize: Int
    public let headCount: Int
    public var headDimension: Int { modelSize / headCount }
    public let inputProjectionWeight: Parameter
    public let inputProjectionBias: Parameter
    public let outputProjection: Linear
    public var isTraining = true

    /// - Throws: `TensorError.invalidArgument` when `headCount` does not divide `modelSize` or the
    ///   head dimension exceeds the kernels' 128.
    public init(modelSize: Int, headCount: Int, seed: UInt32? = nil, on device: Device = .cpu) throws {
        let op = "MultiHeadAttention(modelSize: \(modelSize), headCount: \(headCount))"
        guard modelSize > 0, headCount > 0 else {
            throw TensorError.invalidArgument(op: op, reason: "the model size and head count must be positive")
        }
        guard modelSize % headCount == 0 else {
            throw TensorError.invalidArgument(op: op, reason: "\(headCount) heads do not divide the model width \(modelSize)")
        }
        guard modelSize / headCount <= AttentionDescriptor.maximumHeadDimension else {
            throw TensorError.invalidArgument(op: op, reason: "the head dimension \(modelSize / headCount) exceeds \(AttentionDescriptor.maximumHeadDimension)")
        }
        self.modelSize = modelSize; self.headCount = headCount
        let bound = (6 / Float(modelSize + 3 * modelSize)).squareRoot()
        inputProjectionWeight = Parameter(try Tensor.uniform([3 * modelSize, modelSize], in: -bound...bound,
                                                             seed: seed ?? Random.nextSeed(), on: device))
        inputProjectionBias = Parameter(try Tensor.zeros([3 * modelSize], on: device))
        outputProjection = try Linear(inputSize: modelSize, outputSize: modelSize, seed: seed.map { $0 &+ 7 }, on: device)
        try outputProjection.bias?.assign(try Tensor.zeros([modelSize], on: device))
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        [("in_proj_weight", inputProjectionWeight), ("in_proj_bias", inputProjectionBias)]
    }
    public var children: [(name: String, module: any Module)] { [("out_proj", outputProjection)] }

    private var name: String { "MultiHeadAttention(modelSize: \(modelSize), headCount: \(headCount))" }

    /// `x · W[rows]ᵀ + b[rows]` for the projections `rows` of the stacked input projection.
    private func project(_ x: Tensor, _ rows: Range<Int>) throws -> Tensor {
        let whole = rows.count == 3 * modelSize
        let weight = whole ? inputProjectionWeight.value : try inputProjectionWeight.value.sliced(along: 0, rows)
        let bias = whole ? inputProjectionBias.value : try inputProjectionBias.value.sliced(along: 0, rows)
        return try x.matmul(weight, transposeOther: true) + bias
    }

    /// [B, N, count·E] projections → `count` tensors [B, H, N, D].
    private func splitHeads(_ projected: Tensor, count: Int) throws -> [Tensor] {
        let (batch, length) = (projected.shape[0], projected.shape[1])
        let heads = try projected.reshaped(to: [batch, length, count, headCount, headDimension]).permuted([2, 0, 3, 1, 4])
        if count == 1 { return [try heads.reshaped(to: [batch, headCount, length, headDimension])] }
        return try (0..<count).map {
            try heads.sliced(along: 0, $0..<($0 + 1)).reshaped(to: [batch, headCount, length, headDimension])
        }
    }

    private func checkSequence(_ tensor: Tensor, _ role: String) throws {
        guard tensor.rank == 3, tensor.shape[2] == modelSize, tensor.shape[1] > 0 else {
            throw TensorError.invalidShape(op: name, shape: tensor.shape,
                                           reason: "the \(role) must be [batch, length ≥ 1, \(modelSize)]")
        }
    }

    /// - Parameters:
    ///   - input: the queries' sequence [B, N, E].
    ///   - memory: for cross-attention, the sequence attended to [B, M, E] (nil: self-attention).
    ///   - keyMask: int32 [B, keys] (nonzero = attend), keys = N (self), M (cross), or cache length + N
    ///     with a cache.
    ///   - causal: position i attends only positions ≤ i (the cached ones included).
    ///   - cache: keys and values of earlier steps (self) or of the memory (cross); updated in place.
    /// - Returns: [B, N, E].
    public func callAsFunction(_ input: Tensor, memory: Tensor? = nil, keyMask: Tensor? = nil, causal: Bool = false,
                               cache: KeyValueCache? = nil) throws -> Tensor {
        try checkSequence(input, "input")
        let (batch, length) = (input.shape[0], input.shape[1])
        var query: Tensor, key: Tensor, value: Tensor
        if let memory {
            try checkSequence(memory, "memory")
            guard memory.shape[0] == batch else {
                throw TensorError.shapeMismatch(op: "\(name) (memory batch)", lhs: input.shape, rhs: memory.shape)
            }
            query = try splitHeads(project(input, 0..<modelSize), count: 1)[0]
            if let cache, let keys = cache.keys, let values = cache.values {
                (key, value) = (keys, values)
            } else {
                let kv = try splitHeads(project(memory, modelSize..<(3 * modelSize)), count: 2)
                (key, value) = (kv[0], kv[1])
                if let cache { cache.keys = key.detached(); cache.values = value.detached() }
            }
        } else {
            let qkv = try splitHeads(project(input, 0..<(3 * modelSize)), count: 3)
            (query, key, value) = (qkv[0], qkv[1], qkv[2])
            if let cache {
                if let keys = cache.keys, let values = cache.values {
                    guard keys.shape[0] == batch else {
                        throw TensorError.shapeMismatch(op: "\(name) (cache batch)", lhs: input.shape, rhs: keys.shape)
                    }
                    key = try Tensor.concatenated([keys, key], along: 2)
                    value = try Tensor.concatenated([values, value], along: 2)
                }
                cache.keys = key.detached(); cache.values = value.detached()
            }
        }
        let attended = try Tensor.scaledDotProductAttention(query: query, key: key, value: value, keyMask: keyMask,
                                                            causal: causal)
        let merged = try attended.permuted([0, 2, 1, 3]).reshaped(to: [batch, length, modelSize])
        return try outputProjection(merged)
    }
}
