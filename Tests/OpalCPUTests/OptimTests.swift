import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

final class OptimTests: CPUTestCase {
    /// One Adam step in Double, following the formula in `AdamStep`'s documentation.
    func referenceAdam(theta: inout [Double], gradient: [Float], m: inout [Double], v: inout [Double], step: AdamStep) {
        let (beta1, beta2) = (Double(step.beta1), Double(step.beta2))
        let weightDecay = Double(step.weightDecay)
        for i in theta.indices {
            let g = Double(gradient[i]) + (step.decoupled ? 0 : weightDecay * theta[i])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            let update = (m[i] / Double(step.biasCorrection1))
                / ((v[i] / Double(step.biasCorrection2)).squareRoot() + Double(step.epsilon))
            theta[i] -= Double(step.learningRate) * (update + (step.decoupled ? weightDecay * theta[i] : 0))
        }
    }

    func testAdamMatchesDoubleReference() throws {
        for size in awkwardSizes + [300_001] {
            for decoupled in [false, true] {
                let step = AdamStep(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8,
                                    weightDecay: 0.01, decoupled: decoupled, step: Int.random(in: 1...50, using: &random))
                let theta = uniform(size), gradient = uniform(size)
                let m = uniform(size, in: -0.1...0.1), v = uniform(size, in: 0...0.01)
                let (thetaBuffer, mBuffer, vBuffer) = (try buffer(theta), try buffer(m), try buffer(v))
                try backend.adamUpdate(parameter: thetaBuffer, gradient: try buffer(gradient), m: mBuffer, v: vBuffer,
                                       count: size, step: step)
                var (expectedTheta, expectedM, expectedV) = (theta.map(Double.init), m.map(Double.init), v.map(Double.init))
                referenceAdam(theta: &expectedTheta, gradient: gradient, m: &expectedM, v: &expectedV, step: step)
                // m = β1·m + (1 − β1)·g and v may cancel to far below their terms (|m| ≤ 0.1, |g| ≤ 2, v ≤ 0.01):
                // the Float rounding of the terms is judged against the terms' size, not the result's (a one-
                // element case once came out 3e-9 off a result of 4.5e-5).
                assertClose(try read(mBuffer), expectedM, magnitude: 0.3, "Adam m, size \(size), decoupled \(decoupled)")
                assertClose(try read(vBuffer), expectedV, magnitude: 0.01, "Adam v, size \(size), decoupled \(decoupled)")
                assertClose(try read(thetaBuffer), expectedTheta, relative: 1e-6, absolute: 1e-6,
                            "Adam θ, size \(size), decoupled \(decoupled)")
            }
        }
    }

    /// Step 1 from zero moments: m̂ = g and v̂ = g², so θ moves by lr·sign(g) (plus weight decay).
    func testAdamTwoElementHandCase() throws {
        for (decoupled, expectedTheta, expectedM, expectedV) in [
            (false, [0.9, -1.9], [0.06, -0.03], [0.00036, 0.00009]),   // L2: g = [0.5, −0.1] + 0.1·θ = [0.6, −0.3]
            (true, [0.89, -1.88], [0.05, -0.01], [0.00025, 0.00001]),  // AdamW: θ −= 0.1·(sign g + 0.1·θ)
        ] {
            let step = AdamStep(learningRate: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.1,
                                decoupled: decoupled, step: 1)
            let (theta, m, v) = (try buffer([1, -2]), try buffer([0, 0]), try buffer([0, 0]))
            try backend.adamUpdate(parameter: theta, gradient: try buffer([0.5, -0.1]), m: m, v: v, count: 2, step: step)
            assertClose(try read(theta), expectedTheta, relative: 1e-6, absolute: 1e-6, "θ decoupled \(decoupled)")
            assertClose(try read(m), expectedM, relative: 1e-6, absolute: 0, "m decoupled \(decoupled)")
            // 1 − β2 is 0.0010000467 in Float, hence the looser bound on v.
            assertClose(try read(v), expectedV, relative: 1e-4, absolute: 0, "v decoupled \(decoupled)")
        }
    }

    func testSGDMatchesDoubleReference() throws {
        for size in awkwardSizes + [300_001] {
            for (momentum, nesterov) in [(Float(0), false), (0.9, false), (0.9, true)] {
                let step = SGDStep(learningRate: 0.05, momentum: momentum, weightDecay: 1e-3, nesterov: nesterov)
                let theta = uniform(size), gradient = uniform(size), velocity = uniform(size)
                let thetaBuffer = try buffer(theta)
                let velocityBuffer = momentum == 0 ? try poisoned(size) : try buffer(velocity)
                try backend.sgdUpdate(parameter: thetaBuffer, gradient: try buffer(gradient), velocity: velocityBuffer,
                                      count: size, step: step)
                var expectedTheta = [Double](), expectedVelocity = [Double]()
                for i in 0..<size {
                    let (t, mu) = (Double(theta[i]), Double(momentum))
                    let g = Double(gradient[i]) + 1e-3 * t
                    if momentum == 0 {
                        expectedTheta.append(t - 0.05 * g)
                        expectedVelocity.append(.nan)   // untouched
                    } else {
                        let v = mu * Double(velocity[i]) + g
                        expectedVelocity.append(v)
                        expectedTheta.append(t - 0.05 * (nesterov ? g + mu * v : v))
                    }
                }
                let name = "SGD momentum \(momentum) nesterov \(nesterov) size \(size)"
                // v = μ·v + g + λθ (terms up to about 2) and θ − lr·(…) (θ up to 1) can cancel far below their
                // terms: the Float rounding of the terms is judged against the terms' size, not the result's
                // (a one-element case came out 1e-7 off a velocity of 0.0045; seed 14380465038600228569).
                assertClose(try read(thetaBuffer), expectedTheta, magnitude: 1, "\(name): θ")
                assertClose(try read(velocityBuffer), expectedVelocity, magnitude: 2, "\(name): velocity")
            }
        }
    }

    func testSGDTwoElementHandCase() throws {
        // θ = [1, −2], g = [0.5, −0.1], v = [1, 0], lr 0.1, μ 0.9: v ← [1.4, −0.1].
        for (momentum, nesterov, expected) in [
            (Float(0), false, [0.95, -1.99]), (0.9, false, [0.86, -1.99]), (0.9, true, [0.824, -1.981]),
        ] {
            let theta = try buffer([1, -2]), velocity = try buffer([1, 0])
            try backend.sgdUpdate(parameter: theta, gradient: try buffer([0.5, -0.1]), velocity: velocity, count: 2,
                                  step: SGDStep(learningRate: 0.1, momentum: momentum, weightDecay: 0, nesterov: nesterov))
            assertClose(try read(theta), expected, relative: 1e-6, absolute: 0, "θ momentum \(momentum) nesterov \(nesterov)")
            assertClose(try read(velocity), momentum == 0 ? [1, 0] : [1.4, -0.1], relative: 1e-6, absolute: 0,
                        "velocity momentum \(momentum)")
        }
    }

    /// The vectorisable square root used by Adam against Double `sqrt`, over 60 decades and at 0.
    func testNonNegativeSquareRoot() {
        XCTAssertEqual(nonNegativeSquareRoot(0), 0)
        XCTAssertEqual(nonNegativeSquareRoot(4), 2, accuracy: 4e-7)
        var worst = 0.0
        for _ in 0..<100_000 {
            let x = Float(Foundation.pow(10, Double.random(in: -30...30, using: &random)))
            let exact = Double(x).squareRoot()
            worst = max(worst, Swift.abs(Double(nonNegativeSquareRoot(x)) - exact) / exact)
        }
        XCTAssertLessThan(worst, 2.5e-7, context("worst relative error"))
    }
}
