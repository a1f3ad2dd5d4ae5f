import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// Softmax or log-softmax of one row in Double.
func referenceSoftmax(_ x: [Double], log: Bool) -> [Double] {
    let maximum = x.max()!
    let total = x.reduce(0) { $0 + Foundation.exp($1 - maximum) }
    return x.map { log ? $0 - maximum - Foundation.log(total) : Foundation.exp($0 - maximum) / total }
}

final class SoftmaxTests: CPUTestCase {
    let shapes = [(1, 1), (7, 33), (3, 1000), (33, 7), (1, 2)]

    func testSoftmaxMatchesDoubleReference() throws {
        for (rows, columns) in shapes {
            for log in [false, true] {
                // A large offset checks that the row maximum is subtracted (e^1000 overflows).
                let offset: Float = Bool.random(using: &random) ? 1000 : 0
                let x = uniform(rows * columns, in: -5...5).map { $0 + offset }
                let y = try poisoned(rows * columns)
                try backend.softmax(try buffer(x), y, rows: rows, columns: columns, log: log)
                var expected: [Double] = []
                for row in 0..<rows {
                    expected += referenceSoftmax(x[(row * columns)..<((row + 1) * columns)].map(Double.init), log: log)
                }
                // log-softmax near 1000 loses the digits of the offset in Float: tolerance relative to |x|.
                assertClose(try read(y), expected, relative: 1e-5, absolute: log ? 2e-6 * Double(1 + offset) / 5 : 1e-6,
                            "softmax log \(log) [\(rows), \(columns)] offset \(offset)")
            }
        }
    }

    func testSoftmaxInPlace() throws {
        let x = uniform(7 * 33)
        let buffer = try buffer(x)
        try backend.softmax(buffer, buffer, rows: 7, columns: 33, log: false)
        var expected: [Double] = []
        for row in 0..<7 { expected += referenceSoftmax(x[(row * 33)..<((row + 1) * 33)].map(Double.init), log: false) }
        assertClose(try read(buffer), expected, "softmax in place")
    }

    /// dx from softmaxBackward against central differences of L(x) = Σ dy ⊙ softmax(x) in Double.
    func testSoftmaxBackwardMatchesFiniteDifferences() throws {
        for (rows, columns) in shapes where rows * columns <= 3000 {
            for log in [false, true] {
                let x = uniform(rows * columns, in: -3...3)
                let dy = uniform(rows * columns)
                let y = try poisoned(rows * columns)
                try backend.softmax(try buffer(x), y, rows: rows, columns: columns, log: log)
                let dx = try poisoned(rows * columns)
                try backend.softmaxBackward(y, try buffer(dy), dx, rows: rows, columns: columns, log: log)
                var expected = [Double](repeating: 0, count: rows * columns)
                let h = 1e-5
                for row in 0..<rows {
                    let range = (row * columns)..<((row + 1) * columns)
                    let upstream = dy[range].map(Double.init)
                    func loss(_ values: [Double]) -> Double {
                        zip(referenceSoftmax(values, log: log), upstream).reduce(0) { $0 + $1.0 * $1.1 }
                    }
                    let xRow = x[range].map(Double.init)
                    for c in 0..<columns {
                        var plus = xRow, minus = xRow
                        plus[c] += h; minus[c] -= h
                        expected[row * columns + c] = (loss(plus) - loss(minus)) / (2 * h)
                    }
                }
                assertClose(try read(dx), expected, relative: 1e-4, absolute: 1e-4,
                            "softmaxBackward log \(log) [\(rows), \(columns)]")
            }
        }
    }

    func testSoftmaxHandCase() throws {
        let y = try poisoned(2)
        try backend.softmax(try buffer([0, Float(Foundation.log(3.0))]), y, rows: 1, columns: 2, log: false)
        assertClose(try read(y), [0.25, 0.75], "softmax [0, log 3]")
        try backend.softmax(try buffer([0, Float(Foundation.log(3.0))]), y, rows: 1, columns: 2, log: true)
        assertClose(try read(y), [Foundation.log(0.25), Foundation.log(0.75)], "log-softmax [0, log 3]")
    }
}
