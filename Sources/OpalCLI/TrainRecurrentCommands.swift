import ArgumentParser
import Foundation
import Opal

/// `opal train lstm|gru|rnn`: the character language model on a text (default: the embedded
/// Shakespeare plays, R3 with the defaults), or with `--dataset` the sequence classifier that reads
/// images row by row (Fashion-MNIST: 28 steps of 28 features).
struct RecurrentTrainingOptions: ParsableArguments {
    @OptionGroup var textOptions: TextTrainingOptions

    @Option(help: "Train the sequence classifier on this dataset instead (fashion-mnist or digits): each image row is one time step.")
    var dataset: String?

    @Option(help: "Sequence classifier: passes over the training set.")
    var epochs = 5

    @Option(help: "Hidden size of the recurrent layer (default: 256 for the language model, 128 for the classifier).")
    var hidden: Int?

    @Option(name: .customLong("embedding-size"), help: "Language model: size of the character embedding.")
    var embeddingSize = 64

    @Option(help: "Stacked recurrent layers.")
    var layers = 1

    @Option(help: "Dropout between stacked layers (language model).")
    var dropout: Float = 0

    @Option(help: "RNN only: the nonlinearity, tanh or relu.")
    var nonlinearity = "tanh"

    func validate() throws {
        if let dataset, DatasetName(rawValue: dataset) == nil {
            throw ValidationError("unknown dataset '\(dataset)': choose one of \(DatasetName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if textOptions.text != nil, dataset != nil { throw ValidationError("--text and --dataset exclude each other: a language model or a classifier") }
        guard epochs > 0 else { throw ValidationError("--epochs must be positive, got \(epochs)") }
        if let hidden, hidden <= 0 { throw ValidationError("--hidden must be positive, got \(hidden)") }
        guard embeddingSize > 0 else { throw ValidationError("--embedding-size must be positive, got \(embeddingSize)") }
        guard layers > 0 else { throw ValidationError("--layers must be positive, got \(layers)") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must lie in [0, 1), got \(dropout)") }
        guard RecurrentNonlinearity(rawValue: nonlinearity) != nil else {
            throw ValidationError("unknown nonlinearity '\(nonlinearity)': choose tanh or relu")
        }
    }

    func run(cell: RecurrentCellKind, device: Device) throws {
        print("device: \(device)")
        if let dataset, let name = DatasetName(rawValue: dataset) {
            try trainClassifier(cell: cell, dataset: name, device: device)
        } else {
            try trainLanguageModel(cell: cell, device: device)
        }
    }

    private func trainLanguageModel(cell: RecurrentCellKind, device: Device) throws {
        let corpus = try textOptions.corpus()
        Random.seed(textOptions.seed)
        let model = try CharLanguageModel(vocabularySize: corpus.vocabularySize, embeddingSize: embeddingSize,
                                          hiddenSize: hidden ?? 256, layers: layers, cell: cell, dropout: dropout,
                                          nonlinearity: RecurrentNonlinearity(rawValue: nonlinearity) ?? .tanh)
        print("model: Embedding \(corpus.vocabularySize)×\(embeddingSize) → \(model.rnn.layerDescription) → Linear \(model.rnn.hiddenSize)→\(corpus.vocabularySize) · \(model.parameterCount) parameters")
        try textOptions.train(model, corpus: corpus, device: device, defaultPath: "runs/\(cell.rawValue).safetensors",
                              description: model.descriptionMetadata(vocabulary: corpus.vocabulary, textName: corpus.name)) {
            try model.sample(corpus: corpus, prompt: $0, length: $1, temperature: $2, seed: $3, on: device)
        }
    }

    private func trainClassifier(cell: RecurrentCellKind, dataset: DatasetName, device: Device) throws {
        let o = textOptions
        let full = try dataset.load(split: .train)
        let test = try dataset.load(split: .test)
        let (training, validation) = full.split(validationFraction: o.validationFraction, seed: o.seed)
        let shape = full.featureShape
        let (rows, columns) = (shape[shape.count - 2], shape[shape.count - 1])
        print("data: \(dataset.rawValue) · \(training.count) training, \(validation.count) validation, \(test.count) test examples · \(rows) steps of \(columns) features · \(full.classCount) classes")
        Random.seed(o.seed)
        let model = try SequenceClassifier(rows: rows, columns: columns, hiddenSize: hidden ?? 128, layers: layers,
                                           cell: cell, classes: full.classCount,
                                           nonlinearity: RecurrentNonlinearity(rawValue: nonlinearity) ?? .tanh)
        print("model: \(model.rnn.layerDescription) over the rows → last hidden state → Linear \(model.rnn.outputSize)→\(full.classCount) · \(model.parameterCount) parameters")
        var options = ClassifierTrainingOptions()
        options.epochs = epochs; options.batchSize = o.batchSize ?? 128; options.learningRate = o.learningRate
        options.seed = o.seed; options.showProgress = !o.noProgress; options.patience = nil
        let path = o.checkpoint ?? o.resume ?? "runs/\(cell.rawValue)-\(dataset.rawValue).safetensors"
        let description = ["opal.model": "sequence-classifier", "opal.cell": cell.rawValue, "opal.dataset": full.name,
                           "opal.hidden_size": String(model.rnn.hiddenSize), "opal.layers": String(layers)]
        options.checkpointURL = URL(fileURLWithPath: path)
        options.checkpointEvery = o.checkpointEvery
        options.checkpointMetadata = description
        let trainer = try ClassifierTrainer(model: model, device: device, options: options)
        try fitInterruptibly(trainer, data: (training, validation, test), resume: o.resume)
        let evaluation = try trainer.evaluate(test)
        printTestReport(evaluation)
        try saveCheckpoint(model, to: path, metadata: description.merging(["opal.test_accuracy": String(evaluation.report.accuracy)]) { $1 })
    }
}

struct TrainLSTMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lstm",
        abstract: "Train an LSTM character language model (R3: Embedding V×64 → LSTM 64→256 → Linear 256→V), or with --dataset a row-by-row image classifier.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: RecurrentTrainingOptions

    func run() throws { try options.run(cell: .lstm, device: deviceOptions.resolve()) }
}

struct TrainGRUCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gru", abstract: "Train a GRU character language model, or with --dataset a row-by-row image classifier.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: RecurrentTrainingOptions

    func run() throws { try options.run(cell: .gru, device: deviceOptions.resolve()) }
}

struct TrainRNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rnn", abstract: "Train a plain RNN (tanh, or --nonlinearity relu) character language model, or with --dataset a row-by-row image classifier.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: RecurrentTrainingOptions

    func run() throws { try options.run(cell: .rnn, device: deviceOptions.resolve()) }
}

/// The `opal train` subcommands of the recurrent family.
let recurrentTrainCommands: [ParsableCommand.Type] = [TrainLSTMCommand.self, TrainGRUCommand.self, TrainRNNCommand.self]
