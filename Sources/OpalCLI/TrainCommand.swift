import ArgumentParser
import Foundation
import Opal

/// `opal train <family>`.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Train a model on real data and report test metrics.",
        subcommands: [TrainMLPCommand.self])
}

/// Options shared by the classifier trainers.
struct ClassifierOptions: ParsableArguments {
    @Option(help: "Dataset: fashion-mnist or digits (default: fashion-mnist when installed, else the built-in digits).")
    var dataset: String?

    @Option(help: "Maximum number of passes over the training set.")
    var epochs = 10

    @Option(name: .customLong("batch-size"), help: "Examples per optimisation step.")
    var batchSize = 128

    @Option(name: .customLong("learning-rate"), help: "Adam learning rate.")
    var learningRate: Float = 1e-3

    @Option(name: .customLong("weight-decay"), help: "L2 weight decay added to the gradient.")
    var weightDecay: Float = 0

    @Option(help: "Seed for initialisation, shuffling and dropout.")
    var seed: UInt64 = 42

    @Option(help: "Stop after this many epochs without a better validation loss (0: never).")
    var patience = 3

    @Option(name: .customLong("validation-fraction"), help: "Share of the training set held out for validation.")
    var validationFraction = 1.0 / 12.0

    @Flag(name: .customLong("no-progress"), help: "Do not draw progress bars.")
    var noProgress = false

    func validate() throws {
        if let dataset, DatasetName(rawValue: dataset) == nil {
            throw ValidationError("unknown dataset '\(dataset)': choose one of \(DatasetName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard epochs > 0 else { throw ValidationError("--epochs must be positive, got \(epochs)") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive, got \(learningRate)") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must be ≥ 0, got \(weightDecay)") }
        guard patience >= 0 else { throw ValidationError("--patience must be ≥ 0, got \(patience)") }
        guard validationFraction > 0, validationFraction < 1 else {
            throw ValidationError("--validation-fraction must lie in (0, 1), got \(validationFraction)")
        }
    }

    var trainingOptions: ClassifierTrainingOptions {
        var options = ClassifierTrainingOptions()
        options.epochs = epochs; options.batchSize = batchSize; options.learningRate = learningRate
        options.weightDecay = weightDecay; options.seed = seed
        options.patience = patience == 0 ? nil : patience
        options.showProgress = !noProgress
        return options
    }

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
        let trainer = try ClassifierTrainer(model: model, device: device, options: options.trainingOptions)
        _ = try trainer.fit(training: data.training, validation: data.validation)
        let test = try trainer.evaluate(data.test)
        print(String(format: "test: accuracy %.2f%% · macro F1 %.4f · macro precision %.4f · macro recall %.4f · loss %.4f",
                     100 * test.report.accuracy, test.report.macroF1, test.report.macroPrecision,
                     test.report.macroRecall, test.loss))
    }
}
