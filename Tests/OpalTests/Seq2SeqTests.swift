import Foundation
import XCTest
@testable import Opal
import OpalOpenCL

/// The digit-reversal data, the encoder–decoder Transformer's masked loss, cached greedy decoding,
/// checkpoints, and end-to-end learning on the native CPU and on the OpenCL device.
final class Seq2SeqTests: XCTestCase {
    private func clockSeed() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    // MARK: Data

    func testBatchesHoldReversalsPaddingAndMasks() throws {
        let seed = clockSeed()
        let task = try DigitReversal(minimumLength: 2, maximumLength: 9)
        var stream = DigitReversal.TrainingStream(task: task, seed: seed)
        let batch = stream.nextBatch(37)
        let (b, s, t) = (batch.batchSize, batch.sourceLength, batch.targetLength)
        XCTAssertEqual(b, 37)
        XCTAssertEqual(s, batch.sources.map(\.count).max(), "seed \(seed)")
        XCTAssertEqual(t, s + 1)
        for (row, source) in batch.sources.enumerated() {
            XCTAssertTrue((2...9).contains(source.count), "seed \(seed)")
            XCTAssertTrue(source.allSatisfy { (3...12).contains($0) }, "seed \(seed)")
            let reversed = Array(source.reversed())
            XCTAssertEqual(batch.targets[row], reversed)
            XCTAssertEqual(DigitReversal.text(reversed), String(DigitReversal.text(source).reversed()))
            let ids = Array(batch.sourceIDs[(row * s)..<((row + 1) * s)])
            let mask = Array(batch.sourceMask[(row * s)..<((row + 1) * s)])
            XCTAssertEqual(ids, source + Array(repeating: 0, count: s - source.count), "seed \(seed)")
            XCTAssertEqual(mask, Array(repeating: 1, count: source.count) + Array(repeating: 0, count: s - source.count))
            let input = Array(batch.decoderInput[(row * t)..<((row + 1) * t)])
            let target = Array(batch.decoderTarget[(row * t)..<((row + 1) * t)])
            let loss = Array(batch.lossMask[(row * t)..<((row + 1) * t)])
            let padding = t - source.count - 1
            XCTAssertEqual(input, [DigitReversal.begin] + reversed + Array(repeating: 0, count: padding), "seed \(seed)")
            XCTAssertEqual(target, reversed + [DigitReversal.end] + Array(repeating: 0, count: padding), "seed \(seed)")
            XCTAssertEqual(loss, Array(repeating: 1, count: source.count + 1) + Array(repeating: 0, count: padding))
            // The decoder input is the target shifted right by one (teacher forcing).
            XCTAssertEqual(Array(input.dropFirst().prefix(source.count)), Array(target.prefix(source.count)))
        }
        XCTAssertEqual(batch.realPositions, Int(batch.lossMask.reduce(0, +)))
        XCTAssertEqual(DigitReversal.ids("0907"), [3, 12, 3, 10])
        XCTAssertNil(DigitReversal.ids("12a"))
        XCTAssertThrowsError(try DigitReversal(minimumLength: 0, maximumLength: 3))
        XCTAssertThrowsError(try DigitReversal(minimumLength: 5, maximumLength: 4))
    }

    /// The same seed gives the same stream; the held-out set differs from the training stream and none
    /// of its strings longer than 3 digits is ever trained on.
    func testStreamsAreSeededAndHeldOutStringsAreNotTrainedOn() throws {
        let seed = clockSeed()
        let task = try DigitReversal(minimumLength: 1, maximumLength: 5)
        let heldOut = task.heldOut(count: 400, seed: seed &+ 1)
        XCTAssertEqual(heldOut, task.heldOut(count: 400, seed: seed &+ 1))
        var first = DigitReversal.TrainingStream(task: task, seed: seed, excluding: heldOut)
        var second = DigitReversal.TrainingStream(task: task, seed: seed, excluding: heldOut)
        XCTAssertEqual(first.nextBatch(20), second.nextBatch(20), "seed \(seed)")
        let reserved = Set(heldOut.filter { $0.count > DigitReversal.sharedLengthLimit })
        XCTAssertGreaterThan(reserved.count, 100, "seed \(seed)")
        var trained: [[Int32]] = []
        for _ in 0..<20_000 { trained.append(first.next()) }
        XCTAssertTrue(trained.allSatisfy { !reserved.contains($0) }, "seed \(seed)")
        XCTAssertGreaterThan(first.skipped, 0, "with 5-digit strings a 20,000-string stream meets some held-out ones (seed \(seed))")
        // Lengths are spread over the whole range.
        XCTAssertEqual(Set(trained.map(\.count)), Set(1...5))
        XCTAssertNotEqual(Array(trained.prefix(50)), Array(heldOut.prefix(50)))
    }

    // MARK: Loss

    /// The masked cross-entropy equals a Double reference that skips padded positions; padded targets
    /// and logits there do not matter.
    func testMaskedCrossEntropyMatchesADoubleReference() throws {
        let seed = clockSeed()
        var generator = SeededGenerator(seed: seed)
        let (b, t, v) = (3, 5, 7)
        let logits = (0..<(b * t * v)).map { _ in Float.random(in: -3...3, using: &generator) }
        var targets = (0..<(b * t)).map { _ in Int32.random(in: 0..<Int32(v), using: &generator) }
        var mask = (0..<(b * t)).map { _ in Float(Bool.random(using: &generator) ? 1 : 0) }
        mask[0] = 1
        var reference = 0.0
        for p in 0..<(b * t) where mask[p] != 0 {
            let row = (0..<v).map { Double(logits[p * v + $0]) }
            let top = row.max()!
            let logSumExp = top + Foundation.log(row.map { Foundation.exp($0 - top) }.reduce(0, +))
            reference += logSumExp - row[Int(targets[p])]
        }
        reference /= Double(mask.reduce(0, +))
        let tensor = try Tensor(logits, shape: [b, t, v], on: .cpu)
        let loss = Double(try Seq2SeqTransformer.maskedCrossEntropy(logits: tensor, targets: targets, mask: mask).item())
        XCTAssertEqual(loss, reference, accuracy: 1e-5 * max(1, abs(reference)), "seed \(seed)")
        // Changing a padded position's target changes nothing.
        if let padded = mask.firstIndex(of: 0) {
            targets[padded] = (targets[padded] + 1) % Int32(v)
            let again = Double(try Seq2SeqTransformer.maskedCrossEntropy(logits: tensor, targets: targets, mask: mask).item())
            XCTAssertEqual(again, loss, accuracy: 1e-7, "seed \(seed)")
        }
        XCTAssertThrowsError(try Seq2SeqTransformer.maskedCrossEntropy(logits: tensor, targets: targets,
                                                                        mask: Array(repeating: 0, count: b * t)))
        XCTAssertThrowsError(try Seq2SeqTransformer.maskedCrossEntropy(logits: tensor, targets: Array(repeating: 9, count: b * t), mask: mask))
    }

    // MARK: Model

    private func smallModel() throws -> Seq2SeqTransformer {
        try Seq2SeqTransformer(.init(vocabularySize: DigitReversal.vocabularySize, modelSize: 16, headCount: 2,
                                     encoderBlockCount: 1, decoderBlockCount: 2, feedForwardSize: 24))
    }

    func testParameterNamesArePyTorchLike() throws {
        Random.seed(clockSeed())
        let names = try smallModel().namedParameters.map(\.name)
        for name in ["embedding.weight", "encoder.blocks.0.attn.in_proj_weight", "encoder.blocks.0.mlp.fc2.bias", "encoder.ln_f.weight",
                     "decoder.blocks.1.cross_attn.in_proj_weight", "decoder.blocks.1.ln_cross.bias", "decoder.blocks.0.attn.out_proj.weight",
                     "decoder.ln_f.bias", "head.weight", "head.bias"] {
            XCTAssertTrue(names.contains(name), "\(name) missing from \(names)")
        }
        XCTAssertFalse(names.contains { $0.hasPrefix("encoder.blocks.0.cross_attn") }, "encoder blocks have no cross-attention")
        let separate = try Seq2SeqTransformer(.init(vocabularySize: 13, modelSize: 8, headCount: 2, encoderBlockCount: 1,
                                                    decoderBlockCount: 1, feedForwardSize: 8, sharedEmbeddings: false))
        let separateNames = separate.namedParameters.map(\.name)
        XCTAssertTrue(separateNames.contains("encoder.embedding.weight") && separateNames.contains("decoder.embedding.weight"), "\(separateNames)")
        XCTAssertFalse(separateNames.contains("embedding.weight"))
    }

    /// Padding does not leak: a row's logits do not change when other rows make the batch longer, and
    /// the cached step-by-step greedy decoding equals the argmax of full teacher-forced passes.
    private func decodingIsConsistent(on device: Device) throws {
        let seed = clockSeed()
        Random.seed(seed)
        let model = try smallModel()
        try model.move(to: device)
        model.setTraining(false)
        let task = try DigitReversal(minimumLength: 1, maximumLength: 7)
        var stream = DigitReversal.TrainingStream(task: task, seed: seed)
        let sources = (0..<5).map { _ in stream.next() }
        let batch = DigitReversalBatch(sources: sources)
        let (source, mask, input) = try batch.inputTensors(on: device)
        let logits = try withoutGradients { try model(source: source, sourceMask: mask, decoderInput: input) }.scalars()
        let v = DigitReversal.vocabularySize
        for row in [0, 3] {
            let alone = DigitReversalBatch(sources: [sources[row]])
            let (s1, m1, i1) = try alone.inputTensors(on: device)
            let single = try withoutGradients { try model(source: s1, sourceMask: m1, decoderInput: i1) }.scalars()
            for position in 0..<alone.targetLength {
                let expected = Array(single[(position * v)..<((position + 1) * v)])
                let actual = Array(logits[((row * batch.targetLength + position) * v)..<((row * batch.targetLength + position + 1) * v)])
                let scale = expected.map(abs).max()!
                for (a, e) in zip(actual, expected) { XCTAssertEqual(a, e, accuracy: 1e-4 * max(1, scale), "row \(row) position \(position), seed \(seed)") }
            }
        }
        // Step-by-step decoding with caches gives the logits of the full teacher-forced pass.
        let long = DigitReversalBatch(sources: (0..<3).map { _ in stream.next() } + [Array(repeating: 5, count: 13)])
        let (ls, lm, li) = try long.inputTensors(on: device)
        let full = try withoutGradients { try model(source: ls, sourceMask: lm, decoderInput: li) }.scalars()
        try withoutGradients {
            let memory = try model.encode(ls, sourceMask: lm)
            let caches = model.makeDecoderCaches()
            for position in 0..<long.targetLength {
                let column = try li.sliced(along: 1, position..<(position + 1))
                let step = try model.decode(column, memory: memory, sourceMask: lm, caches: caches).scalars()
                for row in 0..<long.batchSize {
                    let expected = Array(full[((row * long.targetLength + position) * v)..<((row * long.targetLength + position + 1) * v)])
                    let actual = Array(step[(row * v)..<((row + 1) * v)])
                    let scale = expected.map(abs).max()!
                    for (a, e) in zip(actual, expected) {
                        XCTAssertEqual(a, e, accuracy: 1e-4 * max(1, scale), "cached step \(position), row \(row), seed \(seed)")
                    }
                }
            }
        }
        // Greedy decoding with caches against full re-runs of the growing prefix.
        let maximum = 6
        let decoding = try model.greedyDecode(source: source, sourceMask: mask, maximumLength: maximum)
        for row in 0..<sources.count {
            let one = DigitReversalBatch(sources: [sources[row]])
            let (s1, m1, _) = try one.inputTensors(on: device)
            var prefix: [Int32] = [DigitReversal.begin], produced: [Int32] = [], finished = false
            for _ in 0...maximum {
                let out = try withoutGradients {
                    try model(source: s1, sourceMask: m1, decoderInput: Tensor(prefix, shape: [1, prefix.count], on: device))
                }
                let next = try out.argmax(alongAxis: -1).intScalars().last!
                if next == DigitReversal.end { finished = true; break }
                produced.append(next); prefix.append(next)
            }
            XCTAssertEqual(decoding.tokens[row], produced, "row \(row), seed \(seed)")
            XCTAssertEqual(decoding.finished[row], finished, "row \(row), seed \(seed)")
        }
    }

    func testCachedDecodingMatchesFullPassesOnCPU() throws { try decodingIsConsistent(on: .cpu) }
    func testCachedDecodingMatchesFullPassesOnOpenCL() throws { try decodingIsConsistent(on: try openCLTestDevice()) }

    func testCheckpointRoundTrip() throws {
        Random.seed(clockSeed())
        let model = try smallModel()
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("seq2seq-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let task = try DigitReversal(minimumLength: 2, maximumLength: 4)
        try model.save(to: url, metadata: model.descriptionMetadata(task: task))
        let (loaded, metadata) = try Seq2SeqTransformer.load(from: url)
        XCTAssertEqual(loaded.configuration, model.configuration)
        XCTAssertEqual(metadata["opal.maximum_length"], "4")
        for ((name, a), (_, b)) in zip(model.namedParameters, loaded.namedParameters) {
            XCTAssertEqual(try a.value.scalars(), try b.value.scalars(), name)
        }
        let gpt = try GPT(.init(vocabularySize: 5, contextLength: 4, modelSize: 8, headCount: 2, blockCount: 1))
        try gpt.save(to: url, metadata: ["opal.model": "gpt"])
        XCTAssertThrowsError(try Seq2SeqTransformer.load(from: url)) { XCTAssertTrue("\($0)".contains("not a sequence-to-sequence"), "\($0)") }
    }

    // MARK: End to end

    /// Seed 1: a d_model 32, 2-head, 1+1-block model learns to reverse strings of 1…6 digits to ≥ 99 %
    /// held-out exact match (300 strings) in 450 steps of 32 strings. Seeds 1…7 all reach 99.3–100 % with
    /// these settings (measured with `opal train seq2seq`), so the fixed seed is not a lucky one.
    private func learnsReversal(on device: Device) throws {
        let seed: UInt64 = 1
        Random.seed(seed)
        let task = try DigitReversal(minimumLength: 1, maximumLength: 6)
        let model = try Seq2SeqTransformer(.init(vocabularySize: DigitReversal.vocabularySize, modelSize: 32, headCount: 2,
                                                 encoderBlockCount: 1, decoderBlockCount: 1, feedForwardSize: 64))
        var options = Seq2SeqTrainingOptions()
        options.steps = 450; options.batchSize = 32; options.learningRate = 5e-3; options.warmupSteps = 50
        options.evaluateEvery = 450; options.heldOutCount = 300; options.seed = seed; options.showProgress = false
        let trainer = try Seq2SeqTrainer(model: model, task: task, device: device, options: options)
        trainer.log = { print($0) }
        let started = Date()
        let reports = try trainer.fit()
        let accuracy = reports.last!.heldOutExactMatch
        print(String(format: "seq2seq on %@: held-out exact match %.2f%% after %d steps in %.1f s", device.name, 100 * accuracy,
                     trainer.stepCount, Date().timeIntervalSince(started)))
        XCTAssertGreaterThanOrEqual(accuracy, 0.99, "seed \(seed)")
        XCTAssertEqual(try trainer.evaluate().accuracy, accuracy, "evaluation is deterministic")
    }

    func testLearnsToReverseShortStringsOnCPU() throws { try learnsReversal(on: .cpu) }
    func testLearnsToReverseShortStringsOnOpenCL() throws { try learnsReversal(on: try openCLTestDevice()) }
}
