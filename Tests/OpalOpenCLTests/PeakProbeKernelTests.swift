import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/peak.cl computes what its contract says, so the FLOPs and bytes it is credited with are really
/// done: checked against a Double reference at counts that are not multiples of the work-group size, with
/// NaN-poisoned outputs.
final class PeakProbeKernelTests: KernelTestCase {
    func testMultiplyAddChainsMatchDoubleReference() throws {
        let count = Int.random(in: 200...333, using: &random), iterations = Int.random(in: 3...40, using: &random)
        let a = Float.random(in: 0.9...0.999, using: &random), b = Float.random(in: -0.01...0.01, using: &random)
        let output = try gpu.allocate(count: count + 7)
        try gpu.write([Float](repeating: .nan, count: count + 7), to: output)
        try gpu.peakMultiplyAdd(output, count: count, iterations: iterations, a: a, b: b)
        let got = try gpu.readFloats(output, count: count + 7)
        for g in 0..<count {
            var sum = 0.0
            for chain in 0..<8 {
                for lane in 0..<16 {
                    var x = Double(Float(16 * g + lane) * 1e-6) + Double(chain)
                    for _ in 0..<iterations { x = x * Double(a) + Double(b) }
                    sum += x
                }
            }
            XCTAssertEqual(Double(got[g]), sum, accuracy: 1e-4 * max(1, abs(sum)),
                           context("work-item \(g) of \(count), \(iterations) iterations, a \(a), b \(b)"))
        }
        XCTAssertTrue(got[count...].allSatisfy(\.isNaN), context("nothing written past count"))
        XCTAssertThrowsError(try gpu.peakMultiplyAdd(output, count: 0, iterations: 1, a: 1, b: 0))
    }

    func testCopyCopiesExactlyCountFloat4s() throws {
        let count4 = Int.random(in: 100...260, using: &random)
        let values = uniform(4 * count4 + 4)
        let x = try gpu.allocate(count: values.count), y = try gpu.allocate(count: values.count)
        try gpu.write(values, to: x)
        try gpu.write([Float](repeating: .nan, count: values.count), to: y)
        try gpu.peakCopy(x, y, count4: count4)
        let got = try gpu.readFloats(y, count: values.count)
        XCTAssertEqual(Array(got[..<(4 * count4)]), Array(values[..<(4 * count4)]), context("copy of \(count4) float4s"))
        XCTAssertTrue(got[(4 * count4)...].allSatisfy(\.isNaN), context("nothing written past count"))
    }
}
