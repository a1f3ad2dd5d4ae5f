import Foundation

/// Settings of a character language-model run.
public struct LanguageModelTrainingOptions: Sendable {
    /// Optimisation steps (each one batch of `batchSize` × `sequenceLength` characters).
    public var steps = 2000
    public var batchSize = 32
    /// Characters per row and step: the truncation length of backpropagation through time.
    public var sequenceLength = 64
    public var learningRate: Float = 2e-3
    public var schedule: LearningRateSchedule = .cosine
    /// Clip the gradients' global norm to this (nil: no clipping).
    public var maximumGradientNorm: Float? = 5
    /// Measure the validation loss every this many steps (and at the end).
    public var evaluateEvery = 200
    public var showProgress = true
    /// Where `fit` saves the training state every `checkpointEvery` steps and when stopped early.
    public var checkpointURL: URL?
    public var checkpointEvery: Int?
    /// Extra metadata written into every checkpoint (e.g. the model's description).
    public var checkpointMetadata: [String: String] = [:]
    /// Mixed with the step number to re-seed `Random` before every step, so the dropout masks of step k
    /// depend on this and k only: a resumed run draws the same masks as a straight one (exact resume).
    public var dropoutSeed: UInt64 = 0
    public init() {}
}

/// One validation measurement.
public struct LanguageModelReport: Sendable {
    public var step: Int
    /// Mean training loss (nats per character) over the steps since the previous report.
    public var trainingLoss: Double
    /// Mean loss on the validation text, nats per character.
    public var validationLoss: Double
    public var seconds: Double
    public var charactersPerSecond: Double
}

/// A model that predicts the next character of a text: the recurrent `CharLanguageModel` and the
/// Transformer `GPT` both train with `LanguageModelTrainer`.
public protocol CharacterLevelModel: Module {
    var vocabularySize: Int { get }
    /// Whether the model carries a recurrent state from one chunk of text to the next (truncated
    /// backpropagation through time); a Transformer sees each chunk on its own.
    var carriesState: Bool { get }
    /// An int32 id tensor after checking every id against the vocabulary.
    func indices(_ ids: [Int32], shape: Shape, on device: Device) throws -> Tensor
    /// Mean cross-entropy (nats per character) of predicting `targets` [batch, time] from `ids`,
    /// starting from `state` (recurrent models; ignored otherwise), and the state after the chunk.
    func loss(_ ids: Tensor, targets: Tensor, carrying state: RecurrentState?) throws -> (loss: Tensor, state: RecurrentState?)
}

extension CharLanguageModel: CharacterLevelModel {
    public var carriesState: Bool { true }
    public func indices(_ ids: [Int32], shape: Shape, on device: Device) throws -> Tensor {
        try embedding.indices(ids, shape: shape, on: device)
    }
    public func loss(_ ids: Tensor, targets: Tensor, carrying state: RecurrentState?) throws -> (loss: Tensor, state: RecurrentState?) {
        let (loss, next) = try loss(ids, targets: targets, state: state)
        return (loss, next)
    }
}

/// Trains a `CharacterLevelModel` (a `CharLanguageModel` or a `GPT`) with Adam, gradient clipping by global norm and truncated
/// backpropagation through time (recurrent models): each step reads the next `sequenceLength` characters of every
/// row of the text (`TextBatches`) starting from the recurrent state the previous step ended with,
/// detached from its graph. The state restarts from zeros at each new pass over the text.
///
/// A step uploads its ids and runs forward, backward, clipping and the update without any host
/// wait; the running loss stays on the device and is read only when the progress bar redraws.
public final class LanguageModelTrainer {
    public let model: any CharacterLevelModel
    public let corpus: TextCorpus
    public let device: Device
    public let options: LanguageModelTrainingOptions
    public let optimizer: Adam
    public let batches: TextBatches
    /// Receives the report lines.
    public var log: (String) -> Void = { print($0) }
    /// Asked after every step; returning true saves the training state (when `checkpointURL` is set) and stops.
    public var stopRequested: () -> Bool = { false }
    /// Steps done so far (counting those before a resume).
    public private(set) var stepCount = 0
    public private(set) var wasStopped = false
    public private(set) var lastCheckpoint: URL?
    /// The state carried into the next step (nil at the start of a pass).
    private var carried: RecurrentState?

    static let stepKey = "opal.train.step", batchSizeKey = "opal.train.batch_size"
    static let sequenceLengthKey = "opal.train.sequence_length", stepsKey = "opal.train.steps"
    static let learningRateKey = "opal.train.base_learning_rate"
    static let hiddenStateName = "trainer.state.hidden", cellStateName = "trainer.state.cell"

    /// - Throws: `TextCorpusError.tooShort` when the training text cannot fill a batch,
    ///   `TensorError.invalidArgument` for non-positive settings.
    public init(model: any CharacterLevelModel, corpus: TextCorpus, device: Device, options: LanguageModelTrainingOptions) throws {
        guard options.steps > 0 else { throw TensorError.invalidArgument(op: "training", reason: "steps must be positive, got \(options.steps)") }
        guard options.evaluateEvery > 0 else {
            throw TensorError.invalidArgument(op: "training", reason: "evaluateEvery must be positive, got \(options.evaluateEvery)")
        }
        if let norm = options.maximumGradientNorm, !(norm > 0 && norm.isFinite) {
            throw TensorError.invalidArgument(op: "training", reason: "the maximum gradient norm must be positive, got \(norm)")
        }
        if let every = options.checkpointEvery {
            guard every > 0 else { throw TensorError.invalidArgument(op: "training", reason: "checkpointEvery must be positive, got \(every)") }
            guard options.checkpointURL != nil else { throw TensorError.invalidArgument(op: "training", reason: "checkpointEvery needs a checkpointURL") }
        }
        guard corpus.vocabularySize == model.vocabularySize else {
            throw TensorError.invalidArgument(op: "training", reason: "\(corpus.name) has \(corpus.vocabularySize) characters but the model's vocabulary \(model.vocabularySize)")
        }
        self.model = model; self.corpus = corpus; self.device = device; self.options = options
        batches = try TextBatches(corpus.training, batchSize: options.batchSize, sequenceLength: options.sequenceLength, name: corpus.name)
        try model.move(to: device)
        optimizer = try Adam(parameters: model.trainableParameters, learningRate: options.learningRate)
        _ = try validationBatches()
    }

    /// The validation text in up to `batchSize` rows of `sequenceLength` steps.
    private static func validationBatches(_ corpus: TextCorpus, batchSize: Int, sequenceLength: Int) throws -> TextBatches {
        let rows = max(1, min(batchSize, (corpus.validation.count - 1) / sequenceLength))
        return try TextBatches(corpus.validation, batchSize: rows, sequenceLength: sequenceLength, name: corpus.name,
                               part: "the validation part")
    }

    private func validationBatches() throws -> TextBatches {
        try Self.validationBatches(corpus, batchSize: options.batchSize, sequenceLength: options.sequenceLength)
    }

    /// One optimisation step on batch `k` of the pass; returns the loss (not read).
    @discardableResult
    public func step(batch k: Int) throws -> Tensor {
        if k == 0 { carried = nil }
        let (inputs, targets) = batches.batch(k)
        let shape: Shape = [options.batchSize, options.sequenceLength]
        let x = try model.indices(inputs, shape: shape, on: device)
        let y = try Tensor(targets, shape: shape, on: device)
        optimizer.zeroGradients()
        let (loss, state) = try model.loss(x, targets: y, carrying: carried)
        try loss.backward()
        if let norm = options.maximumGradientNorm {
            try GradientClipping.clipByGlobalNorm(optimizer.parameters, maximumNorm: norm)
        }
        try optimizer.step()
        carried = state?.detached()
        return loss
    }

    /// Mean loss on the validation text in nats per character (evaluation mode, state carried across chunks).
    public func validationLoss() throws -> Double {
        try Self.validationLoss(of: model, on: corpus, batchSize: options.batchSize, sequenceLength: options.sequenceLength,
                                device: device)
    }

    /// Mean loss of `model` on the validation part of `corpus` in nats per character (evaluation mode,
    /// recurrent state carried across chunks), read in rows of `sequenceLength` characters.
    public static func validationLoss(of model: any CharacterLevelModel, on corpus: TextCorpus, batchSize: Int,
                                      sequenceLength: Int, device: Device) throws -> Double {
        let validation = try validationBatches(corpus, batchSize: batchSize, sequenceLength: sequenceLength)
        try model.move(to: device)
        let wasTraining = model.isTraining
        model.setTraining(false)
        defer { model.setTraining(wasTraining) }
        return try withoutGradients {
            var sum = try Tensor.zeros([], on: device)
            var state: RecurrentState?
            for k in 0..<validation.count {
                let (inputs, targets) = validation.batch(k)
                let shape: Shape = [validation.batchSize, validation.sequenceLength]
                let (loss, next) = try model.loss(try model.indices(inputs, shape: shape, on: device),
                                                  targets: try Tensor(targets, shape: shape, on: device), carrying: state)
                sum = try sum + loss
                state = next
            }
            return Double(try sum.item()) / Double(validation.count)
        }
    }

    /// Trains until `options.steps` steps are done (or `stopRequested`), measuring the validation loss
    /// every `evaluateEvery` steps and at the end.
    /// - Throws: `TrainingError.nonFiniteLoss` when a read-back loss is NaN or infinite; checkpoint errors on resume.
    @discardableResult
    public func fit(resumingFrom resume: URL? = nil) throws -> [LanguageModelReport] {
        wasStopped = false
        if let resume { try restore(from: resume) }
        var reports: [LanguageModelReport] = []
        guard stepCount < options.steps else { return reports }
        // One bar per stretch between two validation reports, finished before the report line.
        var bar: ProgressBar?
        func startBar() {
            guard options.showProgress else { return }
            let end = min(options.steps, (stepCount / options.evaluateEvery + 1) * options.evaluateEvery)
            bar = ProgressBar(total: end - stepCount, label: "steps \(stepCount + 1)-\(end)/\(options.steps)")
            barStart = stepCount
        }
        var barStart = stepCount
        defer { bar?.finish() }
        let readEvery = max(1, min(options.evaluateEvery / 20, options.steps / 50))
        let charactersPerStep = options.batchSize * options.sequenceLength
        var windowSum = try Tensor.zeros([], on: device), reportSum = try Tensor.zeros([], on: device)
        var stepsInWindow = 0, stepsInReport = 0
        var reportStart = Date()
        startBar()
        while stepCount < options.steps {
            optimizer.learningRate = options.schedule.rate(base: options.learningRate, step: stepCount, of: options.steps)
            Random.seed(run: options.dropoutSeed, step: stepCount)   // this step's dropout masks
            let loss = try step(batch: stepCount % batches.count).detached()
            stepCount += 1
            windowSum = try windowSum + loss; reportSum = try reportSum + loss
            stepsInWindow += 1; stepsInReport += 1
            if stepCount % readEvery == 0 || stepCount == options.steps {
                let mean = Double(try windowSum.item()) / Double(stepsInWindow)
                guard mean.isFinite else {
                    if let lastCheckpoint { log("the last good checkpoint \(lastCheckpoint.path) is kept") }
                    throw TrainingError.nonFiniteLoss(epoch: stepCount / batches.count + 1, step: stepCount, name: "training loss")
                }
                bar?.update(completed: stepCount - barStart, metrics: [("loss", mean)], samples: stepsInWindow * charactersPerStep)
                windowSum = try Tensor.zeros([], on: device); stepsInWindow = 0
            }
            let stop = stopRequested()
            if let url = options.checkpointURL, stop || options.checkpointEvery.map({ stepCount % $0 == 0 }) == true {
                try saveTrainingState(to: url)
            }
            if stop { wasStopped = true; return reports }
            if stepCount % options.evaluateEvery == 0 || stepCount == options.steps {
                let training = Double(try reportSum.item()) / Double(stepsInReport)
                let seconds = Date().timeIntervalSince(reportStart)
                let report = LanguageModelReport(step: stepCount, trainingLoss: training, validationLoss: try validationLoss(),
                                                 seconds: seconds, charactersPerSecond: Double(stepsInReport * charactersPerStep) / seconds)
                reports.append(report)
                bar?.finish(); bar = nil
                log(String(format: "step %d/%d: training loss %.4f · validation loss %.4f nats/char · %.1f s (%.0f chars/s)",
                           report.step, options.steps, report.trainingLoss, report.validationLoss, report.seconds,
                           report.charactersPerSecond))
                reportSum = try Tensor.zeros([], on: device); stepsInReport = 0
                reportStart = Date()
                if stepCount < options.steps { startBar() }
            }
        }
        return reports
    }

    /// Weights, Adam state, the carried recurrent state and the position, as one safetensors file.
    private func saveTrainingState(to url: URL) throws {
        var extra = try optimizer.stateTensors(names: model.namedParameters)
        if let carried {
            extra[Self.hiddenStateName] = carried.hidden
            if let cell = carried.cell { extra[Self.cellStateName] = cell }
        }
        var metadata = options.checkpointMetadata
        metadata[Self.stepKey] = String(stepCount)
        metadata[Self.stepsKey] = String(options.steps)
        metadata[Self.batchSizeKey] = String(options.batchSize)
        metadata[Self.sequenceLengthKey] = String(options.sequenceLength)
        metadata[Self.learningRateKey] = "\(options.learningRate)"
        for (key, value) in optimizer.stateMetadata { metadata[key] = value }
        let contents = try model.checkpointContents(metadata: metadata, extraTensors: extra)
        for (name, tensor) in contents.tensors.sorted(by: { $0.key < $1.key }) {
            if let values = tensor.floats, values.contains(where: { !$0.isFinite }) {
                throw TrainingError.nonFiniteState(epoch: stepCount / batches.count + 1, step: stepCount, tensor: name)
            }
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try contents.write(to: url)
        lastCheckpoint = url
    }

    /// Restores a state saved by `saveTrainingState` (the settings must match).
    private func restore(from url: URL) throws {
        let path = url.path
        let contents = try CheckpointContents(contentsOf: url)
        func check(_ setting: String, _ key: String, _ current: String) throws {
            guard let saved = contents.metadata[key] else {
                throw CheckpointError.malformedHeader(path: path, reason: "no \"\(key)\" metadata: not a language-model training state")
            }
            if saved != current {
                throw TrainingStateError.mismatch(path: path, setting: setting, checkpoint: saved, run: current)
            }
        }
        try check("batch size", Self.batchSizeKey, String(options.batchSize))
        try check("sequence length", Self.sequenceLengthKey, String(options.sequenceLength))
        try check("steps", Self.stepsKey, String(options.steps))
        try check("learning rate", Self.learningRateKey, "\(options.learningRate)")
        guard let step = contents.metadata[Self.stepKey].flatMap(Int.init), step >= 0 else {
            throw CheckpointError.malformedHeader(path: path, reason: "metadata \"\(Self.stepKey)\" is missing or not a count")
        }
        var state: RecurrentState?
        if let hidden = contents.tensors[Self.hiddenStateName] {
            state = RecurrentState(hidden: try hidden.tensor(on: device),
                                   cell: try contents.tensors[Self.cellStateName].map { try $0.tensor(on: device) })
        }
        try model.load(contents, strict: true)
        try optimizer.loadState(from: contents, names: model.namedParameters, path: path)
        stepCount = step
        carried = step % batches.count == 0 ? nil : state
        lastCheckpoint = url
        log("resumed from \(path) at step \(step) of \(options.steps)")
    }
}
