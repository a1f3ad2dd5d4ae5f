// The recurrent op set: fused LSTM and GRU cell updates (forward and backward) and the embedding
// gather / scatter-add. Each backend implements these; `Tensor` falls back to composed plain ops
// (cells) or reports a clear error (embedding) when a backend lacks them.

/// Geometry of one step of a recurrent cell: `batch` rows of `hiddenSize` units, every buffer
/// row-major and dense.
public struct RecurrentCellDescriptor: Hashable, Sendable, CustomStringConvertible {
    public var batch: Int
    public var hiddenSize: Int

    public init(batch: Int, hiddenSize: Int) {
        self.batch = batch; self.hiddenSize = hiddenSize
    }

    /// Elements of one [batch, hiddenSize] state.
    public var stateCount: Int { batch * hiddenSize }

    /// Nil when the geometry is valid, else the reason.
    public var problem: String? {
        if batch <= 0 || hiddenSize <= 0 { return "batch (\(batch)) and hidden size (\(hiddenSize)) must be positive" }
        if batch.multipliedReportingOverflow(by: 5 * hiddenSize).overflow || batch * 5 * hiddenSize > Int(Int32.max) {
            return "batch \(batch) × hidden size \(hiddenSize) exceeds the kernels' 32-bit indexing"
        }
        return nil
    }

    public var description: String { "recurrent cell B\(batch) H\(hiddenSize)" }
}

/// Geometry of an embedding lookup: `tokens` int32 ids into a `[rows, columns]` table
/// (vocabulary × embedding size); the output is `[tokens, columns]`.
public struct EmbeddingDescriptor: Hashable, Sendable, CustomStringConvertible {
    public var rows: Int
    public var columns: Int
    public var tokens: Int

    public init(rows: Int, columns: Int, tokens: Int) {
        self.rows = rows; self.columns = columns; self.tokens = tokens
    }

    public var tableCount: Int { rows * columns }
    public var outputCount: Int { tokens * columns }

    /// Nil when the geometry is valid, else the reason.
    public var problem: String? {
        if rows <= 0 || columns <= 0 { return "the table needs at least one row and one column (got \(rows)×\(columns))" }
        if tokens < 0 { return "negative token count \(tokens)" }
        if rows > Int(Int32.max) / columns || tokens > Int(Int32.max) / columns {
            return "\(tokens) tokens into a \(rows)×\(columns) table exceed the kernels' 32-bit indexing"
        }
        return nil
    }

    public var description: String { "embedding V\(rows) D\(columns) N\(tokens)" }
}

/// Fused recurrent kernels. Same contract as `Backend` (asynchronous, validated inputs, every
/// output element written). B = batch, H = hidden size; σ is the logistic sigmoid.
public protocol RecurrentBackend: Backend {
    /// LSTM cell update, gates in PyTorch order (i, f, g, o).
    /// - gates: [B, 4H] pre-activations; cell: c_{t−1} [B, H]
    /// - hidden: h_t [B, H] and newCell: c_t [B, H], with `c_t = σ(f)·c_{t−1} + σ(i)·tanh(g)`, `h_t = σ(o)·tanh(c_t)`
    /// - activations: [B, 5H] = (σ(i) | σ(f) | tanh(g) | σ(o) | tanh(c_t)), saved for the backward pass
    func lstmCellForward(_ gates: any DeviceBuffer, _ cell: any DeviceBuffer, hidden: any DeviceBuffer,
                         newCell: any DeviceBuffer, activations: any DeviceBuffer,
                         descriptor: RecurrentCellDescriptor) throws
    /// Backward of `lstmCellForward`, given `gradHidden` = dh_t and `gradNewCell` = dc_t ([B, H] each):
    /// `dc = dc_t + dh_t·σo·(1 − tanh²c_t)`; `gradGates` [B, 4H] =
    /// (dc·tanh g·σi(1−σi) | dc·c_{t−1}·σf(1−σf) | dc·σi·(1−tanh²g) | dh_t·tanh c_t·σo(1−σo));
    /// `gradCell` [B, H] = dc·σf.
    func lstmCellBackward(gradHidden: any DeviceBuffer, gradNewCell: any DeviceBuffer, cell: any DeviceBuffer,
                          activations: any DeviceBuffer, gradGates: any DeviceBuffer, gradCell: any DeviceBuffer,
                          descriptor: RecurrentCellDescriptor) throws

    /// GRU cell update (PyTorch semantics), gates in order (r, z, n).
    /// - inputGates: x·W_ihᵀ + b_ih [B, 3H]; hiddenGates: h·W_hhᵀ + b_hh [B, 3H]; hidden: h_{t−1} [B, H]
    /// - output: h_t [B, H] with `r = σ(i_r + h_r)`, `z = σ(i_z + h_z)`, `n = tanh(i_n + r·h_n)`,
    ///   `h_t = (1 − z)·n + z·h_{t−1}`
    /// - activations: [B, 3H] = (r | z | n), saved for the backward pass
    func gruCellForward(_ inputGates: any DeviceBuffer, _ hiddenGates: any DeviceBuffer, _ hidden: any DeviceBuffer,
                        _ output: any DeviceBuffer, activations: any DeviceBuffer,
                        descriptor: RecurrentCellDescriptor) throws
    /// Backward of `gruCellForward`, given `gradOutput` = dh_t [B, H]. With
    /// `n̂ = dh_t·(1 − z)·(1 − n²)`, `ẑ = dh_t·(h_{t−1} − n)·z(1 − z)`, `r̂ = n̂·h_n·r(1 − r)`:
    /// `gradInputGates` = (r̂ | ẑ | n̂), `gradHiddenGates` = (r̂ | ẑ | n̂·r), `gradHidden` = dh_t·z.
    func gruCellBackward(_ gradOutput: any DeviceBuffer, _ hiddenGates: any DeviceBuffer, _ hidden: any DeviceBuffer,
                         activations: any DeviceBuffer, _ gradInputGates: any DeviceBuffer,
                         _ gradHiddenGates: any DeviceBuffer, _ gradHidden: any DeviceBuffer,
                         descriptor: RecurrentCellDescriptor) throws

    /// `output[n, d] = table[indices[n], d]` for ids in 0..<rows; a token whose id is outside the
    /// table gets a row of zeros (nothing out of bounds is read).
    /// - table: [rows, columns] float; indices: [tokens] int32; output: [tokens, columns]
    func embeddingGather(_ table: any DeviceBuffer, _ indices: any DeviceBuffer, _ output: any DeviceBuffer,
                         descriptor: EmbeddingDescriptor) throws
    /// `gradTable[v, d] = Σ_{n : indices[n] = v} gradOutput[n, d]` (0 for rows no token hits), summed
    /// in token order, deterministically and without float atomics. Tokens whose id is outside the
    /// table contribute nothing.
    func embeddingScatter(_ gradOutput: any DeviceBuffer, _ indices: any DeviceBuffer, _ gradTable: any DeviceBuffer,
                          descriptor: EmbeddingDescriptor) throws
}
