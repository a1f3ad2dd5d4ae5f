import Foundation
import XCTest

/// `opal bench` (the whole suite): the JSON schema, the PyTorch side-by-side figures and option checks,
/// on the smallest selection (`--quick --only K1,R1`), so each test takes seconds.
final class BenchSuiteTests: OpalCommandTestCase {
    /// Runs `opal bench` with `arguments` on the native CPU and decodes its JSON document (standard output only).
    private func suite(_ arguments: [String], environment: [String: String] = [:]) throws -> (object: [String: Any], errors: String) {
        let result = try OpalProcess.run(["bench", "--device", "cpu", "--quick", "--json"] + arguments, environment: environment)
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any],
                                   "not a JSON object: \(result.output)\n\(result.errors)")
        return (object, result.errors)
    }

    private func entries(_ object: [String: Any]) throws -> [String: [String: Any]] {
        try XCTUnwrap(object["entries"] as? [String: [String: Any]], "no entries object in \(object)")
    }

    func testQuickSelectionJSONFollowsTheSchema() throws {
        let (object, _) = try suite(["--only", "K1,R1", "--runs", "2"])
        XCTAssertEqual(object["schema"] as? String, "opal-bench-suite/1")
        let device = try XCTUnwrap(object["device"] as? [String: Any])
        XCTAssertEqual(device["name"] as? String, "cpu")
        for key in ["description", "peak_gflops", "peak_gbps", "peak_method", "peak_measured"] {
            XCTAssertTrue(device.keys.contains(key), "device.\(key) missing: \(device)")
        }
        let options = try XCTUnwrap(object["options"] as? [String: Any])
        XCTAssertEqual(options["quick"] as? Bool, true)
        XCTAssertEqual(options["runs"] as? Int, 2)
        XCTAssertEqual(options["only"] as? [String], ["K1", "R1"])
        XCTAssertEqual(options["compare"] as? [String], [])
        let peers = try XCTUnwrap(object["peers"] as? [String: [String: Any]])
        XCTAssertEqual(peers["pytorch"]?["status"] as? String, "not compared")
        XCTAssertEqual(peers["tinygrad"]?["status"] as? String, "not compared")
        XCTAssertGreaterThan(try XCTUnwrap(object["wall_s"] as? Double), 0)

        let entries = try entries(object)
        XCTAssertEqual(Set(entries.keys), ["K1-256", "K1-512", "R1"], "--only K1,R1 --quick: \(entries.keys.sorted())")
        for (id, entry) in entries {
            let keys = ["family", "what", "median_ms", "p10_ms", "p90_ms", "runs", "clock", "gflop_per_run", "gflops",
                        "percent_of_peak", "gbyte_floor_per_run", "gbps", "reference", "peers", "note"]
            XCTAssertEqual(Set(entry.keys), Set(keys), "\(id): the schema's keys, always present")
            let median = try XCTUnwrap(entry["median_ms"] as? Double, "\(id): \(entry)")
            let p10 = try XCTUnwrap(entry["p10_ms"] as? Double), p90 = try XCTUnwrap(entry["p90_ms"] as? Double)
            XCTAssertTrue(median.isFinite && median > 0 && median < 60_000, "\(id): median \(median) ms")
            XCTAssertLessThanOrEqual(p10, median, id)
            XCTAssertLessThanOrEqual(median, p90, id)
            XCTAssertEqual(entry["runs"] as? Int, 2, "\(id): --runs 2")
            XCTAssertEqual(entry["clock"] as? String, "wall-clock", id)
            let rate = try XCTUnwrap(entry["gflops"] as? Double, id)
            let work = try XCTUnwrap(entry["gflop_per_run"] as? Double, id)
            XCTAssertEqual(rate, work / (median / 1000), accuracy: rate * 1e-9, "\(id): GFLOP/s = GFLOP / seconds")
            let peers = try XCTUnwrap(entry["peers"] as? [String: Any], id)
            XCTAssertTrue(peers["pytorch"] is NSNull && peers["tinygrad"] is NSNull, "\(id): peers not compared: \(peers)")
        }
        // K1 counts 2n³ per run and has OpenBLAS as its reference on the native CPU; R1 has none.
        let k1 = try XCTUnwrap(entries["K1-512"])
        XCTAssertEqual(try XCTUnwrap(k1["gflop_per_run"] as? Double), 2 * pow(512, 3) / 1e9, accuracy: 1e-9)
        // Its byte floor: A and B read, C written once; GB/s = that over the median. R1 has no byte floor.
        let floor = try XCTUnwrap(k1["gbyte_floor_per_run"] as? Double)
        XCTAssertEqual(floor, 4 * 3 * 512 * 512 / 1e9, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(k1["gbps"] as? Double), floor / (try XCTUnwrap(k1["median_ms"] as? Double) / 1000),
                       accuracy: 1e-6)
        XCTAssertTrue(entries["R1"]?["gbps"] is NSNull, "R1: no byte floor")
        XCTAssertEqual(k1["family"] as? String, "K1")
        let reference = try XCTUnwrap(k1["reference"] as? [String: Any], "K1 has a reference: \(k1)")
        XCTAssertEqual(reference["name"] as? String, "OpenBLAS")
        let referenceMedian = try XCTUnwrap(reference["median_ms"] as? Double)
        XCTAssertGreaterThan(referenceMedian, 0)
        XCTAssertEqual(try XCTUnwrap(reference["opal_over_reference"] as? Double),
                       try XCTUnwrap(k1["median_ms"] as? Double) / referenceMedian, accuracy: 1e-9)
        XCTAssertTrue(try XCTUnwrap(entries["R1"])["reference"] is NSNull)
    }

    func testComparePyTorchGivesRatios() throws {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import torch"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        try probe.run()
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else {
            print("BenchSuiteTests: skipping the PyTorch comparison: python3 -c \"import torch\" failed")
            throw XCTSkip("PyTorch is not importable by python3")
        }
        let (object, _) = try suite(["--only", "K1-256", "--runs", "2", "--compare", "pytorch"])
        let peers = try XCTUnwrap(object["peers"] as? [String: [String: Any]])
        XCTAssertEqual(peers["pytorch"]?["status"] as? String, "measured", "\(peers)")
        XCTAssertNotNil(peers["pytorch"]?["version"] as? String)
        for (id, entry) in try entries(object) {
            let figure = try XCTUnwrap((entry["peers"] as? [String: Any])?["pytorch"] as? [String: Any], "\(id): \(entry)")
            let torch = try XCTUnwrap(figure["median_ms"] as? Double, "\(id): \(figure)")
            XCTAssertTrue(torch.isFinite && torch > 0, "\(id): PyTorch \(torch) ms")
            let ratio = try XCTUnwrap(figure["opal_over_peer"] as? Double, "\(id)")
            XCTAssertEqual(ratio, try XCTUnwrap(entry["median_ms"] as? Double) / torch, accuracy: 1e-9, id)
        }
    }

    func testMissingPeerIsNamedWithItsInstallCommandAndTheSuiteCarriesOn() throws {
        let (object, errors) = try suite(["--only", "K1-256", "--runs", "2", "--compare", "pytorch"],
                                         environment: ["OPAL_PYTHON": "/nonexistent/python3"])
        let pytorch = try XCTUnwrap((object["peers"] as? [String: [String: Any]])?["pytorch"])
        XCTAssertEqual(pytorch["status"] as? String, "missing")
        let install = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
        XCTAssertTrue((pytorch["note"] as? String ?? "").contains(install), "\(pytorch)")
        XCTAssertTrue(errors.contains(install), errors)
        let entry = try XCTUnwrap(try entries(object)["K1-256"])
        XCTAssertGreaterThan(try XCTUnwrap(entry["median_ms"] as? Double), 0, "Opal's figure is still there")
    }

    func testTableAndBadOptions() throws {
        let table = try opal(["bench", "--device", "cpu", "--quick", "--only", "K1-256", "--runs", "2"])
        XCTAssertEqual(table.status, 0, table.output)
        XCTAssertTrue(table.output.contains("K1-256"), table.output)
        XCTAssertTrue(table.output.contains("OpenBLAS"), table.output)

        assertCleanFailure(try opal(["bench", "--only", "K1,X9"]), status: 64, mentions: "unknown benchmark id 'X9' in --only")
        assertCleanFailure(try opal(["bench", "--quick", "--only", "K1-4096"]), status: 64,
                           mentions: "unknown benchmark id 'K1-4096' in --only")
        assertCleanFailure(try opal(["bench", "--compare", "jax"]), status: 64, mentions: "--compare takes pytorch")
        assertCleanFailure(try opal(["bench", "--runs", "0"]), status: 64, mentions: "--runs must be positive")
    }
}
