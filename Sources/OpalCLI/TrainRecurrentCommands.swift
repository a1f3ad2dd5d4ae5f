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

/// `opal train lstm|gru|rnn`: the character language model on a text (default: the embedded
/// Shakespeare plays, R3 with the defaults), or with `--dataset` the sequence classifier that reads
/// images row by row (Fashion-MNIST: 28 steps of 28 features).
struct RecurrentTrainingOptions: ParsableArguments {
    @Option(help: "UTF-8 text file for the language model (default: the embedded Shakespeare plays, Romeo and Juliet and Macbeth).")
    var text: String?

    @Option(help: "Train the sequence classifier on this dataset instead (fashion-mnist or digits): each image row is one time step.")
    var dataset: String?

    @Option(help: "Language model: optimisation steps.")
    var steps = 2000

    @Option(help: "Sequence classifier: passes over the training set.")
    var epochs = 5

    @Option(name: .customLong("seq-length"), help: "Language model: characters per row and step (the truncation length of backpropagation through time).")
    var sequenceLength = 64

    @Option(name: .customLong("batch-size"), help: "Sequences per step (default: 32 for the language model, 128 for the classifier).")
    var batchSize: Int?

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

    @Option(name: .customLong("learning-rate"), help: "Peak Adam learning rate (cosine decay to zero over the run).")
    var learningRate: Float = 2e-3

    @Option(name: .customLong("clip-norm"), help: "Language model: clip the gradients' global norm to this (0: no clipping).")
    var clipNorm: Float = 5

    @Option(name: .customLong("evaluate-every"), help: "Language model: measure the validation loss every N steps.")
    var evaluateEvery = 200

    @Option(name: .customLong("validation-fraction"), help: "Share of the text (or training set) held out for validation.")
    var validationFraction = 0.1

    @Option(help: "Language model: the prompt of the sample printed at the end.")
    var prompt = "ROMEO:"

    @Option(name: .customLong("sample-length"), help: "Language model: characters generated at the end (0: none).")
    var sampleLength = 300

    @Option(help: "Language model: sampling temperature of the final sample.")
    var temperature: Float = 0.8

    @Option(help: "Seed for initialisation, shuffling and sampling.")
    var seed: UInt64 = 42

    @Option(help: "Where to write the trained model (safetensors; default runs/<cell>.safetensors, runs/<cell>-<dataset>.safetensors).")
    var checkpoint: String?

    @Option(name: .customLong("checkpoint-every"), help: "Save the training state to the checkpoint file every N steps.")
    var checkpointEvery: Int?

    @Option(help: "Resume from a training-state checkpoint (written by --checkpoint-every or Ctrl-C) with the same options.")
    var resume: String?

    @Flag(name: .customLong("no-progress"), help: "Do not draw progress bars.")
    var noProgress = false

    func validate() throws {
        if let dataset, DatasetName(rawValue: dataset) == nil {
            throw ValidationError("unknown dataset '\(dataset)': choose one of \(DatasetName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if text != nil, dataset != nil { throw ValidationError("--text and --dataset exclude each other: a language model or a classifier") }
        guard steps > 0 else { throw ValidationError("--steps must be positive, got \(steps)") }
        guard epochs > 0 else { throw ValidationError("--epochs must be positive, got \(epochs)") }
        guard sequenceLength > 0 else { throw ValidationError("--seq-length must be positive, got \(sequenceLength)") }
        if let batchSize, batchSize <= 0 { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
        if let hidden, hidden <= 0 { throw ValidationError("--hidden must be positive, got \(hidden)") }
        guard embeddingSize > 0 else { throw ValidationError("--embedding-size must be positive, got \(embeddingSize)") }
        guard layers > 0 else { throw ValidationError("--layers must be positive, got \(layers)") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must lie in [0, 1), got \(dropout)") }
        guard RecurrentNonlinearity(rawValue: nonlinearity) != nil else {
            throw ValidationError("unknown nonlinearity '\(nonlinearity)': choose tanh or relu")
        }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive, got \(learningRate)") }
        guard clipNorm >= 0, clipNorm.isFinite else { throw ValidationError("--clip-norm must be ≥ 0, got \(clipNorm)") }
        guard evaluateEvery > 0 else { throw ValidationError("--evaluate-every must be positive, got \(evaluateEvery)") }
        guard validationFraction > 0, validationFraction < 1 else {
            throw ValidationError("--validation-fraction must lie in (0, 1), got \(validationFraction)")
        }
        guard sampleLength >= 0 else { throw ValidationError("--sample-length must be ≥ 0, got \(sampleLength)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0, got \(temperature)") }
        if let checkpointEvery, checkpointEvery <= 0 { throw ValidationError("--checkpoint-every must be positive, got \(checkpointEvery)") }
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
        let corpus = try text.map { try TextCorpus.load(contentsOf: URL(fileURLWithPath: $0), validationFraction: validationFraction) }
            ?? Shakespeare.corpus(validationFraction: validationFraction)
        print(String(format: "text: %@ · %d characters (%d training, %d validation) · vocabulary %d · unigram entropy %.4f nats/char",
                     corpus.name, corpus.ids.count, corpus.training.count, corpus.validation.count, corpus.vocabularySize,
                     corpus.unigramEntropy))
        Random.seed(seed)
        let model = try CharLanguageModel(vocabularySize: corpus.vocabularySize, embeddingSize: embeddingSize,
                                          hiddenSize: hidden ?? 256, layers: layers, cell: cell, dropout: dropout,
                                          nonlinearity: RecurrentNonlinearity(rawValue: nonlinearity) ?? .tanh)
        print("model: Embedding \(corpus.vocabularySize)×\(embeddingSize) → \(model.rnn.layerDescription) → Linear \(model.rnn.hiddenSize)→\(corpus.vocabularySize) · \(model.parameterCount) parameters")
        var options = LanguageModelTrainingOptions()
        options.steps = steps; options.batchSize = batchSize ?? 32; options.sequenceLength = sequenceLength
        options.learningRate = learningRate; options.maximumGradientNorm = clipNorm > 0 ? clipNorm : nil
        options.evaluateEvery = evaluateEvery; options.showProgress = !noProgress
        let path = checkpoint ?? resume ?? "runs/\(cell.rawValue).safetensors"
        let description = model.descriptionMetadata(vocabulary: corpus.vocabulary, textName: corpus.name)
        options.checkpointURL = URL(fileURLWithPath: path)
        options.checkpointEvery = checkpointEvery
        options.checkpointMetadata = description
        let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: device, options: options)
        print(String(format: "training: %d steps of %d × %d characters · Adam %g (cosine) · clip %@", steps, options.batchSize,
                     sequenceLength, learningRate, clipNorm > 0 ? "\(clipNorm)" : "off"))
        trainer.log = { print($0); fflush(nil) }   // report lines appear at once, also when piped to a file
        fflush(nil)
        try withInterruptHandler { stopRequested in
            trainer.stopRequested = stopRequested
            try trainer.fit(resumingFrom: resume.map { URL(fileURLWithPath: $0) })
        }
        if trainer.wasStopped {
            if let url = trainer.lastCheckpoint {
                print("interrupted: saved the training state to \(url.path) (step \(trainer.stepCount) of \(steps)); continue with --resume \(url.path)")
            } else {
                print("interrupted at step \(trainer.stepCount); no checkpoint was saved")
            }
            throw ExitCode(130)
        }
        if sampleLength > 0 {
            let sample = try model.sample(corpus: corpus, prompt: prompt, length: sampleLength, temperature: temperature,
                                          seed: seed, on: device)
            print("sample (temperature \(temperature)):\n\(prompt)\(sample)")
        }
        try saveCheckpoint(model, to: path, metadata: description)
    }

    private func trainClassifier(cell: RecurrentCellKind, dataset: DatasetName, device: Device) throws {
        let full = try dataset.load(split: .train)
        let test = try dataset.load(split: .test)
        let (training, validation) = full.split(validationFraction: validationFraction, seed: seed)
        let shape = full.featureShape
        let (rows, columns) = (shape[shape.count - 2], shape[shape.count - 1])
        print("data: \(dataset.rawValue) · \(training.count) training, \(validation.count) validation, \(test.count) test examples · \(rows) steps of \(columns) features · \(full.classCount) classes")
        Random.seed(seed)
        let model = try SequenceClassifier(rows: rows, columns: columns, hiddenSize: hidden ?? 128, layers: layers,
                                           cell: cell, classes: full.classCount,
                                           nonlinearity: RecurrentNonlinearity(rawValue: nonlinearity) ?? .tanh)
        print("model: \(model.rnn.layerDescription) over the rows → last hidden state → Linear \(model.rnn.outputSize)→\(full.classCount) · \(model.parameterCount) parameters")
        var options = ClassifierTrainingOptions()
        options.epochs = epochs; options.batchSize = batchSize ?? 128; options.learningRate = learningRate
        options.seed = seed; options.showProgress = !noProgress; options.patience = nil
        let path = checkpoint ?? resume ?? "runs/\(cell.rawValue)-\(dataset.rawValue).safetensors"
        let description = ["opal.model": "sequence-classifier", "opal.cell": cell.rawValue, "opal.dataset": full.name,
                           "opal.hidden_size": String(model.rnn.hiddenSize), "opal.layers": String(layers)]
        options.checkpointURL = URL(fileURLWithPath: path)
        options.checkpointEvery = checkpointEvery
        options.checkpointMetadata = description
        let trainer = try ClassifierTrainer(model: model, device: device, options: options)
        try fitInterruptibly(trainer, data: (training, validation, test), resume: resume)
        let evaluation = try trainer.evaluate(test)
        printTestReport(evaluation)
        try saveCheckpoint(model, to: path, metadata: description.merging(["opal.test_accuracy": String(evaluation.report.accuracy)]) { $1 })
    }
}

/// Set by the SIGINT handler of the language-model trainer.
private let recurrentInterruptRequested = Atomic<Bool>(false)

/// Runs `body` with a SIGINT (Ctrl-C) handler: the first Ctrl-C asks the trainer (through the
/// closure handed to `body`) to save its state and stop after the current step; a second one quits at once.
private func withInterruptHandler(_ body: (@escaping () -> Bool) throws -> Void) throws {
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
    source.setEventHandler {
        if recurrentInterruptRequested.exchange(true, ordering: .relaxed) { _exit(130) }
        FileHandle.standardError.write(Data("\ninterrupt: saving the training state after this step (Ctrl-C again to quit at once)\n".utf8))
    }
    source.resume()
    defer {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
    try body { recurrentInterruptRequested.load(ordering: .relaxed) }
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
