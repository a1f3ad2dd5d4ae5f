import Foundation

/// Errors from reading, writing and applying checkpoints. Each names the file and what is wrong.
public enum CheckpointError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file cannot be opened or read.
    case unreadableFile(path: String, reason: String)
    /// The file is shorter than the 8-byte header length.
    case fileTooShort(path: String, byteCount: Int)
    /// The header length is larger than the rest of the file or than `SafeTensors.maximumHeaderLength`.
    case invalidHeaderLength(path: String, headerLength: UInt64, fileSize: Int)
    /// The header is not UTF-8 JSON of the expected form (the reason says where and what).
    case malformedHeader(path: String, reason: String)
    /// Two header entries share one tensor name.
    case duplicateName(path: String, name: String)
    /// A tensor's dtype is not one Opal reads (F32, I32): e.g. F16, BF16, F64, or an unknown name.
    case unsupportedDType(path: String, tensor: String, dtype: String)
    /// A tensor's shape holds negative, non-integer or overflowing dimensions.
    case invalidShape(path: String, tensor: String, reason: String)
    /// A tensor's `data_offsets` are not two integers, lie outside the buffer or disagree with its shape.
    case invalidDataOffsets(path: String, tensor: String, reason: String)
    /// The tensors overlap or leave bytes of the data buffer uncovered.
    case invalidLayout(path: String, reason: String)
    /// Parameters of the model that the checkpoint lacks (strict loading).
    case missingTensors(path: String, names: [String])
    /// Tensors of the checkpoint that are no parameter of the model (strict loading).
    case unexpectedTensors(path: String, names: [String])
    /// A tensor's shape differs from the parameter's.
    case shapeMismatch(path: String, tensor: String, expected: Shape, found: Shape)
    /// A tensor's dtype differs from the parameter's.
    case dtypeMismatch(path: String, tensor: String, expected: DType, found: DType)
    /// The contents cannot be saved (reserved or clashing names, values that do not fit the shape …).
    case invalidContents(reason: String)
    /// Writing failed; a previous file at `path` is unchanged.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadableFile(path, reason):
            return "cannot read checkpoint \(path): \(reason)"
        case let .fileTooShort(path, byteCount):
            return "\(path): not a safetensors file: \(byteCount) bytes, shorter than the 8-byte header length"
        case let .invalidHeaderLength(path, headerLength, fileSize):
            return "\(path): not a safetensors file: header length \(headerLength) does not fit in the "
                + "\(fileSize)-byte file (or exceeds the limit of \(SafeTensors.maximumHeaderLength) bytes)"
        case let .malformedHeader(path, reason):
            return "\(path): malformed safetensors header: \(reason)"
        case let .duplicateName(path, name):
            return "\(path): the header names tensor \"\(name)\" twice"
        case let .unsupportedDType(path, tensor, dtype):
            return "\(path): tensor \"\(tensor)\" has dtype \(dtype), which Opal does not read (supported: F32, I32)"
        case let .invalidShape(path, tensor, reason):
            return "\(path): tensor \"\(tensor)\" has an invalid shape: \(reason)"
        case let .invalidDataOffsets(path, tensor, reason):
            return "\(path): tensor \"\(tensor)\" has invalid data_offsets: \(reason)"
        case let .invalidLayout(path, reason):
            return "\(path): invalid data layout: \(reason)"
        case let .missingTensors(path, names):
            return "\(path): the checkpoint has no tensor for parameter\(names.count == 1 ? "" : "s") "
                + names.map { "\"\($0)\"" }.joined(separator: ", ") + " (load with strict: false to skip them)"
        case let .unexpectedTensors(path, names):
            return "\(path): the model has no parameter for tensor\(names.count == 1 ? "" : "s") "
                + names.map { "\"\($0)\"" }.joined(separator: ", ") + " (load with strict: false to skip them)"
        case let .shapeMismatch(path, tensor, expected, found):
            return "\(path): tensor \"\(tensor)\" has shape \(found), but the model's parameter has shape \(expected)"
        case let .dtypeMismatch(path, tensor, expected, found):
            return "\(path): tensor \"\(tensor)\" has dtype \(found), but the model's parameter has dtype \(expected)"
        case let .invalidContents(reason):
            return "cannot save checkpoint: \(reason)"
        case let .writeFailed(path, reason):
            return "cannot save checkpoint \(path): \(reason) (any previous file there is unchanged)"
        }
    }
}

/// One tensor of a checkpoint, on the host: a shape and its row-major values.
public struct CheckpointTensor: Equatable, Sendable {
    public enum Values: Equatable, Sendable {
        case float32([Float])
        case int32([Int32])
    }

    public let shape: Shape
    public let values: Values

    /// - Throws: `CheckpointError.invalidContents` when the shape is negative or `values.count != shape.count`.
    public init(shape: Shape, floats: [Float]) throws {
        try Self.validate(shape, count: floats.count)
        self.init(uncheckedShape: shape, values: .float32(floats))
    }

    /// - Throws: `CheckpointError.invalidContents` when the shape is negative or `values.count != shape.count`.
    public init(shape: Shape, ints: [Int32]) throws {
        try Self.validate(shape, count: ints.count)
        self.init(uncheckedShape: shape, values: .int32(ints))
    }

    /// The values of `tensor`, read back from its device (waits for it).
    public init(_ tensor: Tensor) throws {
        switch tensor.dtype {
        case .float32: self.init(uncheckedShape: tensor.shape, values: .float32(try tensor.scalars()))
        case .int32: self.init(uncheckedShape: tensor.shape, values: .int32(try tensor.intScalars()))
        }
    }

    init(uncheckedShape shape: Shape, values: Values) {
        self.shape = shape
        self.values = values
    }

    private static func validate(_ shape: Shape, count: Int) throws {
        guard shape.dimensions.allSatisfy({ $0 >= 0 }) else {
            throw CheckpointError.invalidContents(reason: "shape \(shape) has a negative dimension")
        }
        guard count == shape.count else {
            throw CheckpointError.invalidContents(reason: "\(count) values given for shape \(shape) (\(shape.count) elements)")
        }
    }

    public var dtype: DType {
        switch values {
        case .float32: return .float32
        case .int32: return .int32
        }
    }

    public var count: Int { shape.count }

    /// The values of a float tensor, nil for an int32 one.
    public var floats: [Float]? {
        if case let .float32(values) = values { return values }
        return nil
    }

    /// The values of an int32 tensor, nil for a float one.
    public var ints: [Int32]? {
        if case let .int32(values) = values { return values }
        return nil
    }

    /// A tensor on `device` holding these values.
    public func tensor(on device: Device) throws -> Tensor {
        switch values {
        case let .float32(values): return try Tensor(values, shape: shape, on: device)
        case let .int32(values): return try Tensor(values, shape: shape, on: device)
        }
    }
}

/// The tensors and string metadata of a checkpoint file, on the host.
///
/// The low-level read/write API: `Module.save(to:)` / `load(from:)` build on it, and other state
/// (optimizer moments, step counters as int32 tensors) can be stored beside a model's parameters.
public struct CheckpointContents: Equatable, Sendable {
    public var tensors: [String: CheckpointTensor]
    public var metadata: [String: String]

    /// Metadata key under which `Module.save(to:metadata:extraTensors:)` lists the extra tensors
    /// (a JSON array of names), so that strict loading does not count them as unexpected.
    public static let extraTensorsMetadataKey = "opal.extra_tensors"

    public init(tensors: [String: CheckpointTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Reads and validates a safetensors file.
    /// - Throws: `CheckpointError` naming the file and the problem.
    public init(contentsOf url: URL) throws {
        self = try SafeTensors.read(from: url)
    }

    /// Writes a safetensors file atomically (see `SafeTensors.write(_:to:)`).
    public func write(to url: URL) throws {
        try SafeTensors.write(self, to: url)
    }
}

/// What `Module.load(_:strict:)` did.
public struct CheckpointLoadReport: Equatable, Sendable {
    /// The checkpoint's metadata.
    public var metadata: [String: String]
    /// Parameters that received a value, in the model's order.
    public var loadedNames: [String]
    /// Parameters with no tensor in the checkpoint (left unchanged; only with `strict: false`).
    public var missingNames: [String]
    /// Tensors that are no parameter of the model and were not saved as extra tensors (only with `strict: false`).
    public var unexpectedNames: [String]
}

extension Module {
    /// Every named parameter (read back from its device) plus `extraTensors`, and `metadata`.
    /// - Throws: `CheckpointError.invalidContents` when names clash.
    public func checkpointContents(metadata: [String: String] = [:],
                                   extraTensors: [String: Tensor] = [:]) throws -> CheckpointContents {
        var contents = CheckpointContents(metadata: metadata)
        var owners: [String: ObjectIdentifier] = [:]
        for (name, parameter) in namedParameters {
            if let owner = owners[name] {
                // The same parameter under one name twice is harmless; two different ones are not.
                guard owner == ObjectIdentifier(parameter) else {
                    throw CheckpointError.invalidContents(reason: "two different parameters are both named \"\(name)\"")
                }
                continue
            }
            owners[name] = ObjectIdentifier(parameter)
            contents.tensors[name] = try CheckpointTensor(parameter.value)
        }
        if !extraTensors.isEmpty {
            if metadata[CheckpointContents.extraTensorsMetadataKey] != nil {
                throw CheckpointError.invalidContents(
                    reason: "metadata key \"\(CheckpointContents.extraTensorsMetadataKey)\" is reserved for the names of the extra tensors")
            }
            for (name, tensor) in extraTensors {
                if contents.tensors[name] != nil {
                    throw CheckpointError.invalidContents(reason: "extra tensor \"\(name)\" has the name of a parameter")
                }
                contents.tensors[name] = try CheckpointTensor(tensor)
            }
            let names = extraTensors.keys.sorted()
            let json = try JSONSerialization.data(withJSONObject: names, options: [.sortedKeys])
            contents.metadata[CheckpointContents.extraTensorsMetadataKey] = String(decoding: json, as: UTF8.self)
        }
        return contents
    }

    /// Saves every named parameter under its PyTorch-style name (`1.weight`, `encoder.0.bias`) in a
    /// safetensors file, with `extraTensors` beside them, atomically (a failed save leaves a previous
    /// file at `url` unchanged). PyTorch reads it with `safetensors.torch.load_file(path)`.
    /// - Throws: `CheckpointError.invalidContents` (clashing names) or `.writeFailed`.
    public func save(to url: URL, metadata: [String: String] = [:], extraTensors: [String: Tensor] = [:]) throws {
        try checkpointContents(metadata: metadata, extraTensors: extraTensors).write(to: url)
    }

    /// Loads the parameters saved by `save(to:)` (or by PyTorch's `safetensors.torch.save_file(
    /// model.state_dict(), path)`), each onto its parameter's current device, and returns the metadata.
    ///
    /// Either every parameter is assigned or none is: all names, shapes and dtypes are checked first.
    /// - Parameter strict: when true, every parameter must be in the file and every tensor of the
    ///   file must be a parameter (or one of the extra tensors saved with it); when false, missing
    ///   parameters keep their values and unexpected tensors are ignored (use `load(_:strict:)` on
    ///   `CheckpointContents(contentsOf:)` to learn which).
    /// - Throws: `CheckpointError` naming the file and the problem (shape mismatches name the tensor and both shapes).
    @discardableResult
    public func load(from url: URL, strict: Bool = true) throws -> [String: String] {
        try apply(CheckpointContents(contentsOf: url), strict: strict, path: url.path).metadata
    }

    /// Assigns the parameters from checkpoint contents already in memory; see `load(from:strict:)`.
    @discardableResult
    public func load(_ contents: CheckpointContents, strict: Bool = true) throws -> CheckpointLoadReport {
        try apply(contents, strict: strict, path: "checkpoint")
    }

    private func apply(_ contents: CheckpointContents, strict: Bool, path: String) throws -> CheckpointLoadReport {
        let named = namedParameters
        let parameterNames = Set(named.map(\.name))
        var extraNames: Set<String> = []
        if let listed = contents.metadata[CheckpointContents.extraTensorsMetadataKey],
           let names = try? JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [String] {
            extraNames = Set(names)
        }
        var missing: [String] = []
        var seen: Set<String> = []
        for (name, _) in named where contents.tensors[name] == nil && seen.insert(name).inserted {
            missing.append(name)
        }
        let unexpected = contents.tensors.keys
            .filter { !parameterNames.contains($0) && !extraNames.contains($0) }
            .sorted()
        if strict {
            if !missing.isEmpty { throw CheckpointError.missingTensors(path: path, names: missing) }
            if !unexpected.isEmpty { throw CheckpointError.unexpectedTensors(path: path, names: unexpected) }
        }
        // Check everything, then build the device tensors, then assign: all or nothing.
        var assignments: [(parameter: Parameter, tensor: CheckpointTensor)] = []
        for (name, parameter) in named {
            guard let tensor = contents.tensors[name] else { continue }
            guard tensor.dtype == parameter.value.dtype else {
                throw CheckpointError.dtypeMismatch(path: path, tensor: name, expected: parameter.value.dtype, found: tensor.dtype)
            }
            guard tensor.shape == parameter.shape else {
                throw CheckpointError.shapeMismatch(path: path, tensor: name, expected: parameter.shape, found: tensor.shape)
            }
            assignments.append((parameter, tensor))
        }
        let values = try assignments.map { try $0.tensor.tensor(on: $0.parameter.device) }
        for (assignment, value) in zip(assignments, values) { try assignment.parameter.assign(value) }
        var loaded: [String] = []
        var loadedSeen: Set<String> = []
        for (name, _) in named where contents.tensors[name] != nil && loadedSeen.insert(name).inserted {
            loaded.append(name)
        }
        return CheckpointLoadReport(metadata: contents.metadata, loadedNames: loaded,
                                    missingNames: missing, unexpectedNames: unexpected)
    }
}
