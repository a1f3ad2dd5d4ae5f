import Foundation

/// Transfer learning: start a model from another run's weights, replace its head, freeze its lower layers.
///
/// ```swift
/// let model = try CNN.simple(classes: 10)                       // fresh weights everywhere
/// let report = try model.loadPretrained(from: url, excluding: ["9"])   // all but the head "9.*"
/// model.freezeParameters(under: ["0", "3"])                    // the convolutions stay as trained
/// ```
///
/// Names are dotted module paths, as in `namedParameters` (`"0"` covers `0.weight` and `0.bias`, not `10.weight`).
extension Module {
    /// Loads the weights of the checkpoint at `url` into every parameter except those under `excluded`
    /// (they keep their fresh initial values: the replaced head). Every other parameter must be in the
    /// file with the same shape; tensors of the file that match no parameter (the old head) are ignored.
    ///
    /// - Throws: `CheckpointError` naming the file and the tensor when one is missing or has another shape.
    @discardableResult
    public func loadPretrained(from url: URL, excluding excluded: [String]) throws -> CheckpointLoadReport {
        let contents = try CheckpointContents(contentsOf: url)
        var kept = CheckpointContents(tensors: [:], metadata: contents.metadata)
        for (name, tensor) in contents.tensors where !Self.name(name, isUnder: excluded) { kept.tensors[name] = tensor }
        let wanted = namedParameters.map(\.name).filter { !Self.name($0, isUnder: excluded) }
        let missing = wanted.filter { kept.tensors[$0] == nil }
        guard missing.isEmpty else { throw CheckpointError.missingTensors(path: url.path, names: missing) }
        do {
            return try load(kept, strict: false)
        } catch let error as CheckpointError {
            // `load` names the in-memory contents; name the file instead.
            switch error {
            case let .shapeMismatch(_, tensor, expected, found):
                throw CheckpointError.shapeMismatch(path: url.path, tensor: tensor, expected: expected, found: found)
            case let .dtypeMismatch(_, tensor, expected, found):
                throw CheckpointError.dtypeMismatch(path: url.path, tensor: tensor, expected: expected, found: found)
            default: throw error
            }
        }
    }

    /// Freezes every parameter under `prefixes` (no gradient, no optimizer update); returns how many scalars were frozen.
    @discardableResult
    public func freezeParameters(under prefixes: [String]) -> Int {
        var count = 0
        for (name, parameter) in namedParameters where Self.name(name, isUnder: prefixes) {
            parameter.isTrainable = false
            count += parameter.shape.count
        }
        return count
    }

    /// Whether the dotted `name` is one of `prefixes` or lies below one of them.
    static func name(_ name: String, isUnder prefixes: [String]) -> Bool {
        prefixes.contains { name == $0 || name.hasPrefix($0 + ".") }
    }
}

extension Sequential {
    /// The child names of the layers before the first `Flatten`: the convolutional feature extractor.
    public var featureLayerNames: [String] {
        let end = layers.firstIndex { $0 is Flatten } ?? 0
        return (0..<end).map(String.init)
    }

    /// The child name of the last layer that has parameters: the classifier head.
    public var headLayerName: String? {
        layers.indices.last { !layers[$0].parameters.isEmpty }.map(String.init)
    }
}
