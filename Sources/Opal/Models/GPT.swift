import Foundation

/// A decoder-only Transformer language model over characters (R6 with the defaults: vocabulary 65,
/// context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4× GELU).
///
/// `logits = head(LN_f(blocks(tokenEmbedding(ids) + positionEmbedding(positions))))`, every block causal.
///
/// Parameter names (a PyTorch module with these attributes loads them unchanged):
/// `token_embedding.weight` [V, E], `position_embedding.weight` [context, E],
/// `blocks.{i}.ln1.{weight,bias}`, `blocks.{i}.attn.in_proj_weight` [3E, E], `blocks.{i}.attn.in_proj_bias`,
/// `blocks.{i}.attn.out_proj.{weight,bias}`, `blocks.{i}.ln2.*`, `blocks.{i}.mlp.fc1.*`, `blocks.{i}.mlp.fc2.*`,
/// `ln_f.{weight,bias}`, `head.{weight,bias}`.
public final class GPT: Module {
    public struct Configuration: Hashable, Sendable {
        public var vocabularySize: Int
        public var contextLength = 64
        public var modelSize = 128
        public var headCount = 4
        public var blockCount = 2
        public var dropout: Float = 0

        public init(vocabularySize: Int, contextLength: Int = 64, modelSize: Int = 128, headCount: Int = 4,
                    blockCount: Int = 2, dropout: Float = 0) {
            self.vocabularySize = vocabularySize; self.contextLength = contextLength; self.modelSize = modelSize
            self.headCount = headCount; self.blockCount = blockCount; self.dropout = dropout
        }
    }

    public let configuration: Configuration
    public let tokenEmbedding: Embedding
    public let positionEmbedding: Embedding
    public let blocks: [TransformerBlock]
    public let finalNorm: LayerNorm
    public let head: Linear
    public var isTraining = true

    public var vocabularySize: Int { configuration.vocabularySize }
    public var contextLength: Int { configuration.contextLength }

    /// - Throws: `TensorError.invalidArgument` for non-positive sizes or heads that do not divide the width.
    public init(_ configuration: Configuration) throws {
        let c = configuration
        guard c.vocabularySize > 0, c.contextLength > 0, c.blockCount > 0 else {
            throw TensorError.invalidArgument(op: "GPT", reason: "vocabulary (\(c.vocabularySize)), context (\(c.contextLength)) and block count (\(c.blockCount)) must be positive")
        }
        self.configuration = c
        tokenEmbedding = try Embedding(vocabularySize: c.vocabularySize, dimension: c.modelSize)
        positionEmbedding = try Embedding(vocabularySize: c.contextLength, dimension: c.modelSize)
        // Small embeddings (σ = 0.02, as GPT-2) keep the residual stream at unit scale at the start.
        for embedding in [tokenEmbedding, positionEmbedding] {
            try embedding.weight.assign(Tensor.normal(embedding.weight.shape, standardDeviation: 0.02, seed: Random.nextSeed(), on: .cpu))
        }
        blocks = try (0..<c.blockCount).map { _ in
            try TransformerBlock(modelSize: c.modelSize, headCount: c.headCount, causal: true, dropout: c.dropout)
        }
        finalNorm = try LayerNorm(featureCount: c.modelSize)
        head = try Linear(inputSize: c.modelSize, outputSize: c.vocabularySize)
    }

    public convenience init(vocabularySize: Int) throws { try self.init(Configuration(vocabularySize: vocabularySize)) }

    public var children: [(name: String, module: any Module)] {
        [("token_embedding", tokenEmbedding), ("position_embedding", positionEmbedding)]
            + blocks.enumerated().map { ("blocks.\($0.offset)", $0.element as any Module) }
            + [("ln_f", finalNorm), ("head", head)]
    }

    /// One cache per block, for step-by-step generation.
    public func makeCaches() -> [KeyValueCache] { blocks.map { _ in KeyValueCache() } }

    /// Next-character logits at every position.
    /// - Parameters:
    ///   - ids: int32 [batch, time].
    ///   - caches: from `makeCaches()`: the positions seen before (their keys and values) so that only
    ///     the new `time` positions are computed; updated in place.
    /// - Returns: [batch, time, V].
    /// - Throws: `TensorError.invalidArgument` when the cached plus new positions exceed the context.
    public func callAsFunction(_ ids: Tensor, caches: [KeyValueCache]? = nil) throws -> Tensor {
        guard ids.rank == 2, ids.shape[1] > 0 else {
            throw TensorError.invalidShape(op: "GPT", shape: ids.shape, reason: "the ids must be [batch, time ≥ 1]")
        }
        if let caches, caches.count != blocks.count {
            throw TensorError.invalidArgument(op: "GPT", reason: "\(caches.count) caches for \(blocks.count) blocks")
        }
        let offset = caches?.first?.length ?? 0
        let length = ids.shape[1]
        guard offset + length <= contextLength else {
            throw TensorError.invalidArgument(op: "GPT", reason: "a sequence of \(offset + length) positions is longer than the context of \(contextLength)")
        }
        let positions = try Tensor((offset..<(offset + length)).map { Int32($0) }, shape: [length], on: ids.device)
        var x = try tokenEmbedding(ids) + positionEmbedding(positions)
        for (index, block) in blocks.enumerated() { x = try block(x, cache: caches?[index]) }
        return try head(finalNorm(x))
    }

    /// Freezes the token/position embeddings and the lowest `count` blocks (for fine-tuning the upper
    /// blocks only); `count` 0 unfreezes everything.
    public func freezeLowerBlocks(_ count: Int) throws {
        guard (0...blocks.count).contains(count) else {
            throw TensorError.invalidArgument(op: "GPT.freezeLowerBlocks", reason: "\(count) blocks out of \(blocks.count)")
        }
        freeze(false)
        guard count > 0 else { return }
        tokenEmbedding.freeze(); positionEmbedding.freeze()
        for block in blocks.prefix(count) { block.freeze() }
    }
}

extension GPT: CharacterLevelModel {
    public var carriesState: Bool { false }

    public func indices(_ ids: [Int32], shape: Shape, on device: Device) throws -> Tensor {
        try tokenEmbedding.indices(ids, shape: shape, on: device)
    }

    /// Mean cross-entropy of the next-character predictions; `state` is ignored (each chunk stands alone).
    public func loss(_ ids: Tensor, targets: Tensor, carrying state: RecurrentState? = nil) throws -> (loss: Tensor, state: RecurrentState?) {
        let logits = try self(ids)
        let rows = ids.shape[0] * ids.shape[1]
        return (try crossEntropy(logits: logits.reshaped(to: [rows, vocabularySize]), labels: targets.reshaped(to: [rows])), nil)
    }

    /// Generates `length` characters after `prompt` with a key/value cache: the prompt is read in one
    /// pass, then each character costs one step (its own projections and attention over the cached
    /// keys). When the context is full, the cache is rebuilt from the last half context and decoding goes
    /// on. Temperature 0 picks the most likely character.
    public func sample(vocabulary: [Unicode.Scalar], name: String = "the model", prompt: String, length: Int,
                       temperature: Float = 0.8, seed: UInt64 = 1, on device: Device) throws -> String {
        var generated = String.UnicodeScalarView()
        try generate(vocabulary: vocabulary, name: name, prompt: prompt, length: length, temperature: temperature,
                     seed: seed, on: device) { generated.append($0) }
        return String(generated)
    }

    /// As `sample`, handing each character to `emit` as soon as it is drawn; returns the number of
    /// forward calls made (prompt passes plus one per generated character).
    @discardableResult
    public func generate(vocabulary: [Unicode.Scalar], name: String = "the model", prompt: String, length: Int,
                         temperature: Float = 0.8, seed: UInt64 = 1, on device: Device,
                         emit: (Unicode.Scalar) -> Void) throws -> Int {
        var history = try CharLanguageModel.promptIDs(prompt, vocabulary: vocabulary, vocabularySize: vocabularySize,
                                                      name: name, length: length, temperature: temperature)
        let wasTraining = isTraining
        setTraining(false)
        defer { setTraining(wasTraining) }
        try move(to: device)
        var generator = SeededGenerator(seed: seed)
        let caches = makeCaches()
        var calls = 0
        try withoutGradients {
            /// Restarts the cache from the last `keep` characters and returns the logits of the last one.
            func prefill(keep: Int) throws -> Tensor {
                caches.forEach { $0.reset() }
                let window = Array(history.suffix(keep))
                calls += 1
                let logits = try self(Tensor(window, shape: [1, window.count], on: device), caches: caches)
                return try logits.sliced(along: 1, (window.count - 1)..<window.count)
            }
            var last = try prefill(keep: contextLength)
            for _ in 0..<length {
                let next = CharLanguageModel.draw(from: try last.scalars(), temperature: temperature, generator: &generator)
                emit(vocabulary[next])
                history.append(Int32(next))
                if caches[0].length >= contextLength {
                    last = try prefill(keep: max(1, contextLength / 2))
                } else {
                    calls += 1
                    last = try self(Tensor([Int32(next)], shape: [1, 1], on: device), caches: caches)
                }
            }
        }
        return calls
    }
}

extension GPT {
    static let modelName = "gpt"

    /// Checkpoint metadata that describes this model and its vocabulary, so that `GPT.load(from:)`
    /// can rebuild it: `opal.model` = `gpt`, `opal.context`, `opal.model_size`, `opal.heads`,
    /// `opal.blocks`, `opal.vocabulary` (JSON array of code points) and `opal.text`.
    public func descriptionMetadata(vocabulary: [Unicode.Scalar], textName: String) -> [String: String] {
        let codes = vocabulary.map { String($0.value) }.joined(separator: ",")
        let c = configuration
        return ["opal.model": Self.modelName, "opal.context": String(c.contextLength), "opal.model_size": String(c.modelSize),
                "opal.heads": String(c.headCount), "opal.blocks": String(c.blockCount), "opal.vocabulary": "[\(codes)]",
                "opal.text": textName]
    }

    /// Rebuilds a model saved with `descriptionMetadata` and loads its weights.
    /// - Throws: `CheckpointError` naming the file when it is not a GPT checkpoint or its tensors do not fit.
    public static func load(from url: URL) throws -> (model: GPT, vocabulary: [Unicode.Scalar], metadata: [String: String]) {
        let path = url.path
        let contents = try CheckpointContents(contentsOf: url)
        let metadata = contents.metadata
        guard metadata["opal.model"] == modelName else {
            throw CheckpointError.malformedHeader(path: path, reason: "it holds a '\(metadata["opal.model"] ?? "unknown")' model, not a GPT (opal train gpt)")
        }
        func integer(_ key: String) throws -> Int {
            guard let value = metadata[key].flatMap(Int.init), value > 0 else {
                throw CheckpointError.malformedHeader(path: path, reason: "metadata \"\(key)\" is missing or not a positive integer")
            }
            return value
        }
        let vocabulary = try CharLanguageModel.vocabulary(from: metadata, path: path)
        let model = try GPT(Configuration(vocabularySize: vocabulary.count, contextLength: integer("opal.context"),
                                          modelSize: integer("opal.model_size"), headCount: integer("opal.heads"),
                                          blockCount: integer("opal.blocks")))
        try model.load(contents, strict: true)
        return (model, vocabulary, metadata)
    }
}
