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
        let batches = data.batchIndices(batchSize: batchSize, shuffle: true, seed: seed, epoch: epoch)
        let order = batches.flatMap { $0 }
        let (hostFeatures, hostLabels) = data.gather(order)
        let features = try Tensor(hostFeatures, shape: Shape([order.count] + data.featureShape), on: device)
        let labels = try Tensor(hostLabels, shape: [order.count], on: device)
        let bar = showProgress ? ProgressBar(total: batches.count, label: "epoch \(epoch)/\(epochs)") : nil
        defer { bar?.finish() }
        let readEvery = max(1, batches.count / 50)
        var names: [String] = []
        var windowSums: [Tensor] = [], epochSums: [Tensor] = []
        var start = 0, stepsInWindow = 0, samplesInWindow = 0
        for (index, batch) in batches.enumerated() {
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
            stepsInWindow += 1; samplesInWindow += batch.count
            if (index + 1) % readEvery == 0 || index + 1 == batches.count {
                let means = try windowSums.map { Double(try $0.item()) / Double(stepsInWindow) }
                if let bad = means.firstIndex(where: { !$0.isFinite }) {
                    throw TrainingError.nonFiniteLoss(epoch: epoch, step: index + 1, name: names[bad])
                }
                bar?.update(completed: index + 1, metrics: zip(names, means).map { ($0, $1) }, samples: samplesInWindow)
                windowSums = try windowSums.map { _ in try Tensor.zeros([], on: device) }
                stepsInWindow = 0; samplesInWindow = 0
            }
        }
        return try zip(names, epochSums).map { ($0, Double(try $1.item()) / Double(max(batches.count, 1))) }
    }
}

public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case nonFiniteLoss(epoch: Int, step: Int, name: String)
    case emptyDataset(String)

    public var description: String {
        switch self {
        case let .nonFiniteLoss(epoch, step, name):
            return "training stopped: the \(name) became non-finite (NaN or infinity) in epoch \(epoch) near step \(step); try a smaller learning rate"
        case let .emptyDataset(which):
            return "the \(which) set is empty"
        }
    }
}
