import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

// Double references for the layer normalisation of Sources/OpalCPU/Norm.swift: statistics in two passes
// (mean, then Σ(x − μ)²), the backward from the formulas of `AttentionBackend.layerNormBackward`, which
// `testReferenceBackwardMatchesFiniteDifferences` checks against central differences of the forward.

struct LayerNormReference {
    var output: [Double], mean: [Double], reciprocalStandardDeviation: [Double]
    var gradInput: [Double] = [], gradGamma: [Double] = [], gradBeta: [Double] = []
}

func referenceLayerNorm(_ x: [Double], gamma: [Double], beta: [Double], gradOutput: [Double]?,
                        _ d: LayerNormDescriptor) -> LayerNormReference {
    let n = d.columns
    var result = LayerNormReference(output: [Double](repeating: 0, count: d.count),
                                    mean: [Double](repeating: 0, count: d.rows),
                                    reciprocalStandardDeviation: [Double](repeating: 0, count: d.rows))
    if gradOutput != nil {
        result.gradInput = [Double](repeating: 0, count: d.count)
        result.gradGamma = [Double](repeating: 0, count: n)
        result.gradBeta = [Double](repeating: 0, count: n)
    }
    for r in 0..<d.rows {
        let row = Array(x[(r * n)..<((r + 1) * n)])
        let mean = row.reduce(0, +) / Double(n)
        let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n)
        let rstd = 1 / (variance + Double(d.epsilon)).squareRoot()
        result.mean[r] = mean
        result.reciprocalStandardDeviation[r] = rstd
        let normalized = row.map { ($0 - mean) * rstd }
        for c in 0..<n { result.output[r * n + c] = normalized[c] * gamma[c] + beta[c] }
        guard let dy = gradOutput else { continue }
        let g = (0..<n).map { dy[r * n + $0] * gamma[$0] }
        let meanG = g.reduce(0, +) / Double(n)
        let meanGX = zip(g, normalized).reduce(0) { $0 + $1.0 * $1.1 } / Double(n)
        for c in 0..<n {
            result.gradInput[r * n + c] = rstd * (g[c] - meanG - normalized[c] * meanGX)
            result.gradGamma[c] += dy[r * n + c] * normalized[c]
            result.gradBeta[c] += dy[r * n + c]
        }
    }
    return result
}

final class LayerNormTests: CPUTestCase {
    /// (rows, columns): one feature (σ² = 0), odd sizes, rows enough to split across threads, long rows.
    let shapes = [(1, 1), (3, 7), (17, 64), (257, 80), (1000, 33), (5, 1000), (4000, 128)]

    private func check(rows: Int, columns: Int, offset: Float, epsilon: Float = 1e-5) throws {
        let d = LayerNormDescriptor(rows: rows, columns: columns, epsilon: epsilon)
        let what = "\(d) offset \(offset)"
        let x = uniform(d.count).map { $0 + offset }
        let gamma = uniform(columns, in: 0.5...2), beta = uniform(columns), dy = uniform(d.count)
        let xBuffer = try buffer(x), gammaBuffer = try buffer(gamma)
        let output = try poisoned(d.count), mean = try poisoned(rows), rstd = try poisoned(rows)
        try backend.layerNormForward(xBuffer, gamma: gammaBuffer, beta: buffer(beta), output: output, mean: mean,
                                     reciprocalStandardDeviation: rstd, descriptor: d)
        let gradInput = try poisoned(d.count), gradGamma = try poisoned(columns), gradBeta = try poisoned(columns)
        try backend.layerNormBackward(gradOutput: buffer(dy), xBuffer, gamma: gammaBuffer, mean: mean,
                                      reciprocalStandardDeviation: rstd, gradInput: gradInput, gradGamma: gradGamma,
                                      gradBeta: gradBeta, descriptor: d)
        // The reference normalises the Float inputs exactly; the kernel's x − μ loses the bits of x below
        // its magnitude (offset), so the tolerance on x̂ grows with offset·rstd.
        let expected = referenceLayerNorm(x.map(Double.init), gamma: gamma.map(Double.init), beta: beta.map(Double.init),
                                          gradOutput: dy.map(Double.init), d)
        let slack = Double(max(1, abs(offset)))
        assertClose(try read(output), expected.output, relative: 1e-5, absolute: 2e-6 * slack, magnitude: 1, "y \(what)")
        assertClose(try read(mean), expected.mean, relative: 1e-6, absolute: 1e-6, magnitude: 1, "mean \(what)")
        assertClose(try read(rstd), expected.reciprocalStandardDeviation, relative: 1e-5 * slack, absolute: 0,
                    "rstd \(what)")
        assertClose(try read(gradInput), expected.gradInput, relative: 1e-4, absolute: 1e-5 * slack, magnitude: 1,
                    "dx \(what)")
        assertClose(try read(gradGamma), expected.gradGamma, relative: 1e-4, absolute: 1e-5 * slack, magnitude: 1,
                    "dγ \(what)")
        assertClose(try read(gradBeta), expected.gradBeta, relative: 1e-5, absolute: 1e-6, magnitude: 1, "dβ \(what)")
    }

    func testForwardAndBackwardMatchReference() throws {
        for (rows, columns) in shapes { try check(rows: rows, columns: columns, offset: 0) }
    }

    /// |mean| ≫ std: the shifted one-pass statistics must not cancel.
    func testLargeMeanKeepsVariance() throws {
        try check(rows: 9, columns: 300, offset: 1000)
        try check(rows: 33, columns: 17, offset: -300)
    }

    /// Hand-computed row (1, 3), γ = 1, β = 0, ε → 0: μ = 2, σ² = 1, y = (−1, 1).
    func testHandComputed() throws {
        let d = LayerNormDescriptor(rows: 1, columns: 2, epsilon: 1e-12)
        let output = try poisoned(2), mean = try poisoned(1), rstd = try poisoned(1)
        try backend.layerNormForward(buffer([1, 3]), gamma: buffer([1, 1]), beta: buffer([0, 0]), output: output, mean: mean,
                                     reciprocalStandardDeviation: rstd, descriptor: d)
        assertClose(try read(output), [-1.0, 1.0], "hand-computed y")
        assertClose(try read(mean), [2.0], "hand-computed mean")
        assertClose(try read(rstd), [1.0], "hand-computed rstd")
    }

    func testReferenceBackwardMatchesFiniteDifferences() {
        let d = LayerNormDescriptor(rows: 3, columns: 5, epsilon: 1e-5)
        let x = uniform(d.count).map(Double.init), gamma = uniform(5).map(Double.init)
        let beta = uniform(5).map(Double.init), dy = uniform(d.count).map(Double.init)
        let analytic = referenceLayerNorm(x, gamma: gamma, beta: beta, gradOutput: dy, d)
        func loss(_ x: [Double], _ gamma: [Double], _ beta: [Double]) -> Double {
            zip(referenceLayerNorm(x, gamma: gamma, beta: beta, gradOutput: nil, d).output, dy).reduce(0) { $0 + $1.0 * $1.1 }
        }
        assertClose(centralDifferences(x) { loss($0, gamma, beta) }.map { Float($0) }, analytic.gradInput,
                    relative: 1e-4, absolute: 1e-5, magnitude: 1, "finite differences dx")
        assertClose(centralDifferences(gamma) { loss(x, $0, beta) }.map { Float($0) }, analytic.gradGamma,
                    relative: 1e-4, absolute: 1e-5, magnitude: 1, "finite differences dγ")
        assertClose(centralDifferences(beta) { loss(x, gamma, $0) }.map { Float($0) }, analytic.gradBeta,
                    relative: 1e-4, absolute: 1e-5, magnitude: 1, "finite differences dβ")
    }

    func testInvalidGeometryThrows() throws {
        let small = try poisoned(4)
        for d in [LayerNormDescriptor(rows: 0, columns: 3), LayerNormDescriptor(rows: 2, columns: 3, epsilon: 0),
                  LayerNormDescriptor(rows: 3, columns: 3)] {
            XCTAssertThrowsError(try backend.layerNormForward(small, gamma: small, beta: small, output: small, mean: small,
                                                              reciprocalStandardDeviation: small, descriptor: d), "\(d)")
            XCTAssertThrowsError(try backend.layerNormBackward(gradOutput: small, small, gamma: small, mean: small,
                                                               reciprocalStandardDeviation: small, gradInput: small,
                                                               gradGamma: small, gradBeta: small, descriptor: d), "\(d)")
        }
    }
}
