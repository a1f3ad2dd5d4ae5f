import Foundation

/// A classification dataset held in host memory.
///
/// `features` is row-major `[count, featureCount]` where `featureCount = featureShape.reduce(1, *)`;
/// row `i` is example `i`, whose class is `labels[i]` in `0..<classCount`.
public struct LabeledDataset: Sendable {
    public var name: String
    /// `[count × featureCount]`, row-major.
    public var features: [Float]
    /// `[count]`, each in `0..<classNames.count`.
    public var labels: [Int32]
    /// The shape of one example, e.g. `[1, 28, 28]` (channels, height, width) or `[1, 8, 8]`.
    public var featureShape: [Int]
    /// Human-readable names of the classes, indexed by label.
    public var classNames: [String]

    public init(name: String, features: [Float], labels: [Int32], featureShape: [Int], classNames: [String]) {
        self.name = name
        self.features = features
        self.labels = labels
        self.featureShape = featureShape
        self.classNames = classNames
    }

    /// Checks that the arrays agree with each other and that every label is a valid class.
    public func validated() throws -> LabeledDataset {
        guard featureShape.allSatisfy({ $0 > 0 }) else {
            throw DataError.inconsistentDataset(name: name, reason: "feature shape \(featureShape) has a non-positive size")
        }
        guard features.count == labels.count * featureCount else {
            throw DataError.inconsistentDataset(
                name: name, reason: "\(features.count) feature values for \(labels.count) labels of "
                    + "\(featureCount) features each (expected \(labels.count * featureCount))")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= classNames.count }) {
            throw DataError.inconsistentDataset(
                name: name, reason: "label \(labels[bad]) of example \(bad) is outside 0..<\(classNames.count)")
        }
        return self
    }

    /// Number of examples.
    public var count: Int { labels.count }
    /// Values per example: the product of `featureShape`.
    public var featureCount: Int { featureShape.reduce(1, *) }
    /// Number of classes.
    public var classCount: Int { classNames.count }

    /// The examples at `indices`, in that order (an index may repeat).
    /// - Precondition: every index is in `0..<count`.
    public func subset(_ indices: some Collection<Int>) -> LabeledDataset {
        let order = Array(indices)
        let (subsetFeatures, subsetLabels) = gather(order)
        return LabeledDataset(name: name, features: subsetFeatures, labels: subsetLabels,
                              featureShape: featureShape, classNames: classNames)
    }

    /// Splits the examples at random into a training part and a validation part.
    ///
    /// The validation part holds `round(count × validationFraction)` examples; the two parts are disjoint
    /// and together hold every example once. The order is a seeded shuffle (`SeededGenerator`), so the same
    /// seed gives the same split on every run and platform. `validationFraction` is clamped to 0…1.
    public func split(validationFraction: Double, seed: UInt64) -> (train: LabeledDataset, validation: LabeledDataset) {
        let fraction = validationFraction.isNaN ? 0 : min(1, max(0, validationFraction))
        let validationCount = Int((Double(count) * fraction).rounded())
        var generator = SeededGenerator(seed: seed)
        let order = generator.permutation(count: count)
        let validation = subset(order[..<validationCount])
        let train = subset(order[validationCount...])
        return (train, validation)
    }

    /// The example indices of one epoch, grouped into batches of `batchSize` (the last batch keeps the
    /// remainder, so every index appears exactly once).
    ///
    /// With `shuffle`, the order is a permutation drawn from `SeededGenerator(seed: seed, stream: epoch)`:
    /// each epoch differs, and the same `(seed, epoch)` always gives the same batches.
    /// A `batchSize` below 1 is treated as 1.
    public func batchIndices(batchSize: Int, shuffle: Bool, seed: UInt64, epoch: Int) -> [[Int]] {
        let size = max(1, batchSize)
        var order = Array(0..<count)
        if shuffle {
            var generator = SeededGenerator(seed: seed, stream: UInt64(bitPattern: Int64(epoch)))
            generator.shuffle(&order)
        }
        return stride(from: 0, to: order.count, by: size).map { start in
            Array(order[start..<min(start + size, order.count)])
        }
    }

    /// Copies the rows at `indices` into contiguous arrays: features `[indices.count × featureCount]`
    /// and labels `[indices.count]`.
    /// - Precondition: every index is in `0..<count`.
    public func gather(_ indices: [Int]) -> (features: [Float], labels: [Int32]) {
        let rowLength = featureCount
        let gatheredFeatures = [Float](unsafeUninitializedCapacity: indices.count * rowLength) { out, initialized in
            features.withUnsafeBufferPointer { source in
                guard let from = source.baseAddress, let to = out.baseAddress else { return }
                for (row, index) in indices.enumerated() {
                    precondition(index >= 0 && index < count, "gather: index \(index) outside 0..<\(count)")
                    (to + row * rowLength).initialize(from: from + index * rowLength, count: rowLength)
                }
            }
            initialized = indices.count * rowLength
        }
        let gatheredLabels = indices.map { labels[$0] }
        return (gatheredFeatures, gatheredLabels)
    }
}

/// Which part of a dataset to load.
public enum DatasetSplit: String, Sendable, CaseIterable {
    case train, test
}
