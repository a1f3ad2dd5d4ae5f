import Foundation
import XCTest

/// `opal train lstm|gru|rnn` and `opal sample lstm|gru|rnn` through the built binary.
final class RecurrentCLITests: OpalCommandTestCase {
    /// Train a small LSTM on a text file, then sample from its checkpoint.
    func testTrainAndSampleALanguageModel() throws {
        let verse = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
        let text = try writeText(String(repeating: verse, count: 40))
        let checkpoint = directory.appendingPathComponent("lm.safetensors").path
        let train = try opal(["train", "lstm", "--text", text, "--steps", "30", "--batch-size", "8", "--seq-length", "16",
                              "--hidden", "32", "--embedding-size", "8", "--learning-rate", "0.01", "--evaluate-every", "15",
                              "--device", "cpu", "--checkpoint", checkpoint, "--prompt", "Thou", "--sample-length", "40", "--no-progress"])
        XCTAssertEqual(train.status, 0, train.output)
        for phrase in ["unigram entropy", "step 15/30: training loss", "step 30/30", "nats/char", "sample (temperature 0.8):\nThou",
                       "checkpoint: \(checkpoint)", "LSTM(8→32)"] {
            XCTAssertTrue(train.output.contains(phrase), "'\(phrase)' missing from: \(train.output)")
        }
        let sample = try opal(["sample", "lstm", "--checkpoint", checkpoint, "--prompt", "Shall", "--length", "50",
                               "--temperature", "0.5", "--seed", "3", "--device", "cpu"])
        XCTAssertEqual(sample.status, 0, sample.output)
        XCTAssertTrue(sample.output.hasPrefix("Shall"), sample.output)
        XCTAssertEqual(sample.output.unicodeScalars.count, 5 + 50 + 1, sample.output)   // prompt, sample, newline
        let again = try opal(["sample", "lstm", "--checkpoint", checkpoint, "--prompt", "Shall", "--length", "50",
                              "--temperature", "0.5", "--seed", "3", "--device", "cpu"])
        XCTAssertEqual(sample.output, again.output, "the same seed gives the same text")

        assertCleanFailure(try opal(["sample", "gru", "--checkpoint", checkpoint]), status: 64, mentions: "holds a lstm language model")
        assertCleanFailure(try opal(["sample", "lstm", "--checkpoint", checkpoint, "--prompt", "XYZ", "--device", "cpu"]),
                           status: 1, mentions: "characters not in the vocabulary")
        assertCleanFailure(try opal(["sample", "lstm", "--checkpoint", directory.appendingPathComponent("none").path]),
                           status: 1, mentions: "none")
    }

    func testBadArgumentsAreClearErrors() throws {
        assertCleanFailure(try opal(["train", "lstm", "--seq-length", "0"]), status: 64, mentions: "--seq-length must be positive, got 0")
        assertCleanFailure(try opal(["train", "gru", "--steps", "0"]), status: 64, mentions: "--steps must be positive")
        assertCleanFailure(try opal(["train", "rnn", "--dataset", "cifar"]), status: 64, mentions: "unknown dataset 'cifar'")
        assertCleanFailure(try opal(["train", "lstm", "--text", "a.txt", "--dataset", "digits"]), status: 64, mentions: "exclude each other")
        assertCleanFailure(try opal(["sample", "lstm", "--checkpoint", "x", "--temperature", "-1"]), status: 64, mentions: "--temperature")
        assertCleanFailure(try opal(["train", "rnn", "--nonlinearity", "sigmoid"]), status: 64, mentions: "unknown nonlinearity 'sigmoid'")
        let empty = try writeText("", name: "empty.txt")
        assertCleanFailure(try opal(["train", "lstm", "--text", empty, "--device", "cpu"]), status: 1, mentions: "\(empty): the text is empty")
        let short = try writeText("To be, or not to be", name: "short.txt")
        assertCleanFailure(try opal(["train", "lstm", "--text", short, "--device", "cpu"]), status: 1, mentions: "too short")
        let binary = directory.appendingPathComponent("binary.txt")
        try Data([0x41, 0xFF, 0xFE, 0x42]).write(to: binary)
        assertCleanFailure(try opal(["train", "lstm", "--text", binary.path, "--device", "cpu"]), status: 1, mentions: "not valid UTF-8")
        let help = try opal(["train", "lstm", "--help"])
        for option in ["--text", "--steps", "--seq-length", "--batch-size", "--hidden", "--checkpoint", "--device", "--dataset"] {
            XCTAssertTrue(help.output.contains(option), "\(option) missing from: \(help.output)")
        }
        let sampleHelp = try opal(["sample", "--help"])
        for family in ["gan", "vae", "lstm", "gru", "rnn"] { XCTAssertTrue(sampleHelp.output.contains(family), sampleHelp.output) }
        assertCleanFailure(try opal(["sample", "gan", "--count", "0", "--checkpoint", "x"]), status: 64, mentions: "--count")
    }

    /// A ReLU RNN round trip: the nonlinearity is saved in the checkpoint and used again when sampling.
    func testReLURNNTrainsAndSamples() throws {
        let text = try writeText(String(repeating: "the quick brown fox jumps over the lazy dog. ", count: 30))
        let checkpoint = directory.appendingPathComponent("rnn.safetensors").path
        let train = try opal(["train", "rnn", "--nonlinearity", "relu", "--text", text, "--steps", "10", "--batch-size", "4",
                              "--seq-length", "8", "--hidden", "16", "--embedding-size", "4", "--sample-length", "0",
                              "--device", "cpu", "--checkpoint", checkpoint, "--no-progress"])
        XCTAssertEqual(train.status, 0, train.output)
        XCTAssertTrue(train.output.contains("RNN(relu)(4→16)"), train.output)
        let sample = try opal(["sample", "rnn", "--checkpoint", checkpoint, "--prompt", "the", "--length", "10", "--device", "cpu"])
        XCTAssertEqual(sample.status, 0, sample.output)
        XCTAssertTrue(sample.output.hasPrefix("the"), sample.output)
    }

    /// The sequence classifier on the built-in digits (8 steps of 8 features): one epoch runs end to end.
    func testTrainSequenceClassifierOnDigits() throws {
        let checkpoint = directory.appendingPathComponent("gru-digits.safetensors").path
        let result = try opal(["train", "gru", "--dataset", "digits", "--epochs", "2", "--hidden", "16", "--device", "cpu",
                               "--checkpoint", checkpoint, "--no-progress"])
        XCTAssertEqual(result.status, 0, result.output)
        for phrase in ["8 steps of 8 features", "GRU(8→16)", "epoch 2:", "test: accuracy", "checkpoint: \(checkpoint)"] {
            XCTAssertTrue(result.output.contains(phrase), "'\(phrase)' missing from: \(result.output)")
        }
    }
}
