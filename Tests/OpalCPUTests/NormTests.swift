import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// Training-mode batch norm in Double: y, and per channel the mean and 1/√(biased variance + ε).
func referenceBatchNorm(_ x: [Double], gamma: [Double], beta: [Double], _ d: BatchNormDescriptor)
    -> (y: [Double], mean: [Double], inverseStandardDeviation: [Double]) {
    var y = [Double](repeating: .nan, count: d.count)
    var means: [Double] = [], inverses: [Double] = []
    let count = Double(d.batch * d.spatial)
    for c in 0..<d.channels {
        func index(_ n: Int, _ s: Int) -> Int { (n * d.channels + c) * d.spatial + s }
        var sum = 0.0
        for n in 0..<d.batch { for s in 0..<d.spatial { sum += x[index(n, s)] } }
        let mean = sum / count
        var squares = 0.0
        for n in 0..<d.batch { for s in 0..<d.spatial { squares += (x[index(n, s)] - mean) * (x[index(n, s)] - mean) } }
        let inverse = 1 / (squares / count + Double(d.epsilon)).squareRoot()
        for n in 0..<d.batch {
            for s in 0..<d.spatial { y[index(n, s)] = (x[index(n, s)] - mean) * inverse * gamma[c] + beta[c] }
        }
        means.append(mean)
        inverses.append(inverse)
    }
    return (y, means, inverses)
}

final class NormTests: CPUTestCase {
    /// (batch, channels, spatial): odd sizes, spatial 1 (the dense-layer case, whose sums run down columns of
    /// channels: also with a channel count that is no multiple of the vector width, split over the cores),
    /// a long channel.
    let shapes = [(1, 1, 1), (3, 4, 7), (1, 3, 33), (5, 2, 1), (2, 3, 1000), (7, 1, 13), (9, 37, 1), (67, 301, 1)]

    func testForwardMatchesDoubleReference() throws {
        for (batch, channels, spatial) in shapes {
            for offset: Float in [0, 1000] {
                let d = BatchNormDescriptor(batch: batch, channels: channels, spatial: spatial, epsilon: 1e-5)
                // The offset checks that the variance is not formed as E[x²] − E[x]² in Float.
                let x = uniform(d.count).map { $0 + offset }
                let gamma = uniform(channels, in: 0.5...2), beta = uniform(channels)
                let y = try poisoned(d.count), mean = try poisoned(channels), inverse = try poisoned(channels)
                try backend.batchNormForward(try buffer(x), try buffer(gamma), try buffer(beta), y, mean: mean,
                                             inverseStandardDeviation: inverse, descriptor: d)
                let expected = referenceBatchNorm(x.map(Double.init), gamma: gamma.map(Double.init),
                                                  beta: beta.map(Double.init), d)
                let what = "batch norm [\(batch), \(channels), \(spatial)] offset \(offset)"
                // x − mean in Float loses |x|·2⁻²⁴ of each value: relative to the offset for y.
                let tolerance = offset == 0 ? 1e-5 : 2e-4
                assertClose(try read(y), expected.y, relative: tolerance, absolute: tolerance, "\(what): y")
                assertClose(try read(mean), expected.mean, relative: 1e-6, absolute: 1e-6, "\(what): mean")
                assertClose(try read(inverse), expected.inverseStandardDeviation, relative: tolerance,
                            absolute: 1e-6, "\(what): invstd")
            }
        }
    }

    func testHandComputed() throws {
        // One channel holding 1, 3 (batch 2): mean 2, variance 1, invstd 1/√(1 + 0) = 1.
        let d = BatchNormDescriptor(batch: 2, channels: 1, spatial: 1, epsilon: 0)
        let y = try poisoned(2), mean = try poisoned(1), inverse = try poisoned(1)
        try backend.batchNormForward(try buffer([1, 3]), try buffer([2]), try buffer([0.5]), y, mean: mean,
                                     inverseStandardDeviation: inverse, descriptor: d)
        XCTAssertEqual(try read(y), [-1.5, 2.5])
        XCTAssertEqual(try read(mean), [2])
        XCTAssertEqual(try read(inverse), [1])
        // dy = (1, 0): dβ = 1, dγ = 1·(−1) = −1, dx = 2·1/2·(2·dy − 1 − x̂·(−1)) = (2 − 1 − 1, 0 − 1 + 1) = (0, 0).
        let dx = try poisoned(2), dgamma = try poisoned(1), dbeta = try poisoned(1)
        try backend.batchNormBackward(try buffer([1, 3]), try buffer([1, 0]), try buffer([2]), mean: mean,
                                      inverseStandardDeviation: inverse, dx, dgamma, dbeta, descriptor: d)
        XCTAssertEqual(try read(dbeta), [1])
        XCTAssertEqual(try read(dgamma), [-1])
        XCTAssertEqual(try read(dx), [0, 0])
    }

    /// dx, dγ, dβ against central differences of L = Σ dy·batchNorm(x, γ, β) in Double.
    func testBackwardMatchesFiniteDifferences() throws {
        for (batch, channels, spatial) in shapes where batch * channels * spatial <= 300 {
            let d = BatchNormDescriptor(batch: batch, channels: channels, spatial: spatial, epsilon: 1e-3)
            let x = uniform(d.count), dy = uniform(d.count)
            let gamma = uniform(channels, in: 0.5...2), beta = uniform(channels)
            let y = try poisoned(d.count), mean = try poisoned(channels), inverse = try poisoned(channels)
            let xBuffer = try buffer(x), gammaBuffer = try buffer(gamma)
            try backend.batchNormForward(xBuffer, gammaBuffer, try buffer(beta), y, mean: mean,
                                         inverseStandardDeviation: inverse, descriptor: d)
            let dx = try poisoned(d.count), dgamma = try poisoned(channels), dbeta = try poisoned(channels)
            try backend.batchNormBackward(xBuffer, try buffer(dy), gammaBuffer, mean: mean,
                                          inverseStandardDeviation: inverse, dx, dgamma, dbeta, descriptor: d)
            let (x64, gamma64, beta64) = (x.map(Double.init), gamma.map(Double.init), beta.map(Double.init))
            func loss(_ x: [Double], _ gamma: [Double], _ beta: [Double]) -> Double {
                zip(referenceBatchNorm(x, gamma: gamma, beta: beta, d).y, dy).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
            let what = "batch norm backward [\(batch), \(channels), \(spatial)]"
            assertDx(try read(dx), finiteDifferences(x64, step: 1e-4) { loss($0, gamma64, beta64) }, gamma: gamma,
                     inverses: try read(inverse).map(Double.init), dy: dy, d, relative: 1e-3, absolute: 1e-4, "\(what): dx")
            assertClose(try read(dgamma), finiteDifferences(gamma64, step: 1e-4) { loss(x64, $0, beta64) },
                        relative: 1e-4, absolute: 1e-5, "\(what): dγ")
            assertClose(try read(dbeta), finiteDifferences(beta64, step: 1e-4) { loss(x64, gamma64, $0) },
                        relative: 1e-4, absolute: 1e-5, "\(what): dβ")
        }
    }

    /// The backward formula in Double on larger shapes (where finite differences would be slow).
    func testBackwardMatchesDoubleFormula() throws {
        for (batch, channels, spatial) in shapes {
            let d = BatchNormDescriptor(batch: batch, channels: channels, spatial: spatial, epsilon: 1e-5)
            let x = uniform(d.count), dy = uniform(d.count), gamma = uniform(channels, in: 0.5...2)
            let y = try poisoned(d.count), mean = try poisoned(channels), inverse = try poisoned(channels)
            let xBuffer = try buffer(x), gammaBuffer = try buffer(gamma)
            try backend.batchNormForward(xBuffer, gammaBuffer, try buffer(uniform(channels)), y, mean: mean,
                                         inverseStandardDeviation: inverse, descriptor: d)
            let dx = try poisoned(d.count), dgamma = try poisoned(channels), dbeta = try poisoned(channels)
            try backend.batchNormBackward(xBuffer, try buffer(dy), gammaBuffer, mean: mean,
                                          inverseStandardDeviation: inverse, dx, dgamma, dbeta, descriptor: d)
            let means = try read(mean).map(Double.init), inverses = try read(inverse).map(Double.init)
            var expectedDx = [Double](repeating: 0, count: d.count)
            var expectedGamma = [Double](repeating: 0, count: channels), expectedBeta = expectedGamma
            let count = Double(batch * spatial)
            for c in 0..<channels {
                let rows = (0..<batch).map { ($0 * channels + c) * spatial }
                for row in rows {
                    for s in 0..<spatial {
                        let normalized = (Double(x[row + s]) - means[c]) * inverses[c]
                        expectedBeta[c] += Double(dy[row + s])
                        expectedGamma[c] += Double(dy[row + s]) * normalized
                    }
                }
                for row in rows {
                    for s in 0..<spatial {
                        let normalized = (Double(x[row + s]) - means[c]) * inverses[c]
                        expectedDx[row + s] = Double(gamma[c]) * inverses[c] / count
                            * (count * Double(dy[row + s]) - expectedBeta[c] - normalized * expectedGamma[c])
                    }
                }
            }
            let what = "batch norm backward [\(batch), \(channels), \(spatial)]"
            assertDx(try read(dx), expectedDx, gamma: gamma, inverses: inverses, dy: dy, d, relative: 1e-4, absolute: 1e-5,
                     "\(what): dx")
            assertClose(try read(dgamma), expectedGamma, relative: 1e-5, absolute: 1e-5, "\(what): dγ")
            assertClose(try read(dbeta), expectedBeta, relative: 1e-5, absolute: 1e-5, "\(what): dβ")
        }
    }

    /// dx is a difference of terms of size |γ·invstd·dy|, which may cancel (M = 1 gives dx = 0 exactly):
    /// the absolute error is judged against the largest such term, not against |dx|.
    func assertDx(_ actual: [Float], _ expected: [Double], gamma: [Float], inverses: [Double], dy: [Float],
                  _ d: BatchNormDescriptor, relative: Double, absolute: Double, _ message: String,
                  file: StaticString = #filePath, line: UInt = #line) {
        let terms = dy.indices.map { index -> Double in
            let c = (index / d.spatial) % d.channels
            return abs(Double(gamma[c]) * inverses[c] * Double(dy[index]))
        }
        let expectedScale = max(expected.map(abs).max() ?? 0, 1e-30)
        let termScale = max(terms.max() ?? 0, expectedScale)
        assertClose(actual, expected, relative: relative, absolute: absolute * termScale / expectedScale, message,
                    file: file, line: line)
    }

    func testInvalidDescriptorThrows() throws {
        let buffer = try poisoned(16)
        for d in [BatchNormDescriptor(batch: 0, channels: 1, spatial: 1, epsilon: 1e-5),
                  BatchNormDescriptor(batch: 1, channels: 1, spatial: 1, epsilon: -1),
                  BatchNormDescriptor(batch: 2, channels: 3, spatial: 5, epsilon: 1e-5)] {  // 30 > 16 elements
            XCTAssertThrowsError(try backend.batchNormForward(buffer, buffer, buffer, buffer, mean: buffer,
                                                              inverseStandardDeviation: buffer, descriptor: d))
            XCTAssertThrowsError(try backend.batchNormBackward(buffer, buffer, buffer, mean: buffer,
                                                               inverseStandardDeviation: buffer, buffer, buffer, buffer,
                                                               descriptor: d))
        }
    }
}
