import Foundation

/// Settings of a supervised classification run.
public struct ClassifierTrainingOptions: Sendable {
    public var epochs = 10
    public var batchSize = 128
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0
    public var seed: UInt64 = 42
    /// Stop when the validation loss has not improved for this many epochs (nil: never), and
    /// restore the weights of the best epoch.
    public var patience: Int? = 3
    /// How the learning rate moves over the run.
    public var schedule: LearningRateSchedule = .cosine
    public var showProgress = true
    /// Where `fit` saves the training state (weights, optimizer state, position; see `TrainingState`):
    /// every `checkpointEvery` steps, and when stopped by `stopAfterStep` or `ClassifierTrainer.stopRequested`.
    public var checkpointURL: URL?
    /// Save the training state every this many steps (nil: only when stopped early). Needs `checkpointURL`.
    public var checkpointEvery: Int?
    /// Extra metadata written into every training-state checkpoint (e.g. the model's description).
    public var checkpointMetadata: [String: String] = [:]
    /// Stop (saving the training state when `checkpointURL` is set) once this many steps of the
    /// whole run are done, counting those done before a resume (nil: train to the end).
    public var stopAfterStep: Int?
    public init() {}
}

/// What one epoch did.
public struct EpochSummary: Sendable {
    public var epoch: Int
    /// Mean of the step losses over the epoch.
    public var trainingLoss: Double
    public var validationLoss: Double
    public var validationAccuracy: Double
    public var seconds: Double
    public var samplesPerSecond: Double
}

/// Loss and predictions of a model over a whole dataset.
public struct Evaluation: Sendable {
    public var loss: Double
    public var predictions: [Int32]
    public var report: Metrics.ClassificationReport
}

/// Trains a classifier with Adam and the fused softmax cross-entropy.
///
/// Each epoch's shuffled features are uploaded to the device once; a step slices its batch on the
/// device, runs forward, backward and the optimizer without any host wait. The running loss stays
/// on the device and is read only when the progress bar redraws.
public final class ClassifierTrainer {
    public let model: any Layer
    public let device: Device
    public let options: ClassifierTrainingOptions
    public let optimizer: any Optimizer
    /// Receives one line per epoch (and notices).
    public var log: (String) -> Void = { print($0) }
    /// Asked after every step; returning true stops training after saving the training state (Ctrl-C).
    public var stopRequested: () -> Bool = { false }
    /// Where the last `fit` stopped: the epoch in progress (1-based) and its completed steps, and the
    /// steps done in the whole run.
    public private(set) var position: (epoch: Int, stepInEpoch: Int, globalStep: Int) = (1, 0, 0)
    /// Whether the last `fit` stopped early through `stopRequested` or `stopAfterStep`.
    public private(set) var wasStopped = false
    /// The last training-state checkpoint written (or loaded to resume), if any.
    public private(set) var lastCheckpoint: (url: URL, globalStep: Int)?

    public init(model: any Layer, device: Device, options: ClassifierTrainingOptions) throws {
        guard options.batchSize > 0 else {
            throw TensorError.invalidArgument(op: "training", reason: "batch size must be positive, got \(options.batchSize)")
        }
        guard options.epochs > 0 else {
            throw TensorError.invalidArgument(op: "training", reason: "epochs must be positive, got \(options.epochs)")
        }
        self.model = model; self.device = device; self.options = options
        try model.move(to: device)
        optimizer = try Adam(parameters: model.trainableParameters, learningRate: options.learningRate,
                             weightDecay: options.weightDecay)
    }

    /// Uploads `data` (features in `indices` order) as `[n] + featureShape` and labels `[n]`.
    private func upload(_ data: LabeledDataset, indices: [Int]) throws -> (features: Tensor, labels: Tensor) {
        let (features, labels) = data.gather(indices)
        return (try Tensor(features, shape: Shape([indices.count] + data.featureShape), on: device),
                try Tensor(labels, shape: [indices.count], on: device))
    }

    /// One optimisation step on a batch already on the device; returns the loss tensor (not read).
    @discardableResult
    public func step(features: Tensor, labels: Tensor) throws -> Tensor {
        optimizer.zeroGradients()
        let loss = try crossEntropy(logits: model(features), labels: labels)
        try loss.backward()
        try optimizer.step()
        return loss
    }

    /// Trains for up to `options.epochs` epochs with early stopping on `validation`.
    ///
    /// With `resumingFrom`, the weights, optimizer state, schedule position, dropout mask sequences and
    /// early-stopping state are restored from a training-state checkpoint and training continues at the
    /// step after the saved one, exactly as if it had not stopped (same batches, same masks; the
    /// settings must match the checkpoint's). The returned history then covers the epochs ended after resuming.
    /// - Throws: `TrainingError.nonFiniteLoss` / `.nonFiniteState` (the last good checkpoint is kept),
    ///   `TrainingStateError` or `CheckpointError` when the checkpoint cannot be resumed.
    @discardableResult
    public func fit(training: LabeledDataset, validation: LabeledDataset, resumingFrom resume: URL? = nil) throws -> [EpochSummary] {
        guard training.count > 0 else { throw TrainingError.emptyDataset("training") }
        if options.checkpointEvery != nil, options.checkpointURL == nil {
            throw TensorError.invalidArgument(op: "training", reason: "checkpointEvery needs a checkpointURL")
        }
        if let every = options.checkpointEvery, every <= 0 {
            throw TensorError.invalidArgument(op: "training", reason: "checkpointEvery must be positive, got \(every)")
        }
        var history: [EpochSummary] = []
        var best: (loss: Double, epoch: Int, weights: [Tensor])?
        let loop = EpochLoop(device: device, batchSize: options.batchSize, showProgress: options.showProgress)
        let stepsPerEpoch = (training.count + options.batchSize - 1) / options.batchSize
        let totalSteps = stepsPerEpoch * options.epochs
        var stepIndex = 0
        var firstEpoch = 1, firstStep = 0
        wasStopped = false
        trainingCount = training.count
        if let resume {
            let restored = try restore(from: resume, trainingCount: training.count, stepsPerEpoch: stepsPerEpoch)
            (firstEpoch, firstStep, stepIndex) = (restored.state.epoch, restored.state.stepInEpoch, restored.state.globalStep)
            best = restored.best
            log("resumed from \(resume.path) at epoch \(firstEpoch), step \(firstStep) of \(stepsPerEpoch) (step \(stepIndex) of \(totalSteps))")
        }
        position = (firstEpoch, firstStep, stepIndex)
        if let limit = options.stopAfterStep, stepIndex >= limit {
            wasStopped = true
            return history
        }
        guard firstEpoch <= options.epochs else { return history }
        for epoch in firstEpoch...options.epochs {
            let started = Date()
            model.setTraining(true)
            let outcome: EpochLoop.Outcome
            do {
            outcome = try loop.run(training, epoch: epoch, of: options.epochs, seed: options.seed,
                                       startStep: epoch == firstEpoch ? firstStep : 0) { features, labels in
                optimizer.learningRate = options.schedule.rate(base: options.learningRate, step: stepIndex, of: totalSteps)
                stepIndex += 1
                return [("loss", try step(features: features, labels: labels))]
            } afterStep: { completed, verify in
                position = (epoch, completed, stepIndex)
                let stop = stopRequested() || options.stopAfterStep.map { stepIndex >= $0 } == true
                let due = options.checkpointEvery.map { stepIndex % $0 == 0 } ?? false
                if stop || due, let url = options.checkpointURL {
                    try verify()
                    try saveTrainingState(to: url, stepsPerEpoch: stepsPerEpoch, best: best)
                }
                return !stop
            }
            } catch let error as TrainingError {
                if case .nonFiniteLoss = error, let lastCheckpoint {
                    log("the last good checkpoint \(lastCheckpoint.url.path) (step \(lastCheckpoint.globalStep)) is kept")
                }
                throw error
            }
            if !outcome.finished {
                wasStopped = true
                return history
            }
            let trainingLoss = outcome.means.first?.mean ?? .nan
            let seconds = Date().timeIntervalSince(started)
            let evaluation = try evaluate(validation)
            let summary = EpochSummary(epoch: epoch, trainingLoss: trainingLoss, validationLoss: evaluation.loss,
                                       validationAccuracy: evaluation.report.accuracy, seconds: seconds,
                                       samplesPerSecond: Double(training.count) / seconds)
            history.append(summary)
            log(String(format: "epoch %d: training loss %.4f · validation loss %.4f · validation accuracy %.2f%% · %.1f s (%.0f samples/s)",
                       epoch, summary.trainingLoss, summary.validationLoss, 100 * summary.validationAccuracy,
                       seconds, summary.samplesPerSecond))
            position = (epoch + 1, 0, stepIndex)
            if let patience = options.patience, validation.count > 0 {
                if best == nil || evaluation.loss < best!.loss {
                    best = (evaluation.loss, epoch, try model.parameters.map { try $0.value.mapped(.identity) })
                } else if epoch - best!.epoch >= patience {
                    log("early stopping: validation loss has not improved for \(patience) epochs (best: epoch \(best!.epoch))")
                    break
                }
            }
        }
        if let best, best.epoch != history.last?.epoch {
            for (parameter, weights) in zip(model.parameters, best.weights) { try parameter.assign(weights) }
            log("restored the weights of epoch \(best.epoch) (validation loss \(String(format: "%.4f", best.loss)))")
        }
        return history
    }

    /// The training state at the current `position`: weights, optimizer state, early stopping's best weights, metadata.
    private func contents(stepsPerEpoch: Int, best: (loss: Double, epoch: Int, weights: [Tensor])?) throws -> CheckpointContents {
        let named = model.namedParameters
        let state = TrainingState(
            epoch: position.epoch, stepInEpoch: position.stepInEpoch, globalStep: position.globalStep,
            epochs: options.epochs, stepsPerEpoch: stepsPerEpoch, batchSize: options.batchSize,
            trainingCount: trainingCount, seed: options.seed, schedule: options.schedule,
            baseLearningRate: options.learningRate, learningRate: optimizer.learningRate,
            bestEpoch: best?.epoch, bestValidationLoss: best?.loss, dropouts: model.dropoutStates)
        var extra = try optimizer.stateTensors(names: named)
        if let best {
            for ((name, _), weights) in zip(named, best.weights) { extra[TrainingState.bestWeightsPrefix + name] = weights }
        }
        var metadata = options.checkpointMetadata
        for (key, value) in state.metadata { metadata[key] = value }
        for (key, value) in optimizer.stateMetadata { metadata[key] = value }
        return try model.checkpointContents(metadata: metadata, extraTensors: extra)
    }

    /// The number of training examples of the current `fit` (part of the state, checked on resume).
    private var trainingCount = 0

    /// Saves the training state atomically, unless a tensor is non-finite (then throws and keeps the previous file).
    private func saveTrainingState(to url: URL, stepsPerEpoch: Int, best: (loss: Double, epoch: Int, weights: [Tensor])?) throws {
        let contents = try contents(stepsPerEpoch: stepsPerEpoch, best: best)
        for (name, tensor) in contents.tensors.sorted(by: { $0.key < $1.key }) {
            if let values = tensor.floats, values.contains(where: { !$0.isFinite }) {
                if let lastCheckpoint {
                    log("the last good checkpoint \(lastCheckpoint.url.path) (step \(lastCheckpoint.globalStep)) is kept")
                }
                throw TrainingError.nonFiniteState(epoch: position.epoch, step: position.stepInEpoch, tensor: name)
            }
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try contents.write(to: url)
        lastCheckpoint = (url, position.globalStep)
    }

    /// Loads a training-state checkpoint into the model, optimizer and dropout layers (checking it
    /// belongs to a run with these settings) and returns the state and early stopping's best weights.
    private func restore(from url: URL, trainingCount: Int, stepsPerEpoch: Int) throws
        -> (state: TrainingState, best: (loss: Double, epoch: Int, weights: [Tensor])?) {
        let path = url.path
        let contents = try CheckpointContents(contentsOf: url)
        let state = try TrainingState(metadata: contents.metadata, path: path)
        func check<T: Equatable & CustomStringConvertible>(_ setting: String, _ saved: T, _ current: T) throws {
            if saved != current {
                throw TrainingStateError.mismatch(path: path, setting: setting, checkpoint: saved.description, run: current.description)
            }
        }
        try check("batch size", state.batchSize, options.batchSize)
        try check("data seed", state.seed, options.seed)
        try check("training examples", state.trainingCount, trainingCount)
        try check("epochs", state.epochs, options.epochs)
        try check("learning rate", state.baseLearningRate, options.learningRate)
        try check("schedule", state.schedule.rawValue, options.schedule.rawValue)
        try check("steps per epoch", state.stepsPerEpoch, stepsPerEpoch)
        let named = model.namedParameters
        var best: (loss: Double, epoch: Int, weights: [Tensor])?
        if let epoch = state.bestEpoch, let loss = state.bestValidationLoss {
            var weights: [Tensor] = []
            for (name, parameter) in named {
                let key = TrainingState.bestWeightsPrefix + name
                guard let tensor = contents.tensors[key] else { throw CheckpointError.missingTensors(path: path, names: [key]) }
                guard tensor.shape == parameter.shape else {
                    throw CheckpointError.shapeMismatch(path: path, tensor: key, expected: parameter.shape, found: tensor.shape)
                }
                weights.append(try tensor.tensor(on: parameter.device))
            }
            best = (loss, epoch, weights)
        }
        // Check everything that can fail before changing anything.
        let modelDropouts = model.dropoutStates
        if Set(modelDropouts.keys) != Set(state.dropouts.keys) {
            throw TrainingStateError.dropoutMismatch(path: path, checkpoint: state.dropouts.keys.sorted(), model: modelDropouts.keys.sorted())
        }
        try model.load(contents, strict: true)
        try optimizer.loadState(from: contents, names: named, path: path)
        try model.restoreDropoutStates(state.dropouts, path: path)
        lastCheckpoint = (url, state.globalStep)
        return (state, best)
    }

    /// Mean loss, predictions and metrics of the model over `data` (evaluation mode, no gradients).
    public func evaluate(_ data: LabeledDataset, batchSize: Int = 1000) throws -> Evaluation {
        model.setTraining(false)
        defer { model.setTraining(true) }
        guard data.count > 0 else {
            return Evaluation(loss: .nan, predictions: [],
                              report: Metrics.classificationReport(predictions: [], labels: [], classCount: data.classCount))
        }
        return try withoutGradients {
            let (features, labels) = try upload(data, indices: Array(0..<data.count))
            var lossSum = try Tensor.zeros([], on: device)
            var predictions: [Int32] = []
            predictions.reserveCapacity(data.count)
            for start in stride(from: 0, to: data.count, by: batchSize) {
                let range = start..<min(start + batchSize, data.count)
                let logits = try model(features.sliced(along: 0, range))
                let batchLabels = try labels.sliced(along: 0, range)
                lossSum = try lossSum + crossEntropy(logits: logits, labels: batchLabels) * Float(range.count)
                predictions += try logits.argmax(alongAxis: -1).intScalars()
            }
            let loss = Double(try lossSum.item()) / Double(data.count)
            return Evaluation(loss: loss, predictions: predictions,
                              report: Metrics.classificationReport(predictions: predictions, labels: data.labels,
                                                                   classCount: data.classCount))
        }
    }
}
