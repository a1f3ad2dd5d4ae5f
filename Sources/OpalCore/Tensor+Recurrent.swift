// Recurrent cell updates and the embedding lookup, with their pullbacks. The fused forms run one
// kernel for all gate nonlinearities and the state update (and one for its backward step); the
// composed forms build the same function from plain ops and are the reference they are tested against.

extension Tensor {
    /// The device's recurrent op set, or nil when its backend lacks one.
    package var recurrentBackend: (any RecurrentBackend)? { backend as? any RecurrentBackend }

    /// Checks a cell's operands: float, one device, `[batch, gateCount·H]` gates and a `[batch, H]` state.
    private static func cellDescriptor(_ op: String, gates: [Tensor], gateCount: Int, state: Tensor,
                                       stateName: String) throws -> RecurrentCellDescriptor {
        for tensor in gates + [state] {
            try tensor.requireFloat(op)
            try gates[0].requireSameDevice(tensor, op)
        }
        guard state.rank == 2 else {
            throw TensorError.invalidShape(op: op, shape: state.shape, reason: "the \(stateName) must be [batch, hiddenSize]")
        }
        let (batch, hiddenSize) = (state.shape[0], state.shape[1])
        let expected: Shape = [batch, gateCount * hiddenSize]
        for tensor in gates where tensor.shape != expected {
            throw TensorError.shapeMismatch(
                op: "\(op) (gates [batch, \(gateCount)·hiddenSize] = \(expected) for a \(stateName) of \(state.shape))",
                lhs: tensor.shape, rhs: expected)
        }
        let descriptor = RecurrentCellDescriptor(batch: batch, hiddenSize: hiddenSize)
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        return descriptor
    }

    // MARK: LSTM

    /// Fused LSTM cell. `self` = gate pre-activations [B, 4H] in PyTorch order (input i, forget f,
    /// cell g, output o), i.e. `x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh`; `cell` = c_{t−1} [B, H].
    ///
    /// `c_t = σ(f)·c_{t−1} + σ(i)·tanh(g)`, `h_t = σ(o)·tanh(c_t)`. Differentiable w.r.t. self and cell.
    /// One kernel computes both states (and saves the activations) and one kernel computes the backward
    /// step from dh_t and dc_t together (h_t and c_t are the two outputs of one recorded op). Backends
    /// without the recurrent op set use `lstmCellComposed(cell:)`.
    /// - Returns: h_t and c_t, [B, H] each.
    /// - Throws: `TensorError` when the shapes are not [B, 4H] and [B, H] (B, H ≥ 1), or devices/dtypes differ.
    public func lstmCell(cell: Tensor) throws -> (hidden: Tensor, cell: Tensor) {
        let op = "lstmCell"
        let descriptor = try Tensor.cellDescriptor(op, gates: [self], gateCount: 4, state: cell, stateName: "cell state")
        guard let backend = recurrentBackend else { return try lstmCellComposed(cell: cell) }
        let hidden = try Tensor.empty(cell.shape, on: device)
        let newCell = try Tensor.empty(cell.shape, on: device)
        let activations = try Tensor.empty([descriptor.batch, 5 * descriptor.hiddenSize], on: device)
        try backend.lstmCellForward(buffer, cell.buffer, hidden: hidden.buffer, newCell: newCell.buffer,
                                    activations: activations.buffer, descriptor: descriptor)
        let gatesShape = shape
        let outputs = Tensor.recorded([hidden, newCell], inputs: [self, cell]) { upstreams, _ in
            // An output that reached the loss by no path has a zero gradient.
            let gradHidden = try upstreams[0] ?? Tensor.zeros(cell.shape, on: cell.device)
            let gradNewCell = try upstreams[1] ?? Tensor.zeros(cell.shape, on: cell.device)
            let gradGates = try Tensor.empty(gatesShape, on: cell.device)
            let gradCell = try Tensor.empty(cell.shape, on: cell.device)
            try backend.lstmCellBackward(gradHidden: gradHidden.buffer, gradNewCell: gradNewCell.buffer,
                                         cell: cell.buffer, activations: activations.buffer,
                                         gradGates: gradGates.buffer, gradCell: gradCell.buffer, descriptor: descriptor)
            return [gradGates, gradCell]
        }
        return (outputs[0], outputs[1])
    }

    /// The LSTM cell of `lstmCell(cell:)` composed from plain ops (slices, sigmoid, tanh, multiply,
    /// add): the reference for the fused kernel and the "unfused" baseline of the benchmarks.
    public func lstmCellComposed(cell: Tensor) throws -> (hidden: Tensor, cell: Tensor) {
        let descriptor = try Tensor.cellDescriptor("lstmCellComposed", gates: [self], gateCount: 4, state: cell,
                                                   stateName: "cell state")
        let h = descriptor.hiddenSize
        let inputGate = try sliced(along: 1, 0..<h).sigmoid()
        let forgetGate = try sliced(along: 1, h..<(2 * h)).sigmoid()
        let candidate = try sliced(along: 1, (2 * h)..<(3 * h)).tanh()
        let outputGate = try sliced(along: 1, (3 * h)..<(4 * h)).sigmoid()
        let newCell = try forgetGate * cell + inputGate * candidate
        let hidden = try outputGate * newCell.tanh()
        return (hidden, newCell)
    }

    // MARK: GRU

    /// Fused GRU cell (PyTorch semantics). `inputGates` = x·W_ihᵀ + b_ih [B, 3H] (r, z, n order),
    /// `hiddenGates` = h·W_hhᵀ + b_hh [B, 3H], `hidden` = h_{t−1} [B, H].
    ///
    /// `r = σ(i_r + h_r)`, `z = σ(i_z + h_z)`, `n = tanh(i_n + r·h_n)`, `h_t = (1 − z)·n + z·h_{t−1}`.
    /// Differentiable w.r.t. all three inputs. Backends without the recurrent op set use
    /// `gruCellComposed`.
    /// - Returns: h_t [B, H]
    public static func gruCell(inputGates: Tensor, hiddenGates: Tensor, hidden: Tensor) throws -> Tensor {
        let descriptor = try cellDescriptor("gruCell", gates: [inputGates, hiddenGates], gateCount: 3, state: hidden,
                                            stateName: "hidden state")
        guard let backend = hidden.recurrentBackend else {
            return try gruCellComposed(inputGates: inputGates, hiddenGates: hiddenGates, hidden: hidden)
        }
        let gatesShape = inputGates.shape
        let output = try Tensor.empty(hidden.shape, on: hidden.device)
        let activations = try Tensor.empty([descriptor.batch, 3 * descriptor.hiddenSize], on: hidden.device)
        try backend.gruCellForward(inputGates.buffer, hiddenGates.buffer, hidden.buffer, output.buffer,
                                   activations: activations.buffer, descriptor: descriptor)
        return Tensor.recorded(output, inputs: [inputGates, hiddenGates, hidden]) { g, _ in
            let gradInputGates = try Tensor.empty(gatesShape, on: g.device)
            let gradHiddenGates = try Tensor.empty(gatesShape, on: g.device)
            let gradHidden = try Tensor.empty(hidden.shape, on: g.device)
            try backend.gruCellBackward(g.buffer, hiddenGates.buffer, hidden.buffer, activations: activations.buffer,
                                        gradInputGates.buffer, gradHiddenGates.buffer, gradHidden.buffer,
                                        descriptor: descriptor)
            return [gradInputGates, gradHiddenGates, gradHidden]
        }
    }

    /// The GRU cell of `gruCell` composed from plain ops: the reference and the unfused baseline.
    public static func gruCellComposed(inputGates: Tensor, hiddenGates: Tensor, hidden: Tensor) throws -> Tensor {
        let descriptor = try cellDescriptor("gruCellComposed", gates: [inputGates, hiddenGates], gateCount: 3,
                                            state: hidden, stateName: "hidden state")
        let h = descriptor.hiddenSize
        func gate(_ tensor: Tensor, _ index: Int) throws -> Tensor {
            try tensor.sliced(along: 1, (index * h)..<((index + 1) * h))
        }
        let reset = try (gate(inputGates, 0) + gate(hiddenGates, 0)).sigmoid()
        let update = try (gate(inputGates, 1) + gate(hiddenGates, 1)).sigmoid()
        let candidate = try (gate(inputGates, 2) + reset * gate(hiddenGates, 2)).tanh()
        return try (1 - update) * candidate + update * hidden
    }

    // MARK: Embedding

    /// Embedding lookup: `self` is a [V, D] table, `indices` an int32 tensor of any shape S on the
    /// same device; the result is S + [D] with `result[s] = self[indices[s]]`.
    ///
    /// Differentiable w.r.t. the table: the backward pass sums the gradient rows of every token into
    /// its table row with a deterministic, race-free scatter-add (no float atomics).
    /// Ids outside 0..<V are never read or written out of bounds: their output row is zeros and they
    /// add nothing to the gradient. Values are not checked here (that would read the ids back to the
    /// host); callers validate ids where data enters, as the `Embedding` layer does.
    /// - Throws: `TensorError` when the table is not a float [V, D] tensor (V, D ≥ 1), the indices are
    ///   not int32, the devices differ, or the backend has no embedding kernels.
    public func embeddingLookup(_ indices: Tensor) throws -> Tensor {
        let op = "embeddingLookup"
        try requireFloat(op); try requireSameDevice(indices, op)
        guard rank == 2 else {
            throw TensorError.invalidShape(op: op, shape: shape, reason: "the table must be [vocabularySize, embeddingSize]")
        }
        guard indices.dtype == .int32 else {
            throw TensorError.dtypeMismatch(op: "\(op) indices", expected: .int32, actual: indices.dtype)
        }
        let descriptor = EmbeddingDescriptor(rows: shape[0], columns: shape[1], tokens: indices.count)
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        guard let backend = recurrentBackend else {
            throw TensorError.device("\(op) is not available on \(device.name) (\(device.backend.deviceDescription))")
        }
        let output = try Tensor.empty(Shape(indices.shape.dimensions + [descriptor.columns]), on: device)
        if descriptor.tokens > 0 {
            try backend.embeddingGather(buffer, indices.buffer, output.buffer, descriptor: descriptor)
        }
        let tableShape = shape
        return Tensor.recorded(output, inputs: [self]) { g, _ in
            let gradTable = try Tensor.empty(tableShape, on: g.device)
            if descriptor.tokens > 0 {
                try backend.embeddingScatter(g.buffer, indices.buffer, gradTable.buffer, descriptor: descriptor)
            } else {
                try backend.fill(gradTable.buffer, value: 0, count: descriptor.tableCount)
            }
            return [gradTable]
        }
    }
}
