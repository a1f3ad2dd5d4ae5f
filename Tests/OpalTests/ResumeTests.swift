import Foundation
import XCTest
@testable import Opal

/// Training N steps, saving the training state, resuming and training M more gives the weights of
/// N + M steps straight through (same device), with and without dropout; a non-finite loss keeps
/// the last good checkpoint.
final class ResumeTests: ScratchDirectoryTestCase {
    private func digits() throws -> (training: LabeledDataset, validation: LabeledDataset) {
        let data = try Digits.load(split: .train)
        let split = data.split(validationFraction: 0.1, seed: 5)
        return (split.train, split.validation)
    }

    private func options(seed: UInt64) -> ClassifierTrainingOptions {
        var options = ClassifierTrainingOptions()
        options.epochs = 3; options.batchSize = 37; options.learningRate = 3e-3; options.seed = seed
        options.patience = 5   // never stops within 3 epochs, but keeps best weights in the state
        options.schedule = .cosine; options.showProgress = false
        return options
    }

    private func model(initSeed: UInt64, dropout: Bool) throws -> Sequential {
        Random.seed(initSeed)
        return try makeMLP(inputSize: 64, hiddenSizes: [33, 17], outputSize: 10, dropout: dropout ? 0.3 : 0)
    }

    private func weights(_ model: any Module) throws -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: try model.namedParameters.map { ($0.name, try $0.parameter.value.scalars()) })
    }

    /// Trains `first` steps (saving), resumes in a fresh trainer with a differently initialised model,
    /// trains to `first + second` steps, and compares with an uninterrupted run.
    private func checkExactResume(on device: Device, dropout: Bool) throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        let (training, validation) = try digits()
        let stepsPerEpoch = (training.count + 36) / 37
        let first = stepsPerEpoch + Int.random(in: 1..<stepsPerEpoch)
        var second = stepsPerEpoch - 1 - Int.random(in: 0..<(stepsPerEpoch / 2))
        // The run must also end mid-epoch (one draw in about 35 landed exactly on an epoch's end).
        if (first + second) % stepsPerEpoch == 0 { second -= 1 }
        let context = "seed \(seed), device \(device), dropout \(dropout), N \(first), M \(second), \(stepsPerEpoch) steps per epoch"
        XCTAssertNotEqual(first % stepsPerEpoch, 0, context)
        XCTAssertNotEqual((first + second) % stepsPerEpoch, 0, context)
        let url = directory.appendingPathComponent("state.safetensors")

        // Straight through.
        var straightOptions = options(seed: seed)
        straightOptions.stopAfterStep = first + second
        let straightModel = try model(initSeed: seed, dropout: dropout)
        let straight = try ClassifierTrainer(model: straightModel, device: device, options: straightOptions)
        straight.log = { _ in }
        try straight.fit(training: training, validation: validation)
        XCTAssertTrue(straight.wasStopped, context)
        XCTAssertEqual(straight.position.globalStep, first + second, context)

        // N steps, saved.
        var firstOptions = options(seed: seed)
        firstOptions.stopAfterStep = first
        firstOptions.checkpointURL = url
        let firstModel = try model(initSeed: seed, dropout: dropout)
        let firstTrainer = try ClassifierTrainer(model: firstModel, device: device, options: firstOptions)
        firstTrainer.log = { _ in }
        try firstTrainer.fit(training: training, validation: validation)
        let saved = try CheckpointContents(contentsOf: url)
        let state = try TrainingState(metadata: saved.metadata)
        XCTAssertEqual(state.globalStep, first, context)
        XCTAssertEqual(state.epoch, 2, context)
        XCTAssertEqual(state.stepInEpoch, first - stepsPerEpoch, context)
        XCTAssertEqual(state.bestEpoch, 1, context)
        XCTAssertEqual(saved.metadata["opal.optimizer"], "Adam")
        XCTAssertEqual(saved.metadata["opal.optimizer.step_count"], String(first))
        XCTAssertNotNil(saved.tensors["optimizer.m.1.weight"])
        XCTAssertNotNil(saved.tensors["optimizer.v.\(dropout ? 7 : 5).bias"])
        XCTAssertNotNil(saved.tensors["trainer.best.1.weight"])
        XCTAssertEqual(state.dropouts.count, dropout ? 2 : 0, context)
        if dropout { XCTAssertEqual(state.dropouts["3"]?.callCount, UInt32(first), context) }
        // The state file also loads as a plain model checkpoint (strict).
        try self.model(initSeed: seed &+ 99, dropout: dropout).load(from: url)

        // Resume in a fresh process-like setting: other initial weights and dropout seeds.
        var resumeOptions = options(seed: seed)
        resumeOptions.stopAfterStep = first + second
        let resumedModel = try model(initSeed: seed &+ 1, dropout: dropout)
        let resumed = try ClassifierTrainer(model: resumedModel, device: device, options: resumeOptions)
        resumed.log = { _ in }
        try resumed.fit(training: training, validation: validation, resumingFrom: url)
        XCTAssertEqual(resumed.position.globalStep, first + second, context)
        XCTAssertEqual(resumed.optimizer.stepCount, first + second, context)

        let expected = try weights(straightModel), actual = try weights(resumedModel), start = try weights(firstModel)
        var maximumDifference: Float = 0, maximumMagnitude: Float = 0, moved: Float = 0
        for (name, values) in expected {
            let other = try XCTUnwrap(actual[name], context)
            for (a, b) in zip(values, other) { maximumDifference = max(maximumDifference, abs(a - b)) }
            for (a, b) in zip(values, start[name]!) { moved = max(moved, abs(a - b)) }
            maximumMagnitude = max(maximumMagnitude, values.map(abs).max() ?? 0)
        }
        print("exact resume (\(context)): max |weight difference| \(maximumDifference), weights moved by up to \(moved) after step \(first)")
        XCTAssertGreaterThan(moved, 1e-4, "the M resumed steps changed nothing (\(context))")
        XCTAssertLessThanOrEqual(maximumDifference, 1e-6 * max(1, maximumMagnitude), context)
    }

    func testExactResumeOnCPU() throws {
        try checkExactResume(on: .cpu, dropout: false)
    }

    func testExactResumeWithDropoutOnCPU() throws {
        try checkExactResume(on: .cpu, dropout: true)
    }

    func testExactResumeOnOpenCL() throws {
        try checkExactResume(on: try openCLTestDevice(), dropout: false)
    }

    func testExactResumeWithDropoutOnOpenCL() throws {
        try checkExactResume(on: try openCLTestDevice(), dropout: true)
    }

    /// Multiplies its inner model's output by NaN from the `poisonedCall`-th training call on.
    private final class Poisoned: Layer {
        var isTraining = true
        let inner: Sequential
        let poisonedCall: Int
        var calls = 0
        init(_ inner: Sequential, poisonedCall: Int) { self.inner = inner; self.poisonedCall = poisonedCall }
        var children: [(name: String, module: any Module)] { [("inner", inner)] }
        func callAsFunction(_ input: Tensor) throws -> Tensor {
            guard isTraining else { return try inner(input) }
            calls += 1
            return calls >= poisonedCall ? try inner(input) * Float.nan : try inner(input)
        }
    }

    func testNonFiniteLossKeepsTheLastGoodCheckpoint() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        let (training, validation) = try digits()
        let url = directory.appendingPathComponent("good.safetensors")
        var settings = options(seed: seed)
        settings.checkpointURL = url
        settings.checkpointEvery = 4
        let model = Poisoned(try model(initSeed: seed, dropout: true), poisonedCall: 11)
        let trainer = try ClassifierTrainer(model: model, device: .cpu, options: settings)
        var lines: [String] = []
        trainer.log = { lines.append($0) }
        XCTAssertThrowsError(try trainer.fit(training: training, validation: validation)) { error in
            guard case let .nonFiniteLoss(epoch, step, name)? = error as? TrainingError else {
                return XCTFail("expected a non-finite loss, got \(error) (seed \(seed))")
            }
            XCTAssertEqual(epoch, 1); XCTAssertEqual(step, 11); XCTAssertEqual(name, "loss")
            XCTAssertTrue("\(error)".contains("non-finite"), "\(error)")
        }
        XCTAssertTrue(lines.contains { $0.contains("last good checkpoint") && $0.contains(url.path) }, "\(lines)")
        let bytes = try Data(contentsOf: url)
        let contents = try CheckpointContents(contentsOf: url)
        XCTAssertEqual(try TrainingState(metadata: contents.metadata).globalStep, 8, "the step-8 checkpoint is kept")
        for (name, tensor) in contents.tensors {
            XCTAssertTrue(tensor.floats?.allSatisfy(\.isFinite) ?? true, "\(name) is not finite")
        }

        // Resuming from it and failing again leaves the file byte for byte as it was.
        let again = Poisoned(try self.model(initSeed: seed, dropout: true), poisonedCall: 2)
        let retry = try ClassifierTrainer(model: again, device: .cpu, options: settings)
        retry.log = { _ in }
        XCTAssertThrowsError(try retry.fit(training: training, validation: validation, resumingFrom: url))
        XCTAssertEqual(try Data(contentsOf: url), bytes, "a failed run changed the last good checkpoint")
        try self.model(initSeed: 1, dropout: true).load(from: url, strict: false)
    }

    func testOptimizerStateRoundTrips() throws {
        for kind in ["Adam", "AdamW", "SGD"] {
            Random.seed(7)
            let model = try makeMLP(inputSize: 5, hiddenSizes: [3], outputSize: 2)
            let named = model.namedParameters
            func make() throws -> any Optimizer {
                switch kind {
                case "Adam": return try Adam(parameters: model.trainableParameters)
                case "AdamW": return try AdamW(parameters: model.trainableParameters)
                default: return try SGD(parameters: model.trainableParameters, learningRate: 0.1, momentum: 0.9)
                }
            }
            let optimizer = try make()
            for _ in 0..<3 {
                optimizer.zeroGradients()
                let input = try Tensor((0..<10).map { Float($0) / 7 - 0.4 }, shape: [2, 5], on: .cpu)
                try (model(input) * model(input)).sum().backward()
                try optimizer.step()
            }
            let tensors = try optimizer.stateTensors(names: named)
            XCTAssertEqual(tensors.count, kind == "SGD" ? 4 : 8, kind)
            let contents = try model.checkpointContents(metadata: optimizer.stateMetadata, extraTensors: tensors)
            let restored = try make()
            try restored.loadState(from: contents, names: named, path: "memory")
            XCTAssertEqual(restored.stepCount, 3, kind)
            let again = try restored.stateTensors(names: named)
            XCTAssertEqual(Set(again.keys), Set(tensors.keys), kind)
            for (name, tensor) in tensors { XCTAssertEqual(try again[name]!.scalars(), try tensor.scalars(), "\(kind) \(name)") }
            // A mismatching kind or shape is a clear error.
            let other: any Optimizer = kind == "SGD" ? try Adam(parameters: model.trainableParameters)
                                                     : try SGD(parameters: model.trainableParameters, learningRate: 0.1)
            XCTAssertThrowsError(try other.loadState(from: contents, names: named, path: "memory")) {
                XCTAssertTrue("\($0)".contains("optimizer"), "\($0)")
            }
            var broken = contents
            let key = tensors.keys.sorted().first!
            broken.tensors[key] = try CheckpointTensor(shape: [1], floats: [0])
            XCTAssertThrowsError(try restored.loadState(from: broken, names: named, path: "memory")) {
                XCTAssertTrue("\($0)".contains(key), "\($0)")
            }
        }
    }

    func testResumeWithOtherSettingsIsAClearError() throws {
        let (training, validation) = try digits()
        let url = directory.appendingPathComponent("state.safetensors")
        var settings = options(seed: 3)
        settings.checkpointURL = url; settings.stopAfterStep = 5
        let trainer = try ClassifierTrainer(model: try model(initSeed: 3, dropout: false), device: .cpu, options: settings)
        trainer.log = { _ in }
        try trainer.fit(training: training, validation: validation)
        settings.batchSize = 40
        let other = try ClassifierTrainer(model: try model(initSeed: 3, dropout: false), device: .cpu, options: settings)
        XCTAssertThrowsError(try other.fit(training: training, validation: validation, resumingFrom: url)) {
            XCTAssertTrue("\($0)".contains("batch size 37"), "\($0)")
        }
        // A weights-only file is not a training state.
        let plain = directory.appendingPathComponent("plain.safetensors")
        try model(initSeed: 3, dropout: false).save(to: plain)
        XCTAssertThrowsError(try trainer.fit(training: training, validation: validation, resumingFrom: plain)) {
            XCTAssertEqual($0 as? TrainingStateError, .noTrainingState(path: plain.path))
        }
    }
}
