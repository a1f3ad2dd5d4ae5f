/// Updates parameters from their gradients. `step()` enqueues one fused update kernel per
/// parameter on its device and reads nothing back.
///
/// An optimizer's state (moments, velocities, the step count) can be saved beside the model's
/// weights and restored, so that training resumes exactly: `stateTensors(names:)` and
/// `stateMetadata` give it, `loadState(from:names:path:)` restores it.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    var learningRate: Float { get set }
    /// Number of `step()` calls so far.
    var stepCount: Int { get }
    func step() throws

    /// The per-parameter state tensors under checkpoint names built from `names` (a parameter's
    /// PyTorch-style name, e.g. `optimizer.m.1.weight`), on the parameters' devices. Parameters that
    /// have no state yet (never stepped) have no entry. The tensors are live: read them before the next step.
    func stateTensors(names: [(name: String, parameter: Parameter)]) throws -> [String: Tensor]
    /// The scalar state as checkpoint metadata: the optimizer's kind (`opal.optimizer`) and
    /// step count (`opal.optimizer.step_count`).
    var stateMetadata: [String: String] { get }
    /// Restores the state saved by `stateTensors(names:)` and `stateMetadata` from checkpoint contents.
    /// Either all of it is restored or nothing changes.
    /// - Throws: `CheckpointError` naming `path` when the kind differs, a tensor's shape or dtype
    ///   differs from its parameter's, or a state tensor names no parameter.
    func loadState(from contents: CheckpointContents, names: [(name: String, parameter: Parameter)], path: String) throws
}

extension Optimizer {
    /// Clears the gradients of all parameters (call before the next `backward()`).
    public func zeroGradients() { for parameter in parameters { parameter.zeroGradient() } }
}

/// Checkpoint names and checks shared by the optimizers.
enum OptimizerState {
    static let kindKey = "opal.optimizer"
    static let stepCountKey = "opal.optimizer.step_count"
    static let prefix = "optimizer."

    /// `optimizer.<slot>.<parameter name>`.
    static func tensorName(slot: String, parameter name: String) -> String { "\(prefix)\(slot).\(name)" }

    /// Checks the kind and returns the step count saved in `metadata`.
    static func stepCount(in metadata: [String: String], kind: String, path: String) throws -> Int {
        guard let saved = metadata[kindKey] else {
            throw CheckpointError.malformedHeader(path: path, reason: "the checkpoint holds no optimizer state (no \"\(kindKey)\" metadata)")
        }
        guard saved == kind else {
            throw CheckpointError.malformedHeader(path: path, reason: "the checkpoint holds \(saved) optimizer state, but the optimizer is \(kind)")
        }
        guard let text = metadata[stepCountKey], let count = Int(text), count >= 0 else {
            throw CheckpointError.malformedHeader(path: path, reason: "metadata \"\(stepCountKey)\" is missing or not a count")
        }
        return count
    }

    /// The device tensors of `slots` for every named trainable parameter of `parameters` found in
    /// `contents` (a parameter must have all slots or none), keyed by parameter.
    static func load(slots: [String], from contents: CheckpointContents, names: [(name: String, parameter: Parameter)],
                     parameters: [Parameter], path: String) throws -> [ObjectIdentifier: [Tensor]] {
        let owned = Set(parameters.map(ObjectIdentifier.init))
        var known: Set<String> = []
        var found: [ObjectIdentifier: [CheckpointTensor]] = [:]
        var devices: [ObjectIdentifier: Device] = [:]
        for (name, parameter) in names where owned.contains(ObjectIdentifier(parameter)) {
            let tensorNames = slots.map { tensorName(slot: $0, parameter: name) }
            known.formUnion(tensorNames)
            let present = tensorNames.compactMap { contents.tensors[$0] }
            if present.isEmpty { continue }
            guard present.count == slots.count else {
                throw CheckpointError.missingTensors(path: path, names: tensorNames.filter { contents.tensors[$0] == nil })
            }
            for (tensorName, tensor) in zip(tensorNames, present) {
                guard tensor.dtype == parameter.value.dtype else {
                    throw CheckpointError.dtypeMismatch(path: path, tensor: tensorName, expected: parameter.value.dtype, found: tensor.dtype)
                }
                guard tensor.shape == parameter.shape else {
                    throw CheckpointError.shapeMismatch(path: path, tensor: tensorName, expected: parameter.shape, found: tensor.shape)
                }
            }
            found[ObjectIdentifier(parameter)] = present
            devices[ObjectIdentifier(parameter)] = parameter.device
        }
        let slotPrefixes = slots.map { "\(prefix)\($0)." }
        let strays = contents.tensors.keys
            .filter { name in slotPrefixes.contains { name.hasPrefix($0) } && !known.contains(name) }
            .sorted()
        if !strays.isEmpty { throw CheckpointError.unexpectedTensors(path: path, names: strays) }
        var result: [ObjectIdentifier: [Tensor]] = [:]
        for (key, tensors) in found {
            result[key] = try tensors.map { try $0.tensor(on: devices[key]!) }
        }
        return result
    }
}
