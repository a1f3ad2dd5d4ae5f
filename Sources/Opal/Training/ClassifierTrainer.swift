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
    @discardableResult
    public func fit(training: LabeledDataset, validation: LabeledDataset) throws -> [EpochSummary] {
        guard training.count > 0 else { throw TrainingError.emptyDataset("training") }
        var history: [EpochSummary] = []
        var best: (loss: Double, epoch: Int, weights: [Tensor])?
        let loop = EpochLoop(device: device, batchSize: options.batchSize, showProgress: options.showProgress)
        let stepsPerEpoch = (training.count + options.batchSize - 1) / options.batchSize
        let totalSteps = stepsPerEpoch * options.epochs
        var stepIndex = 0
        for epoch in 1...options.epochs {
            let started = Date()
            model.setTraining(true)
            let means = try loop.run(training, epoch: epoch, of: options.epochs, seed: options.seed) { features, labels in
                optimizer.learningRate = options.schedule.rate(base: options.learningRate, step: stepIndex, of: totalSteps)
                stepIndex += 1
                return [("loss", try step(features: features, labels: labels))]
            }
            let trainingLoss = means.first?.mean ?? .nan
            let seconds = Date().timeIntervalSince(started)
            let evaluation = try evaluate(validation)
            let summary = EpochSummary(epoch: epoch, trainingLoss: trainingLoss, validationLoss: evaluation.loss,
                                       validationAccuracy: evaluation.report.accuracy, seconds: seconds,
                                       samplesPerSecond: Double(training.count) / seconds)
            history.append(summary)
            log(String(format: "epoch %d: training loss %.4f · validation loss %.4f · validation accuracy %.2f%% · %.1f s (%.0f samples/s)",
                       epoch, summary.trainingLoss, summary.validationLoss, 100 * summary.validationAccuracy,
                       seconds, summary.samplesPerSecond))
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
