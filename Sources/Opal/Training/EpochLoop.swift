import Foundation

/// One pass over a dataset on a device: the shuffled epoch is uploaded once, each step slices its
/// batch on the device, and the step's scalar losses are summed on the device and read only when the
/// progress bar redraws (about 50 times per epoch), so a step itself never waits on the host.
struct EpochLoop {
    let device: Device
    let batchSize: Int
    let showProgress: Bool

    /// Runs `step(features, labels)` over every batch of `data` and returns the epoch mean of each
    /// named loss it returns.
    /// - Throws: `TrainingError.nonFiniteLoss` as soon as a read-back loss is NaN or infinite.
    func run(_ data: LabeledDataset, epoch: Int, of epochs: Int, seed: UInt64,
             step: (_ features: Tensor, _ labels: Tensor) throws -> [(name: String, value: Tensor)]) throws -> [(name: String, mean: Double)] {
        try run(data, epoch: epoch, of: epochs, seed: seed, startStep: 0, step: step, afterStep: { _, _ in true }).means
    }

    /// What a (possibly partial) epoch did.
    struct Outcome {
        /// Mean of each named loss over the steps run by this call (not those skipped by `startStep`).
        var means: [(name: String, mean: Double)]
        /// Steps of the epoch done, counting the skipped ones.
        var completedSteps: Int
        /// False when `afterStep` stopped the epoch early.
        var finished: Bool
    }

    /// Runs the epoch from batch `startStep` (0-based; the batches before it are skipped, the order
    /// being a pure function of `(seed, epoch)`). After each step, `afterStep(completedSteps, verify)`
    /// runs; `verify()` reads the losses accumulated since the last read and throws
    /// `TrainingError.nonFiniteLoss` if any is NaN or infinite. Returning false stops the epoch.
    func run(_ data: LabeledDataset, epoch: Int, of epochs: Int, seed: UInt64, startStep: Int,
             step: (_ features: Tensor, _ labels: Tensor) throws -> [(name: String, value: Tensor)],
             afterStep: (_ completedSteps: Int, _ verify: () throws -> Void) throws -> Bool) throws -> Outcome {
        let batches = data.batchIndices(batchSize: batchSize, shuffle: true, seed: seed, epoch: epoch)
        let firstStep = min(max(startStep, 0), batches.count)
        let order = batches.flatMap { $0 }
        let (hostFeatures, hostLabels) = data.gather(order)
        let features = try Tensor(hostFeatures, shape: Shape([order.count] + data.featureShape), on: device)
        let labels = try Tensor(hostLabels, shape: [order.count], on: device)
        let bar = showProgress ? ProgressBar(total: batches.count, label: "epoch \(epoch)/\(epochs)") : nil
        defer { bar?.finish() }
        let readEvery = max(1, batches.count / 50)
        var names: [String] = []
        var windowSums: [Tensor] = [], epochSums: [Tensor] = []
        var start = batches[..<firstStep].reduce(0) { $0 + $1.count }
        var stepsInWindow = 0, samplesInWindow = 0, stepsRun = 0
        var completed = firstStep
        func readWindow() throws {
            guard stepsInWindow > 0 else { return }
            let means = try windowSums.map { Double(try $0.item()) / Double(stepsInWindow) }
            if let bad = means.firstIndex(where: { !$0.isFinite }) {
                throw TrainingError.nonFiniteLoss(epoch: epoch, step: completed, name: names[bad])
            }
            bar?.update(completed: completed, metrics: zip(names, means).map { ($0, $1) }, samples: samplesInWindow)
            windowSums = try windowSums.map { _ in try Tensor.zeros([], on: device) }
            stepsInWindow = 0; samplesInWindow = 0
        }
        for index in firstStep..<batches.count {
            let batch = batches[index]
            let range = start..<(start + batch.count)
            start += batch.count
            let losses = try step(features.sliced(along: 0, range), labels.sliced(along: 0, range))
            if names.isEmpty {
                names = losses.map(\.name)
                windowSums = try losses.map { _ in try Tensor.zeros([], on: device) }
                epochSums = windowSums
            }
            for (slot, loss) in losses.enumerated() {
                let value = try loss.value.detached().reshaped(to: [])
                windowSums[slot] = try windowSums[slot] + value
                epochSums[slot] = try epochSums[slot] + value
            }
            stepsInWindow += 1; samplesInWindow += batch.count; stepsRun += 1
            completed = index + 1
            if completed % readEvery == 0 || completed == batches.count { try readWindow() }
            if try !afterStep(completed, readWindow) {
                try readWindow()
                let means = try zip(names, epochSums).map { ($0, Double(try $1.item()) / Double(max(stepsRun, 1))) }
                return Outcome(means: means, completedSteps: completed, finished: false)
            }
        }
        let means = try zip(names, epochSums).map { ($0, Double(try $1.item()) / Double(max(stepsRun, 1))) }
        return Outcome(means: means, completedSteps: completed, finished: true)
    }
}

public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case nonFiniteLoss(epoch: Int, step: Int, name: String)
    /// A weight or optimizer tensor became NaN or infinite (found when saving a checkpoint, which is not written).
    case nonFiniteState(epoch: Int, step: Int, tensor: String)
    case emptyDataset(String)

    public var description: String {
        switch self {
        case let .nonFiniteLoss(epoch, step, name):
            return "training stopped: the \(name) became non-finite (NaN or infinity) in epoch \(epoch) near step \(step); try a smaller learning rate"
        case let .nonFiniteState(epoch, step, tensor):
            return "training stopped: tensor \"\(tensor)\" became non-finite (NaN or infinity) in epoch \(epoch) by step \(step); try a smaller learning rate"
        case let .emptyDataset(which):
            return "the \(which) set is empty"
        }
    }
}
