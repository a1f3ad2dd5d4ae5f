import Foundation
import XCTest

/// `opal bench attention` (K3) at a tiny sequence length: the JSON report and the option checks.
final class BenchAttentionTests: XCTestCase {
    private func jsonObject(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    /// N = 33 on every device (the native CPU and each OpenCL device) with the PyTorch reference when installed.
    func testJSONReportsFusedAndComposedPerDevice() throws {
        let result = try OpalProcess.run(["bench", "attention", "--sizes", "33", "--runs", "2", "--json"])
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try jsonObject(result.output)
        XCTAssertEqual(object["workload"] as? String, "K3")
        XCTAssertEqual(object["sizes"] as? [Int], [33])
        let results = try XCTUnwrap(object["results"] as? [[String: Any]])
        XCTAssertFalse(results.isEmpty)
        XCTAssertTrue(results.contains { $0["device"] as? String == "cpu" }, "no native CPU result: \(results)")
        // Causal B8 H8 D64: forward 4·64·33·33·64 / 2 FLOPs, × 3.5 with the backward.
        let flops = 4.0 * 64 * 33 * 33 * 64 / 2 * 3.5
        for device in results {
            let name = device["device"] as? String ?? "?"
            XCTAssertEqual(device["workload"] as? String, "K3", name)
            XCTAssertEqual(device["batch"] as? Int, 8, name)
            XCTAssertEqual(device["heads"] as? Int, 8, name)
            XCTAssertEqual(device["headDimension"] as? Int, 64, name)
            XCTAssertEqual(device["causal"] as? Bool, true, name)
            XCTAssertFalse((device["memoryMethod"] as? String ?? "").isEmpty, name)
            let rows = try XCTUnwrap(device["rows"] as? [[String: Any]], name)
            XCTAssertEqual(rows.count, 1, name)
            let row = try XCTUnwrap(rows.first)
            XCTAssertEqual(row["sequenceLength"] as? Int, 33, name)
            XCTAssertEqual(try XCTUnwrap(row["flops"] as? Double, name), flops, accuracy: 1e-6 * flops)
            var medians: [Double] = []
            for implementation in ["fused", "composed"] {
                let entry = try XCTUnwrap(row[implementation] as? [String: Any], "\(name) \(implementation)")
                let time = try XCTUnwrap(entry["time"] as? [String: Any], "\(name) \(implementation) did not run: \(entry)")
                XCTAssertEqual(time["runs"] as? Int, 2, "\(name) \(implementation)")
                let median = try XCTUnwrap(time["medianMilliseconds"] as? Double)
                XCTAssertTrue(median.isFinite && median > 0, "\(name) \(implementation): median \(median)")
                medians.append(median)
                let rate = try XCTUnwrap(entry["gigaflops"] as? Double, "\(name) \(implementation)")
                XCTAssertEqual(rate, flops / (median * 1e6), accuracy: 1e-9 * rate)
                let memory = try XCTUnwrap(entry["peakMemoryBytes"] as? Int, "\(name) \(implementation)")
                XCTAssertGreaterThanOrEqual(memory, 0)
                XCTAssertNil(entry["note"], "\(name) \(implementation)")
                if let percent = entry["percentOfPeak"] as? Double, let peak = device["peakGigaflops"] as? Double {
                    XCTAssertEqual(percent, 100 * rate / peak, accuracy: 1e-6 * max(percent, 1))
                }
            }
            XCTAssertEqual(try XCTUnwrap(row["fusedOverComposed"] as? Double, name), medians[0] / medians[1], accuracy: 1e-9)
        }
        let pytorch = try XCTUnwrap(object["pytorchCPU"] as? [[String: Any]])
        XCTAssertEqual(pytorch.count, 1)
        XCTAssertEqual(pytorch.first?["sequenceLength"] as? Int, 33)
        XCTAssertFalse((pytorch.first?["note"] as? String ?? "").isEmpty, "\(pytorch)")
    }

    /// A composed form beyond the memory budget is skipped with the memory it would need, not run.
    func testComposedBeyondBudgetIsSkipped() throws {
        let result = try OpalProcess.run(["bench", "attention", "--device", "cpu", "--sizes", "40", "--runs", "1",
                                          "--memory-budget", "0.0001", "--no-pytorch", "--json"])
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try jsonObject(result.output)
        let row = try XCTUnwrap(((object["results"] as? [[String: Any]])?.first?["rows"] as? [[String: Any]])?.first)
        let composed = try XCTUnwrap(row["composed"] as? [String: Any])
        XCTAssertNil(composed["time"])
        XCTAssertTrue((composed["note"] as? String ?? "").hasPrefix("skipped (needs "), "\(composed)")
        XCTAssertNil(row["fusedOverComposed"])
        XCTAssertNotNil((row["fused"] as? [String: Any])?["time"])
    }

    func testInvalidSizesAreRejected() throws {
        for sizes in ["0", "12,-3", "abc", ""] {
            let result = try OpalProcess.run(["bench", "attention", "--sizes", sizes])
            XCTAssertNotEqual(result.status, 0, "--sizes '\(sizes)' was accepted: \(result.output)")
            XCTAssertTrue(result.errors.contains("--sizes must be comma-separated positive sequence lengths"),
                          "--sizes '\(sizes)': \(result.errors)")
        }
    }
}
