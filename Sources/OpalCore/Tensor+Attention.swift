// Scaled-dot-product attention and layer normalisation, with their pullbacks. The fused forms run
// the backend's attention / layer-norm kernels (no N×N matrix in memory); the composed forms build the
// same functions from plain ops (matmul, mask, softmax, matmul; mean, variance, affine) and are the
// reference the fused kernels are tested against and the "unfused" baseline of the benchmarks.

extension Tensor {
    /// The device's Transformer op set, or nil when its backend lacks one.
    package var attentionBackend: (any AttentionBackend)? { backend as? any AttentionBackend }

    /// Checks the operands of an attention call and returns its geometry.
    private static func attentionDescriptor(_ op: String, query: Tensor, key: Tensor, value: Tensor, keyMask: Tensor?,
                                            causal: Bool, scale: Float?) throws -> AttentionDescriptor {
        for tensor in [query, key, value] {
            try tensor.requireFloat(op)
            try query.requireSameDevice(tensor, op)
        }
        guard query.rank == 4 else {
            throw TensorError.invalidShape(op: op, shape: query.shape, reason: "the query must be [batch, heads, queries, headDimension]")
        }
        let (batch, heads, queries, headDimension) = (query.shape[0], query.shape[1], query.shape[2], query.shape[3])
        guard key.rank == 4, key.shape[0] == batch, key.shape[1] == heads, key.shape[3] == headDimension else {
            throw TensorError.shapeMismatch(op: "\(op) (key [batch, heads, keys, headDimension] to match the query)",
                                            lhs: query.shape, rhs: key.shape)
        }
        guard value.shape == key.shape else {
            throw TensorError.shapeMismatch(op: "\(op) (value must have the key's shape)", lhs: key.shape, rhs: value.shape)
        }
        let keys = key.shape[2]
        if let keyMask {
            try query.requireSameDevice(keyMask, op)
            guard keyMask.dtype == .int32 else {
                throw TensorError.dtypeMismatch(op: "\(op) key mask", expected: .int32, actual: keyMask.dtype)
            }
            guard keyMask.shape == [batch, keys] else {
                throw TensorError.shapeMismatch(op: "\(op) (key mask [batch, keys] = [\(batch), \(keys)])",
                                                lhs: keyMask.shape, rhs: [batch, keys])
            }
        }
        let descriptor = AttentionDescriptor(batch: batch, heads: heads, queryLength: queries, keyLength: keys,
                                             headDimension: headDimension, causal: causal, scale: scale)
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        return descriptor
    }

    /// Fused scaled-dot-product attention: `softmax(scale · Q·Kᵀ + mask) · V` for every (batch, head).
    ///
    /// - Parameters:
    ///   - query: [B, H, Nq, D]; key, value: [B, H, Nk, D]; D ≤ 128.
    ///   - keyMask: optional int32 [B, Nk]: nonzero where the key may be attended, 0 for padding.
    ///   - causal: query i sees key j only when `j ≤ i + (Nk − Nq)` (queries are the last Nq positions).
    ///   - scale: defaults to 1/√D.
    /// - Returns: [B, H, Nq, D]. A query that sees no key at all gets zeros.
    ///
    /// One kernel computes the output tile by tile with an online softmax, saving only the per-row
    /// log-sum-exp; the backward pass recomputes the probabilities from it. Memory grows linearly with the
    /// sequence length. Differentiable w.r.t. query, key and value. Backends without the op set use
    /// `scaledDotProductAttentionComposed`.
    /// - Throws: `TensorError` for shapes that do not match, a mask of the wrong shape or dtype, a head
    ///   dimension above 128, a causal call with more queries than keys, or tensors on different devices.
    public static func scaledDotProductAttention(query: Tensor, key: Tensor, value: Tensor, keyMask: Tensor? = nil,
                                                 causal: Bool = false, scale: Float? = nil) throws -> Tensor {
        let descriptor = try attentionDescriptor("scaledDotProductAttention", query: query, key: key, value: value,
                                                 keyMask: keyMask, causal: causal, scale: scale)
        guard let backend = query.attentionBackend else {
            return try scaledDotProductAttentionComposed(query: query, key: key, value: value, keyMask: keyMask,
                                                         causal: causal, scale: scale)
        }
        let device = query.device
        let output = try Tensor.empty(query.shape, on: device)
        let logSumExp = try Tensor.empty([descriptor.batch, descriptor.heads, descriptor.queryLength], on: device)
        try backend.attentionForward(query: query.buffer, key: key.buffer, value: value.buffer, keyMask: keyMask?.buffer,
                                     output: output.buffer, logSumExp: logSumExp.buffer, descriptor: descriptor)
        return Tensor.recorded(output, inputs: [query, key, value]) { gradOutput, _ in
            let gradQuery = try Tensor.empty(query.shape, on: device)
            let gradKey = try Tensor.empty(key.shape, on: device)
            let gradValue = try Tensor.empty(value.shape, on: device)
            try backend.attentionBackward(query: query.buffer, key: key.buffer, value: value.buffer,
                                          keyMask: keyMask?.buffer, output: output.buffer, logSumExp: logSumExp.buffer,
                                          gradOutput: gradOutput.buffer, gradQuery: gradQuery.buffer,
                                          gradKey: gradKey.buffer, gradValue: gradValue.buffer, descriptor: descriptor)
            return [gradQuery, gradKey, gradValue]
        }
    }

    /// The attention of `scaledDotProductAttention` composed from plain ops: `S = scale·Q·Kᵀ` (a
    /// [B, H, Nq, Nk] tensor), masked entries pushed to −10³⁰, row softmax, the probabilities of rows
    /// with no visible key zeroed, then `P·V`. Same arguments and result; memory grows with Nq·Nk.
    public static func scaledDotProductAttentionComposed(query: Tensor, key: Tensor, value: Tensor,
                                                         keyMask: Tensor? = nil, causal: Bool = false,
                                                         scale: Float? = nil) throws -> Tensor {
        let d = try attentionDescriptor("scaledDotProductAttentionComposed", query: query, key: key, value: value,
                                        keyMask: keyMask, causal: causal, scale: scale)
        var scores = try query.matmul(key, transposeOther: true) * d.scale
        guard causal || keyMask != nil else { return try scores.softmax().matmul(value) }
        // visible[b, i, j] = 1 where query i of batch b may attend key j (built on the host: this
        // reference is quadratic in memory anyway).
        let maskRows = keyMask == nil ? 1 : d.batch
        let keyAllowed = try keyMask?.intScalars()
        var visible = [Float](repeating: 0, count: maskRows * d.queryLength * d.keyLength)
        for b in 0..<maskRows {
            for i in 0..<d.queryLength {
                for j in 0..<d.keyLength where d.causallyVisible(query: i, key: j) {
                    if let keyAllowed, keyAllowed[b * d.keyLength + j] == 0 { continue }
                    visible[(b * d.queryLength + i) * d.keyLength + j] = 1
                }
            }
        }
        let visibility = try Tensor(visible, shape: [maskRows, 1, d.queryLength, d.keyLength], on: query.device)
        let bias = try visibility.affine(scale: 1e30, shift: -1e30)
        scores = try scores + bias
        return try (scores.softmax() * visibility).matmul(value)
    }

    // MARK: Layer normalisation

    private func layerNormDescriptor(_ op: String, gamma: Tensor, beta: Tensor, epsilon: Float) throws -> LayerNormDescriptor {
        for tensor in [self, gamma, beta] {
            try tensor.requireFloat(op)
            try requireSameDevice(tensor, op)
        }
        guard rank >= 1, let columns = shape.dimensions.last, columns > 0 else {
            throw TensorError.invalidShape(op: op, shape: shape, reason: "needs a non-empty last axis to normalise")
        }
        for (name, parameter) in [("gamma", gamma), ("beta", beta)] where parameter.shape != [columns] {
            throw TensorError.shapeMismatch(op: "\(op) (\(name) [features] for input [..., \(columns)])",
                                            lhs: shape, rhs: parameter.shape)
        }
        let descriptor = LayerNormDescriptor(rows: count / columns, columns: columns, epsilon: epsilon)
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        return descriptor
    }

    /// Layer normalisation over the last axis: `y = (x − μ)/√(σ² + ε) · γ + β`, with μ and the biased
    /// variance σ² taken over each row of features. `gamma` and `beta` are [features].
    ///
    /// One fused kernel forward (statistics in one pass) and one backward. Differentiable w.r.t. the
    /// input, gamma and beta. Backends without the op set use `layerNormalizedComposed`.
    public func layerNormalized(gamma: Tensor, beta: Tensor, epsilon: Float = 1e-5) throws -> Tensor {
        let descriptor = try layerNormDescriptor("layerNorm", gamma: gamma, beta: beta, epsilon: epsilon)
        guard let backend = attentionBackend else {
            return try layerNormalizedComposed(gamma: gamma, beta: beta, epsilon: epsilon)
        }
        let x = self
        let output = try Tensor.empty(shape, on: device)
        let mean = try Tensor.empty([descriptor.rows], on: device)
        let reciprocalStandardDeviation = try Tensor.empty([descriptor.rows], on: device)
        try backend.layerNormForward(buffer, gamma: gamma.buffer, beta: beta.buffer, output: output.buffer,
                                     mean: mean.buffer, reciprocalStandardDeviation: reciprocalStandardDeviation.buffer,
                                     descriptor: descriptor)
        return Tensor.recorded(output, inputs: [x, gamma, beta]) { gradOutput, _ in
            let gradInput = try Tensor.empty(x.shape, on: x.device)
            let gradGamma = try Tensor.empty(gamma.shape, on: x.device)
            let gradBeta = try Tensor.empty(beta.shape, on: x.device)
            try backend.layerNormBackward(gradOutput: gradOutput.buffer, x.buffer, gamma: gamma.buffer,
                                          mean: mean.buffer, reciprocalStandardDeviation: reciprocalStandardDeviation.buffer,
                                          gradInput: gradInput.buffer, gradGamma: gradGamma.buffer,
                                          gradBeta: gradBeta.buffer, descriptor: descriptor)
            return [gradInput, gradGamma, gradBeta]
        }
    }

    /// The layer normalisation of `layerNormalized` composed from plain ops (mean, centred square,
    /// mean, rsqrt, affine): the reference and the unfused baseline.
    public func layerNormalizedComposed(gamma: Tensor, beta: Tensor, epsilon: Float = 1e-5) throws -> Tensor {
        _ = try layerNormDescriptor("layerNormComposed", gamma: gamma, beta: beta, epsilon: epsilon)
        let axis = rank - 1
        let centred = try self - mean(alongAxis: axis, keepingDimensions: true)
        let variance = try centred.squared().mean(alongAxis: axis, keepingDimensions: true)
        let normalised = try centred * (variance + epsilon).pow(-0.5)
        return try normalised * gamma + beta
    }
}
