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
    /// Where the weights are saved (safetensors) every `checkpointEvery` steps, when stopped early and at the end.
    public var checkpointURL: URL?
    public var checkpointEvery: Int?
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
    /// Asked after every step; returning true saves the checkpoint (when `checkpointURL` is set) and stops.
    public var stopRequested: () -> Bool = { false }
    public private(set) var stepCount = 0
    public private(set) var wasStopped = false
    public private(set) var lastCheckpoint: URL?
    /// The latest held-out exact match (nil before the first report).
    public private(set) var lastExactMatch: Double?

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

    /// One optimisation step on the next training batch; returns the loss (not read).
    @discardableResult
    public func step() throws -> Tensor {
        let batch = stream.nextBatch(options.batchSize)
        optimizer.zeroGradients()
        let loss = try model.loss(batch, on: device)
        try loss.backward()
        if let norm = options.maximumGradientNorm {
            try GradientClipping.clipByGlobalNorm(optimizer.parameters, maximumNorm: norm)
        }
        try optimizer.step()
        return loss
    }

    /// Held-out exact match (greedy decoding, evaluation mode) and the decoded outputs.
    public func evaluate() throws -> (accuracy: Double, outputs: [[Int32]]) {
        try model.exactMatch(heldOut, on: device)
    }

    /// Trains until `options.steps` steps are done (or `stopRequested`), measuring the held-out exact
    /// match every `evaluateEvery` steps and at the end; saves the weights to `checkpointURL` (if set) at the end.
    /// - Throws: `TrainingError.nonFiniteLoss` when a read-back loss is NaN or infinite.
    @discardableResult
    public func fit() throws -> [Seq2SeqReport] {
        wasStopped = false
        var reports: [Seq2SeqReport] = []
        guard stepCount < options.steps else { return reports }
        var bar: ProgressBar?
        var barStart = stepCount
        func startBar() {
            guard options.showProgress else { return }
            let end = min(options.steps, (stepCount / options.evaluateEvery + 1) * options.evaluateEvery)
            bar = ProgressBar(total: end - stepCount, label: "steps \(stepCount + 1)-\(end)/\(options.steps)")
            barStart = stepCount
        }
        defer { bar?.finish() }
        let readEvery = max(1, min(options.evaluateEvery / 20, options.steps / 50))
        var windowSum = try Tensor.zeros([], on: device), reportSum = try Tensor.zeros([], on: device)
        var stepsInWindow = 0, stepsInReport = 0
        var reportStart = Date()
        startBar()
        while stepCount < options.steps {
            optimizer.learningRate = learningRate(at: stepCount)
            let loss = try step().detached()
            stepCount += 1
            windowSum = try windowSum + loss; reportSum = try reportSum + loss
            stepsInWindow += 1; stepsInReport += 1
            if stepCount % readEvery == 0 || stepCount == options.steps {
                let mean = Double(try windowSum.item()) / Double(stepsInWindow)
                guard mean.isFinite else {
                    if let lastCheckpoint { log("the last good checkpoint \(lastCheckpoint.path) is kept") }
                    throw TrainingError.nonFiniteLoss(epoch: 1, step: stepCount, name: "training loss")
                }
                bar?.update(completed: stepCount - barStart, metrics: [("loss", mean)], samples: stepsInWindow * options.batchSize)
                windowSum = try Tensor.zeros([], on: device); stepsInWindow = 0
            }
            let stop = stopRequested()
            if let url = options.checkpointURL, stop || options.checkpointEvery.map({ stepCount % $0 == 0 }) == true {
                try saveCheckpoint(to: url)
            }
            if stop { wasStopped = true; return reports }
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
                if stepCount < options.steps { startBar() }
            }
        }
        if let url = options.checkpointURL { try saveCheckpoint(to: url) }
        return reports
    }

    /// The weights with the model's description, the task, the step and the latest held-out exact
    /// match as metadata (loadable with `Seq2SeqTransformer.load(from:)`).
    public func saveCheckpoint(to url: URL) throws {
        var metadata = options.checkpointMetadata.merging(model.descriptionMetadata(task: task)) { $1 }
        metadata["opal.train.step"] = String(stepCount)
        metadata["opal.train.steps"] = String(options.steps)
        metadata["opal.train.seed"] = String(options.seed)
        if let lastExactMatch { metadata["opal.held_out_exact_match"] = String(lastExactMatch) }
        let contents = try model.checkpointContents(metadata: metadata)
        for (name, tensor) in contents.tensors.sorted(by: { $0.key < $1.key }) {
            if let values = tensor.floats, values.contains(where: { !$0.isFinite }) {
                throw TrainingError.nonFiniteState(epoch: 1, step: stepCount, tensor: name)
            }
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try contents.write(to: url)
        lastCheckpoint = url
    }
}
