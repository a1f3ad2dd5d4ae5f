import COpenCL
import XCTest
@testable import OpenCLKit

/// Shared device setup: the first device of the first platform (PoCL on CI).
private func makeContext() throws -> CLContext {
    try CLContext(device: CLPlatform.defaultDevice())
}

/// y = a·x + b on `n` elements; the reference is the same formula on the host.
private let affineSource = """
__kernel void affine(__global const float* x, __global float* y, const float a, const float b, const int n) {
    int i = get_global_id(0);
    if (i < n) { y[i] = a * x[i] + b; }
}
"""

final class PlatformAndDeviceTests: XCTestCase {
    func testEnumeratesPlatformsAndDevicesWithProperties() throws {
        let platforms = try CLPlatform.all()
        XCTAssertFalse(platforms.isEmpty, "PoCL should provide at least one platform")
        var deviceCount = 0
        for platform in platforms {
            XCTAssertFalse(platform.name.isEmpty)
            XCTAssertFalse(platform.vendor.isEmpty)
            XCTAssertTrue(platform.version.hasPrefix("OpenCL"), platform.version)
            for device in try platform.devices() {
                deviceCount += 1
                XCTAssertEqual(device.platformName, platform.name)
                XCTAssertFalse(device.name.isEmpty)
                XCTAssertFalse(device.vendor.isEmpty)
                XCTAssertTrue(device.version.hasPrefix("OpenCL"), device.version)
                XCTAssertFalse(device.driverVersion.isEmpty)
                XCTAssertTrue(device.openCLCVersion.hasPrefix("OpenCL C"), device.openCLCVersion)
                XCTAssertGreaterThan(device.computeUnits, 0)
                XCTAssertGreaterThan(device.maxClockMHz, 0)
                XCTAssertGreaterThan(device.globalMemoryBytes, 0)
                XCTAssertGreaterThan(device.localMemoryBytes, 0)
                XCTAssertGreaterThan(device.maxAllocationBytes, 0)
                XCTAssertLessThanOrEqual(device.maxAllocationBytes, device.globalMemoryBytes)
                XCTAssertGreaterThan(device.maxWorkGroupSize, 0)
                XCTAssertFalse(device.extensions.isEmpty)
                XCTAssertTrue(device.extensions.allSatisfy { !$0.isEmpty && !$0.contains(" ") })
                XCTAssertFalse(device.description.isEmpty)
            }
        }
        XCTAssertGreaterThan(deviceCount, 0)
    }
}

final class KernelRunTests: XCTestCase {
    func testAffineKernelMatchesHostReference() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var generator = SplitMix64(seed: seed)
        let context = try makeContext()
        let queue = try CLCommandQueue(context: context)
        let program = try CLProgram(context: context, source: affineSource)
        try program.build(options: "")
        let kernel = try CLKernel(program: program, name: "affine")

        for n in [1, 7, 1000] {
            let x = (0..<n).map { _ in Float.random(in: -10...10, using: &generator) }
            let a = Float.random(in: -3...3, using: &generator)
            let b = Float.random(in: -3...3, using: &generator)
            let input = try CLBuffer(context: context, byteCount: n * 4)
            let output = try CLBuffer(context: context, byteCount: n * 4)
            try x.withUnsafeBytes { try queue.write(input, from: $0) }
            try queue.fill(output, with: .nan, byteCount: n * 4)
            try kernel.setArgument(0, input)
            try kernel.setArgument(1, output)
            try kernel.setArgument(2, a)
            try kernel.setArgument(3, b)
            try kernel.setArgument(4, Int32(n))
            // Round the launch up to a multiple of 64 so the bounds check in the kernel matters.
            let local = 64
            try queue.enqueue(kernel, global: [(n + local - 1) / local * local], local: [local])
            var y = [Float](repeating: 0, count: n)
            try y.withUnsafeMutableBytes { try queue.read(output, into: $0) }
            for i in 0..<n {
                let expected = a * x[i] + b
                let tolerance = 1e-6 * max(1, abs(expected))
                XCTAssertEqual(y[i], expected, accuracy: tolerance, "n=\(n) i=\(i) seed=\(seed)")
            }
        }
    }

    func testCopyAndPartialWriteRead() throws {
        let context = try makeContext()
        let queue = try CLCommandQueue(context: context, profiling: false)
        let values: [Float] = (0..<33).map { Float($0) * 0.5 }
        let source = try CLBuffer(context: context, byteCount: 33 * 4)
        let destination = try CLBuffer(context: context, byteCount: 33 * 4)
        try queue.fill(destination, with: .nan, byteCount: 33 * 4)
        try values.withUnsafeBytes { try queue.write(source, from: $0) }
        try queue.copy(from: source, to: destination, sourceOffset: 4, destinationOffset: 8, byteCount: 10 * 4)
        var result = [Float](repeating: 0, count: 33)
        try result.withUnsafeMutableBytes { try queue.read(destination, into: $0) }
        XCTAssertTrue(result[0].isNaN && result[1].isNaN && result[12].isNaN)
        XCTAssertEqual(Array(result[2..<12]), Array(values[1..<11]))
        // Out-of-range access is an error, not memory corruption.
        XCTAssertThrowsError(try result.withUnsafeMutableBytes { try queue.read(source, offset: 8, into: $0) })
    }

    func testZeroByteBufferIsValid() throws {
        let context = try makeContext()
        let buffer = try CLBuffer(context: context, byteCount: 0)
        XCTAssertEqual(buffer.byteCount, 0)
        XCTAssertThrowsError(try CLBuffer(context: context, byteCount: -1))
    }

    func testArgumentSizeMismatchIsNamedError() throws {
        let context = try makeContext()
        let program = try CLProgram(context: context, source: affineSource)
        try program.build(options: "")
        let kernel = try CLKernel(program: program, name: "affine")
        XCTAssertThrowsError(try kernel.setArgument(4, 5 as Int)) { error in
            XCTAssertEqual((error as? CLError)?.code, CL_INVALID_ARG_SIZE)
            XCTAssertTrue("\(error)".contains("CL_INVALID_ARG_SIZE"), "\(error)")
        }
        XCTAssertThrowsError(try CLKernel(program: program, name: "missing")) { error in
            XCTAssertEqual((error as? CLError)?.code, CL_INVALID_KERNEL_NAME)
        }
        XCTAssertGreaterThan(try kernel.maxWorkGroupSize(device: context.device), 0)
        XCTAssertGreaterThan(try kernel.preferredWorkGroupSizeMultiple(device: context.device), 0)
    }

    func testProgramBinaryRoundTrip() throws {
        let context = try makeContext()
        let program = try CLProgram(context: context, source: affineSource)
        try program.build(options: "-cl-fast-relaxed-math")
        let binary = try program.binary()
        XCTAssertFalse(binary.isEmpty)
        let reloaded = try CLProgram(context: context, binary: binary)
        try reloaded.build(options: "-cl-fast-relaxed-math")
        let kernel = try CLKernel(program: reloaded, name: "affine")
        let queue = try CLCommandQueue(context: context)
        let x: [Float] = [1, 2, 3]
        let input = try CLBuffer(context: context, byteCount: 12)
        let output = try CLBuffer(context: context, byteCount: 12)
        try x.withUnsafeBytes { try queue.write(input, from: $0) }
        try queue.fill(output, with: .nan, byteCount: 12)
        try kernel.setArgument(0, input)
        try kernel.setArgument(1, output)
        try kernel.setArgument(2, Float(2))
        try kernel.setArgument(3, Float(1))
        try kernel.setArgument(4, Int32(3))
        try queue.enqueue(kernel, global: [3])
        var y = [Float](repeating: 0, count: 3)
        try y.withUnsafeMutableBytes { try queue.read(output, into: $0) }
        XCTAssertEqual(y, [3, 5, 7])
    }
}

final class BuildFailureTests: XCTestCase {
    func testBuildFailureCarriesLogWithErrorLine() throws {
        let context = try makeContext()
        let source = """
        __kernel void broken(__global float* y) {
            y[0] = undeclared_identifier_xyz;
        }
        """
        let program = try CLProgram(context: context, source: source)
        XCTAssertThrowsError(try program.build(options: "-DFOO=1")) { error in
            guard case .buildFailed(let log, let options)? = error as? CLError else {
                return XCTFail("expected buildFailed, got \(error)")
            }
            XCTAssertEqual(options, "-DFOO=1")
            XCTAssertTrue(log.contains("undeclared_identifier_xyz"), log)
            XCTAssertTrue(log.contains(":2:"), "log should name line 2: \(log)")
            XCTAssertTrue("\(error)".contains("undeclared_identifier_xyz"))
        }
    }
}

final class ErrorNameTests: XCTestCase {
    func testEveryStatusCodeOfClHeaderIsNamed() {
        let codes: [Int32] = Array(0...19).map { -$0 } + Array(30...72).map { -$0 } + Array(1000...1013).map { -$0 }
        for code in codes {
            let name = CLError.name(of: code)
            XCTAssertTrue(name.hasPrefix("CL_") && name != "CL_UNKNOWN_ERROR", "code \(code) → \(name)")
        }
        XCTAssertEqual(CLError.name(of: 0), "CL_SUCCESS")
        XCTAssertEqual(CLError.name(of: -11), "CL_BUILD_PROGRAM_FAILURE")
        XCTAssertEqual(CLError.name(of: -30), "CL_INVALID_VALUE")
        XCTAssertEqual(CLError.name(of: -1001), "CL_PLATFORM_NOT_FOUND_KHR")
        XCTAssertEqual(CLError.name(of: -25), "CL_UNKNOWN_ERROR")
        // Names are unique.
        XCTAssertEqual(Set(codes.map(CLError.name(of:))).count, codes.count)
    }

    func testDescriptionsNameOperationAndCode() {
        let error = CLError.status(code: -11, operation: "clBuildProgram")
        XCTAssertEqual(error.description, "clBuildProgram failed: CL_BUILD_PROGRAM_FAILURE (-11)")
        XCTAssertEqual(error.code, -11)
        XCTAssertEqual(CLError.noPlatform.code, -1001)
        XCTAssertNil(CLError.invalidArgument("x").code)
        let memory = CLError.outOfMemory(requestedBytes: 3 << 30, cachedBytes: 0, liveBytes: 1 << 20,
                                         deviceBytes: 8 << 30)
        XCTAssertTrue(memory.description.contains("3.0 GiB"), memory.description)
        XCTAssertTrue(memory.description.contains("\(3 << 30)"), memory.description)
    }
}

final class QueueAndEventTests: XCTestCase {
    func testProfilingTimesAreOrdered() throws {
        let context = try makeContext()
        let queue = try CLCommandQueue(context: context, profiling: true)
        let program = try CLProgram(context: context, source: affineSource)
        try program.build(options: "")
        let kernel = try CLKernel(program: program, name: "affine")
        let n = 4097
        let input = try CLBuffer(context: context, byteCount: n * 4)
        let output = try CLBuffer(context: context, byteCount: n * 4)
        try queue.fill(input, with: 1, byteCount: n * 4)
        try kernel.setArgument(0, input)
        try kernel.setArgument(1, output)
        try kernel.setArgument(2, Float(2))
        try kernel.setArgument(3, Float(1))
        try kernel.setArgument(4, Int32(n))
        let before = try queue.marker()
        let event = try XCTUnwrap(try queue.enqueue(kernel, global: [n], wantsEvent: true))
        let after = try queue.marker()
        XCTAssertNil(try queue.enqueue(kernel, global: [n]))
        try event.wait()
        try after.wait()
        let queued = try event.profilingNanoseconds(.queued)
        let submitted = try event.profilingNanoseconds(.submitted)
        let start = try event.profilingNanoseconds(.start)
        let end = try event.profilingNanoseconds(.end)
        XCTAssertLessThanOrEqual(queued, submitted)
        XCTAssertLessThanOrEqual(submitted, start)
        XCTAssertLessThanOrEqual(start, end)
        XCTAssertGreaterThan(end, 0)
        XCTAssertLessThanOrEqual(try before.profilingNanoseconds(.end), try after.profilingNanoseconds(.end))
        XCTAssertEqual(try event.durationNanoseconds(), end - start)
    }

    func testProfilingUnavailableWithoutProfilingQueue() throws {
        let context = try makeContext()
        let queue = try CLCommandQueue(context: context, profiling: false)
        let event = try queue.marker()
        try event.wait()
        XCTAssertThrowsError(try event.profilingNanoseconds(.start)) { error in
            XCTAssertEqual((error as? CLError)?.code, CL_PROFILING_INFO_NOT_AVAILABLE)
        }
    }

    func testHostWaitCountCountsReadsFinishAndEventWaits() throws {
        let context = try makeContext()
        let queue = try CLCommandQueue(context: context)
        let buffer = try CLBuffer(context: context, byteCount: 16)
        XCTAssertEqual(queue.hostWaitCount, 0)
        try [Float](repeating: 1, count: 4).withUnsafeBytes { try queue.write(buffer, from: $0) }
        try queue.fill(buffer, with: 2, byteCount: 16)
        try queue.flush()
        XCTAssertEqual(queue.hostWaitCount, 0, "writes, fills and flush do not count")
        var values = [Float](repeating: 0, count: 4)
        try values.withUnsafeMutableBytes { try queue.read(buffer, into: $0) }
        XCTAssertEqual(values, [2, 2, 2, 2])
        XCTAssertEqual(queue.hostWaitCount, 1)
        try queue.finish()
        XCTAssertEqual(queue.hostWaitCount, 2)
        try queue.marker().wait()
        XCTAssertEqual(queue.hostWaitCount, 3)
    }

    func testEnqueueRejectsBadSizes() throws {
        let context = try makeContext()
        let queue = try CLCommandQueue(context: context)
        let program = try CLProgram(context: context, source: affineSource)
        try program.build(options: "")
        let kernel = try CLKernel(program: program, name: "affine")
        XCTAssertThrowsError(try queue.enqueue(kernel, global: []))
        XCTAssertThrowsError(try queue.enqueue(kernel, global: [0]))
        XCTAssertThrowsError(try queue.enqueue(kernel, global: [100], local: [64]))
        XCTAssertThrowsError(try queue.enqueue(kernel, global: [64, 1], local: [64]))
    }
}

/// Small deterministic generator so a failing seed can be replayed.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
