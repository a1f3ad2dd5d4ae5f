import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// Base class of the CPU backend tests: a fresh seed per test (printed in every failure message;
/// set OPAL_TEST_SEED to replay one), a backend, and helpers for buffers and comparisons.
class CPUTestCase: XCTestCase {
    let backend = CPUBackend()
    private(set) var seed: UInt64 = 0
    var random = SeededGenerator(seed: 0)

    /// Sizes that are not multiples of any vector width or tile.
    let awkwardSizes = [1, 7, 33, 1000]

    override func setUp() {
        super.setUp()
        if let text = ProcessInfo.processInfo.environment["OPAL_TEST_SEED"], let value = UInt64(text) {
            seed = value
        } else {
            seed = UInt64.random(in: 0...UInt64.max)
        }
        random = SeededGenerator(seed: seed)
    }

    /// "seed N" plus a context, for failure messages.
    func context(_ text: String) -> String { "\(text) (seed \(seed); replay with OPAL_TEST_SEED=\(seed))" }

    func uniform(_ count: Int, in range: ClosedRange<Float> = -2...2) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &random) }
    }

    func buffer(_ values: [Float]) throws -> CPUBuffer {
        let buffer = try backend.allocate(count: values.count) as! CPUBuffer
        try backend.write(values, to: buffer)
        return buffer
    }

    func intBuffer(_ values: [Int32]) throws -> CPUBuffer {
        let buffer = try backend.allocate(count: values.count) as! CPUBuffer
        try backend.write(values, to: buffer)
        return buffer
    }

    /// A buffer of `count` NaNs, so an element the op forgets to write shows up.
    func poisoned(_ count: Int) throws -> CPUBuffer {
        let buffer = try backend.allocate(count: count) as! CPUBuffer
        try backend.fill(buffer, value: .nan, count: count)
        return buffer
    }

    func read(_ buffer: CPUBuffer) throws -> [Float] { try backend.readFloats(buffer, count: buffer.count) }

    /// Checks |actual − expected| ≤ relative·|expected| + absolute·scale elementwise, where scale is
    /// the largest |expected| (at least 1e-30), so the tolerance follows the reference's magnitude.
    /// NaN in `actual` fails unless `expected` is NaN there too.
    /// `magnitude`: the size of the terms the values were computed from, when cancellation can make the
    /// values much smaller than them (float rounding then scales with the terms, not the result).
    func assertClose(_ actual: [Float], _ expected: [Double], relative: Double = 1e-5, absolute: Double = 1e-6,
                     magnitude: Double = 1e-30, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, context("\(message): count"), file: file, line: line)
        let scale = max(expected.lazy.filter { $0.isFinite }.map(Swift.abs).max() ?? 0, magnitude)
        var failures = 0
        for (index, (a, e)) in zip(actual, expected).enumerated() {
            let ok: Bool
            if e.isNaN {
                ok = a.isNaN
            } else if e.isInfinite {
                ok = Double(a) == e
            } else {
                ok = !a.isNaN && Swift.abs(Double(a) - e) <= relative * Swift.abs(e) + absolute * scale
            }
            if !ok {
                failures += 1
                if failures <= 5 {
                    XCTFail(context("\(message): element \(index) is \(a), expected \(e)"), file: file, line: line)
                }
            }
        }
        if failures > 5 { XCTFail(context("\(message): \(failures) elements differ"), file: file, line: line) }
    }

    func assertClose(_ actual: [Float], _ expected: [Float], relative: Double = 1e-5, absolute: Double = 1e-6,
                     magnitude: Double = 1e-30, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        assertClose(actual, expected.map(Double.init), relative: relative, absolute: absolute, magnitude: magnitude, message,
                    file: file, line: line)
    }
}

/// A buffer of some other backend, to check that the CPU backend refuses it.
final class ForeignBuffer: DeviceBuffer {
    let count = 16
}
