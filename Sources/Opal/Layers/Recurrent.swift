/// Recurrent sequence layers: `LSTM`, `GRU` and `RNN` (tanh or ReLU), batch-first, multi-layer,
/// optionally bidirectional, with PyTorch's parameter names, layouts and initialisation, so a
/// checkpoint loads into `torch.nn.LSTM(…, batch_first=True)` and back.
///
/// Per layer and direction (G = 4 gates for the LSTM, 3 for the GRU, 1 for the RNN):
/// - `weight_ih_l{k}` [G·H, I] (layer 0) or [G·H, D·H] (deeper layers, D = directions),
///   `weight_hh_l{k}` [G·H, H], `bias_ih_l{k}` [G·H], `bias_hh_l{k}` [G·H]; the reverse direction
///   adds the suffix `_reverse`. Gate order as PyTorch: LSTM (i, f, g, o), GRU (r, z, n).
/// - Every weight and bias starts as U(−1/√H, 1/√H).
///
/// The forward pass projects the inputs of all time steps with one matrix product
/// ([B·T, I] × W_ihᵀ); each step then does one product for the recurrent projection (h · W_hhᵀ)
/// and one fused cell call (`lstmCell` / `gruCell`), or the plain-op `…Composed` reference when
/// `implementation == .composed`.

/// Which cell update a recurrent layer runs: the fused kernel or the same maths composed from plain ops.
public enum RecurrentImplementation: String, Sendable, CaseIterable {
    case fused, composed
}

/// The nonlinearity of a plain `RNN`: `h' = act(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)`.
public enum RecurrentNonlinearity: String, Sendable, CaseIterable {
    case tanh, relu
}

/// The state of a recurrent layer between calls.
///
/// `hidden` is [layers · directions, batch, hiddenSize] (PyTorch's `h_n`, ordered layer 0 forward,
/// layer 0 reverse, layer 1 forward, …); `cell` has the same shape and is present for the LSTM only (`c_n`).
public struct RecurrentState: Sendable {
    public var hidden: Tensor
    public var cell: Tensor?

    public init(hidden: Tensor, cell: Tensor? = nil) {
        self.hidden = hidden; self.cell = cell
    }

    /// The same values cut from the autodiff graph (truncated backpropagation through time).
    public func detached() -> RecurrentState {
        RecurrentState(hidden: hidden.detached(), cell: cell?.detached())
    }
}

/// The weights of one layer in one direction.
public struct RecurrentWeights {
    /// [G·H, inputs]
    public let inputWeight: Parameter
    /// [G·H, H]
    public let hiddenWeight: Parameter
    /// [G·H]
    public let inputBias: Parameter
    /// [G·H]
    public let hiddenBias: Parameter
}

/// The shared machinery of `LSTM`, `GRU` and `RNN`.
public class RecurrentLayer: Layer {
    enum Cell: Equatable {
        case lstm, gru, rnn(RecurrentNonlinearity)

        var gateCount: Int {
            switch self {
            case .lstm: return 4
            case .gru: return 3
            case .rnn: return 1
            }
        }

        var name: String {
            switch self {
            case .lstm: return "LSTM"
            case .gru: return "GRU"
            case .rnn(let nonlinearity): return "RNN(\(nonlinearity.rawValue))"
            }
        }
    }

    let cellKind: Cell
    public let inputSize: Int
    public let hiddenSize: Int
    public let layerCount: Int
    public let isBidirectional: Bool
    /// Dropout probability applied to the outputs of every layer but the last (training mode only).
    public let dropoutProbability: Float
    /// Fused cell kernels (default) or the same cell composed from plain ops.
    public var implementation: RecurrentImplementation = .fused
    public var isTraining = true
    /// `weights[layer][direction]` (direction 0 forward, 1 reverse).
    public let weights: [[RecurrentWeights]]
    /// The dropout between layers (nil when `dropoutProbability` is 0 or there is one layer).
    public let dropout: Dropout?

    public var directionCount: Int { isBidirectional ? 2 : 1 }
    /// Feature size of the output: `hiddenSize` × directions.
    public var outputSize: Int { hiddenSize * directionCount }

    /// A short description used in error messages, e.g. `LSTM(64→256, 2 layers, bidirectional)`.
    public var layerDescription: String {
        var parts = ["\(inputSize)→\(hiddenSize)"]
        if layerCount > 1 { parts.append("\(layerCount) layers") }
        if isBidirectional { parts.append("bidirectional") }
        return "\(cellKind.name)(\(parts.joined(separator: ", ")))"
    }

    init(cell: Cell, inputSize: Int, hiddenSize: Int, layers: Int, bidirectional: Bool, dropout: Float,
         seed: UInt32?, device: Device) throws {
        let kind = cell.name
        guard inputSize > 0, hiddenSize > 0 else {
            throw TensorError.invalidArgument(op: kind, reason: "sizes must be positive, got \(inputSize)→\(hiddenSize)")
        }
        guard layers > 0 else { throw TensorError.invalidArgument(op: kind, reason: "needs at least one layer, got \(layers)") }
        guard dropout >= 0, dropout < 1 else {
            throw TensorError.invalidArgument(op: kind, reason: "dropout \(dropout) is outside [0, 1)")
        }
        self.cellKind = cell
        self.inputSize = inputSize; self.hiddenSize = hiddenSize; self.layerCount = layers
        self.isBidirectional = bidirectional; self.dropoutProbability = dropout
        let gates = cell.gateCount * hiddenSize
        let bound = 1 / Float(hiddenSize).squareRoot()
        var nextSeed = seed
        func draw(_ shape: Shape) throws -> Parameter {
            let value = nextSeed ?? Random.nextSeed()
            nextSeed = nextSeed.map { $0 &+ 1 }
            return Parameter(try Tensor.uniform(shape, in: -bound...bound, seed: value, on: device))
        }
        var all: [[RecurrentWeights]] = []
        for layer in 0..<layers {
            let inputs = layer == 0 ? inputSize : hiddenSize * (bidirectional ? 2 : 1)
            var directions: [RecurrentWeights] = []
            for _ in 0..<(bidirectional ? 2 : 1) {
                directions.append(RecurrentWeights(inputWeight: try draw([gates, inputs]), hiddenWeight: try draw([gates, hiddenSize]),
                                                   inputBias: try draw([gates]), hiddenBias: try draw([gates])))
            }
            all.append(directions)
        }
        self.weights = all
        self.dropout = dropout > 0 && layers > 1 ? try Dropout(probability: dropout, seed: nextSeed) : nil
    }

    /// PyTorch's names: `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, then `…_reverse`, then layer 1 …
    public var ownParameters: [(name: String, parameter: Parameter)] {
        var result: [(name: String, parameter: Parameter)] = []
        for (layer, directions) in weights.enumerated() {
            for (direction, w) in directions.enumerated() {
                let suffix = "_l\(layer)" + (direction == 1 ? "_reverse" : "")
                result += [("weight_ih" + suffix, w.inputWeight), ("weight_hh" + suffix, w.hiddenWeight),
                           ("bias_ih" + suffix, w.inputBias), ("bias_hh" + suffix, w.hiddenBias)]
            }
        }
        return result
    }

    public var children: [(name: String, module: any Module)] {
        dropout.map { [("dropout", $0 as any Module)] } ?? []
    }

    /// Zeros of the state shape for `batch` sequences on `device`.
    public func zeroState(batch: Int, on device: Device) throws -> RecurrentState {
        let shape: Shape = [layerCount * directionCount, batch, hiddenSize]
        return RecurrentState(hidden: try Tensor.zeros(shape, on: device),
                              cell: cellKind == .lstm ? try Tensor.zeros(shape, on: device) : nil)
    }

    /// The output sequence only (zero initial state).
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try callAsFunction(input, initialState: nil).output
    }

    /// Runs the layer over a batch of sequences.
    ///
    /// - Parameters:
    ///   - input: [batch, time, inputSize], time ≥ 1.
    ///   - initialState: the state before the first step (zeros when nil), shapes as `RecurrentState`.
    /// - Returns: `output` [batch, time, hiddenSize · directions] (the last layer's hidden state at each
    ///   step, forward and reverse concatenated) and the final state (the reverse direction's final
    ///   state is the one after it reached time step 0, as in PyTorch).
    /// - Throws: `TensorError` naming the layer and the shapes when the input is not [batch, time,
    ///   inputSize] with time ≥ 1 and batch ≥ 1, or the state has the wrong shape or device.
    public func callAsFunction(_ input: Tensor, initialState: RecurrentState?) throws -> (output: Tensor, state: RecurrentState) {
        let name = layerDescription
        guard input.dtype == .float32 else {
            throw TensorError.dtypeMismatch(op: "\(name) input", expected: .float32, actual: input.dtype)
        }
        guard input.rank == 3, input.shape[2] == inputSize else {
            throw TensorError.invalidShape(op: name, shape: input.shape,
                                           reason: "the input must be [batch, time, \(inputSize)] (batch first)")
        }
        let batch = input.shape[0], time = input.shape[1]
        guard time > 0 else {
            throw TensorError.invalidShape(op: name, shape: input.shape, reason: "the sequence length (time, axis 1) is 0")
        }
        guard batch > 0 else { throw TensorError.invalidShape(op: name, shape: input.shape, reason: "the batch is empty") }
        let stateShape: Shape = [layerCount * directionCount, batch, hiddenSize]
        let state = try initialState ?? zeroState(batch: batch, on: input.device)
        guard state.hidden.shape == stateShape else {
            throw TensorError.invalidShape(op: "\(name) hidden state", shape: state.hidden.shape,
                                           reason: "expected [layers · directions, batch, hidden] = \(stateShape) for input \(input.shape)")
        }
        try input.requireSameDevice(state.hidden, "\(name) hidden state")
        if cellKind == .lstm {
            guard let cell = state.cell else {
                throw TensorError.invalidArgument(op: name, reason: "the initial state has no cell state (an LSTM needs hidden and cell)")
            }
            guard cell.shape == stateShape else {
                throw TensorError.invalidShape(op: "\(name) cell state", shape: cell.shape,
                                               reason: "expected [layers · directions, batch, hidden] = \(stateShape) for input \(input.shape)")
            }
            try input.requireSameDevice(cell, "\(name) cell state")
        } else if state.cell != nil {
            throw TensorError.invalidArgument(op: name, reason: "a \(cellKind.name) has no cell state; pass the hidden state only")
        }

        var layerInput = input
        var finalHidden: [Tensor] = [], finalCell: [Tensor] = []
        for (layer, directions) in weights.enumerated() {
            var outputs: [Tensor] = []
            for (direction, w) in directions.enumerated() {
                let slot = layer * directionCount + direction
                let h0 = try state.hidden.sliced(along: 0, slot..<slot + 1).reshaped(to: [batch, hiddenSize])
                let c0 = try state.cell.map { try $0.sliced(along: 0, slot..<slot + 1).reshaped(to: [batch, hiddenSize]) }
                let run = try runDirection(layerInput, weights: w, hidden: h0, cell: c0, reverse: direction == 1)
                outputs.append(run.output)
                finalHidden.append(try run.hidden.reshaped(to: [1, batch, hiddenSize]))
                if let c = run.cell { finalCell.append(try c.reshaped(to: [1, batch, hiddenSize])) }
            }
            layerInput = outputs.count == 1 ? outputs[0] : try Tensor.concatenated(outputs, along: 2)
            if layer < layerCount - 1, let dropout { layerInput = try dropout(layerInput) }
        }
        let hidden = finalHidden.count == 1 ? finalHidden[0] : try Tensor.concatenated(finalHidden, along: 0)
        let cell = finalCell.isEmpty ? nil : finalCell.count == 1 ? finalCell[0] : try Tensor.concatenated(finalCell, along: 0)
        return (layerInput, RecurrentState(hidden: hidden, cell: cell))
    }

    /// One layer in one direction over the whole sequence.
    /// - Parameters: `input` [B, T, I], `hidden`/`cell` [B, H]. Returns the outputs [B, T, H] and the final state.
    private func runDirection(_ input: Tensor, weights w: RecurrentWeights, hidden h0: Tensor, cell c0: Tensor?,
                              reverse: Bool) throws -> (output: Tensor, hidden: Tensor, cell: Tensor?) {
        let batch = input.shape[0], time = input.shape[1], features = input.shape[2]
        let gates = cellKind.gateCount * hiddenSize
        // All time steps' input projections in one GEMM: [B·T, I] × W_ihᵀ → [B, T, G·H]. The LSTM and
        // RNN add both biases here once; the GRU keeps b_hh inside the reset gate's product.
        var projection = try input.reshaped(to: [batch * time, features]).matmul(w.inputWeight.value, transposeOther: true)
        projection = cellKind == .gru ? try projection + w.inputBias.value
                                      : try projection + (w.inputBias.value + w.hiddenBias.value)
        let steps = try timeSteps(of: projection.reshaped(to: [batch, time, gates]))
        var h = h0, c = c0
        var outputs = [Tensor?](repeating: nil, count: time)
        for t in reverse ? Array((0..<time).reversed()) : Array(0..<time) {
            let inputGates = steps[t]
            let recurrent = try h.matmul(w.hiddenWeight.value, transposeOther: true)
            switch cellKind {
            case .lstm:
                let preactivations = try inputGates + recurrent
                let next = implementation == .fused ? try preactivations.lstmCell(cell: c!)
                                                    : try preactivations.lstmCellComposed(cell: c!)
                (h, c) = (next.hidden, next.cell)
            case .gru:
                let hiddenGates = try recurrent + w.hiddenBias.value
                h = implementation == .fused
                    ? try Tensor.gruCell(inputGates: inputGates, hiddenGates: hiddenGates, hidden: h)
                    : try Tensor.gruCellComposed(inputGates: inputGates, hiddenGates: hiddenGates, hidden: h)
            case .rnn(.tanh):
                h = try (inputGates + recurrent).tanh()
            case .rnn(.relu):
                h = try (inputGates + recurrent).relu()
            }
            outputs[t] = try h.reshaped(to: [batch, 1, hiddenSize])
        }
        let output = time == 1 ? outputs[0]! : try Tensor.concatenated(outputs.map { $0! }, along: 1)
        return (output, h, c)
    }
}

/// Long short-term memory (Hochreiter & Schmidhuber), as `torch.nn.LSTM(batch_first=True)`:
///
///     i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh   (in that order)
///     c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c')
public final class LSTM: RecurrentLayer {
    /// - Parameters:
    ///   - inputSize: features per time step; `hiddenSize`: H.
    ///   - layers: stacked layers (each after the first reads the previous layer's output).
    ///   - bidirectional: run a second pass from the end of the sequence and concatenate its outputs.
    ///   - dropout: dropout probability on the outputs of every layer but the last (training mode).
    ///   - seed: the first of consecutive seeds for the weights (nil: drawn from `Random`).
    public init(inputSize: Int, hiddenSize: Int, layers: Int = 1, bidirectional: Bool = false, dropout: Float = 0,
                seed: UInt32? = nil, on device: Device = .cpu) throws {
        try super.init(cell: .lstm, inputSize: inputSize, hiddenSize: hiddenSize, layers: layers,
                       bidirectional: bidirectional, dropout: dropout, seed: seed, device: device)
    }
}

/// Gated recurrent unit (Cho et al.), as `torch.nn.GRU(batch_first=True)`:
///
///     r = σ(x·W_irᵀ + b_ir + h·W_hrᵀ + b_hr),   z = σ(x·W_izᵀ + b_iz + h·W_hzᵀ + b_hz)
///     n = tanh(x·W_inᵀ + b_in + r ⊙ (h·W_hnᵀ + b_hn)),   h' = (1 − z) ⊙ n + z ⊙ h
public final class GRU: RecurrentLayer {
    /// Parameters as `LSTM.init`.
    public init(inputSize: Int, hiddenSize: Int, layers: Int = 1, bidirectional: Bool = false, dropout: Float = 0,
                seed: UInt32? = nil, on device: Device = .cpu) throws {
        try super.init(cell: .gru, inputSize: inputSize, hiddenSize: hiddenSize, layers: layers,
                       bidirectional: bidirectional, dropout: dropout, seed: seed, device: device)
    }
}

/// Elman recurrent network, as `torch.nn.RNN(batch_first=True, nonlinearity=…)`:
/// `h' = act(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)` with act = tanh or ReLU.
public final class RNN: RecurrentLayer {
    public var nonlinearity: RecurrentNonlinearity {
        if case .rnn(let nonlinearity) = cellKind { return nonlinearity }
        return .tanh
    }

    /// Parameters as `LSTM.init`, plus the nonlinearity.
    public init(inputSize: Int, hiddenSize: Int, layers: Int = 1, nonlinearity: RecurrentNonlinearity = .tanh,
                bidirectional: Bool = false, dropout: Float = 0, seed: UInt32? = nil, on device: Device = .cpu) throws {
        try super.init(cell: .rnn(nonlinearity), inputSize: inputSize, hiddenSize: hiddenSize, layers: layers,
                       bidirectional: bidirectional, dropout: dropout, seed: seed, device: device)
    }
}

/// The time steps of a [batch, time, features] tensor as `time` tensors [batch, features]: one op with
/// `time` outputs (one strided copy each). Its backward writes each step's gradient into that step's
/// rows of one [batch, time, features] buffer. (`sliced(along:)` per step would instead give every step
/// a pullback that allocates a whole zero tensor, which the tape then adds up: O(T²) memory traffic.)
func timeSteps(of source: Tensor) throws -> [Tensor] {
    let (batch, time, features) = (source.shape[0], source.shape[1], source.shape[2])
    let pieces = try (0..<time).map { t in
        let piece = try Tensor.empty([batch, features], on: source.device)
        try Tensor.copy(from: source, to: piece, shape: [batch, features], sourceOffset: t * features,
                        sourceStrides: [time * features, 1], destinationOffset: 0, destinationStrides: [features, 1])
        return piece
    }
    return Tensor.recorded(pieces, inputs: [source]) { upstreams, _ in
        let complete = upstreams.allSatisfy { $0 != nil }
        let gradient = complete ? try Tensor.empty(source.shape, on: source.device) : try Tensor.zeros(source.shape, on: source.device)
        for (t, upstream) in upstreams.enumerated() {
            guard let upstream else { continue }
            try Tensor.copy(from: upstream, to: gradient, shape: [batch, features], sourceOffset: 0,
                            sourceStrides: [features, 1], destinationOffset: t * features,
                            destinationStrides: [time * features, 1])
        }
        return [gradient]
    }
}
