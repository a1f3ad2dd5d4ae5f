/// Classifies an image read row by row as a sequence (Fashion-MNIST: 28 steps of 28 features):
/// a recurrent layer over the rows, its last layer's final hidden state (both directions when
/// bidirectional) → Linear → class logits.
///
/// Input [batch, 1, rows, columns] (as `LabeledDataset` images), [batch, rows, columns] or
/// [batch, rows · columns]; it is viewed as [batch, rows, columns] (batch first, time = rows).
/// Parameter names: `rnn.weight_ih_l0` …, `classifier.weight`, `classifier.bias`.
/// Being a `Layer`, it trains with `ClassifierTrainer` like the MLP and the CNN.
public final class SequenceClassifier: Layer {
    public let rows: Int, columns: Int
    public let rnn: RecurrentLayer
    public let classifier: Linear
    public var isTraining = true

    public init(rows: Int = 28, columns: Int = 28, hiddenSize: Int = 128, layers: Int = 1,
                cell: RecurrentCellKind = .lstm, bidirectional: Bool = false, classes: Int = 10,
                nonlinearity: RecurrentNonlinearity = .tanh) throws {
        guard rows > 0, columns > 0 else {
            throw TensorError.invalidArgument(op: "SequenceClassifier", reason: "rows and columns must be positive, got \(rows)×\(columns)")
        }
        self.rows = rows; self.columns = columns
        rnn = try cell.makeLayer(inputSize: columns, hiddenSize: hiddenSize, layers: layers, bidirectional: bidirectional,
                                 nonlinearity: nonlinearity)
        classifier = try Linear(inputSize: rnn.outputSize, outputSize: classes)
    }

    public var children: [(name: String, module: any Module)] { [("rnn", rnn), ("classifier", classifier)] }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        guard input.rank >= 2, input.count == input.shape[0] * rows * columns else {
            throw TensorError.invalidShape(op: "SequenceClassifier(\(rows) steps × \(columns) features)", shape: input.shape,
                                           reason: "expected [batch, \(rows), \(columns)] or [batch, 1, \(rows), \(columns)]")
        }
        let batch = input.shape[0]
        let (_, state) = try rnn(input.reshaped(to: [batch, rows, columns]), initialState: nil)
        // The last layer's final hidden state: [directions, batch, H] → [batch, directions · H].
        let directions = rnn.directionCount
        let last = try state.hidden.sliced(along: 0, (state.hidden.shape[0] - directions)..<state.hidden.shape[0])
        let features = directions == 1 ? try last.reshaped(to: [batch, rnn.hiddenSize])
                                       : try last.permuted([1, 0, 2]).reshaped(to: [batch, directions * rnn.hiddenSize])
        return try classifier(features)
    }
}
