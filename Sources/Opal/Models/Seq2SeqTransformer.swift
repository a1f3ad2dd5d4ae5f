import Foundation

/// An encoder–decoder Transformer (Vaswani et al., pre-LN blocks) for sequence-to-sequence tasks.
///
/// ```
/// memory = LN_enc(encoderBlocks(embed(source)·√E + PE))                 [B, S, E]  (source key mask)
/// logits = head(LN_dec(decoderBlocks(embed(target_in)·√E + PE, memory))) [B, T, V]
/// ```
/// Encoder blocks attend in both directions over the real source tokens; decoder blocks attend
/// causally over the decoder input and (cross-attention) over the real source positions of the memory.
/// Positions are the fixed sinusoidal table, so any length is accepted.
///
/// Parameter names (PyTorch-like): `embedding.weight` [V, E] when shared, else
/// `encoder.embedding.weight` and `decoder.embedding.weight`; `encoder.blocks.{i}.{ln1,attn,ln2,mlp}.…`,
/// `encoder.ln_f.*`, `decoder.blocks.{i}.{ln1,attn,ln_cross,cross_attn,ln2,mlp}.…`, `decoder.ln_f.*`,
/// `head.{weight,bias}` [V, E], [V].
public final class Seq2SeqTransformer: Module {
    public struct Configuration: Hashable, Sendable {
        public var vocabularySize: Int
        public var modelSize = 64
        public var headCount = 4
        public var encoderBlockCount = 2
        public var decoderBlockCount = 2
        public var feedForwardSize = 256
        /// One embedding table for source and target tokens (they share a vocabulary).
        public var sharedEmbeddings = true
        public var dropout: Float = 0

        public init(vocabularySize: Int, modelSize: Int = 64, headCount: Int = 4, encoderBlockCount: Int = 2,
                    decoderBlockCount: Int = 2, feedForwardSize: Int = 256, sharedEmbeddings: Bool = true,
                    dropout: Float = 0) {
            self.vocabularySize = vocabularySize; self.modelSize = modelSize; self.headCount = headCount
            self.encoderBlockCount = encoderBlockCount; self.decoderBlockCount = decoderBlockCount
            self.feedForwardSize = feedForwardSize; self.sharedEmbeddings = sharedEmbeddings; self.dropout = dropout
        }
    }

    public let configuration: Configuration
    /// The shared token embedding (nil with separate embeddings, which sit in `encoder` and `decoder`).
    public let sharedEmbedding: Embedding?
    public let encoder: Stack
    public let decoder: Stack
    public let head: Linear
    public var isTraining = true

    public var vocabularySize: Int { configuration.vocabularySize }
    public var modelSize: Int { configuration.modelSize }
    private var sourceEmbedding: Embedding { sharedEmbedding ?? encoder.embedding! }
    private var targetEmbedding: Embedding { sharedEmbedding ?? decoder.embedding! }

    /// - Throws: `TensorError.invalidArgument` for non-positive sizes or heads that do not divide the width.
    public init(_ configuration: Configuration) throws {
        let c = configuration
        guard c.vocabularySize > 0, c.modelSize > 0, c.encoderBlockCount > 0, c.decoderBlockCount > 0, c.feedForwardSize > 0 else {
            throw TensorError.invalidArgument(op: "Seq2SeqTransformer", reason: "vocabulary (\(c.vocabularySize)), model size (\(c.modelSize)), block counts (\(c.encoderBlockCount), \(c.decoderBlockCount)) and feed-forward size (\(c.feedForwardSize)) must be positive")
        }
        self.configuration = c
        // Embeddings N(0, 1/E): scaled by √E they enter the residual stream at unit scale, like the positions.
        func makeEmbedding() throws -> Embedding {
            let embedding = try Embedding(vocabularySize: c.vocabularySize, dimension: c.modelSize)
            try embedding.weight.assign(Tensor.normal(embedding.weight.shape, standardDeviation: 1 / Float(c.modelSize).squareRoot(),
                                                      seed: Random.nextSeed(), on: .cpu))
            return embedding
        }
        sharedEmbedding = c.sharedEmbeddings ? try makeEmbedding() : nil
        encoder = try Stack(
            embedding: c.sharedEmbeddings ? nil : try makeEmbedding(),
            blocks: (0..<c.encoderBlockCount).map { _ in
                try TransformerBlock(modelSize: c.modelSize, headCount: c.headCount, feedForwardSize: c.feedForwardSize,
                                     causal: false, dropout: c.dropout)
            }, modelSize: c.modelSize)
        decoder = try Stack(
            embedding: c.sharedEmbeddings ? nil : try makeEmbedding(),
            blocks: (0..<c.decoderBlockCount).map { _ in
                try TransformerBlock(modelSize: c.modelSize, headCount: c.headCount, feedForwardSize: c.feedForwardSize,
                                     causal: true, crossAttention: true, dropout: c.dropout)
            }, modelSize: c.modelSize)
        head = try Linear(inputSize: c.modelSize, outputSize: c.vocabularySize)
    }

    public var children: [(name: String, module: any Module)] {
        (sharedEmbedding.map { [("embedding", $0 as any Module)] } ?? [])
            + [("encoder", encoder), ("decoder", decoder), ("head", head)]
    }

    /// `embedding(ids)·√E + PE[offset ..< offset + N]` for ids [B, N].
    private func embed(_ ids: Tensor, with embedding: Embedding, offset: Int) throws -> Tensor {
        let positions = try SinusoidalPositionalEncoding.table(positions: offset..<(offset + ids.shape[1]), modelSize: modelSize,
                                                               on: ids.device)
        return try embedding(ids) * Float(modelSize).squareRoot() + positions
    }

    private func checkIDs(_ ids: Tensor, _ role: String) throws {
        guard ids.rank == 2, ids.shape[0] > 0, ids.shape[1] > 0 else {
            throw TensorError.invalidShape(op: "Seq2SeqTransformer", shape: ids.shape, reason: "the \(role) ids must be [batch ≥ 1, length ≥ 1]")
        }
    }

    /// The encoder memory.
    /// - Parameters:
    ///   - source: int32 [B, S] token ids.
    ///   - sourceMask: int32 [B, S], nonzero on real tokens, 0 on padding.
    /// - Returns: [B, S, E] (rows at padded positions are computed but never attended).
    public func encode(_ source: Tensor, sourceMask: Tensor) throws -> Tensor {
        try checkIDs(source, "source")
        var x = try embed(source, with: sourceEmbedding, offset: 0)
        for block in encoder.blocks { x = try block(x, keyMask: sourceMask) }
        return try encoder.finalNorm(x)
    }

    /// One cache pair per decoder block, for step-by-step decoding.
    public func makeDecoderCaches() -> DecoderCaches {
        DecoderCaches(selfAttention: decoder.blocks.map { _ in KeyValueCache() },
                      crossAttention: decoder.blocks.map { _ in KeyValueCache() })
    }

    /// Next-token logits at every decoder position.
    /// - Parameters:
    ///   - input: int32 [B, T] decoder input (begin token first).
    ///   - memory: `encode`'s output [B, S, E]; `sourceMask` its int32 [B, S] mask.
    ///   - caches: from `makeDecoderCaches()`: positions decoded before (their keys and values) and the
    ///     projected memory, so only the `T` new positions are computed; updated in place.
    /// - Returns: [B, T, V].
    public func decode(_ input: Tensor, memory: Tensor, sourceMask: Tensor, caches: DecoderCaches? = nil) throws -> Tensor {
        try checkIDs(input, "decoder input")
        var x = try embed(input, with: targetEmbedding, offset: caches?.length ?? 0)
        for (index, block) in decoder.blocks.enumerated() {
            x = try block(x, memory: memory, memoryMask: sourceMask, cache: caches?.selfAttention[index],
                          crossCache: caches?.crossAttention[index])
        }
        return try head(decoder.finalNorm(x))
    }

    /// Teacher-forced logits [B, T, V] for source [B, S] (mask [B, S]) and decoder input [B, T].
    public func callAsFunction(source: Tensor, sourceMask: Tensor, decoderInput: Tensor) throws -> Tensor {
        try decode(decoderInput, memory: encode(source, sourceMask: sourceMask), sourceMask: sourceMask)
    }

    /// Mean cross-entropy over the real target positions, padding excluded:
    /// `L = −Σ_{b,t} m[b,t]·log softmax(logits[b,t])[y[b,t]] / Σ m`, composed from `logSoftmax` and a
    /// host-built weighted one-hot tensor `W[b,t,v] = m[b,t]·[v = y[b,t]] / Σ m` (multiplied and summed).
    /// - Parameters:
    ///   - logits: [B, T, V].
    ///   - targets: B·T target ids in `0..<V` (host).
    ///   - mask: B·T weights (1 = real position, 0 = padding), not all zero.
    /// - Returns: a scalar.
    public static func maskedCrossEntropy(logits: Tensor, targets: [Int32], mask: [Float]) throws -> Tensor {
        guard logits.rank == 3 else {
            throw TensorError.invalidShape(op: "maskedCrossEntropy", shape: logits.shape, reason: "the logits must be [batch, time, vocabulary]")
        }
        let vocabulary = logits.shape[2], positions = logits.shape[0] * logits.shape[1]
        guard targets.count == positions, mask.count == positions else {
            throw TensorError.invalidArgument(op: "maskedCrossEntropy", reason: "\(targets.count) targets and \(mask.count) mask entries for \(positions) positions")
        }
        let total = mask.reduce(0, +)
        guard total > 0 else { throw TensorError.invalidArgument(op: "maskedCrossEntropy", reason: "the mask selects no position") }
        var weights = [Float](repeating: 0, count: positions * vocabulary)
        for (position, target) in targets.enumerated() where mask[position] != 0 {
            guard (0..<Int32(vocabulary)).contains(target) else {
                throw TensorError.invalidArgument(op: "maskedCrossEntropy", reason: "target id \(target) at position \(position) is outside the vocabulary of \(vocabulary)")
            }
            weights[position * vocabulary + Int(target)] = mask[position] / total
        }
        let selector = try Tensor(weights, shape: logits.shape, on: logits.device)
        return try -(logits.logSoftmax() * selector).sum()
    }

    /// The masked cross-entropy of a digit-reversal batch (teacher forcing), a scalar.
    public func loss(_ batch: DigitReversalBatch, on device: Device) throws -> Tensor {
        let (source, mask, input) = try batch.inputTensors(on: device)
        let logits = try self(source: source, sourceMask: mask, decoderInput: input)
        return try Self.maskedCrossEntropy(logits: logits, targets: batch.decoderTarget, mask: batch.lossMask)
    }

    /// The result of `greedyDecode`: per row, the tokens before the end token, and whether the end
    /// token came within the allowed length.
    public struct Decoding: Sendable, Equatable {
        public var tokens: [[Int32]]
        public var finished: [Bool]
    }

    /// Greedy (argmax) decoding with key/value caches: the source is encoded once, then each output
    /// token costs one decoder step over the single newest position. A row stops at its end token;
    /// decoding stops when every row has, or after `maximumLength + 1` steps (a row without an end token
    /// by then is reported unfinished with its `maximumLength + 1` tokens).
    /// - Parameters:
    ///   - source: int32 [B, S]; `sourceMask` int32 [B, S].
    ///   - maximumLength: the most tokens a row may produce before its end token (≥ 0).
    public func greedyDecode(source: Tensor, sourceMask: Tensor, maximumLength: Int,
                             begin: Int32 = DigitReversal.begin, end: Int32 = DigitReversal.end) throws -> Decoding {
        guard maximumLength >= 0 else {
            throw TensorError.invalidArgument(op: "greedyDecode", reason: "the maximum length must be ≥ 0, got \(maximumLength)")
        }
        try checkIDs(source, "source")
        let batch = source.shape[0], device = source.device
        let wasTraining = isTraining
        setTraining(false)
        defer { setTraining(wasTraining) }
        var result = Decoding(tokens: Array(repeating: [], count: batch), finished: Array(repeating: false, count: batch))
        try withoutGradients {
            let memory = try encode(source, sourceMask: sourceMask)
            let caches = makeDecoderCaches()
            var current = [Int32](repeating: begin, count: batch)
            for _ in 0...maximumLength {
                let logits = try decode(Tensor(current, shape: [batch, 1], on: device), memory: memory,
                                        sourceMask: sourceMask, caches: caches)
                let next = try logits.argmax(alongAxis: -1).intScalars()
                for row in 0..<batch where !result.finished[row] {
                    if next[row] == end { result.finished[row] = true } else { result.tokens[row].append(next[row]) }
                }
                if !result.finished.contains(false) { break }
                current = next
            }
        }
        return result
    }

    /// Greedy decodings of digit-reversal sources (in batches of `batchSize`) and the share that equal
    /// their reversal exactly (end token included).
    public func exactMatch(_ sources: [[Int32]], batchSize: Int = 256, on device: Device) throws -> (accuracy: Double, outputs: [[Int32]]) {
        guard !sources.isEmpty else { throw TensorError.invalidArgument(op: "exactMatch", reason: "no examples") }
        guard batchSize > 0 else { throw TensorError.invalidArgument(op: "exactMatch", reason: "the batch size must be positive") }
        var correct = 0
        var outputs: [[Int32]] = []
        for start in stride(from: 0, to: sources.count, by: batchSize) {
            let batch = DigitReversalBatch(sources: Array(sources[start..<min(start + batchSize, sources.count)]))
            let (source, mask, _) = try batch.inputTensors(on: device)
            let decoding = try greedyDecode(source: source, sourceMask: mask, maximumLength: batch.sourceLength)
            for (row, target) in batch.targets.enumerated() {
                if decoding.finished[row], decoding.tokens[row] == target { correct += 1 }
            }
            outputs += decoding.tokens
        }
        return (Double(correct) / Double(sources.count), outputs)
    }
}

extension Seq2SeqTransformer {
    static let modelName = "seq2seq-transformer"

    /// Checkpoint metadata that describes this model, so that `Seq2SeqTransformer.load(from:)` can
    /// rebuild it: `opal.model` = `seq2seq-transformer`, `opal.vocabulary_size`, `opal.model_size`,
    /// `opal.heads`, `opal.encoder_blocks`, `opal.decoder_blocks`, `opal.feed_forward`,
    /// `opal.shared_embeddings`, `opal.dropout_rate`, and `opal.task` (`digit-reversal`) with its lengths.
    public func descriptionMetadata(task: DigitReversal? = nil) -> [String: String] {
        let c = configuration
        var metadata = ["opal.model": Self.modelName, "opal.vocabulary_size": String(c.vocabularySize),
                        "opal.model_size": String(c.modelSize), "opal.heads": String(c.headCount),
                        "opal.encoder_blocks": String(c.encoderBlockCount), "opal.decoder_blocks": String(c.decoderBlockCount),
                        "opal.feed_forward": String(c.feedForwardSize), "opal.shared_embeddings": String(c.sharedEmbeddings),
                        "opal.dropout_rate": String(c.dropout)]
        if let task {
            metadata["opal.task"] = "digit-reversal"
            metadata["opal.minimum_length"] = String(task.minimumLength)
            metadata["opal.maximum_length"] = String(task.maximumLength)
        }
        return metadata
    }

    /// The settings named by `descriptionMetadata`'s keys, in the order a mismatch is reported.
    static let describedSettings: [(key: String, setting: String)] = [
        ("opal.model", "model"), ("opal.task", "task"), ("opal.vocabulary_size", "vocabulary size"),
        ("opal.model_size", "model size"), ("opal.heads", "attention heads"), ("opal.encoder_blocks", "encoder blocks"),
        ("opal.decoder_blocks", "decoder blocks"), ("opal.feed_forward", "feed-forward size"),
        ("opal.shared_embeddings", "shared embeddings"), ("opal.dropout_rate", "dropout"),
        ("opal.minimum_length", "minimum length"), ("opal.maximum_length", "maximum length"),
    ]

    /// Checks that checkpoint `metadata` describes this model (and `task`), as a run that resumes from
    /// it must: every entry of `descriptionMetadata(task:)` must be equal (a missing `opal.dropout_rate`
    /// counts as 0).
    /// - Throws: `TrainingStateError.mismatch` naming the first differing setting and both values.
    public func checkDescription(_ metadata: [String: String], task: DigitReversal?, path: String) throws {
        let expected = descriptionMetadata(task: task)
        for (key, setting) in Self.describedSettings {
            guard let current = expected[key] else { continue }
            let saved = metadata[key] ?? (key == "opal.dropout_rate" ? String(Float(0)) : "none")
            if saved != current {
                throw TrainingStateError.mismatch(path: path, setting: setting, checkpoint: saved, run: current)
            }
        }
    }

    /// Rebuilds a model saved with `descriptionMetadata` and loads its weights.
    /// - Throws: `CheckpointError` naming the file when it is not such a checkpoint or its tensors do not fit.
    public static func load(from url: URL) throws -> (model: Seq2SeqTransformer, metadata: [String: String]) {
        let path = url.path
        let contents = try CheckpointContents(contentsOf: url)
        let metadata = contents.metadata
        guard metadata["opal.model"] == modelName else {
            throw CheckpointError.malformedHeader(path: path, reason: "it holds a '\(metadata["opal.model"] ?? "unknown")' model, not a sequence-to-sequence Transformer (opal train seq2seq)")
        }
        func integer(_ key: String) throws -> Int {
            guard let value = metadata[key].flatMap(Int.init), value > 0 else {
                throw CheckpointError.malformedHeader(path: path, reason: "metadata \"\(key)\" is missing or not a positive integer")
            }
            return value
        }
        guard let shared = metadata["opal.shared_embeddings"].flatMap(Bool.init) else {
            throw CheckpointError.malformedHeader(path: path, reason: "metadata \"opal.shared_embeddings\" is missing or not true/false")
        }
        var dropout: Float = 0
        if let text = metadata["opal.dropout_rate"] {
            guard let value = Float(text), (0..<1).contains(value) else {
                throw CheckpointError.malformedHeader(path: path, reason: "metadata \"opal.dropout_rate\" is \"\(text)\", not a rate in [0, 1)")
            }
            dropout = value
        }
        let model = try Seq2SeqTransformer(Configuration(
            vocabularySize: integer("opal.vocabulary_size"), modelSize: integer("opal.model_size"), headCount: integer("opal.heads"),
            encoderBlockCount: integer("opal.encoder_blocks"), decoderBlockCount: integer("opal.decoder_blocks"),
            feedForwardSize: integer("opal.feed_forward"), sharedEmbeddings: shared, dropout: dropout))
        try model.load(contents, strict: true)
        return (model, metadata)
    }
}

extension Seq2SeqTransformer {
    /// One side of the encoder–decoder model: optional own token embedding, N pre-LN blocks and the
    /// final LayerNorm. Parameter names `embedding.weight` (separate embeddings only),
    /// `blocks.{i}.…`, `ln_f.{weight,bias}`.
    public final class Stack: Module {
        public let embedding: Embedding?
        public let blocks: [TransformerBlock]
        public let finalNorm: LayerNorm
        public var isTraining = true

        init(embedding: Embedding?, blocks: [TransformerBlock], modelSize: Int) throws {
            self.embedding = embedding; self.blocks = blocks
            finalNorm = try LayerNorm(featureCount: modelSize)
        }

        public var children: [(name: String, module: any Module)] {
            (embedding.map { [("embedding", $0 as any Module)] } ?? [])
                + blocks.enumerated().map { ("blocks.\($0.offset)", $0.element as any Module) }
                + [("ln_f", finalNorm)]
        }
    }

    /// Keys and values of a decoding in progress: per decoder block, the self-attention's earlier
    /// positions and the cross-attention's projected encoder memory.
    public struct DecoderCaches {
        public let selfAttention: [KeyValueCache]
        public let crossAttention: [KeyValueCache]
        /// Decoder positions done so far.
        public var length: Int { selfAttention.first?.length ?? 0 }
    }
}
