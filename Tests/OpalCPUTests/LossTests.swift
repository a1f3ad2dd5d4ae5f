import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

final class LossTests: CPUTestCase {
    let shapes = [(1, 1), (7, 33), (3, 1000), (33, 7), (128, 10)]

    func labels(rows: Int, columns: Int) -> [Int32] {
        (0..<rows).map { _ in Int32.random(in: 0..<Int32(columns), using: &random) }
    }

    /// logsumexp(x_r) − x_r[label_r] in Double.
    func referenceLoss(_ x: [Float], _ labels: [Int32], rows: Int, columns: Int) -> [Double] {
        (0..<rows).map { row in
            let logits = x[(row * columns)..<((row + 1) * columns)].map(Double.init)
            let maximum = logits.max()!
            let logSumExp = maximum + Foundation.log(logits.reduce(0) { $0 + Foundation.exp($1 - maximum) })
            return logSumExp - logits[Int(labels[row])]
        }
    }

    func testCrossEntropyMatchesDoubleReference() throws {
        for (rows, columns) in shapes {
            let offset: Float = Bool.random(using: &random) ? 500 : 0
            let x = uniform(rows * columns, in: -6...6).map { $0 + offset }
            let labels = labels(rows: rows, columns: columns)
            let losses = try poisoned(rows)
            try backend.crossEntropy(try buffer(x), try intBuffer(labels), losses, rows: rows, columns: columns)
            // With a large offset the Float logits themselves carry error ≈ ε·offset.
            assertClose(try read(losses), referenceLoss(x, labels, rows: rows, columns: columns),
                        relative: 1e-5, absolute: 1e-5 + 1e-6 * Double(offset),
                        "crossEntropy [\(rows), \(columns)] offset \(offset)")
        }
    }

    func testCrossEntropyHandCase() throws {
        // Two classes, logits [0, log 3]: softmax [1/4, 3/4]; label 1 → −log(3/4), label 0 → −log(1/4).
        let logits = try buffer([0, Float(Foundation.log(3.0)), 0, Float(Foundation.log(3.0))])
        let losses = try poisoned(2)
        try backend.crossEntropy(logits, try intBuffer([1, 0] as [Int32]), losses, rows: 2, columns: 2)
        assertClose(try read(losses), [-Foundation.log(0.75), -Foundation.log(0.25)], "hand case")
    }

    /// dx against central differences of scale · upstream · Σ_r loss_r, all in Double.
    func testCrossEntropyBackwardMatchesFiniteDifferences() throws {
        for (rows, columns) in shapes where rows * columns <= 3000 {
            let x = uniform(rows * columns, in: -4...4)
            let labels = labels(rows: rows, columns: columns)
            let upstream = Float.random(in: 0.5...2, using: &random)
            let scale = 1 / Float(rows)
            let dx = try poisoned(rows * columns)
            try backend.crossEntropyBackward(try buffer(x), try intBuffer(labels), try buffer([upstream]), dx,
                                             rows: rows, columns: columns, scale: scale)
            let factor = Double(scale) * Double(upstream)
            let h = 1e-3
            var expected = [Double](repeating: 0, count: rows * columns)
            for row in 0..<rows {
                let range = (row * columns)..<((row + 1) * columns)
                let rowLabels = [labels[row]]
                for c in 0..<columns {
                    var plus = Array(x[range]), minus = plus
                    plus[c] += Float(h); minus[c] -= Float(h)
                    let step = Double(plus[c]) - Double(minus[c])   // the step Float actually took
                    let lossPlus = referenceLoss(plus, rowLabels, rows: 1, columns: columns)[0]
                    let lossMinus = referenceLoss(minus, rowLabels, rows: 1, columns: columns)[0]
                    expected[row * columns + c] = factor * (lossPlus - lossMinus) / step
                }
            }
            assertClose(try read(dx), expected, relative: 1e-3, absolute: 1e-4,
                        "crossEntropyBackward [\(rows), \(columns)]")
        }
    }

    func testOutOfRangeLabelThrows() throws {
        let x = try buffer(uniform(6))
        XCTAssertThrowsError(try backend.crossEntropy(x, try intBuffer([0, 3] as [Int32]), try poisoned(2), rows: 2, columns: 3))
        XCTAssertThrowsError(try backend.crossEntropyBackward(x, try intBuffer([-1, 0] as [Int32]), try buffer([1]),
                                                              try poisoned(6), rows: 2, columns: 3, scale: 1))
    }
}
