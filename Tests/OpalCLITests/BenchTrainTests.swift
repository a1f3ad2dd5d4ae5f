import Foundation
import XCTest

/// `opal bench train …`: the training-step benchmarks' JSON report and option checks.
final class BenchTrainTests: XCTestCase {
    /// Runs `opal` with `arguments`; standard output and standard error apart (the JSON goes to standard output).
    private func opal(_ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
        try OpalProcess.run(arguments)
    }

    func testAutoencoderStepJSON() throws {
        let result = try opal(["bench", "train", "autoencoder", "--device", "cpu", "--runs", "3", "--no-pytorch", "--json"])
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any],
                                   "not a JSON object: \(result.output)")
        XCTAssertEqual(object["workload"] as? String, "R4")
        XCTAssertNil(object["pytorchCPUMilliseconds"], "PyTorch was skipped but a figure was reported")
        XCTAssertTrue((object["pytorchNote"] as? String ?? "").contains("--no-pytorch"), "\(object)")
        XCTAssertNil(object["quotedReferences"], "the issue quotes no OpenCL peer for R4")

        let results = try XCTUnwrap(object["results"] as? [[String: Any]])
        XCTAssertEqual(results.count, 1, "--device cpu times one device: \(results)")
        let cpu = try XCTUnwrap(results.first)
        XCTAssertEqual(cpu["device"] as? String, "cpu")
        XCTAssertFalse((cpu["deviceDescription"] as? String ?? "").isEmpty)
        XCTAssertNil(cpu["hostWaitsPerStep"], "host waits are counted on OpenCL devices only")
        // R4, batch 128: forward + both gradients of 784-256, 256-32, 32-256, 256-784, without the first
        // layer's input gradient, two FLOPs per multiply-add.
        let batch = 128.0
        let expectedFlops = 2 * batch * (2 * 784 * 256 + 3 * (256 * 32 + 32 * 256 + 256 * 784))
        let flops = try XCTUnwrap(cpu["flopsPerStep"] as? Double)
        XCTAssertEqual(flops, expectedFlops, accuracy: expectedFlops * 1e-9)

        let step = try XCTUnwrap(cpu["step"] as? [String: Any])
        XCTAssertEqual(step["runs"] as? Int, 3)
        XCTAssertEqual(step["clock"] as? String, "wall-clock")
        let median = try XCTUnwrap(step["medianMilliseconds"] as? Double)
        let p10 = try XCTUnwrap(step["p10Milliseconds"] as? Double)
        let p90 = try XCTUnwrap(step["p90Milliseconds"] as? Double)
        XCTAssertTrue(median.isFinite && median > 0 && median < 60_000, "median \(median) ms")
        XCTAssertLessThanOrEqual(p10, median)
        XCTAssertLessThanOrEqual(median, p90)
    }

    func testWorkloadsAreListedAndBadRunsAreRejected() throws {
        let help = try opal(["bench", "train", "--help"])
        XCTAssertEqual(help.status, 0, help.output + help.errors)
        for workload in ["mlp", "cnn", "autoencoder", "gan"] {
            XCTAssertTrue(help.output.contains(workload), "\(workload) missing from: \(help.output)")
        }
        let bad = try opal(["bench", "train", "gan", "--runs", "0", "--no-pytorch"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue((bad.output + bad.errors).contains("--runs must be positive"), bad.output + bad.errors)
        let device = try opal(["bench", "train", "cnn", "--device", "tpu", "--no-pytorch"])
        XCTAssertNotEqual(device.status, 0)
        XCTAssertTrue((device.output + device.errors).contains("unknown device 'tpu'"), device.output + device.errors)
    }
}
