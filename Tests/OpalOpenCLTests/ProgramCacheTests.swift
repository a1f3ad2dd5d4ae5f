import Foundation
import OpalCore
import OpenCLKit
import XCTest
@testable import OpalOpenCL

/// y = x·scale + offset on `n` elements, for checking that cached programs really run.
private let affineSource = """
__kernel void affine(__global const float* x, __global float* y, const float scale, const int n) {
    int i = get_global_id(0);
    if (i < n) { y[i] = x[i] * scale + OFFSET; }
}
"""

final class ProgramCacheTests: XCTestCase {
    private var directory: URL!
    private var context: CLContext!

    override func setUpWithError() throws {
        context = try CLContext(device: CLPlatform.defaultDevice())
        directory = FileManager.default.temporaryDirectory
            .appending(path: "opal-program-cache-\(UUID().uuidString)", directoryHint: .isDirectory)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func binFiles() throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "bin" }
    }

    /// Runs `affine` from `cache` on 1000 random values and checks it against the host formula.
    private func checkRuns(_ cache: ProgramCache, options: String, offset: Float) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var generator = SeededGenerator(seed: seed)
        let n = 1000
        let x = (0..<n).map { _ in Float.random(in: -5...5, using: &generator) }
        let scale = Float.random(in: -2...2, using: &generator)
        let queue = try CLCommandQueue(context: context)
        let input = try CLBuffer(context: context, byteCount: n * 4)
        let output = try CLBuffer(context: context, byteCount: n * 4)
        try x.withUnsafeBytes { try queue.write(input, from: $0) }
        try queue.fill(output, with: .nan, byteCount: n * 4)
        let kernel = try cache.kernel(source: affineSource, options: options, name: "affine")
        try kernel.setArgument(0, input)
        try kernel.setArgument(1, output)
        try kernel.setArgument(2, scale)
        try kernel.setArgument(3, Int32(n))
        try queue.enqueue(kernel, global: [n])
        var y = [Float](repeating: 0, count: n)
        try y.withUnsafeMutableBytes { try queue.read(output, into: $0) }
        for i in 0..<n {
            let expected = x[i] * scale + offset
            XCTAssertEqual(y[i], expected, accuracy: 1e-5 * max(1, abs(expected)), "i=\(i) seed=\(seed)")
        }
    }

    func testBuildsThenHitsMemoryThenDisk() throws {
        let options = "-DOFFSET=1.5f"
        let first = ProgramCache(context: context, directory: directory)
        try checkRuns(first, options: options, offset: 1.5)
        XCTAssertEqual(first.builds, 1)
        XCTAssertEqual(first.diskHits, 0)
        // Same source + options: served from memory, same objects.
        let programA = try first.program(source: affineSource, options: options)
        let programB = try first.program(source: affineSource, options: options)
        XCTAssertTrue(programA === programB)
        let kernelA = try first.kernel(source: affineSource, options: options, name: "affine")
        XCTAssertTrue(kernelA === (try first.kernel(source: affineSource, options: options, name: "affine")))
        XCTAssertEqual(first.builds, 1)
        XCTAssertEqual(try binFiles().count, 1)

        // A fresh cache on the same folder loads the binary instead of compiling.
        let second = ProgramCache(context: context, directory: directory)
        try checkRuns(second, options: options, offset: 1.5)
        XCTAssertEqual(second.diskHits, 1)
        XCTAssertEqual(second.builds, 0)

        // Different options are a different program (and file).
        try checkRuns(second, options: "-DOFFSET=-2.0f", offset: -2)
        XCTAssertEqual(second.builds, 1)
        XCTAssertEqual(try binFiles().count, 2)
    }

    func testCorruptEntriesAreRebuiltAndReplaced() throws {
        let options = "-DOFFSET=0.25f"
        _ = try ProgramCache(context: context, directory: directory).program(source: affineSource, options: options)
        let file = try XCTUnwrap(ProgramCache(context: context, directory: directory)
            .cacheFile(source: affineSource, options: options))
        let good = try Data(contentsOf: file)
        XCTAssertEqual(Array(good.prefix(8)), Array("OPALBIN1".utf8))

        var flipped = good
        flipped[good.count / 2] ^= 0xFF
        var badMagic = good
        badMagic[0] = UInt8(ascii: "X")
        let corruptions: [(String, Data)] = [
            ("flipped payload byte", flipped),
            ("truncated", good.prefix(good.count - 7)),
            ("header only", good.prefix(10)),
            ("bad magic", badMagic),
            ("empty", Data()),
        ]
        for (label, corrupt) in corruptions {
            try corrupt.write(to: file)
            let cache = ProgramCache(context: context, directory: directory)
            try checkRuns(cache, options: options, offset: 0.25)
            XCTAssertEqual(cache.diskHits, 0, label)
            XCTAssertEqual(cache.builds, 1, label)
            XCTAssertEqual(cache.diskRejections, 1, label)
            try assertValidEntry(file, label)
        }

        // A well-formed entry whose payload the driver rejects is also rebuilt.
        try ProgramCache.encode(Array("not a device binary".utf8)).write(to: file)
        let cache = ProgramCache(context: context, directory: directory)
        try checkRuns(cache, options: options, offset: 0.25)
        XCTAssertEqual(cache.builds, 1)
        XCTAssertEqual(cache.diskRejections, 1)
        try assertValidEntry(file, "driver-rejected payload")
    }

    /// The entry at `file` is well-formed and a fresh cache loads it without compiling.
    /// (PoCL binaries are not byte-identical between builds, so the bytes are not compared.)
    private func assertValidEntry(_ file: URL, _ label: String) throws {
        XCTAssertNotNil(ProgramCache.decode(try Data(contentsOf: file)), "\(label): entry should be rewritten")
        let fresh = ProgramCache(context: context, directory: directory)
        _ = try fresh.program(source: affineSource, options: "-DOFFSET=0.25f")
        XCTAssertEqual(fresh.diskHits, 1, label)
        XCTAssertEqual(fresh.builds, 0, label)
    }

    func testEncodeDecodeRoundTripAndRejects() {
        let payload: [UInt8] = (0..<1000).map { _ in UInt8.random(in: 0...255) }
        let data = ProgramCache.encode(payload)
        XCTAssertEqual(data.count, 24 + payload.count)
        XCTAssertEqual(ProgramCache.decode(data), payload)
        var longer = data
        longer.append(0)
        XCTAssertNil(ProgramCache.decode(longer))
        XCTAssertNil(ProgramCache.decode(data.dropLast()))
    }

    func testUnwritableDirectoryStillBuilds() throws {
        // A regular file where the folder should be: every write fails, compiling still works.
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let blocker = directory.appending(path: "blocked")
        try Data("x".utf8).write(to: blocker)
        let cache = ProgramCache(context: context, directory: blocker.appending(path: "programs"))
        try checkRuns(cache, options: "-DOFFSET=3.0f", offset: 3)
        XCTAssertEqual(cache.builds, 1)
    }

    func testBuildFailureIsReportedAndNotCached() throws {
        let cache = ProgramCache(context: context, directory: directory)
        XCTAssertThrowsError(try cache.program(source: "__kernel void f() { nope; }", options: "")) { error in
            guard case .buildFailed(let log, _)? = error as? CLError else { return XCTFail("\(error)") }
            XCTAssertTrue(log.contains("nope"), log)
        }
        XCTAssertEqual(cache.builds, 0)
        XCTAssertEqual((try? binFiles())?.count ?? 0, 0)
    }

    func testDefaultDirectoryFollowsEnvironment() {
        let saved = getenv("OPAL_CACHE_DIR").map { String(cString: $0) }
        defer {
            if let saved { setenv("OPAL_CACHE_DIR", saved, 1) } else { unsetenv("OPAL_CACHE_DIR") }
        }
        setenv("OPAL_CACHE_DIR", "/tmp/opal-cache-test", 1)
        XCTAssertEqual(ProgramCache.defaultDirectory()?.path(percentEncoded: false), "/tmp/opal-cache-test/programs")
        unsetenv("OPAL_CACHE_DIR")
        XCTAssertTrue(ProgramCache.defaultDirectory()?.path(percentEncoded: false).hasSuffix(".cache/opal/programs") ?? false)
    }
}

final class KernelSourcesTests: XCTestCase {
    func testEmbeddedSourcesAndOverrideDirectory() throws {
        let saved = getenv(KernelSources.overrideVariable).map { String(cString: $0) }
        defer {
            if let saved { setenv(KernelSources.overrideVariable, saved, 1) } else { unsetenv(KernelSources.overrideVariable) }
        }
        unsetenv(KernelSources.overrideVariable)
        for name in KernelSources.names {
            XCTAssertTrue(try KernelSources.source(named: name).contains("__kernel"), name)
        }
        XCTAssertThrowsError(try KernelSources.source(named: "no_such_kernel_file")) { error in
            guard case .unknownKernel(let name, _)? = error as? KernelSourcesError else { return XCTFail("\(error)") }
            XCTAssertEqual(name, "no_such_kernel_file")
        }

        let directory = FileManager.default.temporaryDirectory.appending(path: "opal-kernels-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let text = "__kernel void override_marker_\(UInt32.random(in: 0...UInt32.max))() {}\n"
        try Data(text.utf8).write(to: directory.appending(path: "custom.cl"))
        try Data("not a kernel".utf8).write(to: directory.appending(path: "notes.txt"))
        setenv(KernelSources.overrideVariable, directory.path(percentEncoded: false), 1)
        XCTAssertEqual(try KernelSources.source(named: "custom"), text)
        XCTAssertEqual(KernelSources.names, ["custom"])
        XCTAssertThrowsError(try KernelSources.source(named: "notes"))
    }
}

