import ArgumentParser
import Foundation
import Opal

/// `opal train gpt`: the decoder-only Transformer character model (R6 with the defaults) on a text,
/// or, with `--fine-tune`, a trained GPT adapted to another text with its lower blocks optionally frozen.
struct TrainGPTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt",
        abstract: "Train a GPT character model (R6: context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4× GELU) on a text.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var textOptions: TextTrainingOptions

    @Option(name: .customLong("model-size"), help: "Model width d_model.")
    var modelSize = 128

    @Option(help: "Attention heads (must divide --model-size).")
    var heads = 4

    @Option(help: "Transformer blocks.")
    var blocks = 2

    @Option(help: "Dropout after each attention and MLP sub-layer during training.")
    var dropout: Float = 0

    @Option(name: .customLong("fine-tune"), help: "Start from this GPT checkpoint (opal train gpt) and train it on --text; its vocabulary and sizes are kept.")
    var fineTune: String?

    @Option(name: .customLong("freeze-blocks"), help: "With --fine-tune: keep the embeddings and the lowest N blocks frozen.")
    var freezeBlocks = 0

    func validate() throws {
        guard modelSize > 0, heads > 0, blocks > 0 else { throw ValidationError("--model-size, --heads and --blocks must be positive") }
        guard modelSize % heads == 0 else { throw ValidationError("--heads \(heads) does not divide --model-size \(modelSize)") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must lie in [0, 1), got \(dropout)") }
        guard freezeBlocks >= 0 else { throw ValidationError("--freeze-blocks must be ≥ 0, got \(freezeBlocks)") }
        if freezeBlocks > 0, fineTune == nil { throw ValidationError("--freeze-blocks needs --fine-tune") }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        Random.seed(textOptions.seed)
        let model: GPT, corpus: TextCorpus
        var before: Double?
        if let fineTune {
            let loaded = try GPT.load(from: URL(fileURLWithPath: fineTune))
            model = loaded.model
            guard textOptions.sequenceLength <= model.contextLength else {
                throw ValidationError("--seq-length \(textOptions.sequenceLength) is longer than the context \(model.contextLength) of \(fineTune)")
            }
            guard freezeBlocks <= model.blocks.count else {
                throw ValidationError("--freeze-blocks \(freezeBlocks): \(fineTune) has \(model.blocks.count) blocks")
            }
            corpus = try textOptions.corpus(vocabulary: loaded.vocabulary)
            try model.freezeLowerBlocks(freezeBlocks)
            let frozen = model.parameters.filter { !$0.isTrainable }.map(\.shape.count).reduce(0, +)
            print("fine-tuning: \(fineTune) (trained on \(loaded.metadata["opal.text"] ?? "?")) · \(frozen) of \(model.parameterCount) parameters frozen (embeddings and the lowest \(freezeBlocks) of \(model.blocks.count) blocks)")
            before = try LanguageModelTrainer.validationLoss(of: model, on: corpus, batchSize: textOptions.batchSize ?? 32,
                                                            sequenceLength: textOptions.sequenceLength, device: device)
            print(String(format: "validation loss before fine-tuning: %.4f nats/char", before!))
        } else {
            corpus = try textOptions.corpus()
            model = try GPT(GPT.Configuration(vocabularySize: corpus.vocabularySize, contextLength: textOptions.sequenceLength,
                                              modelSize: modelSize, headCount: heads, blockCount: blocks, dropout: dropout))
        }
        let c = model.configuration
        print("model: GPT · vocabulary \(c.vocabularySize) · context \(c.contextLength) · d_model \(c.modelSize) · \(c.headCount) heads · \(c.blockCount) blocks · \(model.parameterCount) parameters")
        let reports = try textOptions.train(model, corpus: corpus, device: device, defaultPath: "runs/gpt.safetensors",
                                            description: model.descriptionMetadata(vocabulary: corpus.vocabulary, textName: corpus.name)) {
            try model.sample(vocabulary: corpus.vocabulary, name: corpus.name, prompt: $0, length: $1, temperature: $2, seed: $3, on: device)
        }
        if let before, let after = reports.last?.validationLoss {
            print(String(format: "fine-tuning: validation loss %.4f → %.4f nats/char", before, after))
        }
    }
}

/// `opal sample gpt`: text from a GPT checkpoint, decoded with a key/value cache.
struct SampleGPTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt", abstract: "Generate text from a GPT checkpoint (one cached step per character).")
    @OptionGroup var options: SampleTextOptions

    func run() throws {
        let device = try options.deviceOptions.resolve()
        let (model, vocabulary, metadata) = try GPT.load(from: URL(fileURLWithPath: options.checkpoint))
        var text = String.UnicodeScalarView()
        try model.generate(vocabulary: vocabulary, name: "\(options.checkpoint) (trained on \(metadata["opal.text"] ?? "unknown text"))",
                           prompt: options.prompt, length: options.length, temperature: options.temperature,
                           seed: options.seed, on: device) { text.append($0) }
        print(options.prompt + String(text))
    }
}

/// `opal train vit`: a small vision transformer classifying image patches.
struct TrainViTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vit",
        abstract: "Train a vision transformer (7×7 patches, d_model 64, 4 heads, 4 blocks) on Fashion-MNIST or the digits.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: ClassifierOptions

    @Option(name: .customLong("patch-size"), help: "Side of the square patches (must divide the image side).")
    var patchSize = 7

    @Option(name: .customLong("model-size"), help: "Model width d_model.")
    var modelSize = 64

    @Option(help: "Attention heads (must divide --model-size).")
    var heads = 4

    @Option(help: "Transformer blocks.")
    var blocks = 4

    func validate() throws {
        guard patchSize > 0, modelSize > 0, heads > 0, blocks > 0 else {
            throw ValidationError("--patch-size, --model-size, --heads and --blocks must be positive")
        }
        guard modelSize % heads == 0 else { throw ValidationError("--heads \(heads) does not divide --model-size \(modelSize)") }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        let data = try options.loadData()
        Random.seed(options.seed)
        let shape = data.training.featureShape
        guard shape.count == 3, shape[1] % patchSize == 0, shape[2] % patchSize == 0 else {
            throw ValidationError("--patch-size \(patchSize) does not divide the \(shape.dropFirst().map(String.init).joined(separator: "×")) images")
        }
        let model = try VisionTransformer(imageShape: shape, patchSize: patchSize, modelSize: modelSize, headCount: heads,
                                          blockCount: blocks, classes: data.training.classCount)
        print("model: ViT · \(model.patchCount) patches of \(patchSize)×\(patchSize) · d_model \(modelSize) · \(heads) heads · \(blocks) blocks · \(model.parameterCount) parameters")
        let description = ["opal.model": "vit", "opal.dataset": data.training.name,
                           "opal.image_shape": shape.map(String.init).joined(separator: ","),
                           "opal.patch_size": String(patchSize), "opal.model_size": String(modelSize),
                           "opal.heads": String(heads), "opal.blocks": String(blocks),
                           "opal.classes": String(data.training.classCount)]
        try trainImageClassifier(model, data: data, device: device, options: options, defaultPath: "runs/vit.safetensors",
                                 description: description, defaults: (epochs: 10, batchSize: 128, learningRate: 2e-3))
    }
}

/// The `opal train` subcommands of the Transformer family.
let transformerTrainCommands: [ParsableCommand.Type] = [TrainGPTCommand.self, TrainSeq2SeqCommand.self, TrainViTCommand.self]
