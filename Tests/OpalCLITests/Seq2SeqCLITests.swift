import Foundation
import Opal
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `opal train seq2seq` through the built binary.
final class Seq2SeqCLITests: OpalCommandTestCase {
    /// Fails once, clearly, when the subcommand is missing from `opal train`.
    private func seq2seqIsRegistered() throws -> Bool {
        let help = try opal(["train", "--help"])
        guard help.output.contains("seq2seq") else {
            XCTFail("`opal train seq2seq` is not registered: add TrainSeq2SeqCommand.self to the `opal train` subcommands")
            return false
        }
        return true
    }

    /// A few steps of a tiny model: the run reports the held-out exact match and example reversals and
    /// writes a checkpoint that describes the model.
    func testShortRunPrintsTheExactMatch() throws {
        guard try seq2seqIsRegistered() else { return }
        let checkpoint = directory.appendingPathComponent("s2s.safetensors").path
        let result = try opal(["train", "seq2seq", "--steps", "5", "--batch-size", "8", "--max-length", "5", "--model-size", "16",
                               "--heads", "2", "--layers", "1", "--feed-forward", "32", "--held-out", "20", "--examples", "3",
                               "--device", "cpu", "--checkpoint", checkpoint, "--seed", "3", "--no-progress"])
        XCTAssertEqual(result.status, 0, result.output)
        for phrase in ["device: cpu", "reverse digit strings of 1…5 digits", "step 5/5: training loss", "held-out exact match: ",
                       "(20 strings)", "checkpoint: \(checkpoint)"] {
            XCTAssertTrue(result.output.contains(phrase), "'\(phrase)' missing from: \(result.output)")
        }
        let examples = result.output.split(separator: "\n").filter { $0.hasPrefix("  ") && $0.contains(" → ") }
        XCTAssertEqual(examples.count, 3, result.output)
        // The safetensors header: an 8-byte little-endian length, then JSON.
        let file = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        let length = file.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = String(decoding: file.dropFirst(8).prefix(length), as: UTF8.self)
        for phrase in ["seq2seq-transformer", "opal.held_out_exact_match", "decoder.blocks.0.cross_attn.in_proj_weight"] {
            XCTAssertTrue(header.contains(phrase), "'\(phrase)' missing from the checkpoint header: \(header.prefix(600))")
        }
    }

    func testBadOptionsAreClearErrors() throws {
        guard try seq2seqIsRegistered() else { return }
        assertCleanFailure(try opal(["train", "seq2seq", "--max-length", "0"]), status: 64, mentions: "--max-length must be positive, got 0")
        assertCleanFailure(try opal(["train", "seq2seq", "--steps", "0"]), status: 64, mentions: "--steps must be positive")
        assertCleanFailure(try opal(["train", "seq2seq", "--min-length", "7", "--max-length", "5"]), status: 64,
                           mentions: "--min-length (7) must not exceed --max-length (5)")
        assertCleanFailure(try opal(["train", "seq2seq", "--model-size", "30", "--heads", "4"]), status: 64,
                           mentions: "--heads (4) must divide --model-size (30)")
        let help = try opal(["train", "seq2seq", "--help"])
        assertCleanFailure(try opal(["train", "seq2seq", "--checkpoint-every", "0"]), status: 64,
                           mentions: "--checkpoint-every must be positive, got 0")
        for option in ["--steps", "--batch-size", "--max-length", "--device", "--checkpoint", "--seed", "--checkpoint-every", "--resume"] {
            XCTAssertTrue(help.output.contains(option), "\(option) missing from: \(help.output)")
        }
    }

    // MARK: Training state

    /// A tiny model's run of `steps` steps on the CPU, checkpointing to `checkpoint`.
    private func tinyRun(steps: Int, checkpoint: String, maxLength: Int = 5) -> [String] {
        ["train", "seq2seq", "--steps", String(steps), "--batch-size", "8", "--max-length", String(maxLength), "--model-size", "16",
         "--heads", "2", "--layers", "1", "--feed-forward", "32", "--held-out", "20", "--examples", "2", "--evaluate-every", "100",
         "--warmup-steps", "10", "--device", "cpu", "--checkpoint", checkpoint, "--seed", "3", "--no-progress"]
    }

    /// The step of the training state in `path` (nil while there is none, or a weights-only file).
    private func savedStep(_ path: String) -> Int? {
        guard let contents = try? CheckpointContents(contentsOf: URL(fileURLWithPath: path)) else { return nil }
        return try? TrainingState(metadata: contents.metadata).globalStep
    }

    private func weights(_ path: String) throws -> [String: [Float]] {
        try CheckpointContents(contentsOf: URL(fileURLWithPath: path)).tensors.compactMapValues(\.floats)
    }

    /// Ctrl-C saves the training state and exits 130; `--resume` continues from the saved step to the
    /// end and gives the weights of the same run straight through; a resume with other options is refused
    /// naming the difference.
    func testCtrlCSavesAndResumeContinuesFromTheSavedStep() throws {
        guard try seq2seqIsRegistered() else { return }
        let steps = 1000   // about a second straight through; Ctrl-C comes within a few steps of the first save
        let path = directory.appendingPathComponent("run.safetensors").path
        let log = directory.appendingPathComponent("interrupted.txt")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = OpalProcess.executable
        process.arguments = tinyRun(steps: steps, checkpoint: path) + ["--checkpoint-every", "1"]
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while savedStep(path) == nil, process.isRunning, Date() < deadline { usleep(20_000) }
        kill(process.processIdentifier, SIGINT)
        let exitDeadline = Date().addingTimeInterval(120)
        while process.isRunning, Date() < exitDeadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let output = try String(contentsOf: log, encoding: .utf8)
        guard process.terminationStatus != 0 else {
            return XCTFail("the run finished all \(steps) steps before Ctrl-C arrived (machine too busy?): \(output)")
        }
        XCTAssertEqual(process.terminationStatus, 130, output)
        XCTAssertEqual(process.terminationReason, .exit, "opal must exit, not die of the signal")
        for sign in ["Fatal error", "Backtrac", "Swift runtime failure"] { XCTAssertFalse(output.contains(sign), output) }
        let saved = try XCTUnwrap(savedStep(path), "no training state after Ctrl-C: \(output)")
        XCTAssertGreaterThan(saved, 0)
        XCTAssertLessThan(saved, steps, output)
        XCTAssertTrue(output.contains("interrupted: saved the training state to \(path) (step \(saved) of \(steps)); continue with --resume \(path)"),
                      output)
        let state = try CheckpointContents(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(state.metadata["opal.model"], "seq2seq-transformer")
        XCTAssertEqual(state.metadata["opal.optimizer.step_count"], String(saved))
        XCTAssertNotNil(state.tensors["optimizer.m.head.weight"])

        // Other options: refused by name, the state left as it was.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        assertCleanFailure(try opal(tinyRun(steps: steps, checkpoint: path, maxLength: 6) + ["--resume", path]), status: 1,
                           mentions: "cannot resume from \(path): it was trained with maximum length 5, but this run has 6")
        assertCleanFailure(try opal(tinyRun(steps: steps + 1, checkpoint: path) + ["--resume", path]), status: 1,
                           mentions: "it was trained with steps \(steps), but this run has \(steps + 1)")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), bytes)

        // Resume to the end (no --checkpoint: the final model goes to the resumed file).
        var resumeArguments = tinyRun(steps: steps, checkpoint: path)
        resumeArguments.removeSubrange(resumeArguments.firstIndex(of: "--checkpoint")!...resumeArguments.firstIndex(of: "--checkpoint")! + 1)
        let resumed = try opal(resumeArguments + ["--resume", path])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        for phrase in ["resumed from \(path) at step \(saved) of \(steps)", "step \(steps)/\(steps): training loss",
                       "held-out exact match: ", "checkpoint: \(path)"] {
            XCTAssertTrue(resumed.output.contains(phrase), "'\(phrase)' missing from: \(resumed.output)")
        }
        XCTAssertNil(savedStep(path), "the final file holds the model only")

        // The same run straight through ends with the same weights.
        let straightPath = directory.appendingPathComponent("straight.safetensors").path
        let straight = try opal(tinyRun(steps: steps, checkpoint: straightPath))
        XCTAssertEqual(straight.status, 0, straight.output)
        let expected = try weights(straightPath), actual = try weights(path)
        XCTAssertEqual(Set(expected.keys), Set(actual.keys))
        var maximumDifference: Float = 0, maximumMagnitude: Float = 0
        for (name, values) in expected {
            for (a, b) in zip(values, actual[name] ?? []) { maximumDifference = max(maximumDifference, abs(a - b)) }
            maximumMagnitude = max(maximumMagnitude, values.map(abs).max() ?? 0)
        }
        print("seq2seq CLI resume at step \(saved) of \(steps): max |weight difference| vs straight through \(maximumDifference)")
        XCTAssertLessThanOrEqual(maximumDifference, 1e-6 * max(1, maximumMagnitude))
    }

    /// The final model is not a training state: resuming from it is a clear error.
    func testResumeFromAFinalModelIsAClearError() throws {
        guard try seq2seqIsRegistered() else { return }
        let path = directory.appendingPathComponent("final.safetensors").path
        XCTAssertEqual(try opal(tinyRun(steps: 2, checkpoint: path)).status, 0)
        assertCleanFailure(try opal(tinyRun(steps: 2, checkpoint: path) + ["--resume", path]), status: 1,
                           mentions: "\(path) holds no training state (only weights)")
        let missing = directory.appendingPathComponent("missing.safetensors").path
        assertCleanFailure(try opal(tinyRun(steps: 2, checkpoint: path) + ["--resume", missing]), status: 1, mentions: missing)
    }
}
