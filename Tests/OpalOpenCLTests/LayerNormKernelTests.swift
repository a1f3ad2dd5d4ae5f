import Foundation
import OpalCore
import OpalOpenCL
import XCTest

/// The layer-norm kernels of Kernels/norm.cl against a Double reference written out below: row lengths
/// that are not multiples of any work-group (1, 33, 257, 1000), one and several dγ/dβ row chunks, inputs
/// around 1000 ± 1 (a one-pass Σx, Σx² in float would lose the variance to cancellation), every output
/// poisoned with NaN first, and the parameter gradients checked bit for bit over two runs.
final class LayerNormKernelTests: KernelTestCase {
    /// (rows, columns, centre): inputs are centre ± 1 (centre 0: ± 2).
    var shapes: [(Int, Int, Float)] {
        small ? [(1, 1, 0), (7, 33, 0), (33, 64, 0), (5, 17, 1000)]
              : [(1, 1, 0), (7, 33, 0), (130, 257, 0), (64, 1000, 0), (70, 257, 1000), (3, 1000, -1000)]
    }

    func testForwardAndBackwardMatchReference() throws {
        for (rows, columns, centre) in shapes {
            let d = LayerNormDescriptor(rows: rows, columns: columns)
            let what = "\(d) around \(centre)"
            let x = centre == 0 ? uniform(d.count) : uniform(d.count, in: (centre - 1)...(centre + 1))
            let gamma = uniform(columns), beta = uniform(columns), dy = uniform(d.count)
            let xBuffer = try buffer(x), g = try buffer(gamma), b = try buffer(beta), dyBuffer = try buffer(dy)
            let y = try poisoned(d.count), mean = try poisoned(rows), rstd = try poisoned(rows)
            try gpu.layerNormForward(xBuffer, gamma: g, beta: b, output: y, mean: mean,
                                     reciprocalStandardDeviation: rstd, descriptor: d)
            let expected = Self.reference(x: x, gamma: gamma, beta: beta, dy: dy, d)
            // The forward pass works with x − x_0 (exact near a large mean), so y is as accurate at 1000 ± 1 as at 0.
            assertClose(try gpu.readFloats(y, count: d.count), expected.y.map(Float.init), tolerance: 1e-5,
                        "layer norm output \(what)")
            assertClose(try gpu.readFloats(mean, count: rows), expected.mean.map(Float.init), tolerance: 1e-6,
                        "layer norm mean \(what)")
            assertClose(try gpu.readFloats(rstd, count: rows), expected.rstd.map(Float.init), tolerance: 1e-4,
                        "layer norm rstd \(what)")

            let dx = try poisoned(d.count), dgamma = try poisoned(columns), dbeta = try poisoned(columns)
            try gpu.layerNormBackward(gradOutput: dyBuffer, xBuffer, gamma: g, mean: mean,
                                      reciprocalStandardDeviation: rstd, gradInput: dx, gradGamma: dgamma,
                                      gradBeta: dbeta, descriptor: d)
            // The backward pass starts from the saved float μ, whose rounding at |x| ≈ 1000 (3e-5) shifts x̂ by
            // 3e-5·rstd: tolerances grow there. dx = rstd·(ĝ − …): judged relative to max rstd·|ĝ|.
            let tolerance: Float = centre == 0 ? 1e-5 : 2e-4
            let dxScale = Float(expected.dxScale)
            assertClose(try gpu.readFloats(dx, count: d.count), expected.dx.map(Float.init), tolerance: tolerance,
                        floor: max(dxScale, 1e-6), "layer norm dx \(what)")
            // Column sums over `rows` terms of size ≲ 4: relative to √rows·4 (cancellation in random sums).
            let sumFloor = 4 * Float(rows).squareRoot()
            let gammaGradient = try gpu.readFloats(dgamma, count: columns)
            let betaGradient = try gpu.readFloats(dbeta, count: columns)
            assertClose(gammaGradient, expected.dgamma.map(Float.init), tolerance: tolerance, floor: sumFloor,
                        "layer norm dγ \(what)")
            assertClose(betaGradient, expected.dbeta.map(Float.init), tolerance: 1e-5, floor: sumFloor,
                        "layer norm dβ \(what)")

            let again = (gamma: try poisoned(columns), beta: try poisoned(columns), dx: try poisoned(d.count))
            try gpu.layerNormBackward(gradOutput: dyBuffer, xBuffer, gamma: g, mean: mean,
                                      reciprocalStandardDeviation: rstd, gradInput: again.dx, gradGamma: again.gamma,
                                      gradBeta: again.beta, descriptor: d)
            XCTAssertEqual(try gpu.readFloats(again.gamma, count: columns).map(\.bitPattern),
                           gammaGradient.map(\.bitPattern), context("dγ is not deterministic \(what)"))
            XCTAssertEqual(try gpu.readFloats(again.beta, count: columns).map(\.bitPattern),
                           betaGradient.map(\.bitPattern), context("dβ is not deterministic \(what)"))
        }
    }

    /// A 2×2 case by hand: rows (1, 3) and (2, 2), γ = (1, 2), β = (0, 1), ε = 1e-5.
    /// Row 0: μ = 2, σ² = 1, y = (−1, 1)·(1 + 5e-6)⁻¹ᐟ²·γ + β. Row 1: σ² = 0, x̂ = 0, y = β.
    func testTwoByTwoByHand() throws {
        let d = LayerNormDescriptor(rows: 2, columns: 2)
        let x = try buffer([1, 3, 2, 2]), g = try buffer([1, 2]), b = try buffer([0, 1])
        let y = try poisoned(4), mean = try poisoned(2), rstd = try poisoned(2)
        try gpu.layerNormForward(x, gamma: g, beta: b, output: y, mean: mean, reciprocalStandardDeviation: rstd,
                                 descriptor: d)
        let r0 = Float(1 / (1 + 1e-5).squareRoot()), r1 = Float(1 / (1e-5 as Double).squareRoot())
        assertClose(try gpu.readFloats(y, count: 4), [-r0, 2 * r0 + 1, 0, 1], tolerance: 1e-6, "2×2 output")
        assertClose(try gpu.readFloats(mean, count: 2), [2, 2], tolerance: 0, "2×2 mean")
        assertClose(try gpu.readFloats(rstd, count: 2), [r0, r1], tolerance: 1e-6, "2×2 rstd")
    }

    func testInvalidArgumentsThrow() throws {
        let small = try gpu.allocate(count: 4)
        for d in [LayerNormDescriptor(rows: 0, columns: 3), LayerNormDescriptor(rows: 2, columns: 2, epsilon: 0),
                  LayerNormDescriptor(rows: 3, columns: 3)] {
            XCTAssertThrowsError(try gpu.layerNormForward(small, gamma: small, beta: small, output: small, mean: small,
                                                          reciprocalStandardDeviation: small, descriptor: d), "\(d)") {
                guard case TensorError.invalidArgument(let op, _) = $0 else { return XCTFail("\($0)") }
                XCTAssertEqual(op, "layerNormForward")
            }
            XCTAssertThrowsError(try gpu.layerNormBackward(
                gradOutput: small, small, gamma: small, mean: small, reciprocalStandardDeviation: small,
                gradInput: small, gradGamma: small, gradBeta: small, descriptor: d), "\(d)")
        }
    }

    /// Two-pass statistics and the protocol's formulas in Double:
    /// `μ = Σx/C`, `σ² = Σ(x − μ)²/C`, `rstd = 1/√(σ² + ε)`, `x̂ = (x − μ)·rstd`, `y = x̂·γ + β`;
    /// `ĝ = dy·γ`, `dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝ·x̂))`, `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy`.
    static func reference(x: [Float], gamma: [Float], beta: [Float], dy: [Float], _ d: LayerNormDescriptor)
        -> (y: [Double], mean: [Double], rstd: [Double], dx: [Double], dgamma: [Double], dbeta: [Double],
            dxScale: Double) {
        let n = d.columns, count = Double(n)
        var y = [Double](repeating: 0, count: d.count), dx = y
        var mean = [Double](repeating: 0, count: d.rows), rstd = mean
        var dgamma = [Double](repeating: 0, count: n), dbeta = dgamma
        var dxScale = 0.0
        for r in 0..<d.rows {
            let row = (0..<n).map { Double(x[r * n + $0]) }
            let mu = row.reduce(0, +) / count
            let variance = row.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / count
            let s = 1 / (variance + Double(d.epsilon)).squareRoot()
            mean[r] = mu; rstd[r] = s
            let xhat = row.map { ($0 - mu) * s }
            let ghat = (0..<n).map { Double(dy[r * n + $0]) * Double(gamma[$0]) }
            dxScale = max(dxScale, s * (ghat.map(abs).max() ?? 0))
            let meanG = ghat.reduce(0, +) / count
            let meanGX = zip(ghat, xhat).reduce(0) { $0 + $1.0 * $1.1 } / count
            for c in 0..<n {
                y[r * n + c] = xhat[c] * Double(gamma[c]) + Double(beta[c])
                dx[r * n + c] = s * (ghat[c] - meanG - xhat[c] * meanGX)
                dgamma[c] += Double(dy[r * n + c]) * xhat[c]
                dbeta[c] += Double(dy[r * n + c])
            }
        }
        return (y, mean, rstd, dx, dgamma, dbeta, dxScale)
    }
}
