import Foundation
@testable import OpalOpenCL
import OpenCLKit
import XCTest

/// The per-device file of tuned kernel parameters (`TuningStore`) and how `OpenCLKernelParameters` uses it:
/// round trip, device keys, precedence (environment override > tuned file > built-in table), and unusable
/// files (corrupt, another format, values that do not parse or do not fit the device) ignored.
final class TuningStoreTests: XCTestCase {
    var directory: URL!
    var device: CLDevice!

    override func setUpWithError() throws {
        guard let first = try? CLPlatform.all().first?.devices().first else { throw XCTSkip("no OpenCL device") }
        device = first
        directory = FileManager.default.temporaryDirectory.appending(path: "opal-tuning-\(UUID().uuidString)")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// A family outcome with `parameters` (dates at whole seconds: ISO 8601 keeps no fractions).
    func outcome(_ parameters: String?, defaultMilliseconds: Double = 10, tunedMilliseconds: Double = 8) -> TunedFamily {
        TunedFamily(parameters: parameters, description: "test \(parameters ?? "built-in")",
                    defaultMilliseconds: defaultMilliseconds, tunedMilliseconds: tunedMilliseconds, candidates: 5,
                    rejected: 1, shapes: ["a", "b"], date: Date(timeIntervalSince1970: 1_800_000_000))
    }

    /// A valid GEMM entry for this device that differs from its built-in one.
    func otherGemm() -> GemmParameters {
        let builtIn = TuningStore.builtInParameters(for: device).gemm
        for candidate in ["32,32,16,4,16,8,0", "32,32,16,4,4,4,1", "8,8,16,4,4,4,1"] {
            let p = GemmParameters(specification: candidate)!
            if p.isValid(maximumWorkGroupSize: device.maxWorkGroupSize) && p != builtIn { return p }
        }
        XCTFail("no alternative GEMM entry for \(device.name)")
        return builtIn
    }

    func testRoundTripAndAtomicWrite() throws {
        let store = TuningStore(directory: directory)
        XCTAssertNil(store.record(for: device), "a fresh folder has no record")
        var record = TuningRecord(for: device)
        record[.gemm] = outcome("32,32,16,4,16,8,0")
        record[.attention] = outcome("256,16,65536,2,2,8")
        record[.conv] = outcome("4,16")
        record[.recurrent] = outcome("64")
        let file = try store.save(record, for: device)
        XCTAssertEqual(file.deletingLastPathComponent().standardizedFileURL.path, directory.standardizedFileURL.path)
        XCTAssertEqual(file.pathExtension, "json")
        XCTAssertEqual(store.record(for: device), record)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [file.lastPathComponent],
                       "the temporary file of the atomic write is gone")
        let loaded = try XCTUnwrap(store.record(for: device))
        XCTAssertEqual(loaded.gemm, GemmParameters(specification: "32,32,16,4,16,8,0"))
        XCTAssertEqual(loaded.attention, AttentionParameters(specification: "256,16,65536,2,2,8"))
        XCTAssertEqual(loaded.conv, ConvParameters(channelsPerItem: 4, workGroupSize: 16))
        XCTAssertEqual(loaded.workGroupSize, 64)
        XCTAssertEqual(loaded[.gemm]?.improvementPercent ?? 0, 25, accuracy: 1e-9)

        // Overwrite, then reset.
        record[.gemm] = outcome(nil, defaultMilliseconds: 5, tunedMilliseconds: 5)
        try store.save(record, for: device)
        XCTAssertNil(try XCTUnwrap(store.record(for: device)).gemm, "a built-in winner tunes nothing")
        XCTAssertTrue(try store.reset(for: device))
        XCTAssertNil(store.record(for: device))
        XCTAssertFalse(try store.reset(for: device))
    }

    func testDeviceKeyCoversDriverAndIsFileSafe() {
        let a = TuningStore.deviceKey(platform: "P", name: "GeForce RTX/4090 (x)", vendor: "NVIDIA", driverVersion: "550.1")
        let b = TuningStore.deviceKey(platform: "P", name: "GeForce RTX/4090 (x)", vendor: "NVIDIA", driverVersion: "550.2")
        XCTAssertNotEqual(a, b, "a driver update starts untuned")
        XCTAssertEqual(a, TuningStore.deviceKey(platform: "P", name: "GeForce RTX/4090 (x)", vendor: "NVIDIA",
                                                driverVersion: "550.1"))
        XCTAssertTrue(a.hasPrefix("GeForce_RTX_4090__x_-"), a)
        XCTAssertFalse(a.contains("/"))
    }

    func testDefaultFolderFollowsCacheDirectory() throws {
        let previous = ProcessInfo.processInfo.environment["OPAL_CACHE_DIR"]
        setenv("OPAL_CACHE_DIR", directory.path, 1)
        defer { if let previous { setenv("OPAL_CACHE_DIR", previous, 1) } else { unsetenv("OPAL_CACHE_DIR") } }
        XCTAssertEqual(TuningStore.defaultDirectory()?.standardizedFileURL.path,
                       directory.appending(path: "tuning").standardizedFileURL.path)
        XCTAssertEqual(ProgramCache.defaultDirectory()?.deletingLastPathComponent().standardizedFileURL.path,
                       directory.standardizedFileURL.path, "beside the program cache")

        // A backend's parameters come from the default store when no record is passed.
        let tuned = otherGemm()
        var record = TuningRecord(for: device)
        record[.gemm] = outcome(tuned.specification)
        record[.recurrent] = outcome("32")
        try TuningStore().save(record, for: device)
        let parameters = OpenCLKernelParameters(device: device)
        XCTAssertEqual(parameters.gemm, tuned)
        XCTAssertEqual(parameters.workGroupSize, 32)
        XCTAssertTrue(parameters.buildOptions.contains("-DWGS=32"), parameters.buildOptions)
    }

    func testPrecedenceEnvironmentThenTunedThenTable() throws {
        let builtIn = TuningStore.builtInParameters(for: device)
        let table = OpenCLKernelParameters(device: device, tuning: TuningRecord(for: device))
        XCTAssertEqual(table.gemm, KernelParameterTable.gemm(type: device.type, vendor: device.vendor, name: device.name))
        XCTAssertEqual(table.conv, device.name.localizedCaseInsensitiveContains("avx512") ? .cpuAVX512 : .standard)
        XCTAssertEqual(table.gemm, builtIn.gemm)

        let tuned = otherGemm()
        var record = TuningRecord(for: device)
        record[.gemm] = outcome(tuned.specification)
        record[.attention] = outcome("128,32,32768,2,1,8")
        record[.conv] = outcome("5,4")
        record[.recurrent] = outcome("64")
        let fromRecord = OpenCLKernelParameters(device: device, tuning: record)
        XCTAssertEqual(fromRecord.gemm, tuned)
        XCTAssertEqual(fromRecord.gemm.preferredEngine, .opal, "a tuned GEMM entry is Opal's own kernel")
        XCTAssertEqual(fromRecord.attention, AttentionParameters(specification: "128,32,32768,2,1,8"))
        // A tuned conv record sets the forward kernel's values; the backward-weight block stays the table's.
        let tunedConv = ConvParameters(channelsPerItem: 5, workGroupSize: 4,
                                       weightChannelsPerItem: table.conv.weightChannelsPerItem,
                                       weightDepthsPerItem: table.conv.weightDepthsPerItem)
        XCTAssertEqual(fromRecord.conv, tunedConv)
        XCTAssertEqual(fromRecord.workGroupSize, 64)
        XCTAssertTrue(fromRecord.buildOptions.contains("-DCONV_VM=5"), fromRecord.buildOptions)
        XCTAssertTrue(fromRecord.buildOptions.contains(tuned.buildOptions), fromRecord.buildOptions)

        let previous = ProcessInfo.processInfo.environment[GemmParameters.overrideVariable]
        setenv(GemmParameters.overrideVariable, "8,8,16,4,4,4,1", 1)
        defer {
            if let previous { setenv(GemmParameters.overrideVariable, previous, 1) }
            else { unsetenv(GemmParameters.overrideVariable) }
        }
        let overridden = OpenCLKernelParameters(device: device, tuning: record)
        XCTAssertEqual(overridden.gemm, GemmParameters(specification: "8,8,16,4,4,4,1"), "the environment wins")
        XCTAssertEqual(overridden.conv, tunedConv, "the other families keep their tuned values")
    }

    func testValuesThatDoNotFitTheDeviceAreIgnored() {
        var record = TuningRecord(for: device)
        let tooLarge = device.maxWorkGroupSize * 2
        record[.gemm] = outcome("\(tooLarge * 4),4,16,4,4,4,1")   // tooLarge·1 work-items per group
        record[.conv] = outcome("64,8")                             // CONV_VM above 32
        record[.recurrent] = outcome("\(tooLarge)")
        let parameters = OpenCLKernelParameters(device: device, tuning: record)
        let table = OpenCLKernelParameters(device: device, tuning: TuningRecord(for: device))
        XCTAssertEqual(parameters, table)
        record[.gemm] = outcome("not a specification")
        record[.recurrent] = outcome("48")                          // not a power of two
        XCTAssertEqual(OpenCLKernelParameters(device: device, tuning: record), table)
    }

    func testCorruptOrForeignFilesAreIgnored() throws {
        let store = TuningStore(directory: directory)
        let file = try XCTUnwrap(store.file(for: device))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let table = OpenCLKernelParameters(device: device, tuning: TuningRecord(for: device))
        for contents in ["{ not json", "", "[1, 2, 3]", #"{"format": 99, "device": "x", "vendor": "y", "driverVersion": "z", "families": {}}"#,
                         #"{"format": 1, "device": "x"}"#] {
            try Data(contents.utf8).write(to: file)
            XCTAssertNil(store.record(for: device), "contents \(contents)")
            XCTAssertEqual(OpenCLKernelParameters(device: device, tuning: store.record(for: device) ?? TuningRecord(for: device)),
                           table)
        }
        // Saving over a corrupt file replaces it.
        var record = TuningRecord(for: device)
        record[.recurrent] = outcome("32")
        try store.save(record, for: device)
        XCTAssertEqual(store.record(for: device), record)
    }
}
