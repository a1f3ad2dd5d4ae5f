import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/optim.cl against CPUBackend: fused Adam/AdamW and SGD updates over several steps.
final class OptimizerKernelTests: KernelTestCase {
    func testAdamAndAdamWMatchCPU() throws {
        for decoupled in [false, true] {
            for count in awkwardSizes {
                let parameter = try pair(uniform(count))
                let m = try pair([Float](repeating: 0, count: count))
                let v = try pair([Float](repeating: 0, count: count))
                for step in 1...3 {
                    let gradient = try pair(uniform(count))
                    let hyper = AdamStep(learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8,
                                         weightDecay: 0.05, decoupled: decoupled, step: step)
                    try gpu.adamUpdate(parameter: parameter.gpu, gradient: gradient.gpu, m: m.gpu, v: v.gpu,
                                       count: count, step: hyper)
                    try cpu.adamUpdate(parameter: parameter.cpu, gradient: gradient.cpu, m: m.cpu, v: v.cpu,
                                       count: count, step: hyper)
                }
                let what = "\(decoupled ? "AdamW" : "Adam"), count \(count)"
                let theta = try read(parameter, count: count), first = try read(m, count: count)
                let second = try read(v, count: count)
                assertClose(theta.gpu, theta.cpu, tolerance: 1e-5, "θ after 3 steps of \(what)")
                // m and the velocity are running sums of gradients of size ~1 that cancel: judge them against that scale.
                assertClose(first.gpu, first.cpu, tolerance: 1e-5, floor: 1e-2, "m after 3 steps of \(what)")
                assertClose(second.gpu, second.cpu, tolerance: 1e-5, floor: 1e-5, "v after 3 steps of \(what)")
            }
        }
    }

    /// Hand-computed first Adam step: m̂ = g, v̂ = g², so θ moves by lr·g/(|g| + ε) = lr·sign(g).
    func testFirstAdamStepMovesByLearningRate() throws {
        let parameter = try pair([1, 1, 1] as [Float]), gradient = try pair([0.5, -2, 4] as [Float])
        let m = try pair([0, 0, 0] as [Float]), v = try pair([0, 0, 0] as [Float])
        try gpu.adamUpdate(parameter: parameter.gpu, gradient: gradient.gpu, m: m.gpu, v: v.gpu, count: 3,
                           step: AdamStep(learningRate: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 0, weightDecay: 0,
                                          decoupled: true, step: 1))
        assertClose(try gpu.readFloats(parameter.gpu, count: 3), [0.9, 1.1, 0.9], tolerance: 1e-6, "first Adam step")
    }

    func testSGDMatchesCPU() throws {
        for (momentum, nesterov) in [(Float(0), false), (0.9, false), (0.9, true)] {
            for count in awkwardSizes {
                let parameter = try pair(uniform(count))
                // Momentum 0 leaves the velocity unused: NaN there must not leak into θ.
                let velocity = momentum == 0 ? try poisonedPair(count) : try pair([Float](repeating: 0, count: count))
                for _ in 1...3 {
                    let gradient = try pair(uniform(count))
                    let hyper = SGDStep(learningRate: 0.05, momentum: momentum, weightDecay: 0.01, nesterov: nesterov)
                    try gpu.sgdUpdate(parameter: parameter.gpu, gradient: gradient.gpu, velocity: velocity.gpu,
                                      count: count, step: hyper)
                    try cpu.sgdUpdate(parameter: parameter.cpu, gradient: gradient.cpu, velocity: velocity.cpu,
                                      count: count, step: hyper)
                }
                let what = "SGD momentum \(momentum) nesterov \(nesterov), count \(count)"
                let theta = try read(parameter, count: count)
                assertClose(theta.gpu, theta.cpu, tolerance: 1e-5, "θ after 3 steps of \(what)")
                if momentum != 0 {
                    let v = try read(velocity, count: count)
                    assertClose(v.gpu, v.cpu, tolerance: 1e-5, floor: 1, "velocity after 3 steps of \(what)")
                }
            }
        }
    }
}
