// The Transformer op set: fused scaled-dot-product attention (forward and backward, never storing
// the N×N score matrix) and fused layer normalisation. Each backend implements these; `Tensor`
// falls back to the composed plain-op forms when a backend lacks them.

/// Geometry of one attention call. Every buffer is row-major and dense:
/// - query, output: [B, H, Nq, D]; key, value: [B, H, Nk, D]; logSumExp: [B, H, Nq]
/// - keyMask (optional): int32 [B, Nk], nonzero = the key may be attended, 0 = padding
///
/// Query i may attend key j when the mask allows j and, if `causal`, when `j ≤ i + (Nk − Nq)`
/// (the queries are the last Nq positions of the key sequence, so a decoder fed one new token
/// against a cache of Nk keys sees all of them).
public struct AttentionDescriptor: Hashable, Sendable, CustomStringConvertible {
    public var batch: Int
    public var heads: Int
    public var queryLength: Int
    public var keyLength: Int
    public var headDimension: Int
    public var causal: Bool
    /// Multiplies the scores `q·k` before the softmax; conventionally 1/√D.
    public var scale: Float

    /// The largest head dimension the kernels accept.
    public static let maximumHeadDimension = 128

    public init(batch: Int, heads: Int, queryLength: Int, keyLength: Int, headDimension: Int,
                causal: Bool, scale: Float? = nil) {
        self.batch = batch; self.heads = heads
        self.queryLength = queryLength; self.keyLength = keyLength; self.headDimension = headDimension
        self.causal = causal
        self.scale = scale ?? 1 / Float(headDimension).squareRoot()
    }

    /// B·H: the number of independent (batch, head) problems.
    public var problems: Int { batch * heads }
    public var queryCount: Int { problems * queryLength * headDimension }
    public var keyCount: Int { problems * keyLength * headDimension }
    public var rowCount: Int { problems * queryLength }
    /// The offset of the queries within the key sequence for the causal mask: Nk − Nq.
    public var causalOffset: Int { keyLength - queryLength }

    /// True when query `i` may attend key `j` as far as the causal mask goes.
    @inlinable public func causallyVisible(query i: Int, key j: Int) -> Bool {
        !causal || j <= i + keyLength - queryLength
    }

    /// FLOPs of the forward pass counted as two GEMMs (QKᵀ and PV), halved for a causal mask when
    /// Nq = Nk; the backward pass does 2.5× as many (five GEMM-sized products, two of them recomputed).
    public var forwardFLOPs: Double {
        let full = 4 * Double(problems) * Double(queryLength) * Double(keyLength) * Double(headDimension)
        return causal && queryLength == keyLength ? full / 2 : full
    }

    /// Nil when the geometry is valid, else the reason.
    public var problem: String? {
        if batch <= 0 || heads <= 0 { return "batch (\(batch)) and heads (\(heads)) must be positive" }
        if queryLength <= 0 || keyLength <= 0 {
            return "query length (\(queryLength)) and key length (\(keyLength)) must be positive"
        }
        if headDimension <= 0 || headDimension > Self.maximumHeadDimension {
            return "head dimension \(headDimension) is outside 1...\(Self.maximumHeadDimension)"
        }
        if causal && queryLength > keyLength {
            return "a causal attention needs at least as many keys (\(keyLength)) as queries (\(queryLength))"
        }
        let largest = Swift.max(queryCount, keyCount, batch * keyLength)
        if largest > Int(Int32.max) { return "\(description) exceeds the kernels' 32-bit indexing" }
        return nil
    }

    public var description: String {
        "attention B\(batch) H\(heads) Nq\(queryLength) Nk\(keyLength) D\(headDimension)\(causal ? " causal" : "")"
    }
}

/// Geometry of a layer normalisation over the last axis: `rows` rows of `columns` features.
public struct LayerNormDescriptor: Hashable, Sendable, CustomStringConvertible {
    public var rows: Int
    public var columns: Int
    public var epsilon: Float

    public init(rows: Int, columns: Int, epsilon: Float = 1e-5) {
        self.rows = rows; self.columns = columns; self.epsilon = epsilon
    }

    public var count: Int { rows * columns }

    /// Nil when the geometry is valid, else the reason.
    public var problem: String? {
        if rows <= 0 || columns <= 0 { return "rows (\(rows)) and columns (\(columns)) must be positive" }
        if !(epsilon > 0) { return "epsilon must be positive (got \(epsilon))" }
        if rows > Int(Int32.max) / columns { return "\(description) exceeds the kernels' 32-bit indexing" }
        return nil
    }

    public var description: String { "layer norm \(rows)×\(columns)" }
}

/// Fused Transformer kernels. Same contract as `Backend` (asynchronous, validated inputs, every
/// output element written).
public protocol AttentionBackend: Backend {
    /// `output = softmax(scale · Q·Kᵀ + mask) · V` per (batch, head), computed tile by tile with an
    /// online softmax so that no [Nq, Nk] matrix is ever stored; memory beyond the operands is
    /// O(Nq) (the log-sum-exp).
    /// - logSumExp: receives `L_i = log Σ_j exp(scale · q_i·k_j)` over the visible keys of row i,
    ///   which the backward pass uses to recompute the probabilities. A row that sees no key at all
    ///   (every key masked) gets output 0 and `L_i = +∞`, so its probabilities recompute as 0.
    func attentionForward(query: any DeviceBuffer, key: any DeviceBuffer, value: any DeviceBuffer,
                          keyMask: (any DeviceBuffer)?, output: any DeviceBuffer, logSumExp: any DeviceBuffer,
                          descriptor: AttentionDescriptor) throws

    /// Backward of `attentionForward` given `gradOutput` dO [B, H, Nq, D] and the forward's output
    /// and log-sum-exp. With `P_ij = exp(scale·q_i·k_j − L_i)` (0 where masked) and
    /// `Δ_i = Σ_d dO_id·O_id`:
    /// `dV = Pᵀ·dO`, `dS_ij = P_ij·(dO_i·v_j − Δ_i)`, `dQ = scale · dS·K`, `dK = scale · dSᵀ·Q`.
    /// Deterministic (no float atomics).
    func attentionBackward(query: any DeviceBuffer, key: any DeviceBuffer, value: any DeviceBuffer,
                           keyMask: (any DeviceBuffer)?, output: any DeviceBuffer, logSumExp: any DeviceBuffer,
                           gradOutput: any DeviceBuffer, gradQuery: any DeviceBuffer, gradKey: any DeviceBuffer,
                           gradValue: any DeviceBuffer, descriptor: AttentionDescriptor) throws

    /// Layer normalisation of each row of x [rows, columns]:
    /// `y = (x − μ) · rstd · γ + β` with `μ` the row mean, `rstd = 1/√(σ² + ε)` and `σ²` the biased
    /// variance; γ and β are [columns]. Saves mean and rstd ([rows] each) for the backward pass.
    func layerNormForward(_ x: any DeviceBuffer, gamma: any DeviceBuffer, beta: any DeviceBuffer,
                          output: any DeviceBuffer, mean: any DeviceBuffer, reciprocalStandardDeviation: any DeviceBuffer,
                          descriptor: LayerNormDescriptor) throws

    /// Backward of `layerNormForward` given dy [rows, columns]. With `x̂ = (x − μ)·rstd` and
    /// `ĝ = dy·γ`: `dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))` (means over the row),
    /// `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy` (summed deterministically, in row order or a fixed tree).
    func layerNormBackward(gradOutput: any DeviceBuffer, _ x: any DeviceBuffer, gamma: any DeviceBuffer,
                           mean: any DeviceBuffer, reciprocalStandardDeviation: any DeviceBuffer,
                           gradInput: any DeviceBuffer, gradGamma: any DeviceBuffer, gradBeta: any DeviceBuffer,
                           descriptor: LayerNormDescriptor) throws
}
