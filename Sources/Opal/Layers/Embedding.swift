/// A lookup table of learned vectors, as `torch.nn.Embedding`: int32 ids of any shape S → S + [dimension].
///
/// - `weight`: [vocabularySize, dimension], initialised N(0, 1) as PyTorch does.
/// - The backward pass scatter-adds the upstream rows into the table's gradient (`embeddingLookup`).
///
/// The device kernels do not check ids: build id tensors from host data with `indices(_:shape:on:)`,
/// which rejects an id outside `0..<vocabularySize` with an error naming it.
public final class Embedding: Layer {
    public let vocabularySize: Int
    public let dimension: Int
    public let weight: Parameter
    public var isTraining = true

    public init(vocabularySize: Int, dimension: Int, seed: UInt32? = nil, on device: Device = .cpu) throws {
        guard vocabularySize > 0, dimension > 0 else {
            throw TensorError.invalidArgument(op: "Embedding",
                                              reason: "sizes must be positive, got \(vocabularySize)×\(dimension)")
        }
        self.vocabularySize = vocabularySize; self.dimension = dimension
        weight = Parameter(try Tensor.normal([vocabularySize, dimension], seed: seed ?? Random.nextSeed(), on: device))
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight)] }

    /// Checks that every id lies in `0..<vocabularySize`.
    /// - Throws: `TensorError.invalidArgument` naming the first bad id, its position and the vocabulary size.
    public func validate(_ ids: [Int32]) throws {
        if let position = ids.firstIndex(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw TensorError.invalidArgument(
                op: "Embedding(\(vocabularySize)×\(dimension))",
                reason: "token id \(ids[position]) at position \(position) is outside the vocabulary of \(vocabularySize) ids (0…\(vocabularySize - 1))")
        }
    }

    /// An int32 id tensor of `shape` on `device`, after checking every id against the vocabulary.
    public func indices(_ ids: [Int32], shape: Shape, on device: Device) throws -> Tensor {
        try validate(ids)
        return try Tensor(ids, shape: shape, on: device)
    }

    /// The vectors of `ids` (int32, any shape S, values in `0..<vocabularySize`) → S + [dimension].
    public func callAsFunction(_ ids: Tensor) throws -> Tensor {
        guard ids.dtype == .int32 else {
            throw TensorError.dtypeMismatch(op: "Embedding(\(vocabularySize)×\(dimension)) ids", expected: .int32, actual: ids.dtype)
        }
        return try weight.value.embeddingLookup(ids)
    }
}
