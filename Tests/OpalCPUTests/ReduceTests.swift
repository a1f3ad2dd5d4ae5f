import OpalCore
import XCTest
@testable import OpalCPU

final class ReduceTests: CPUTestCase {
    let layouts: [ReduceLayout] = [
        ReduceLayout(outer: 1, size: 1, inner: 1), ReduceLayout(outer: 1, size: 1000, inner: 1),
        ReduceLayout(outer: 7, size: 33, inner: 1), ReduceLayout(outer: 33, size: 7, inner: 1),
        ReduceLayout(outer: 1, size: 128, inner: 33),      // bias gradient: sum over the batch
        ReduceLayout(outer: 3, size: 7, inner: 5), ReduceLayout(outer: 2, size: 1, inner: 1000),
        ReduceLayout(outer: 5, size: 1000, inner: 2), ReduceLayout(outer: 3000, size: 100, inner: 1),
    ]

    /// y[o, i] = reduce_s x[o, s, i] in Double.
    func reference(_ op: ReduceOp, _ x: [Float], _ layout: ReduceLayout) -> [Double] {
        var y = [Double](repeating: op == .sum ? 0 : -.infinity, count: layout.outer * layout.inner)
        for o in 0..<layout.outer {
            for s in 0..<layout.size {
                for i in 0..<layout.inner {
                    let value = Double(x[(o * layout.size + s) * layout.inner + i])
                    y[o * layout.inner + i] = op == .sum ? y[o * layout.inner + i] + value
                                                         : Swift.max(y[o * layout.inner + i], value)
                }
            }
        }
        return y
    }

    func testReduceMatchesDoubleReference() throws {
        for layout in layouts {
            for op in [ReduceOp.sum, .max] {
                let x = uniform(layout.outer * layout.size * layout.inner)
                let y = try poisoned(layout.outer * layout.inner)
                try backend.reduce(op, try buffer(x), y, layout: layout)
                // A float sum of n terms with |x| ≤ 2 stays well within 1e-6 · Σ|x| ≤ 2e-6 · n.
                let budget = op == .sum ? 2e-6 * Double(layout.size) : 0
                let expected = reference(op, x, layout)
                let scale = max(expected.map(Swift.abs).max()!, 1e-30)
                assertClose(try read(y), expected, relative: 1e-6, absolute: budget / scale, "\(op) over \(layout)")
            }
        }
    }

    func testEmptyReductionGivesIdentityElement() throws {
        let y = try poisoned(6)
        try backend.reduce(.sum, try poisoned(1), y, layout: ReduceLayout(outer: 2, size: 0, inner: 3))
        XCTAssertEqual(try read(y), [Float](repeating: 0, count: 6))
        try backend.reduce(.max, try poisoned(1), y, layout: ReduceLayout(outer: 2, size: 0, inner: 3))
        XCTAssertEqual(try read(y), [Float](repeating: -.infinity, count: 6))
    }

    func testMaxPropagatesNaN() throws {
        let y = try poisoned(2)
        try backend.reduce(.max, try buffer([1, .nan, 3, 4, 5, 6, 7, 8]), y, layout: ReduceLayout(outer: 2, size: 4, inner: 1))
        let result = try read(y)
        XCTAssertTrue(result[0].isNaN)
        XCTAssertEqual(result[1], 8)
    }

    func testArgmaxMatchesReferenceAndPicksTheFirstMaximum() throws {
        for layout in layouts {
            // Small integers make ties common, so "first index of the maximum" is exercised.
            let x = (0..<(layout.outer * layout.size * layout.inner)).map { _ in Float(Int.random(in: 0...5, using: &random)) }
            let y = try backend.allocate(count: layout.outer * layout.inner)
            try backend.fill(y, value: .nan, count: layout.outer * layout.inner)
            try backend.argmax(try buffer(x), y, layout: layout)
            var expected = [Int32](repeating: -1, count: layout.outer * layout.inner)
            for o in 0..<layout.outer {
                for i in 0..<layout.inner {
                    var best = -Float.infinity
                    for s in 0..<layout.size where x[(o * layout.size + s) * layout.inner + i] > best {
                        best = x[(o * layout.size + s) * layout.inner + i]
                        expected[o * layout.inner + i] = Int32(s)
                    }
                }
            }
            XCTAssertEqual(try backend.readInts(y, count: expected.count), expected, context("argmax over \(layout)"))
        }
    }

    func testArgmaxHandCase() throws {
        let y = try backend.allocate(count: 3)
        // x: [2, 2, 3] → argmax over the middle axis for each (o, i)... here [outer 1, size 2, inner 3].
        try backend.argmax(try buffer([1, 5, -1, 2, 5, -3]), y, layout: ReduceLayout(outer: 1, size: 2, inner: 3))
        XCTAssertEqual(try backend.readInts(y, count: 3), [1, 0, 0])
    }
}
