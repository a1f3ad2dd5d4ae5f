import Foundation

/// Which recurrent layer a model uses.
public enum RecurrentCellKind: String, Sendable, CaseIterable {
    case lstm, gru, rnn

    /// A recurrent layer of this kind (`nonlinearity` applies to the `rnn` only).
    public func makeLayer(inputSize: Int, hiddenSize: Int, layers: Int = 1, bidirectional: Bool = false,
                          dropout: Float = 0, nonlinearity: RecurrentNonlinearity = .tanh) throws -> RecurrentLayer {
        switch self {
        case .lstm: return try LSTM(inputSize: inputSize, hiddenSize: hiddenSize, layers: layers, bidirectional: bidirectional, dropout: dropout)
        case .gru: return try GRU(inputSize: inputSize, hiddenSize: hiddenSize, layers: layers, bidirectional: bidirectional, dropout: dropout)
        case .rnn: return try RNN(inputSize: inputSize, hiddenSize: hiddenSize, layers: layers, nonlinearity: nonlinearity,
                                  bidirectional: bidirectional, dropout: dropout)
        }
    }
}

/// A character-level language model (R3 with the defaults: Embedding V×64 → LSTM 64→256 → Linear
/// 256→V at every step), predicting each next character of a text.
///
/// Parameter names (PyTorch `state_dict` of a module with attributes `embedding`, `rnn`, `output`):
/// `embedding.weight` [V, E], `rnn.weight_ih_l0` [4H, E], `rnn.weight_hh_l0` [4H, H], `rnn.bias_ih_l0`,
/// `rnn.bias_hh_l0` [4H], `output.weight` [V, H], `output.bias` [V].
public final class CharLanguageModel: Module {
    public let cellKind: RecurrentCellKind
    public let embedding: Embedding
    public let rnn: RecurrentLayer
    public let output: Linear
    public var isTraining = true

    public var vocabularySize: Int { embedding.vocabularySize }

    public init(vocabularySize: Int, embeddingSize: Int = 64, hiddenSize: Int = 256, layers: Int = 1,
                cell: RecurrentCellKind = .lstm, dropout: Float = 0, nonlinearity: RecurrentNonlinearity = .tanh) throws {
        self.cellKind = cell
        embedding = try Embedding(vocabularySize: vocabularySize, dimension: embeddingSize)
        rnn = try cell.makeLayer(inputSize: embeddingSize, hiddenSize: hiddenSize, layers: layers, dropout: dropout,
                                 nonlinearity: nonlinearity)
        output = try Linear(inputSize: hiddenSize, outputSize: vocabularySize)
    }

    public var children: [(name: String, module: any Module)] {
        [("embedding", embedding), ("rnn", rnn), ("output", output)]
    }

    /// Logits for the next character at every position.
    /// - Parameters: `ids` int32 [batch, time]; `state` the recurrent state carried from the previous chunk (nil: zeros).
    /// - Returns: `logits` [batch, time, V] and the state after the last position.
    public func callAsFunction(_ ids: Tensor, state: RecurrentState? = nil) throws -> (logits: Tensor, state: RecurrentState) {
        guard ids.rank == 2 else {
            throw TensorError.invalidShape(op: "CharLanguageModel", shape: ids.shape, reason: "the ids must be [batch, time]")
        }
        let (hidden, next) = try rnn(embedding(ids), initialState: state)
        return (try output(hidden), next)
    }

    /// Mean cross-entropy (nats per character) of predicting `targets` [batch, time] from `ids`.
    public func loss(_ ids: Tensor, targets: Tensor, state: RecurrentState? = nil) throws -> (loss: Tensor, state: RecurrentState) {
        let (logits, next) = try self(ids, state: state)
        let rows = ids.shape[0] * ids.shape[1]
        let loss = try crossEntropy(logits: logits.reshaped(to: [rows, vocabularySize]),
                                    labels: targets.reshaped(to: [rows]))
        return (loss, next)
    }

    /// Generates `length` characters after `prompt`.
    ///
    /// The prompt is read in one forward pass; then each character is drawn from
    /// softmax(logits / temperature) with a seeded generator and fed back with the carried state
    /// (one step per character, the prompt is never re-run). Temperature 0 picks the most likely character.
    /// - Throws: `TextCorpusError.unknownCharacters` when the prompt has characters outside the
    ///   vocabulary; `TensorError.invalidArgument` for an empty prompt, a negative length or temperature.
    public func sample(corpus: TextCorpus, prompt: String, length: Int, temperature: Float = 0.8, seed: UInt64 = 1,
                       on device: Device) throws -> String {
        guard corpus.vocabularySize == vocabularySize else {
            throw TensorError.invalidArgument(op: "sample", reason: "the vocabulary has \(corpus.vocabularySize) characters but the model \(vocabularySize)")
        }
        return try sample(vocabulary: corpus.vocabulary, name: corpus.name, prompt: prompt, length: length,
                          temperature: temperature, seed: seed, on: device)
    }

    /// As `sample(corpus:…)` with the vocabulary given directly (e.g. read from a checkpoint).
    public func sample(vocabulary: [Unicode.Scalar], name: String = "the model", prompt: String, length: Int,
                       temperature: Float = 0.8, seed: UInt64 = 1, on device: Device) throws -> String {
        let promptIDs = try Self.promptIDs(prompt, vocabulary: vocabulary, vocabularySize: vocabularySize, name: name,
                                           length: length, temperature: temperature)
        let wasTraining = isTraining
        setTraining(false)
        defer { setTraining(wasTraining) }
        try move(to: device)
        var generator = SeededGenerator(seed: seed)
        var generated = String.UnicodeScalarView()
        try withoutGradients {
            var (logits, state) = try self(embedding.indices(promptIDs, shape: [1, promptIDs.count], on: device))
            var last = try logits.sliced(along: 1, (promptIDs.count - 1)..<promptIDs.count)
            for _ in 0..<length {
                let next = Self.draw(from: try last.scalars(), temperature: temperature, generator: &generator)
                generated.append(vocabulary[next])
                (logits, state) = try self(Tensor([Int32(next)], shape: [1, 1], on: device), state: state)
                last = logits
            }
        }
        return String(generated)
    }

    /// The ids of a sampling prompt, after checking the sampling settings.
    /// - Throws: `TensorError.invalidArgument` for an empty prompt, a negative length or temperature, or a
    ///   vocabulary that does not fit the model; `TextCorpusError.unknownCharacters` naming prompt characters
    ///   outside the vocabulary.
    static func promptIDs(_ prompt: String, vocabulary: [Unicode.Scalar], vocabularySize: Int, name: String,
                          length: Int, temperature: Float) throws -> [Int32] {
        guard !prompt.isEmpty else { throw TensorError.invalidArgument(op: "sample", reason: "the prompt is empty") }
        guard length >= 0 else { throw TensorError.invalidArgument(op: "sample", reason: "the length must be ≥ 0, got \(length)") }
        guard temperature >= 0, temperature.isFinite else {
            throw TensorError.invalidArgument(op: "sample", reason: "the temperature must be ≥ 0, got \(temperature)")
        }
        guard vocabulary.count == vocabularySize else {
            throw TensorError.invalidArgument(op: "sample", reason: "the vocabulary has \(vocabulary.count) characters but the model \(vocabularySize)")
        }
        let index = Dictionary(uniqueKeysWithValues: vocabulary.enumerated().map { ($0.element, Int32($0.offset)) })
        var unknown: [String] = []
        let ids = prompt.unicodeScalars.compactMap { scalar -> Int32? in
            if let id = index[scalar] { return id }
            if !unknown.contains(String(scalar)) { unknown.append(String(scalar)) }
            return nil
        }
        guard unknown.isEmpty else { throw TextCorpusError.unknownCharacters(name: name, characters: unknown) }
        return ids
    }

    /// An index drawn from softmax(logits / temperature) (argmax at temperature 0).
    static func draw(from logits: [Float], temperature: Float, generator: inout SeededGenerator) -> Int {
        guard temperature > 0 else { return logits.indices.max { logits[$0] < logits[$1] } ?? 0 }
        let scaled = logits.map { Double($0) / Double(temperature) }
        let peak = scaled.max() ?? 0
        let weights = scaled.map { Foundation.exp($0 - peak) }
        var threshold = generator.nextUnitDouble() * weights.reduce(0, +)
        for (index, weight) in weights.enumerated() {
            threshold -= weight
            if threshold < 0 { return index }
        }
        return weights.count - 1
    }
}

extension CharLanguageModel {
    static let modelName = "char-lm"

    /// Checkpoint metadata that describes this model and its vocabulary, so that
    /// `CharLanguageModel.load(from:)` can rebuild it: `opal.model` = `char-lm`, `opal.cell`,
    /// `opal.embedding_size`, `opal.hidden_size`, `opal.layers`, `opal.vocabulary` (JSON array of the
    /// characters' Unicode code points, in id order), `opal.text` and, for the RNN, `opal.nonlinearity`.
    public func descriptionMetadata(vocabulary: [Unicode.Scalar], textName: String) -> [String: String] {
        let codes = vocabulary.map { String($0.value) }.joined(separator: ",")
        return ["opal.model": Self.modelName, "opal.cell": cellKind.rawValue,
                "opal.embedding_size": String(embedding.dimension), "opal.hidden_size": String(rnn.hiddenSize),
                "opal.layers": String(rnn.layerCount), "opal.vocabulary": "[\(codes)]", "opal.text": textName,
                "opal.nonlinearity": (rnn as? RNN)?.nonlinearity.rawValue ?? "none"]
    }

    /// Rebuilds a model saved with `descriptionMetadata` and loads its weights.
    /// - Throws: `CheckpointError` naming the file when it is not a character language model or its tensors do not fit.
    public static func load(from url: URL) throws -> (model: CharLanguageModel, vocabulary: [Unicode.Scalar], metadata: [String: String]) {
        let path = url.path
        let contents = try CheckpointContents(contentsOf: url)
        let metadata = contents.metadata
        guard metadata["opal.model"] == modelName else {
            throw CheckpointError.malformedHeader(path: path, reason: "it holds a '\(metadata["opal.model"] ?? "unknown")' model, not a character language model (opal train lstm|gru|rnn)")
        }
        func integer(_ key: String) throws -> Int {
            guard let value = metadata[key].flatMap(Int.init), value > 0 else {
                throw CheckpointError.malformedHeader(path: path, reason: "metadata \"\(key)\" is missing or not a positive integer")
            }
            return value
        }
        guard let cell = metadata["opal.cell"].flatMap(RecurrentCellKind.init(rawValue:)) else {
            throw CheckpointError.malformedHeader(path: path, reason: "metadata \"opal.cell\" is missing or not lstm, gru or rnn")
        }
        let vocabulary = try vocabulary(from: metadata, path: path)
        let model = try CharLanguageModel(vocabularySize: vocabulary.count, embeddingSize: integer("opal.embedding_size"),
                                          hiddenSize: integer("opal.hidden_size"), layers: integer("opal.layers"), cell: cell,
                                          nonlinearity: metadata["opal.nonlinearity"].flatMap(RecurrentNonlinearity.init(rawValue:)) ?? .tanh)
        try model.load(from: url, strict: true)   // re-read so that errors name the file
        return (model, vocabulary, metadata)
    }

    /// The `opal.vocabulary` metadata (a JSON array of code points) of the checkpoint at `path`.
    static func vocabulary(from metadata: [String: String], path: String) throws -> [Unicode.Scalar] {
        let codes = (metadata["opal.vocabulary"] ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            .split(separator: ",").map { UInt32($0.trimmingCharacters(in: .whitespaces)).flatMap(Unicode.Scalar.init) }
        guard !codes.isEmpty, codes.allSatisfy({ $0 != nil }) else {
            throw CheckpointError.malformedHeader(path: path, reason: "metadata \"opal.vocabulary\" is missing or malformed")
        }
        return codes.map { $0! }
    }
}
