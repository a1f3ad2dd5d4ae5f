import CVectorMath
import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// CVectorMath's packed GEMM (Sources/CVectorMath/packed_gemm.c, the CPU convolution's own SGEMM) against a
/// Double reference, on blocked operands with gaps between their rows and blocks: the gaps hold NaN, so a read
/// or write outside the matrix shows up. The convolutions built on it are checked in ConvTests.
final class PackedGemmTests: CPUTestCase {
    /// A blocked matrix of `rows` × `columns` inside a NaN-filled buffer: blocks of `blockWidth` columns,
    /// each row of a block `rowStride` ≥ blockWidth apart, blocks `blockStride` ≥ rows·rowStride apart.
    struct Layout {
        let rows: Int, columns: Int, blockWidth: Int, rowStride: Int, blockStride: Int
        var blocks: Int { (columns + blockWidth - 1) / blockWidth }
        var count: Int { (blocks - 1) * blockStride + (rows - 1) * rowStride + blockWidth + 1 }
        func index(_ r: Int, _ c: Int) -> Int { (c / blockWidth) * blockStride + r * rowStride + c % blockWidth }
    }

    func randomLayout(rows: Int, columns: Int) -> Layout {
        let blockWidth = Bool.random(using: &random) ? columns : Int.random(in: 1...max(1, columns), using: &random)
        let rowStride = blockWidth + Int.random(in: 0...3, using: &random)
        let blockStride = rows * rowStride + Int.random(in: 0...5, using: &random)
        return Layout(rows: rows, columns: columns, blockWidth: blockWidth, rowStride: rowStride,
                      blockStride: blockStride)
    }

    func testProductMatchesDoubleReference() throws {
        try XCTSkipIf(opal_packed_gemm_available() == 0, "the packed GEMM needs AVX-512 (OpenBLAS serves instead)")
        let columns = Int(OPAL_PACKED_COLUMNS)
        // Sizes around the register block (12 rows, 32 columns) and the DCGAN shape's 49-column planes.
        let shapes: [(m: Int, n: Int, k: Int)] = [(1, 1, 1), (12, 32, 5), (13, 33, 7), (11, 31, 1), (25, 98, 17),
                                                  (40, 49 * 3, 64), (5, 200, 3)]
        for (m, n, k) in shapes {
            for transposed in [false, true] {
                let a = uniform(m * k)
                // A as given to opal_pack_a: element (i, j) at a[i·k + j], or stored transposed (a[j·m + i]).
                let stored = transposed ? (0..<(k * m)).map { a[($0 % m) * k + $0 / m] } : a
                let packed = try poisoned(opal_packed_a_count(m, k))
                let panels = (m + Int(OPAL_PACKED_ROWS) - 1) / Int(OPAL_PACKED_ROWS)
                stored.withUnsafeBufferPointer { source in
                    let (rowStride, columnStride) = transposed ? (1, m) : (k, 1)
                    // In two calls, as the convolution splits the panels over threads.
                    opal_pack_a(source.baseAddress, rowStride, columnStride, m, k, 0, panels / 2, packed.floats)
                    opal_pack_a(source.baseAddress, rowStride, columnStride, m, k, panels / 2, panels, packed.floats)
                }
                let bLayout = randomLayout(rows: k, columns: n), cLayout = randomLayout(rows: m, columns: n)
                let bValues = uniform(k * n)
                var bStorage = [Float](repeating: .nan, count: bLayout.count)
                for r in 0..<k { for c in 0..<n { bStorage[bLayout.index(r, c)] = bValues[r * n + c] } }
                let b = try buffer(bStorage)
                let accumulate = Bool.random(using: &random)
                let initial = uniform(m * n)
                let c = try poisoned(cLayout.count)
                if accumulate { for r in 0..<m { for j in 0..<n { c.floats[cLayout.index(r, j)] = initial[r * n + j] } } }
                let bias = Bool.random(using: &random) ? uniform(m) : nil
                let scratch = try poisoned(k * columns)
                let tiles = (n + columns - 1) / columns, split = Int.random(in: 0...tiles, using: &random)
                let bMatrix = opal_blocked_matrix(base: b.floats, rowStride: bLayout.rowStride,
                                                  blockWidth: bLayout.blockWidth, blockStride: bLayout.blockStride)
                let cMatrix = opal_blocked_matrix(base: c.floats, rowStride: cLayout.rowStride,
                                                  blockWidth: cLayout.blockWidth, blockStride: cLayout.blockStride)
                let message = "m \(m) n \(n) k \(k), A\(transposed ? "ᵀ" : "") packed, B \(bLayout), C \(cLayout), "
                    + "bias \(bias != nil), accumulate \(accumulate)"
                let biasBuffer = try bias.map { try buffer($0) }
                for (begin, end) in [(0, split), (split, tiles)] {
                    XCTAssertEqual(opal_packed_gemm(m, n, k, packed.floats, bMatrix, cMatrix, biasBuffer?.floats,
                                                    accumulate ? 1 : 0, begin, end, scratch.floats), 1)
                }
                var expected = [Double](repeating: 0, count: m * n), actual = [Float](repeating: 0, count: m * n)
                for r in 0..<m {
                    for j in 0..<n {
                        var sum = (bias?[r]).map(Double.init) ?? 0
                        if accumulate { sum += Double(initial[r * n + j]) }
                        for l in 0..<k { sum += Double(a[r * k + l]) * Double(bValues[l * n + j]) }
                        expected[r * n + j] = sum
                        actual[r * n + j] = c.floats[cLayout.index(r, j)]
                    }
                }
                assertClose(actual, expected, relative: 1e-5, absolute: 1e-5, magnitude: Double(k), message)
                // Nothing outside C was written: the gaps still hold NaN.
                var inside = Set<Int>()
                for r in 0..<m { for j in 0..<n { inside.insert(cLayout.index(r, j)) } }
                let strays = (0..<cLayout.count).filter { !inside.contains($0) && !c.floats[$0].isNaN }
                XCTAssertEqual(strays, [], context("\(message): wrote outside C"))
            }
        }
    }

    func testUnavailableWithoutTheAVX512Level() throws {
        let level = opal_gather_level()
        defer { opal_gather_limit_level(level) }
        opal_gather_limit_level(1)
        XCTAssertEqual(opal_packed_gemm_available(), 0)
        let c = try poisoned(1)
        let one = try buffer([1])
        let matrix = opal_blocked_matrix(base: one.floats, rowStride: 1, blockWidth: 1, blockStride: 0)
        let target = opal_blocked_matrix(base: c.floats, rowStride: 1, blockWidth: 1, blockStride: 0)
        XCTAssertEqual(opal_packed_gemm(1, 1, 1, one.floats, matrix, target, nil, 0, 0, 1, one.floats), 0)
        XCTAssertTrue(c.floats[0].isNaN, "nothing is written when the packed GEMM is unavailable")
    }
}
