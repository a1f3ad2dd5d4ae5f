import Foundation

/// Settings of a digit-reversal run of the encoder–decoder Transformer.
public struct Seq2SeqTrainingOptions: Sendable {
    /// Optimisation steps, each on a fresh batch of `batchSize` random strings.
    public var steps = 3000
    public var batchSize = 64
    /// Peak Adam learning rate, reached after `warmupSteps` of linear warm-up, then `schedule`.
    public var learningRate: Float = 1e-3
    public var warmupSteps = 100
    public var schedule: LearningRateSchedule = .cosine
    /// Clip the gradients' global norm to this (nil: no clipping).
    public var maximumGradientNorm: Float? = 1
    /// Measure the held-out exact match every this many steps (and at the end).
    public var evaluateEvery = 500
    /// Size of the held-out set (drawn with `seed + 1`, the training stream with `seed`).
    public var heldOutCount = 500
    public var seed: UInt64 = 42
    public var showProgress = true
    /// Where `fit` saves the training state (weights, Adam state, position; see `Seq2SeqTrainer`) every
    /// `checkpointEvery` steps and when stopped early, and the final weights at the end (safetensors).
    public var checkpointURL: URL?
    public var checkpointEvery: Int?
    /// Stop after this many steps (counted from the start of the run), saving the training state like
    /// a Ctrl-C (nil: run all `steps`).
    public var stopAfterStep: Int?
    /// Extra metadata written into every checkpoint (the model's description is always added).
    public var checkpointMetadata: [String: String] = [:]
    public init() {}
}

/// One held-out measurement.
public struct Seq2SeqReport: Sendable {
    public var step: Int
    /// Mean masked cross-entropy (nats per target token) over the steps since the previous report.
    public var trainingLoss: Double
    /// Share of held-out strings whose greedy decoding is exactly their reversal.
    public var heldOutExactMatch: Double
    public var seconds: Double
}

/// Trains a `Seq2SeqTransformer` on `DigitReversal` with Adam (linear warm-up, then the schedule),
/// gradient clipping by global norm, a progress bar, held-out exact-match reports and checkpoints.
///
/// A step draws a batch on the host, uploads it and runs forward, backward, clipping and the update;
/// the running loss stays on the device and is read only when the progress bar redraws.
///
/// Training state: every `checkpointEvery` steps, and when stopped (`stopRequested`, `stopAfterStep`),
/// `fit` saves the weights, Adam's moments and step count and the position (a `TrainingState` of one
/// "epoch" of `steps` steps over the endless stream, plus the `opal.seq2seq.*` settings below and the
/// model's description) atomically to `checkpointURL`; `fit(resumingFrom:)` continues from such a
/// file exactly as if the run had not stopped. The training stream is a pure function of the seed, the
/// task and the held-out set, so its position is restored by redrawing the `step × batchSize` strings
/// already used (the count of held-out strings it skipped is saved and checked). With dropout, the
/// masks of step k are drawn after `Random.seed` of a mix of the seed and k, so they do not depend on
/// what ran before either.
///
///     opal.seq2seq.warmup_steps     linear warm-up steps
///     opal.seq2seq.clip_norm        the gradient clipping norm ("off": none)
///     opal.seq2seq.held_out_count   size of the held-out set (it shapes the stream, which skips its strings)
///     opal.seq2seq.stream_skipped   held-out strings the stream has skipped so far
public final class Seq2SeqTrainer {
    public let model: Seq2SeqTransformer
    public let task: DigitReversal
    public let device: Device
    public let options: Seq2SeqTrainingOptions
    public let optimizer: Adam
    /// The fixed held-out sources (never in the training stream when longer than 3 digits).
    public let heldOut: [[Int32]]
    public private(set) var stream: DigitReversal.TrainingStream
    /// Receives the report lines.
    public var log: (String) -> Void = { print($0) }
    /// Asked after every step; returning true saves the training state (when `checkpointURL` is set) and stops.
    public var stopRequested: () -> Bool = { false }
    /// Steps done so far (counting those before a resume).
    public private(set) var stepCount = 0
    public private(set) var wasStopped = false
    /// The file last written by this trainer or resumed from.
    public private(set) var lastCheckpoint: URL?
    /// The step of the last training state saved or resumed from.
    private var lastCheckpointStep = 0
    /// The latest held-out exact match (nil before the first report).
    public private(set) var lastExactMatch: Double?

    static let warmupKey = "opal.seq2seq.warmup_steps", clipNormKey = "opal.seq2seq.clip_norm"
    static let heldOutKey = "opal.seq2seq.held_out_count", skippedKey = "opal.seq2seq.stream_skipped"
    static let exactMatchKey = "opal.held_out_exact_match"

    /// - Throws: `TensorError.invalidArgument` for non-positive settings or a model whose vocabulary is not the task's.
    public init(model: Seq2SeqTransformer, task: DigitReversal, device: Device, options: Seq2SeqTrainingOptions) throws {
        func bad(_ reason: String) -> Error { TensorError.invalidArgument(op: "seq2seq training", reason: reason) }
        guard options.steps > 0 else { throw bad("steps must be positive, got \(options.steps)") }
        guard options.batchSize > 0 else { throw bad("the batch size must be positive, got \(options.batchSize)") }
        guard options.evaluateEvery > 0 else { throw bad("evaluateEvery must be positive, got \(options.evaluateEvery)") }
        guard options.heldOutCount > 0 else { throw bad("the held-out set must not be empty") }
        guard options.warmupSteps >= 0 else { throw bad("warmupSteps must be ≥ 0, got \(options.warmupSteps)") }
        guard options.learningRate > 0, options.learningRate.isFinite else { throw bad("the learning rate must be positive, got \(options.learningRate)") }
        if let norm = options.maximumGradientNorm, !(norm > 0 && norm.isFinite) {
            throw bad("the maximum gradient norm must be positive, got \(norm)")
        }
        if let every = options.checkpointEvery {
            guard every > 0 else { throw bad("checkpointEvery must be positive, got \(every)") }
            guard options.checkpointURL != nil else { throw bad("checkpointEvery needs a checkpointURL") }
        }
        if let limit = options.stopAfterStep, limit < 0 { throw bad("stopAfterStep must be ≥ 0, got \(limit)") }
        guard model.vocabularySize == DigitReversal.vocabularySize else {
            throw bad("the model's vocabulary has \(model.vocabularySize) ids, the task \(DigitReversal.vocabularySize)")
        }
        self.model = model; self.task = task; self.device = device; self.options = options
        heldOut = task.heldOut(count: options.heldOutCount, seed: options.seed &+ 1)
        stream = DigitReversal.TrainingStream(task: task, seed: options.seed, excluding: heldOut)
        try model.move(to: device)
        optimizer = try Adam(parameters: model.trainableParameters, learningRate: options.learningRate)
    }

    /// The learning rate of step `step` (0-based): linear warm-up to the peak, then the schedule over the rest.
    public func learningRate(at step: Int) -> Float {
        let warmup = min(options.warmupSteps, options.steps - 1)
        if step < warmup { return options.learningRate * Float(step + 1) / Float(warmup + 1) }
        return options.schedule.rate(base: options.learningRate, step: step - warmup, of: options.steps - warmup)
    }

    /// One optimisation step (number `stepCount`, which it advances) on the next training batch, at
    /// the schedule's learning rate; returns the loss (not read).
    @discardableResult
    public func step() throws -> Tensor {
        optimizer.learningRate = learningRate(at: stepCount)
        if model.configuration.dropout > 0 { Random.seed(run: options.seed, step: stepCount) }
        let batch = stream.nextBatch(options.batchSize)
        optimizer.zeroGradients()
        let loss = try model.loss(batch, on: device)
        try loss.backward()
        if let norm = options.maximumGradientNorm {
            try GradientClipping.clipByGlobalNorm(optimizer.parameters, maximumNorm: norm)
        }
        try optimizer.step()
        stepCount += 1
        return loss
    }

    /// Held-out exact match (greedy decoding, evaluation mode) and the decoded outputs.
    public func evaluate() throws -> (accuracy: Double, outputs: [[Int32]]) {
        try model.exactMatch(heldOut, on: device)
    }

    /// Trains until `options.steps` steps are done (or `stopRequested` / `stopAfterStep`), measuring the
    /// held-out exact match every `evaluateEvery` steps and at the end; saves the training state every
    /// `checkpointEvery` steps and when stopped, and the final weights at the end, to `checkpointURL` (if set).
    ///
    /// With `resumingFrom`, the weights, Adam state, step, stream position (and the dropout masks'
    /// sequence) are restored from a training-state checkpoint and training continues at the step after
    /// the saved one: N steps + resume + M steps gives the weights of N + M steps in one go (same
    /// device). The model's description, the task and the settings that shape the run must match.
    /// - Throws: `TrainingError.nonFiniteLoss` / `.nonFiniteState` when a loss or a saved tensor is NaN or
    ///   infinite (the last good checkpoint is kept); `TrainingStateError` or `CheckpointError` when the
    ///   checkpoint cannot be resumed.
    @discardableResult
    public func fit(resumingFrom resume: URL? = nil) throws -> [Seq2SeqReport] {
        wasStopped = false
        if let resume { try restore(from: resume) }
        var reports: [Seq2SeqReport] = []
        if let limit = options.stopAfterStep, stepCount >= limit, stepCount < options.steps {
            wasStopped = true
            return reports
        }
        var bar: ProgressBar?
        var barStart = stepCount
        func startBar() {
            guard options.showProgress, stepCount < options.steps else { return }
            let end = min(options.steps, (stepCount / options.evaluateEvery + 1) * options.evaluateEvery)
            bar = ProgressBar(total: end - stepCount, label: "steps \(stepCount + 1)-\(end)/\(options.steps)")
            barStart = stepCount
        }
        defer { bar?.finish() }
        let readEvery = max(1, min(options.evaluateEvery / 20, options.steps / 50))
        var windowSum = try Tensor.zeros([], on: device), reportSum = try Tensor.zeros([], on: device)
        var stepsInWindow = 0, stepsInReport = 0
        var reportStart = Date()
        /// Reads the loss of the steps since the last read; throws when it is not finite.
        func readWindow() throws -> Double {
            let mean = Double(try windowSum.item()) / Double(stepsInWindow)
            guard mean.isFinite else {
                keepLastCheckpointNotice()
                throw TrainingError.nonFiniteLoss(epoch: 1, step: stepCount, name: "training loss")
            }
            windowSum = try Tensor.zeros([], on: device); stepsInWindow = 0
            return mean
        }
        startBar()
        while stepCount < options.steps {
            let loss = try step().detached()
            windowSum = try windowSum + loss; reportSum = try reportSum + loss
            stepsInWindow += 1; stepsInReport += 1
            if stepCount % readEvery == 0 || stepCount == options.steps {
                let window = stepsInWindow
                let mean = try readWindow()
                bar?.update(completed: stepCount - barStart, metrics: [("loss", mean)], samples: window * options.batchSize)
            }
            let stop = stopRequested() || options.stopAfterStep.map { stepCount >= $0 } == true
            if let url = options.checkpointURL, stop || options.checkpointEvery.map({ stepCount % $0 == 0 }) == true {
                if stepsInWindow > 0 { _ = try readWindow() }   // never save the state after an unchecked loss
                try saveTrainingState(to: url)
            }
            if stop && stepCount < options.steps { wasStopped = true; return reports }
            if stepCount % options.evaluateEvery == 0 || stepCount == options.steps {
                let training = Double(try reportSum.item()) / Double(stepsInReport)
                let accuracy = try evaluate().accuracy
                lastExactMatch = accuracy
                let report = Seq2SeqReport(step: stepCount, trainingLoss: training, heldOutExactMatch: accuracy,
                                           seconds: Date().timeIntervalSince(reportStart))
                reports.append(report)
                bar?.finish(); bar = nil
                log(String(format: "step %d/%d: training loss %.4f · held-out exact match %.2f%% (%d strings) · %.1f s",
                           report.step, options.steps, report.trainingLoss, 100 * accuracy, heldOut.count, report.seconds))
                reportSum = try Tensor.zeros([], on: device); stepsInReport = 0
                reportStart = Date()
                startBar()
            }
        }
        if let url = options.checkpointURL { try saveCheckpoint(to: url) }
        return reports
    }

    private func keepLastCheckpointNotice() {
        if let lastCheckpoint { log("the last good checkpoint \(lastCheckpoint.path) (step \(lastCheckpointStep)) is kept") }
    }

    /// The model's description, the task, the step and the latest held-out exact match.
    private var descriptionMetadata: [String: String] {
        var metadata = options.checkpointMetadata.merging(model.descriptionMetadata(task: task)) { $1 }
        if let lastExactMatch { metadata[Self.exactMatchKey] = String(lastExactMatch) }
        return metadata
    }

    /// Writes `contents` atomically unless a tensor is NaN or infinite (then throws and keeps the previous file).
    private func write(_ contents: CheckpointContents, to url: URL) throws {
        for (name, tensor) in contents.tensors.sorted(by: { $0.key < $1.key }) {
            if let values = tensor.floats, values.contains(where: { !$0.isFinite }) {
                keepLastCheckpointNotice()
                throw TrainingError.nonFiniteState(epoch: 1, step: stepCount, tensor: name)
            }
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try contents.write(to: url)
        lastCheckpoint = url
    }

    /// The weights with the model's description, the task, the step and the latest held-out exact
    /// match as metadata (loadable with `Seq2SeqTransformer.load(from:)`; no training state).
    public func saveCheckpoint(to url: URL) throws {
        var metadata = descriptionMetadata
        metadata["opal.train.step"] = String(stepCount)
        metadata["opal.train.steps"] = String(options.steps)
        metadata["opal.train.seed"] = String(options.seed)
        try write(try model.checkpointContents(metadata: metadata), to: url)
    }

    /// The training state after `stepCount` steps (see the type's description).
    public var trainingState: TrainingState {
        TrainingState(epoch: 1, stepInEpoch: stepCount, globalStep: stepCount, epochs: 1, stepsPerEpoch: options.steps,
                      batchSize: options.batchSize, trainingCount: options.steps * options.batchSize, seed: options.seed,
                      schedule: options.schedule, baseLearningRate: options.learningRate,
                      learningRate: optimizer.learningRate)
    }

    /// The `opal.seq2seq.*` settings of this run, as saved in the training state.
    private var settingsMetadata: [String: String] {
        [Self.warmupKey: String(options.warmupSteps),
         Self.clipNormKey: options.maximumGradientNorm.map { String($0) } ?? "off",
         Self.heldOutKey: String(options.heldOutCount)]
    }

    /// Saves the weights, Adam's state and the position as one safetensors file (atomically; a NaN or
    /// infinite tensor leaves the previous file unchanged and throws `TrainingError.nonFiniteState`).
    public func saveTrainingState(to url: URL) throws {
        var metadata = descriptionMetadata
        for (key, value) in trainingState.metadata { metadata[key] = value }
        for (key, value) in settingsMetadata { metadata[key] = value }
        metadata[Self.skippedKey] = String(stream.skipped)
        for (key, value) in optimizer.stateMetadata { metadata[key] = value }
        let extra = try optimizer.stateTensors(names: model.namedParameters)
        try write(try model.checkpointContents(metadata: metadata, extraTensors: extra), to: url)
        lastCheckpointStep = stepCount
    }

    /// Restores a state saved by `saveTrainingState`, after checking that it belongs to a run with this
    /// model, task and settings (nothing changes when a check fails).
    private func restore(from url: URL) throws {
        let path = url.path
        let contents = try CheckpointContents(contentsOf: url)
        let metadata = contents.metadata
        let state = try TrainingState(metadata: metadata, path: path)
        try model.checkDescription(metadata, task: task, path: path)
        func check<T: Equatable & CustomStringConvertible>(_ setting: String, _ saved: T, _ current: T) throws {
            if saved != current {
                throw TrainingStateError.mismatch(path: path, setting: setting, checkpoint: saved.description, run: current.description)
            }
        }
        guard state.epochs == 1, state.epoch == 1, state.globalStep == state.stepInEpoch else {
            throw TrainingStateError.invalidValue(path: path, key: TrainingState.prefix + "epochs",
                                                  value: "\(state.epochs) (a sequence-to-sequence run is one epoch)")
        }
        try check("steps", state.stepsPerEpoch, options.steps)
        try check("batch size", state.batchSize, options.batchSize)
        try check("seed", state.seed, options.seed)
        try check("learning rate", state.baseLearningRate, options.learningRate)
        try check("schedule", state.schedule.rawValue, options.schedule.rawValue)
        let settingNames = [Self.warmupKey: "warm-up steps", Self.clipNormKey: "gradient clipping norm",
                            Self.heldOutKey: "held-out strings"]
        for (key, current) in settingsMetadata.sorted(by: { $0.key < $1.key }) {
            guard let saved = metadata[key] else { throw TrainingStateError.missingKey(path: path, key: key) }
            try check(settingNames[key]!, saved, current)
        }
        guard let skippedText = metadata[Self.skippedKey] else { throw TrainingStateError.missingKey(path: path, key: Self.skippedKey) }
        guard let skipped = Int(skippedText), skipped >= 0 else {
            throw TrainingStateError.invalidValue(path: path, key: Self.skippedKey, value: skippedText)
        }
        // The stream after `step` batches: redraw them (cheap host work) and check the skipped count.
        var replayed = DigitReversal.TrainingStream(task: task, seed: options.seed, excluding: heldOut)
        for _ in 0..<(state.globalStep * options.batchSize) { _ = replayed.next() }
        guard replayed.skipped == skipped else {
            throw TrainingStateError.invalidValue(path: path, key: Self.skippedKey,
                                                  value: "\(skipped) (redrawing the stream to step \(state.globalStep) skips \(replayed.skipped))")
        }
        try model.load(contents, strict: true)
        try optimizer.loadState(from: contents, names: model.namedParameters, path: path)
        stream = replayed
        stepCount = state.globalStep
        optimizer.learningRate = state.learningRate
        lastExactMatch = metadata[Self.exactMatchKey].flatMap(Double.init)
        lastCheckpoint = url
        lastCheckpointStep = stepCount
        log("resumed from \(path) at step \(stepCount) of \(options.steps)")
    }
}
