import Foundation
import XCTest

/// `opal bench lstm|gru` and `opal bench train lstm` at tiny sizes: the table, the JSON report and option checks.
final class BenchRecurrentTests: XCTestCase {
    /// The tiny shape every run here uses: batch 2, seq 3, input 4, hidden 5.
    private let tiny = ["--batch", "2", "--seq", "3", "--input", "4", "--hidden", "5", "--runs", "1"]

    /// Runs `opal` with `arguments`; standard output and standard error apart (the JSON goes to standard output).
    private func opal(_ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
        try OpalProcess.run(arguments)
    }

    private func jsonObject(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    /// A measurement object: `runs` runs, finite positive median between p10 and p90.
    private func checkMeasurement(_ value: Any?, runs: Int, _ context: String) throws {
        let measurement = try XCTUnwrap(value as? [String: Any], "\(context): no measurement")
        XCTAssertEqual(measurement["runs"] as? Int, runs, context)
        let median = try XCTUnwrap(measurement["medianMilliseconds"] as? Double, context)
        let p10 = try XCTUnwrap(measurement["p10Milliseconds"] as? Double, context)
        let p90 = try XCTUnwrap(measurement["p90Milliseconds"] as? Double, context)
        XCTAssertTrue(median.isFinite && median > 0 && median < 60_000, "\(context): median \(median) ms")
        XCTAssertLessThanOrEqual(p10, median, context)
        XCTAssertLessThanOrEqual(median, p90, context)
    }

    func testLSTMAndGRUTablesOnBothDevices() throws {
        for (command, workload) in [("lstm", "K4"), ("gru", "K5")] {
            for device in ["cpu", "opencl:0"] {
                let result = try opal(["bench", command, "--device", device, "--no-pytorch"] + tiny)
                XCTAssertEqual(result.status, 0, "\(command) on \(device): " + result.output + result.errors)
                let lines = result.output.split(separator: "\n").map(String.init)
                XCTAssertTrue(lines.first?.hasPrefix("\(workload) ") ?? false, result.output)
                XCTAssertTrue(result.output.contains("batch 2, seq 3, input 4, hidden 5"), result.output)
                let row = try XCTUnwrap(lines.first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(device) },
                                        "no row for \(device): \(result.output)")
                // device, fused ms, GFLOP/s, composed ms, GFLOP/s, composed/fused, vs PyTorch ("-": skipped).
                let columns = row.split(separator: " ").map(String.init)
                XCTAssertGreaterThan(Double(columns[1]) ?? 0, 0, row)
                XCTAssertGreaterThan(Double(columns[3]) ?? 0, 0, "composed time missing: \(row)")
                XCTAssertTrue(columns[5].hasSuffix("×"), row)
                XCTAssertEqual(columns[6], "-", "PyTorch was skipped: \(row)")
                XCTAssertTrue(result.output.contains("skipped (--no-pytorch)"), result.output)
                XCTAssertFalse(result.output.contains("issue #4 quotes"), "the issue's figure is for the full shape only")
                XCTAssertTrue(result.errors.contains("run 1/1"), "no progress on standard error: \(result.errors)")
            }
        }
    }

    func testLayerJSONOnOpenCL() throws {
        let result = try opal(["bench", "gru", "--device", "opencl:0", "--no-pytorch", "--json"] + tiny)
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try jsonObject(result.output)
        XCTAssertEqual(object["workload"] as? String, "K5")
        XCTAssertNil(object["pytorchCPUMilliseconds"])
        let shape = try XCTUnwrap(object["shape"] as? [String: Any])
        XCTAssertEqual(shape["batch"] as? Int, 2); XCTAssertEqual(shape["sequenceLength"] as? Int, 3)
        XCTAssertEqual(shape["inputSize"] as? Int, 4); XCTAssertEqual(shape["hiddenSize"] as? Int, 5)
        let results = try XCTUnwrap(object["results"] as? [[String: Any]])
        XCTAssertEqual(results.count, 1, "\(results)")
        let opencl = try XCTUnwrap(results.first)
        XCTAssertEqual(opencl["device"] as? String, "opencl:0")
        try checkMeasurement(opencl["fused"], runs: 1, "fused")
        try checkMeasurement(opencl["composed"], runs: 1, "composed")
        // 3 gates: 3 (fwd + 2 gradients) · 2 · B·T · 3H · (I + H) = 6 · 6 · 15 · 9.
        XCTAssertEqual(try XCTUnwrap(opencl["flops"] as? Double), 6 * 6 * 15 * 9, accuracy: 1e-6)
        let fused = try XCTUnwrap((opencl["fused"] as? [String: Any])?["medianMilliseconds"] as? Double)
        let composed = try XCTUnwrap((opencl["composed"] as? [String: Any])?["medianMilliseconds"] as? Double)
        XCTAssertEqual(try XCTUnwrap(opencl["fusedSpeedup"] as? Double), composed / fused, accuracy: 1e-9)
    }

    func testPhasesJSONListsEveryPieceOnTheCPU() throws {
        let result = try opal(["bench", "lstm", "--phases", "--device", "cpu", "--json"] + tiny)
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try jsonObject(result.output)
        XCTAssertEqual(object["workload"] as? String, "K4")
        let devices = try XCTUnwrap(object["devices"] as? [[String: Any]])
        XCTAssertEqual(devices.map { $0["device"] as? String }, ["cpu"])
        let phases = try XCTUnwrap(devices.first?["phases"] as? [[String: Any]])
        let names = phases.compactMap { $0["name"] as? String }
        XCTAssertEqual(names.count, 8, "\(names)")
        for piece in ["input projection", "3 × recurrent GEMM", "3 × gate addition", "3 × fused cell", "3 × composed cell",
                      "whole forward pass", "forward + backward"] {
            XCTAssertTrue(names.contains { $0.contains(piece) }, "\(piece) missing from \(names)")
        }
        for phase in phases { try checkMeasurement(phase["time"], runs: 1, "\(phase["name"] ?? "?")") }
        // The input projection: 2 · B·T · I · 4H = 2 · 6 · 4 · 20 FLOPs.
        let projection = try XCTUnwrap(phases.first { ($0["name"] as? String ?? "").hasPrefix("input projection") })
        XCTAssertEqual(try XCTUnwrap(projection["flops"] as? Double), 2 * 6 * 4 * 20, accuracy: 1e-9)
    }

    func testTrainLSTMTableAndJSONWithPyTorch() throws {
        let table = try opal(["bench", "train", "lstm", "--device", "opencl:0", "--no-pytorch"] + tiny)
        XCTAssertEqual(table.status, 0, table.output + table.errors)
        XCTAssertTrue(table.output.hasPrefix("R3 training step: Embedding 65×4 → LSTM 4→5 → Linear 5→65, batch 2, seq 3"),
                      table.output)
        XCTAssertTrue(table.output.contains("opencl:0"), table.output)

        // The PyTorch reference runs at the same tiny shape when torch is installed; otherwise a note says why not.
        let result = try opal(["bench", "train", "lstm", "--device", "cpu", "--json", "--threads", "1"] + tiny)
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try jsonObject(result.output)
        XCTAssertEqual(object["workload"] as? String, "R3")
        let results = try XCTUnwrap(object["results"] as? [[String: Any]])
        let cpu = try XCTUnwrap(results.first)
        XCTAssertEqual(cpu["device"] as? String, "cpu")
        XCTAssertNil(cpu["hostWaitsPerStep"], "host waits are counted on OpenCL devices only")
        try checkMeasurement(cpu["step"], runs: 1, "fused step")
        try checkMeasurement(cpu["composedStep"], runs: 1, "composed step")
        // 3 · 2 · B·T · (4H · (E + H) + H · V) with B·T = 6, E = 4, H = 5, V = 65.
        XCTAssertEqual(try XCTUnwrap(cpu["flopsPerStep"] as? Double), 6 * 6 * (20 * 9 + 5 * 65), accuracy: 1e-6)
        let note = try XCTUnwrap(object["pytorchNote"] as? String)
        if let pytorch = object["pytorchCPUMilliseconds"] as? Double {
            XCTAssertTrue(pytorch.isFinite && pytorch > 0, "\(pytorch)")
            XCTAssertTrue(note.contains("1 threads"), note)
        } else {
            XCTAssertTrue(note.contains("PyTorch") || note.contains("pytorch_reference"), note)
        }
    }

    func testBadArgumentsAreRejected() throws {
        let help = try opal(["bench", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.output.contains("lstm") && help.output.contains("gru"), help.output)
        let trainHelp = try opal(["bench", "train", "--help"])
        XCTAssertTrue(trainHelp.output.contains("lstm"), trainHelp.output)
        for (arguments, message) in [
            (["bench", "lstm", "--hidden", "0"], "--hidden must be positive, got 0"),
            (["bench", "gru", "--seq=-3"], "--seq must be positive, got -3"),
            (["bench", "train", "lstm", "--runs", "0"], "--runs must be positive"),
            (["bench", "gru", "--device", "tpu"], "unknown device 'tpu'"),
            (["bench", "lstm", "--batch", "two"], "--batch"),
        ] {
            let result = try opal(arguments + ["--no-pytorch"])
            XCTAssertNotEqual(result.status, 0, "\(arguments) succeeded")
            XCTAssertTrue((result.output + result.errors).contains(message), "\(arguments): " + result.output + result.errors)
        }
    }
}
