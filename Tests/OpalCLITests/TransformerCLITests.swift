import Foundation
import XCTest

/// `opal train gpt|vit`, `opal sample gpt` and fine-tuning through the built binary.
final class TransformerCLITests: OpalCommandTestCase {
    /// Train a small GPT, sample from it with the cache, fine-tune it on a second text with a frozen block.
    func testTrainSampleAndFineTuneAGPT() throws {
        let verse = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
        let text = try writeText(String(repeating: verse, count: 40), name: "sonnet.txt")
        let checkpoint = directory.appendingPathComponent("gpt.safetensors").path
        let small = ["--seq-length", "16", "--batch-size", "8", "--model-size", "16", "--heads", "2", "--blocks", "2",
                     "--learning-rate", "0.01", "--device", "cpu", "--no-progress"]
        let train = try opal(["train", "gpt", "--text", text, "--steps", "20", "--evaluate-every", "10", "--checkpoint", checkpoint,
                              "--prompt", "Thou", "--sample-length", "30"] + small)
        XCTAssertEqual(train.status, 0, train.output)
        for phrase in ["unigram entropy", "model: GPT · vocabulary", "context 16", "2 heads · 2 blocks",
                       "step 10/20: training loss", "step 20/20", "nats/char", "sample (temperature 0.8):\nThou",
                       "checkpoint: \(checkpoint)"] {
            XCTAssertTrue(train.output.contains(phrase), "'\(phrase)' missing from: \(train.output)")
        }
        // 40 characters > the context of 16: the cache restarts from half the context and goes on.
        let sample = try opal(["sample", "gpt", "--checkpoint", checkpoint, "--prompt", "Shall", "--length", "40",
                               "--temperature", "0.5", "--seed", "3", "--device", "cpu"])
        XCTAssertEqual(sample.status, 0, sample.output)
        XCTAssertTrue(sample.output.hasPrefix("Shall"), sample.output)
        XCTAssertEqual(sample.output.unicodeScalars.count, 5 + 40 + 1, sample.output)
        let again = try opal(["sample", "gpt", "--checkpoint", checkpoint, "--prompt", "Shall", "--length", "40",
                              "--temperature", "0.5", "--seed", "3", "--device", "cpu"])
        XCTAssertEqual(sample.output, again.output, "the same seed gives the same text")

        let other = try writeText(String(repeating: "Thou art more temperate and more lovely: shall I compare thee?\n", count: 40), name: "other.txt")
        let tuned = try opal(["train", "gpt", "--text", other, "--fine-tune", checkpoint, "--freeze-blocks", "1", "--steps", "10",
                              "--evaluate-every", "10", "--sample-length", "0",
                              "--checkpoint", directory.appendingPathComponent("tuned.safetensors").path] + small)
        XCTAssertEqual(tuned.status, 0, tuned.output)
        for phrase in ["fine-tuning: \(checkpoint)", "parameters frozen (embeddings and the lowest 1 of 2 blocks)",
                       "validation loss before fine-tuning:", "fine-tuning: validation loss"] {
            XCTAssertTrue(tuned.output.contains(phrase), "'\(phrase)' missing from: \(tuned.output)")
        }

        assertCleanFailure(try opal(["sample", "lstm", "--checkpoint", checkpoint]), status: 1, mentions: "not a character language model")
        assertCleanFailure(try opal(["sample", "gpt", "--checkpoint", checkpoint, "--prompt", "XYZ", "--device", "cpu"]),
                           status: 1, mentions: "characters not in the vocabulary")
        let foreign = try writeText("Ünïcödé text\n", name: "foreign.txt")
        assertCleanFailure(try opal(["train", "gpt", "--text", foreign, "--fine-tune", checkpoint, "--steps", "1"] + small),
                           status: 1, mentions: "not in the vocabulary")
        assertCleanFailure(try opal(["train", "gpt", "--text", other, "--fine-tune", checkpoint, "--freeze-blocks", "3", "--steps", "1"] + small),
                           status: 64, mentions: "has 2 blocks")
    }

    func testBadOptionsAreClearErrors() throws {
        assertCleanFailure(try opal(["train", "gpt", "--model-size", "16", "--heads", "3"]), status: 64, mentions: "does not divide --model-size 16")
        assertCleanFailure(try opal(["train", "gpt", "--freeze-blocks", "1"]), status: 64, mentions: "--freeze-blocks needs --fine-tune")
        assertCleanFailure(try opal(["train", "gpt", "--steps", "0"]), status: 64, mentions: "--steps must be positive")
        assertCleanFailure(try opal(["train", "vit", "--patch-size", "5", "--dataset", "digits", "--device", "cpu"]),
                           status: 64, mentions: "--patch-size 5 does not divide")
        assertCleanFailure(try opal(["train", "vit", "--heads", "5"]), status: 64, mentions: "does not divide --model-size 64")
    }

    /// A ViT trains for one epoch on the built-in digits (8×8 images, 2×2 patches) and reports test accuracy.
    func testTrainAVisionTransformerOnTheDigits() throws {
        let checkpoint = directory.appendingPathComponent("vit.safetensors").path
        let result = try opal(["train", "vit", "--dataset", "digits", "--patch-size", "2", "--model-size", "16", "--heads", "2",
                               "--blocks", "1", "--epochs", "1", "--device", "cpu", "--no-progress", "--checkpoint", checkpoint])
        XCTAssertEqual(result.status, 0, result.output)
        for phrase in ["model: ViT · 16 patches of 2×2", "test: accuracy", "checkpoint: \(checkpoint)"] {
            XCTAssertTrue(result.output.contains(phrase), "'\(phrase)' missing from: \(result.output)")
        }
    }
}
