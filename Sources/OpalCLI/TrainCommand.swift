import ArgumentParser
import Dispatch
import Foundation
import Opal
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `opal train <family>`.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Train a model on real data and report test metrics.",
        subcommands: [TrainMLPCommand.self, TrainCNNCommand.self, TrainAutoencoderCommand.self, TrainVAECommand.self,
                      TrainGANCommand.self] + recurrentTrainCommands + transformerTrainCommands)
}

/// Options shared by the classifier trainers.
struct ClassifierOptions: ParsableArguments {
    @Option(help: "Dataset: fashion-mnist or digits (default: fashion-mnist when installed, else the built-in digits).")
    var dataset: String?

    @Option(help: "Maximum number of passes over the training set (default: 10 for the MLP, 5 for the CNN).")
    var epochs: Int?

    @Option(name: .customLong("batch-size"), help: "Examples per optimisation step (default: 128 for the MLP, 64 for the CNN).")
    var batchSize: Int?

    @Option(name: .customLong("learning-rate"), help: "Peak Adam learning rate (default: 1e-3 for the MLP, 2e-3 for the CNN).")
    var learningRate: Float?

    @Option(name: .customLong("weight-decay"), help: "L2 weight decay added to the gradient.")
    var weightDecay: Float = 0

    @Option(help: "Seed for initialisation, shuffling and dropout.")
    var seed: UInt64 = 42

    @Option(help: "Learning-rate schedule: cosine (decay to zero over the run) or constant.")
    var schedule = "cosine"

    @Option(help: "Stop after this many epochs without a better validation loss (0: never).")
    var patience = 3

    @Option(name: .customLong("validation-fraction"), help: "Share of the training set held out for validation.")
    var validationFraction = 1.0 / 12.0

    @Option(help: "Where to write the trained model (safetensors).")
    var checkpoint: String?

    @Option(name: .customLong("checkpoint-every"),
            help: "Save the training state (weights, optimizer, position) to the checkpoint file every N steps.")
    var checkpointEvery: Int?

    @Option(help: "Resume training exactly from a training-state checkpoint (written by --checkpoint-every or Ctrl-C).")
    var resume: String?

    @Flag(name: .customLong("no-progress"), help: "Do not draw progress bars.")
    var noProgress = false

    func validate() throws {
        if let dataset, DatasetName(rawValue: dataset) == nil {
            throw ValidationError("unknown dataset '\(dataset)': choose one of \(DatasetName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let epochs, epochs <= 0 { throw ValidationError("--epochs must be positive, got \(epochs)") }
        if let batchSize, batchSize <= 0 { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
        if let learningRate, !(learningRate > 0 && learningRate.isFinite) {
            throw ValidationError("--learning-rate must be positive, got \(learningRate)")
        }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must be ≥ 0, got \(weightDecay)") }
        guard LearningRateSchedule(rawValue: schedule) != nil else {
            throw ValidationError("unknown schedule '\(schedule)': choose cosine or constant")
        }
        if let checkpointEvery, checkpointEvery <= 0 {
            throw ValidationError("--checkpoint-every must be positive, got \(checkpointEvery)")
        }
        guard patience >= 0 else { throw ValidationError("--patience must be ≥ 0, got \(patience)") }
        guard validationFraction > 0, validationFraction < 1 else {
            throw ValidationError("--validation-fraction must lie in (0, 1), got \(validationFraction)")
        }
    }

    /// The trainer's settings; `defaultEpochs` applies when `--epochs` is absent.
    func trainingOptions(defaultEpochs: Int, defaultBatchSize: Int, defaultLearningRate: Float) -> ClassifierTrainingOptions {
        var options = ClassifierTrainingOptions()
        options.epochs = epochs ?? defaultEpochs; options.batchSize = batchSize ?? defaultBatchSize; options.learningRate = learningRate ?? defaultLearningRate
        options.weightDecay = weightDecay; options.seed = seed
        options.patience = patience == 0 ? nil : patience
        options.schedule = LearningRateSchedule(rawValue: schedule) ?? .cosine
        options.showProgress = !noProgress
        options.checkpointEvery = checkpointEvery
        return options
    }

    /// Where training-state checkpoints and the final model go: `--checkpoint`, else the `--resume`
    /// file, else `fallback`.
    func checkpointPath(fallback: String) -> String { checkpoint ?? resume ?? fallback }

    /// Loads the training, validation and test splits.
    func loadData() throws -> (training: LabeledDataset, validation: LabeledDataset, test: LabeledDataset) {
        let name: DatasetName
        if let dataset, let chosen = DatasetName(rawValue: dataset) {
            name = chosen
        } else {
            let resolved = DatasetName.resolveDefault()
            if let notice = resolved.notice { printError(notice) }
            name = resolved.name
        }
        let full = try name.load(split: .train)
        let test = try name.load(split: .test)
        let (training, validation) = full.split(validationFraction: validationFraction, seed: seed)
        print("data: \(name.rawValue) · \(training.count) training, \(validation.count) validation, \(test.count) test examples · features \(full.featureShape) · \(full.classCount) classes")
        return (training, validation, test)
    }
}

/// `opal train mlp`: the multilayer perceptron (R1 by default: 784-512-512-10).
struct TrainMLPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlp", abstract: "Train a multilayer perceptron classifier (default 784-512-512-10, ReLU, Adam).")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: ClassifierOptions

    @Option(name: .customLong("hidden-sizes"), help: "Comma-separated hidden layer widths.")
    var hiddenSizes = "512,512"

    @Option(help: "Dropout probability after each hidden layer.")
    var dropout: Float = 0

    func validate() throws {
        guard parsedHiddenSizes != nil else {
            throw ValidationError("--hidden-sizes must be comma-separated positive integers, got '\(hiddenSizes)'")
        }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must lie in [0, 1), got \(dropout)") }
    }

    var parsedHiddenSizes: [Int]? {
        let parts = hiddenSizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return hiddenSizes.isEmpty ? [] : nil }
        return parts.compactMap { $0 }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        let data = try options.loadData()
        Random.seed(options.seed)
        let model = try makeMLP(inputSize: data.training.featureCount, hiddenSizes: parsedHiddenSizes ?? [],
                                outputSize: data.training.classCount, dropout: dropout)
        print("model: MLP \(([data.training.featureCount] + (parsedHiddenSizes ?? []) + [data.training.classCount]).map(String.init).joined(separator: "-")) · \(model.parameterCount) parameters")
        let description = ["opal.model": "mlp", "opal.hidden_sizes": hiddenSizes, "opal.dataset": data.training.name]
        try trainImageClassifier(model, data: data, device: device, options: options, defaultPath: "runs/mlp.safetensors",
                                 description: description, defaults: (epochs: 10, batchSize: 128, learningRate: 1e-3))
    }
}

func printTestReport(_ test: Evaluation) {
    print(String(format: "test: accuracy %.2f%% · macro F1 %.4f · macro precision %.4f · macro recall %.4f · loss %.4f",
                 100 * test.report.accuracy, test.report.macroF1, test.report.macroPrecision,
                 test.report.macroRecall, test.loss))
}

/// Set by the SIGINT handler; the training loop checks it after each step.
private let interruptRequested = Atomic<Bool>(false)

/// Runs `trainer.fit` with a SIGINT (Ctrl-C) handler: the first Ctrl-C makes the trainer save its
/// training state after the current step and the command exit with status 130; a second one quits at once.
/// A non-finite loss stops training with the trainer's message; the last good checkpoint is kept.
func fitInterruptibly(_ trainer: ClassifierTrainer,
                      data: (training: LabeledDataset, validation: LabeledDataset, test: LabeledDataset),
                      resume: String?) throws {
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
    source.setEventHandler {
        if interruptRequested.exchange(true, ordering: .relaxed) {
            _exit(130)
        }
        FileHandle.standardError.write(Data("\ninterrupt: saving the training state after this step (Ctrl-C again to quit at once)\n".utf8))
    }
    source.resume()
    defer {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
    trainer.stopRequested = { interruptRequested.load(ordering: .relaxed) }
    try trainer.fit(training: data.training, validation: data.validation,
                    resumingFrom: resume.map { URL(fileURLWithPath: $0) })
    if trainer.wasStopped {
        let position = trainer.position
        if let checkpoint = trainer.lastCheckpoint {
            print("interrupted: saved the training state to \(checkpoint.url.path) (epoch \(position.epoch), step \(position.stepInEpoch), \(position.globalStep) steps in all); continue with --resume \(checkpoint.url.path)")
        } else {
            print("interrupted at epoch \(position.epoch), step \(position.stepInEpoch); no checkpoint was saved")
        }
        throw ExitCode(130)
    }
}

/// Writes `model` as safetensors (atomically) and says where.
func saveCheckpoint(_ model: any Module, to path: String, metadata: [String: String]) throws {
    let url = URL(fileURLWithPath: path)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try model.save(to: url, metadata: metadata)
    print("checkpoint: \(path)")
}

/// `opal train cnn`: the convolutional classifier (R2, or a deeper net with batch norm and dropout).
struct TrainCNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn",
        abstract: "Train a convolutional classifier (R2: two conv + pool blocks and two linear layers; --deep adds batch norm and dropout).")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: ClassifierOptions

    @Flag(help: "Use the deeper net with batch normalisation and dropout.")
    var deep = false

    @Option(name: .customLong("fine-tune"),
            help: "Transfer learning: start from this trained CNN checkpoint (same kind, e.g. from Fashion-MNIST); its head is replaced for this dataset's classes and the images are resized to its input size.")
    var fineTune: String?

    @Option(help: "With --fine-tune: the layers that keep their trained weights: features (every layer before Flatten), none, or N (the first N layers).")
    var freeze = "features"

    func validate() throws {
        guard freeze == "features" || freeze == "none" || (Int(freeze).map { $0 >= 0 } ?? false) else {
            throw ValidationError("--freeze must be features, none or a layer count ≥ 0, got '\(freeze)'")
        }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        var data = try options.loadData()
        var pretrained: (url: URL, metadata: [String: String])?
        if let fineTune {
            let url = URL(fileURLWithPath: fineTune)
            let metadata = try CheckpointContents(contentsOf: url).metadata
            let expected = deep ? "cnn-deep" : "cnn"
            guard metadata["opal.model"] == expected else {
                throw ValidationError("\(fineTune) holds a \(metadata["opal.model"] ?? "model of unknown kind"), not a \(expected)\(deep ? "" : " (add --deep for a deep CNN)")")
            }
            let sizes = (metadata["opal.image_shape"] ?? "").split(separator: ",").compactMap { Int($0) }
            guard sizes.count == 3, sizes[0] == data.training.featureShape[0] else {
                throw ValidationError("\(fineTune) was trained on images of shape \(metadata["opal.image_shape"] ?? "?"), which this dataset's \(data.training.featureShape) cannot be resized to")
            }
            if data.training.featureShape != sizes {
                print("images resized from \(data.training.featureShape[1])×\(data.training.featureShape[2]) to \(sizes[1])×\(sizes[2]), the checkpoint's input size")
            }
            data = (try data.training.resized(height: sizes[1], width: sizes[2]),
                    try data.validation.resized(height: sizes[1], width: sizes[2]),
                    try data.test.resized(height: sizes[1], width: sizes[2]))
            pretrained = (url, metadata)
        }
        Random.seed(options.seed)
        let shape = data.training.featureShape
        let model = deep
            ? try CNN.deep(inputChannels: shape[0], imageSize: shape[1], classes: data.training.classCount)
            : try CNN.simple(inputChannels: shape[0], imageSize: shape[1], classes: data.training.classCount)
        print("model: \(deep ? "deep CNN (batch norm, dropout)" : "CNN R2") · \(model.parameterCount) parameters")
        if let pretrained {
            let head = model.headLayerName.map { [$0] } ?? []
            try model.loadPretrained(from: pretrained.url, excluding: head)
            let frozenLayers = freeze == "features" ? model.featureLayerNames
                : freeze == "none" ? [] : (0..<min(Int(freeze) ?? 0, model.layers.count)).map(String.init)
            let frozen = model.freezeParameters(under: frozenLayers)
            print("fine-tuning: weights from \(pretrained.url.path) (trained on \(pretrained.metadata["opal.dataset"] ?? "?")), new head \(head.joined()), \(frozen) of \(model.parameterCount) parameters frozen (layers \(frozenLayers.isEmpty ? "none" : frozenLayers.joined(separator: ",")))")
        }
        let description = ["opal.model": deep ? "cnn-deep" : "cnn", "opal.dataset": data.training.name,
                           "opal.image_shape": shape.map(String.init).joined(separator: ","),
                           "opal.classes": String(data.training.classCount)]
        try trainImageClassifier(model, data: data, device: device, options: options,
                                 defaultPath: "runs/cnn\(deep ? "-deep" : "").safetensors", description: description,
                                 defaults: (epochs: 5, batchSize: 64, learningRate: 2e-3))
    }
}

/// Trains an image classifier with `options` (interruptibly, with checkpoints), prints the test report and
/// writes the checkpoint with `description` and the test accuracy in its metadata.
func trainImageClassifier(_ model: any Layer, data: (training: LabeledDataset, validation: LabeledDataset, test: LabeledDataset),
                          device: Device, options: ClassifierOptions, defaultPath: String, description: [String: String],
                          defaults: (epochs: Int, batchSize: Int, learningRate: Float)) throws {
    let path = options.checkpointPath(fallback: defaultPath)
    var trainingOptions = options.trainingOptions(defaultEpochs: defaults.epochs, defaultBatchSize: defaults.batchSize,
                                                  defaultLearningRate: defaults.learningRate)
    trainingOptions.checkpointURL = URL(fileURLWithPath: path)
    trainingOptions.checkpointMetadata = description
    let trainer = try ClassifierTrainer(model: model, device: device, options: trainingOptions)
    try fitInterruptibly(trainer, data: data, resume: options.resume)
    let test = try trainer.evaluate(data.test)
    printTestReport(test)
    try saveCheckpoint(model, to: path, metadata: description.merging(["opal.test_accuracy": String(test.report.accuracy)]) { $1 })
}
