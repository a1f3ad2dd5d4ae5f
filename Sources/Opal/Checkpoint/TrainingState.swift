import Foundation

/// Where a classifier training run stands: saved in a checkpoint's metadata (all values strings)
/// beside the model's weights, the optimizer's state and the early-stopping copy of the best weights,
/// so that `ClassifierTrainer.fit(training:validation:resumingFrom:)` continues exactly where it stopped.
///
/// Metadata keys (see README "Checkpoints and resuming"):
///
///     opal.train.format              "1"
///     opal.train.epoch               the epoch in progress (1-based)
///     opal.train.step_in_epoch       steps of that epoch already done (0 … steps_per_epoch)
///     opal.train.global_step         steps done in the whole run (= schedule position)
///     opal.train.epochs, .steps_per_epoch, .batch_size, .training_count, .seed (the data-order seed),
///     opal.train.schedule, .base_learning_rate, .learning_rate (of the last step)
///     opal.train.best_epoch, .best_validation_loss   (only once early stopping has a best epoch)
///     opal.dropout.<module name>     "<seed>,<calls>" for every Dropout layer (its mask sequence)
///
/// Floats are written in Swift's shortest round-trip form, so they read back bit for bit.
public struct TrainingState: Equatable, Sendable {
    /// The state of one `Dropout` layer: its base seed and the number of training calls so far.
    public struct DropoutState: Equatable, Sendable {
        public var seed: UInt32
        public var callCount: UInt32
        public init(seed: UInt32, callCount: UInt32) { self.seed = seed; self.callCount = callCount }
    }

    public static let formatVersion = "1"
    public static let prefix = "opal.train."
    public static let dropoutPrefix = "opal.dropout."
    /// Prefix of the extra tensors holding early stopping's best weights: `trainer.best.<parameter name>`.
    public static let bestWeightsPrefix = "trainer.best."

    public var epoch: Int
    public var stepInEpoch: Int
    public var globalStep: Int
    public var epochs: Int
    public var stepsPerEpoch: Int
    public var batchSize: Int
    public var trainingCount: Int
    public var seed: UInt64
    public var schedule: LearningRateSchedule
    public var baseLearningRate: Float
    public var learningRate: Float
    public var bestEpoch: Int?
    public var bestValidationLoss: Double?
    /// By module name (`2`, `features.5` …).
    public var dropouts: [String: DropoutState]

    public init(epoch: Int, stepInEpoch: Int, globalStep: Int, epochs: Int, stepsPerEpoch: Int, batchSize: Int,
                trainingCount: Int, seed: UInt64, schedule: LearningRateSchedule, baseLearningRate: Float,
                learningRate: Float, bestEpoch: Int? = nil, bestValidationLoss: Double? = nil,
                dropouts: [String: DropoutState] = [:]) {
        self.epoch = epoch; self.stepInEpoch = stepInEpoch; self.globalStep = globalStep; self.epochs = epochs
        self.stepsPerEpoch = stepsPerEpoch; self.batchSize = batchSize; self.trainingCount = trainingCount
        self.seed = seed; self.schedule = schedule; self.baseLearningRate = baseLearningRate
        self.learningRate = learningRate; self.bestEpoch = bestEpoch; self.bestValidationLoss = bestValidationLoss
        self.dropouts = dropouts
    }

    /// Whether `metadata` holds a training state (`opal.train.format`).
    public static func isPresent(in metadata: [String: String]) -> Bool { metadata[prefix + "format"] != nil }

    /// The metadata entries of this state.
    public var metadata: [String: String] {
        var result: [String: String] = [
            Self.prefix + "format": Self.formatVersion,
            Self.prefix + "epoch": String(epoch),
            Self.prefix + "step_in_epoch": String(stepInEpoch),
            Self.prefix + "global_step": String(globalStep),
            Self.prefix + "epochs": String(epochs),
            Self.prefix + "steps_per_epoch": String(stepsPerEpoch),
            Self.prefix + "batch_size": String(batchSize),
            Self.prefix + "training_count": String(trainingCount),
            Self.prefix + "seed": String(seed),
            Self.prefix + "schedule": schedule.rawValue,
            Self.prefix + "base_learning_rate": String(baseLearningRate),
            Self.prefix + "learning_rate": String(learningRate),
        ]
        if let bestEpoch { result[Self.prefix + "best_epoch"] = String(bestEpoch) }
        if let bestValidationLoss { result[Self.prefix + "best_validation_loss"] = String(bestValidationLoss) }
        for (name, state) in dropouts {
            result[Self.dropoutPrefix + name] = "\(state.seed),\(state.callCount)"
        }
        return result
    }

    /// Reads the state from checkpoint metadata.
    /// - Throws: `TrainingStateError` naming `path` and the missing or invalid key.
    public init(metadata: [String: String], path: String = "checkpoint") throws {
        guard let format = metadata[Self.prefix + "format"] else { throw TrainingStateError.noTrainingState(path: path) }
        guard format == Self.formatVersion else {
            throw TrainingStateError.invalidValue(path: path, key: Self.prefix + "format", value: format)
        }
        func text(_ key: String) throws -> String {
            guard let value = metadata[Self.prefix + key] else {
                throw TrainingStateError.missingKey(path: path, key: Self.prefix + key)
            }
            return value
        }
        func parse<T>(_ key: String, _ convert: (String) -> T?) throws -> T {
            let value = try text(key)
            guard let parsed = convert(value) else {
                throw TrainingStateError.invalidValue(path: path, key: Self.prefix + key, value: value)
            }
            return parsed
        }
        func count(_ key: String) throws -> Int { try parse(key) { Int($0).flatMap { $0 >= 0 ? $0 : nil } } }
        epoch = try count("epoch")
        stepInEpoch = try count("step_in_epoch")
        globalStep = try count("global_step")
        epochs = try count("epochs")
        stepsPerEpoch = try count("steps_per_epoch")
        batchSize = try count("batch_size")
        trainingCount = try count("training_count")
        seed = try parse("seed") { UInt64($0) }
        schedule = try parse("schedule") { LearningRateSchedule(rawValue: $0) }
        baseLearningRate = try parse("base_learning_rate") { Float($0) }
        learningRate = try parse("learning_rate") { Float($0) }
        bestEpoch = metadata[Self.prefix + "best_epoch"] == nil ? nil : try count("best_epoch")
        bestValidationLoss = metadata[Self.prefix + "best_validation_loss"] == nil
            ? nil : try parse("best_validation_loss") { Double($0) }
        guard epoch >= 1, stepInEpoch <= stepsPerEpoch else {
            throw TrainingStateError.invalidValue(path: path, key: Self.prefix + "step_in_epoch",
                                                  value: "epoch \(epoch), step \(stepInEpoch) of \(stepsPerEpoch)")
        }
        dropouts = [:]
        for (key, value) in metadata where key.hasPrefix(Self.dropoutPrefix) {
            let parts = value.split(separator: ",")
            guard parts.count == 2, let seed = UInt32(parts[0]), let calls = UInt32(parts[1]) else {
                throw TrainingStateError.invalidValue(path: path, key: key, value: value)
            }
            dropouts[String(key.dropFirst(Self.dropoutPrefix.count))] = DropoutState(seed: seed, callCount: calls)
        }
    }
}

/// A checkpoint's training state is missing, malformed or belongs to a different run.
public enum TrainingStateError: Error, CustomStringConvertible, Equatable {
    /// The file holds weights only (e.g. the final model), not a training state.
    case noTrainingState(path: String)
    case missingKey(path: String, key: String)
    case invalidValue(path: String, key: String, value: String)
    /// A setting of this run differs from the checkpoint's run, so resuming would not be exact.
    case mismatch(path: String, setting: String, checkpoint: String, run: String)
    /// The checkpoint's Dropout layers differ from the model's.
    case dropoutMismatch(path: String, checkpoint: [String], model: [String])

    public var description: String {
        switch self {
        case let .noTrainingState(path):
            return "\(path) holds no training state (only weights); resume from a checkpoint written during training (--checkpoint-every or Ctrl-C)"
        case let .missingKey(path, key):
            return "\(path): the training state lacks metadata \"\(key)\""
        case let .invalidValue(path, key, value):
            return "\(path): the training state's metadata \"\(key)\" has the invalid value \"\(value)\""
        case let .mismatch(path, setting, checkpoint, run):
            return "cannot resume from \(path): it was trained with \(setting) \(checkpoint), but this run has \(run) (use the same settings to resume)"
        case let .dropoutMismatch(path, checkpoint, model):
            return "cannot resume from \(path): its dropout layers [\(checkpoint.joined(separator: ", "))] differ from the model's [\(model.joined(separator: ", "))]"
        }
    }
}

extension Module {
    /// Every `Dropout` layer among this module's descendants, with its dotted module name.
    public var namedDropouts: [(name: String, layer: Dropout)] {
        var result: [(name: String, layer: Dropout)] = []
        for (childName, child) in children {
            if let dropout = child as? Dropout { result.append((childName, dropout)) }
            result += child.namedDropouts.map { ("\(childName).\($0.name)", $0.layer) }
        }
        return result
    }

    /// The mask-sequence state of every `Dropout` layer, by module name.
    public var dropoutStates: [String: TrainingState.DropoutState] {
        Dictionary(namedDropouts.map { ($0.name, TrainingState.DropoutState(seed: $0.layer.seed, callCount: $0.layer.callCount)) },
                   uniquingKeysWith: { first, _ in first })
    }

    /// Restores the `Dropout` layers' mask sequences (all layers must be named in `states`).
    /// - Throws: `TrainingStateError.dropoutMismatch` when the layer names differ.
    public func restoreDropoutStates(_ states: [String: TrainingState.DropoutState], path: String = "checkpoint") throws {
        let layers = namedDropouts
        guard Set(layers.map(\.name)) == Set(states.keys) else {
            throw TrainingStateError.dropoutMismatch(path: path, checkpoint: states.keys.sorted(), model: layers.map(\.name).sorted())
        }
        for (name, layer) in layers {
            layer.seed = states[name]!.seed
            layer.callCount = states[name]!.callCount
        }
    }
}
