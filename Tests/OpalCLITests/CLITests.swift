import Foundation
import XCTest

/// The `opal` executable: help, exit codes and one-line errors for bad input (never a trap).
final class CLITests: XCTestCase {
    /// Runs `opal` with `arguments`; its standard output and standard error as one text.
    private func opal(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try OpalProcess.runCombined(arguments, environment: environment)
    }

    /// A clean failure: non-zero exit, the expected phrase, no crash report or stack trace.
    private func assertCleanFailure(_ result: (status: Int32, output: String), mentions phrase: String,
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(result.status, 0, result.output, file: file, line: line)
        XCTAssertTrue(result.output.localizedCaseInsensitiveContains(phrase), "expected '\(phrase)' in: \(result.output)",
                      file: file, line: line)
        for sign in ["Fatal error", "Backtrac", "Swift runtime failure", "Thread 0"] {
            XCTAssertFalse(result.output.contains(sign), "crash signature '\(sign)' in: \(result.output)", file: file, line: line)
        }
        XCTAssertLessThan(result.output.split(separator: "\n").count, 30, result.output, file: file, line: line)
    }

    func testHelpListsTheVerbs() throws {
        let result = try opal(["--help"])
        XCTAssertEqual(result.status, 0)
        for verb in ["devices", "train", "bench"] { XCTAssertTrue(result.output.contains(verb), result.output) }
        let train = try opal(["train", "mlp", "--help"])
        for option in ["--dataset", "--epochs", "--batch-size", "--learning-rate", "--device", "--seed", "--patience"] {
            XCTAssertTrue(train.output.contains(option), "\(option) missing from: \(train.output)")
        }
    }

    /// `--fine-tune`: a CNN trained on one dataset starts another run with its head replaced and its
    /// features frozen; wrong checkpoints are clear errors.
    func testFineTuneLoadsFreezesAndRejectsWrongCheckpoints() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("opal-cli-finetune-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("cnn.safetensors").path
        let trained = try opal(["train", "cnn", "--dataset", "digits", "--epochs", "1", "--checkpoint", source,
                                "--device", "cpu", "--no-progress"])
        XCTAssertEqual(trained.status, 0, trained.output)
        let tuned = try opal(["train", "cnn", "--dataset", "digits", "--epochs", "1", "--fine-tune", source,
                              "--checkpoint", directory.appendingPathComponent("tuned.safetensors").path,
                              "--device", "cpu", "--no-progress"])
        XCTAssertEqual(tuned.status, 0, tuned.output)
        XCTAssertTrue(tuned.output.contains("fine-tuning: weights from \(source)") && tuned.output.contains("new head 9")
                      && tuned.output.contains("18816 of 53002 parameters frozen"), tuned.output)
        assertCleanFailure(try opal(["train", "cnn", "--dataset", "digits", "--fine-tune", directory.appendingPathComponent("missing").path,
                                     "--device", "cpu"]), mentions: "missing")
        let mlp = directory.appendingPathComponent("mlp.safetensors").path
        XCTAssertEqual(try opal(["train", "mlp", "--dataset", "digits", "--epochs", "1", "--checkpoint", mlp, "--device", "cpu",
                                 "--no-progress"]).status, 0)
        assertCleanFailure(try opal(["train", "cnn", "--dataset", "digits", "--fine-tune", mlp, "--device", "cpu"]),
                           mentions: "holds a mlp, not a cnn")
        assertCleanFailure(try opal(["train", "cnn", "--fine-tune", source, "--freeze", "some"]), mentions: "--freeze")
    }

    func testDevicesNamesTheDefault() throws {
        let result = try opal(["devices"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("cpu:"))
        XCTAssertTrue(result.output.contains("default:"))
    }

    func testUnknownDeviceIsAClearError() throws {
        assertCleanFailure(try opal(["train", "mlp", "--device", "tpu"]), mentions: "unknown device 'tpu'")
        assertCleanFailure(try opal(["train", "mlp", "--device", "opencl:42", "--epochs", "1"]), mentions: "opencl:42")
        assertCleanFailure(try opal(["train", "mlp"], environment: ["OPAL_DEVICE": "quantum"]), mentions: "unknown device")
    }

    func testNegativeBatchSizeIsAClearError() throws {
        assertCleanFailure(try opal(["train", "mlp", "--batch-size", "-5"]), mentions: "batch-size")
        assertCleanFailure(try opal(["train", "mlp", "--epochs", "0"]), mentions: "--epochs must be positive")
        assertCleanFailure(try opal(["train", "mlp", "--learning-rate", "-1"]), mentions: "learning-rate")
        assertCleanFailure(try opal(["train", "mlp", "--dataset", "cifar"]), mentions: "unknown dataset 'cifar'")
    }

    func testMissingDatasetSaysHowToGetIt() throws {
        let result = try opal(["train", "mlp", "--dataset", "fashion-mnist", "--device", "cpu"],
                              environment: ["OPAL_FASHION_MNIST_DIR": "/nonexistent/fashion"])
        assertCleanFailure(result, mentions: "dataset-fashion-mnist")
        XCTAssertTrue(result.output.contains("/nonexistent/fashion"), result.output)
    }

    func testGPURequestWithoutGPUIsAClearError() throws {
        let devices = try opal(["devices"]).output
        guard !devices.contains("type            gpu") else { throw XCTSkip("this machine has a GPU") }
        assertCleanFailure(try opal(["train", "mlp", "--device", "gpu", "--epochs", "1"]), mentions: "no GPU")
    }

    func testNoOpenCLPlatformFallsBackToTheCPU() throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("opal-no-icd-\(UUID())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let result = try opal(["devices"], environment: ["OCL_ICD_VENDORS": empty.path])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("no OpenCL device"), result.output)
        XCTAssertTrue(result.output.contains("default: cpu"), result.output)
        assertCleanFailure(try opal(["bench", "gemm", "--device", "opencl:0"], environment: ["OCL_ICD_VENDORS": empty.path]),
                           mentions: "pocl-opencl-icd")
    }

    func testTrainMLPOnDigitsEndToEnd() throws {
        let result = try opal(["train", "mlp", "--dataset", "digits", "--epochs", "3", "--device", "cpu",
                               "--hidden-sizes", "32", "--no-progress"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("epoch 3:"), result.output)
        XCTAssertTrue(result.output.contains("test: accuracy"), result.output)
    }
}
