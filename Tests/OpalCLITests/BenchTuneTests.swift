import Foundation
import XCTest

/// `opal bench tune` with its hidden tiny grid (`--quick`) in a temporary OPAL_CACHE_DIR: the table, the JSON
/// report, the file it writes, `opal devices` showing it, `--reset`, option checks, and a corrupt file ignored.
final class BenchTuneTests: OpalCommandTestCase {
    private var environment: [String: String] { ["OPAL_CACHE_DIR": directory.path, "OPENBLAS_THREAD_TIMEOUT": "10"] }

    private func run(_ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
        try OpalProcess.run(arguments, environment: environment)
    }

    private var tuningFiles: [URL] {
        let folder = directory.appendingPathComponent("tuning")
        return ((try? FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? [])
            .filter { $0.pathExtension == "json" }
    }

    private func requireOpenCL() throws {
        let devices = try run(["devices"])
        guard devices.output.contains("opencl:0") else { throw XCTSkip("no OpenCL device: \(devices.output)") }
    }

    func testQuickTuneWritesTheFileDevicesShowsItAndResetForgetsIt() throws {
        try requireOpenCL()
        let before = try run(["devices"])
        XCTAssertEqual(before.status, 0, before.output + before.errors)
        XCTAssertTrue(before.output.contains("not tuned (run opal bench tune all)"), before.output)

        let table = try run(["bench", "tune", "recurrent", "--device", "opencl:0", "--quick"])
        XCTAssertEqual(table.status, 0, table.output + table.errors)
        XCTAssertTrue(table.output.contains("family"), table.output)
        let row = String(try XCTUnwrap(table.output.split(separator: "\n").first { $0.hasPrefix("recurrent ") }, table.output))
        let columns = row.split(separator: " ").map(String.init)
        XCTAssertEqual(columns[1], "3", "built-in + 2 quick candidates: \(row)")
        XCTAssertGreaterThan(Double(columns[3]) ?? 0, 0, row)
        XCTAssertGreaterThan(Double(columns[4]) ?? 0, 0, row)
        XCTAssertLessThanOrEqual(Double(columns[4]) ?? .infinity, Double(columns[3]) ?? 0, "tuned ≤ default: \(row)")
        XCTAssertTrue(columns[5].hasSuffix("%"), row)
        XCTAssertTrue(table.errors.contains("[3/3]"), "no progress on standard error: \(table.errors)")
        let file = try XCTUnwrap(tuningFiles.first, "no file under \(directory.path)/tuning")
        XCTAssertTrue(table.output.contains("written: \(file.path)"), table.output)

        let json = try run(["bench", "tune", "gemm", "--device", "opencl:0", "--quick", "--json"])
        XCTAssertEqual(json.status, 0, json.output + json.errors)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any],
                                   json.output)
        XCTAssertEqual(report["device"] as? String, "opencl:0")
        XCTAssertEqual(report["file"] as? String, file.path)
        let families = try XCTUnwrap(report["families"] as? [[String: Any]])
        XCTAssertEqual(families.count, 1)
        XCTAssertEqual(families[0]["family"] as? String, "gemm")
        XCTAssertEqual(families[0]["candidates"] as? Int, 3)
        let defaultTime = try XCTUnwrap(families[0]["defaultMilliseconds"] as? Double)
        let tunedTime = try XCTUnwrap(families[0]["tunedMilliseconds"] as? Double)
        XCTAssertTrue(defaultTime > 0 && tunedTime > 0 && tunedTime <= defaultTime, "\(families[0])")

        // The file holds both families; the stored record is what `opal devices` reports.
        let stored = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        let storedFamilies = try XCTUnwrap(stored["families"] as? [String: Any])
        XCTAssertEqual(Set(storedFamilies.keys), ["gemm", "recurrent"])
        let after = try run(["devices"])
        XCTAssertTrue(after.output.contains("tuned           gemm ("), after.output)
        XCTAssertTrue(after.output.contains("recurrent ("), after.output)
        XCTAssertTrue(after.output.contains("not tuned: conv, attention"), after.output)

        let forgetGemm = try run(["bench", "tune", "gemm", "--device", "opencl:0", "--reset"])
        XCTAssertEqual(forgetGemm.status, 0, forgetGemm.output + forgetGemm.errors)
        XCTAssertFalse(try run(["devices"]).output.contains("tuned           gemm ("))
        let reset = try run(["bench", "tune", "all", "--device", "opencl:0", "--reset"])
        XCTAssertEqual(reset.status, 0, reset.output + reset.errors)
        XCTAssertTrue(reset.output.contains("removed \(file.path)"), reset.output)
        XCTAssertTrue(tuningFiles.isEmpty)
        XCTAssertTrue(try run(["devices"]).output.contains("not tuned (run opal bench tune all)"))
    }

    func testCorruptFileIsIgnoredWithAWarning() throws {
        try requireOpenCL()
        _ = try run(["bench", "tune", "recurrent", "--device", "opencl:0", "--quick"])
        let file = try XCTUnwrap(tuningFiles.first)
        try Data("{ corrupt".utf8).write(to: file)
        let devices = try run(["devices"])
        XCTAssertEqual(devices.status, 0, devices.output + devices.errors)
        XCTAssertTrue(devices.output.contains("not tuned (run opal bench tune all)"), devices.output)
        XCTAssertTrue(devices.errors.contains("ignoring the tuned kernel parameters in \(file.path)"), devices.errors)
        for sign in ["Fatal error", "Backtrac"] { XCTAssertFalse(devices.errors.contains(sign), devices.errors) }
    }

    func testInvalidArgumentsFailCleanly() throws {
        assertCleanFailure(try opal(["bench", "tune", "softmax"]), status: 64, mentions: "softmax")
        assertCleanFailure(try opal(["bench", "tune", "gemm", "--device", "cpu"]), status: 64,
                           mentions: "native CPU backend")
        assertCleanFailure(try opal(["bench", "tune", "gemm", "--device", "opencl:99"]), status: 64,
                           mentions: "opencl:99")
        let help = try opal(["bench", "tune", "--help"])
        XCTAssertEqual(help.status, 0)
        for phrase in ["attention", "recurrent", "--reset", "--json", "<device>.json"] {
            XCTAssertTrue(help.output.contains(phrase), "help lacks \(phrase): \(help.output)")
        }
        XCTAssertFalse(help.output.contains("--quick"), "--quick is hidden")
    }
}
