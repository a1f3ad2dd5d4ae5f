import Foundation
import XCTest

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
        for option in ["--steps", "--batch-size", "--max-length", "--device", "--checkpoint", "--seed"] {
            XCTAssertTrue(help.output.contains(option), "\(option) missing from: \(help.output)")
        }
    }
}
