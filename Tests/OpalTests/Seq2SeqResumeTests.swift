import Foundation
import XCTest
@testable import Opal

/// `Seq2SeqTrainer`'s training state: N steps, save, resume in a fresh trainer, M more steps gives the
/// weights of N + M steps straight through (same device), with and without dropout; a resume file of
/// another run is refused naming the difference; a non-finite loss keeps the last good checkpoint.
final class Seq2SeqResumeTests: ScratchDirectoryTestCase {
    private func task() throws -> DigitReversal { try DigitReversal(minimumLength: 2, maximumLength: 6) }

    private func model(initSeed: UInt64, dropout: Float = 0, heads: Int = 2) throws -> Seq2SeqTransformer {
        Random.seed(initSeed)
        return try Seq2SeqTransformer(.init(vocabularySize: DigitReversal.vocabularySize, modelSize: 16, headCount: heads,
                                            encoderBlockCount: 1, decoderBlockCount: 1, feedForwardSize: 24, dropout: dropout))
    }

    /// Settings of a short run; the warm-up ends inside it, so the resumed steps cross the schedule's bend.
    private func options(seed: UInt64, steps: Int) -> Seq2SeqTrainingOptions {
        var options = Seq2SeqTrainingOptions()
        options.steps = steps; options.batchSize = 9; options.learningRate = 4e-3; options.warmupSteps = 3
        options.maximumGradientNorm = 1; options.evaluateEvery = 4; options.heldOutCount = 40; options.seed = seed
        options.showProgress = false
        return options
    }

    private func weights(_ model: any Module) throws -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: try model.namedParameters.map { ($0.name, try $0.parameter.value.scalars()) })
    }

    private func checkExactResume(on device: Device, dropout: Float) throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        let first = Int.random(in: 2...7), second = Int.random(in: 2...7)
        let context = "seed \(seed), device \(device), dropout \(dropout), N \(first), M \(second)"
        let url = directory.appendingPathComponent("state.safetensors")
        let task = try task()

        // Straight through.
        let straightModel = try model(initSeed: seed, dropout: dropout)
        let straight = try Seq2SeqTrainer(model: straightModel, task: task, device: device, options: options(seed: seed, steps: first + second))
        straight.log = { _ in }
        try straight.fit()
        XCTAssertEqual(straight.stepCount, first + second, context)

        // N steps, saved.
        var firstOptions = options(seed: seed, steps: first + second)
        firstOptions.checkpointURL = url; firstOptions.stopAfterStep = first
        let firstModel = try model(initSeed: seed, dropout: dropout)
        let firstTrainer = try Seq2SeqTrainer(model: firstModel, task: task, device: device, options: firstOptions)
        firstTrainer.log = { _ in }
        try firstTrainer.fit()
        XCTAssertTrue(firstTrainer.wasStopped, context)
        let saved = try CheckpointContents(contentsOf: url)
        let state = try TrainingState(metadata: saved.metadata, path: url.path)
        XCTAssertEqual(state.globalStep, first, context)
        XCTAssertEqual(state.stepsPerEpoch, first + second, context)
        XCTAssertEqual(state.batchSize, 9, context)
        XCTAssertEqual(state.seed, seed, context)
        XCTAssertEqual(state.learningRate, firstTrainer.learningRate(at: first - 1), context)
        XCTAssertEqual(saved.metadata["opal.optimizer"], "Adam")
        XCTAssertEqual(saved.metadata["opal.optimizer.step_count"], String(first))
        XCTAssertEqual(saved.metadata["opal.model"], "seq2seq-transformer")
        XCTAssertEqual(saved.metadata["opal.maximum_length"], "6")
        XCTAssertEqual(saved.metadata["opal.dropout_rate"], String(dropout))
        XCTAssertEqual(saved.metadata["opal.seq2seq.warmup_steps"], "3")
        XCTAssertEqual(saved.metadata["opal.seq2seq.held_out_count"], "40")
        XCTAssertEqual(saved.metadata["opal.seq2seq.stream_skipped"], String(firstTrainer.stream.skipped))
        XCTAssertNotNil(saved.tensors["optimizer.m.decoder.blocks.0.cross_attn.in_proj_weight"])
        XCTAssertNotNil(saved.tensors["optimizer.v.head.bias"])
        // The state file also loads as a plain model checkpoint (strict), with its configuration.
        let (plain, _) = try Seq2SeqTransformer.load(from: url)
        XCTAssertEqual(plain.configuration, firstModel.configuration)

        // Resume in a fresh trainer whose model starts from other weights (and another Random sequence).
        let resumedModel = try model(initSeed: seed &+ 1, dropout: dropout)
        let resumed = try Seq2SeqTrainer(model: resumedModel, task: task, device: device, options: options(seed: seed, steps: first + second))
        var lines: [String] = []
        resumed.log = { lines.append($0) }
        try resumed.fit(resumingFrom: url)
        XCTAssertFalse(resumed.wasStopped, context)
        XCTAssertEqual(resumed.stepCount, first + second, context)
        XCTAssertEqual(resumed.optimizer.stepCount, first + second, context)
        XCTAssertEqual(resumed.stream.skipped, straight.stream.skipped, context)
        XCTAssertTrue(lines.contains { $0.contains("resumed from \(url.path) at step \(first) of \(first + second)") }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("step \(first + second)/\(first + second): training loss") }, "\(lines)")

        let expected = try weights(straightModel), actual = try weights(resumedModel), start = try weights(firstModel)
        var maximumDifference: Float = 0, maximumMagnitude: Float = 0, moved: Float = 0
        for (name, values) in expected {
            let other = try XCTUnwrap(actual[name], context)
            for (a, b) in zip(values, other) { maximumDifference = max(maximumDifference, abs(a - b)) }
            for (a, b) in zip(values, start[name]!) { moved = max(moved, abs(a - b)) }
            maximumMagnitude = max(maximumMagnitude, values.map(abs).max() ?? 0)
        }
        print("seq2seq exact resume (\(context)): max |weight difference| \(maximumDifference), weights moved by up to \(moved) after step \(first)")
        XCTAssertGreaterThan(moved, 1e-4, "the M resumed steps changed nothing (\(context))")
        XCTAssertLessThanOrEqual(maximumDifference, 1e-6 * max(1, maximumMagnitude), context)
    }

    func testExactResumeOnCPU() throws { try checkExactResume(on: .cpu, dropout: 0) }
    func testExactResumeWithDropoutOnCPU() throws { try checkExactResume(on: .cpu, dropout: 0.2) }
    func testExactResumeOnOpenCL() throws { try checkExactResume(on: try openCLTestDevice(), dropout: 0) }
    func testExactResumeWithDropoutOnOpenCL() throws { try checkExactResume(on: try openCLTestDevice(), dropout: 0.2) }

    /// Without the step-seeded masks, a resumed run with dropout would draw other masks: two runs that
    /// differ only in the dropout seed sequence before training must still agree.
    func testDropoutMasksDependOnlyOnTheSeedAndStep() throws {
        let task = try task()
        func run(randomBefore: UInt64) throws -> [Float] {
            let model = try model(initSeed: 5, dropout: 0.3)
            Random.seed(randomBefore)
            let trainer = try Seq2SeqTrainer(model: model, task: task, device: .cpu, options: options(seed: 8, steps: 3))
            trainer.log = { _ in }
            try trainer.fit()
            return try model.parameters.flatMap { try $0.value.scalars() }
        }
        let first = try run(randomBefore: 1), second = try run(randomBefore: 2)
        let differing = zip(first, second).filter { $0 != $1 }.count
        XCTAssertEqual(differing, 0, "\(differing) of \(first.count) weights differ after 3 steps with dropout")
    }

    func testResumeWithOtherSettingsIsAClearError() throws {
        let task = try task()
        let url = directory.appendingPathComponent("state.safetensors")
        var settings = options(seed: 3, steps: 10)
        settings.checkpointURL = url; settings.stopAfterStep = 3
        let trainer = try Seq2SeqTrainer(model: try model(initSeed: 3), task: task, device: .cpu, options: settings)
        trainer.log = { _ in }
        try trainer.fit()
        let bytes = try Data(contentsOf: url)

        func refuses(model: Seq2SeqTransformer? = nil, task other: DigitReversal? = nil, change: (inout Seq2SeqTrainingOptions) -> Void,
                     mentioning phrases: [String], line: UInt = #line) throws {
            var changed = options(seed: 3, steps: 10)
            change(&changed)
            let resumedModel = try model ?? self.model(initSeed: 4)
            let before = try weights(resumedModel)
            let resumed = try Seq2SeqTrainer(model: resumedModel, task: other ?? task, device: .cpu, options: changed)
            resumed.log = { _ in }
            XCTAssertThrowsError(try resumed.fit(resumingFrom: url), line: line) { error in
                XCTAssertTrue(error is TrainingStateError, "\(error)", line: line)
                for phrase in phrases + ["cannot resume from \(url.path)"] {
                    XCTAssertTrue("\(error)".contains(phrase), "'\(phrase)' missing from: \(error)", line: line)
                }
            }
            XCTAssertEqual(resumed.stepCount, 0, line: line)
            XCTAssertEqual(try weights(resumedModel), before, "a refused resume changed the model", line: line)
        }
        try refuses(change: { $0.batchSize = 10 }, mentioning: ["batch size 9", "this run has 10"])
        try refuses(change: { $0.steps = 11 }, mentioning: ["steps 10", "this run has 11"])
        try refuses(change: { $0.seed = 4 }, mentioning: ["seed 3"])
        try refuses(change: { $0.learningRate = 1e-3 }, mentioning: ["learning rate 0.004"])
        try refuses(change: { $0.warmupSteps = 5 }, mentioning: ["warm-up steps 3"])
        try refuses(change: { $0.maximumGradientNorm = nil }, mentioning: ["gradient clipping norm 1.0", "this run has off"])
        try refuses(change: { $0.heldOutCount = 41 }, mentioning: ["held-out strings 40"])
        try refuses(model: try model(initSeed: 4, heads: 4), change: { _ in }, mentioning: ["attention heads 2", "this run has 4"])
        try refuses(model: try model(initSeed: 4, dropout: 0.1), change: { _ in }, mentioning: ["dropout 0.0", "this run has 0.1"])
        try refuses(task: try DigitReversal(minimumLength: 2, maximumLength: 7), change: { _ in },
                    mentioning: ["maximum length 6", "this run has 7"])
        XCTAssertEqual(try Data(contentsOf: url), bytes, "a refused resume changed the checkpoint")

        // The same settings resume; a weights-only file (the final model) is not a training state.
        let same = try Seq2SeqTrainer(model: try model(initSeed: 4), task: task, device: .cpu, options: options(seed: 3, steps: 10))
        same.log = { _ in }
        try same.fit(resumingFrom: url)
        XCTAssertEqual(same.stepCount, 10)
        let plain = directory.appendingPathComponent("plain.safetensors")
        try same.saveCheckpoint(to: plain)
        let again = try Seq2SeqTrainer(model: try model(initSeed: 4), task: task, device: .cpu, options: options(seed: 3, steps: 10))
        XCTAssertThrowsError(try again.fit(resumingFrom: plain)) {
            XCTAssertEqual($0 as? TrainingStateError, .noTrainingState(path: plain.path))
        }
        // A tampered stream position is caught.
        var contents = try CheckpointContents(contentsOf: url)
        contents.metadata["opal.seq2seq.stream_skipped"] = "999"
        let tampered = directory.appendingPathComponent("tampered.safetensors")
        try contents.write(to: tampered)
        XCTAssertThrowsError(try again.fit(resumingFrom: tampered)) {
            XCTAssertTrue("\($0)".contains("opal.seq2seq.stream_skipped"), "\($0)")
        }
    }

    /// A NaN weight poisoned after step 5 makes step 6's loss NaN: training stops naming the step and
    /// the step-4 training state stays the checkpoint, complete and finite.
    func testNonFiniteLossKeepsTheLastGoodCheckpoint() throws {
        let task = try task()
        let url = directory.appendingPathComponent("good.safetensors")
        var settings = options(seed: 11, steps: 20)
        settings.checkpointURL = url; settings.checkpointEvery = 4
        let model = try model(initSeed: 11)
        let trainer = try Seq2SeqTrainer(model: model, task: task, device: .cpu, options: settings)
        var lines: [String] = []
        trainer.log = { lines.append($0) }
        trainer.stopRequested = { [unowned trainer] in
            if trainer.stepCount == 5, let bias = model.head.bias {
                try? bias.assign(Tensor([Float](repeating: .nan, count: bias.shape.count), shape: bias.shape, on: .cpu))
            }
            return false
        }
        XCTAssertThrowsError(try trainer.fit()) { error in
            guard case let .nonFiniteLoss(_, step, name)? = error as? TrainingError else {
                return XCTFail("expected a non-finite loss, got \(error)")
            }
            XCTAssertEqual(step, 6); XCTAssertEqual(name, "training loss")
        }
        XCTAssertTrue(lines.contains { $0.contains("last good checkpoint \(url.path) (step 4)") }, "\(lines)")
        let contents = try CheckpointContents(contentsOf: url)
        XCTAssertEqual(try TrainingState(metadata: contents.metadata).globalStep, 4)
        for (name, tensor) in contents.tensors {
            XCTAssertTrue(tensor.floats?.allSatisfy(\.isFinite) ?? true, "\(name) is not finite")
        }
        // The kept state resumes and finishes.
        let resumed = try Seq2SeqTrainer(model: try self.model(initSeed: 12), task: task, device: .cpu, options: options(seed: 11, steps: 20))
        resumed.log = { _ in }
        try resumed.fit(resumingFrom: url)
        XCTAssertEqual(resumed.stepCount, 20)
    }
}
