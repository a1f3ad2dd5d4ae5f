import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/norm.cl against CPUBackend: training-mode batch norm forward and backward.
final class NormKernelTests: KernelTestCase {
    /// (batch, channels, spatial): odd sizes, spatial 1 (the dense-layer case; from 64 channels the
    /// one-work-item-per-channel kernels), long channels.
    var shapes: [(Int, Int, Int)] {
        small ? [(1, 1, 1), (3, 4, 7), (1, 3, 33), (5, 2, 1), (2, 2, 64), (5, 67, 1)]
              : [(1, 1, 1), (3, 4, 7), (1, 3, 33), (5, 2, 1), (2, 3, 1000), (32, 5, 49), (300, 2, 1), (3, 1, 4097),
                 (9, 301, 1), (1, 64, 1)]
    }

    func testForwardMatchesCPU() throws {
        for (batch, channels, spatial) in shapes {
            for offset: Float in [0, 100] {
                let d = BatchNormDescriptor(batch: batch, channels: channels, spatial: spatial, epsilon: 1e-5)
                let x = try pair(uniform(d.count).map { $0 + offset })
                let gamma = try pair(uniform(channels, in: 0.5...2)), beta = try pair(uniform(channels))
                let y = try poisonedPair(d.count), mean = try poisonedPair(channels)
                let inverse = try poisonedPair(channels)
                try gpu.batchNormForward(x.gpu, gamma.gpu, beta.gpu, y.gpu, mean: mean.gpu,
                                         inverseStandardDeviation: inverse.gpu, descriptor: d)
                try cpu.batchNormForward(x.cpu, gamma.cpu, beta.cpu, y.cpu, mean: mean.cpu,
                                         inverseStandardDeviation: inverse.cpu, descriptor: d)
                let what = "batch norm [\(batch), \(channels), \(spatial)] offset \(offset)"
                // The Float sums of the kernel carry |x|·√M·2⁻²⁴ of error, relative to the spread (≈ 1).
                let tolerance: Float = offset == 0 ? 1e-4 : 1e-3
                let ys = try read(y, count: d.count)
                assertClose(ys.gpu, ys.cpu, tolerance: tolerance, "\(what): y")
                let means = try read(mean, count: channels)
                assertClose(means.gpu, means.cpu, tolerance: 1e-5, floor: 1, "\(what): mean")
                let inverses = try read(inverse, count: channels)
                assertClose(inverses.gpu, inverses.cpu, tolerance: tolerance, "\(what): invstd")
            }
        }
    }

    /// The saved statistics come from the CPU forward pass, so both backward passes see the same ones.
    func testBackwardMatchesCPU() throws {
        for (batch, channels, spatial) in shapes {
            let d = BatchNormDescriptor(batch: batch, channels: channels, spatial: spatial, epsilon: 1e-5)
            let x = try pair(uniform(d.count)), dy = try pair(uniform(d.count))
            let gamma = try pair(uniform(channels, in: 0.5...2)), beta = try pair(uniform(channels))
            let y = try poisonedPair(d.count), forwardMean = try poisonedPair(channels)
            let forwardInverse = try poisonedPair(channels)
            try cpu.batchNormForward(x.cpu, gamma.cpu, beta.cpu, y.cpu, mean: forwardMean.cpu,
                                     inverseStandardDeviation: forwardInverse.cpu, descriptor: d)
            let mean = try pair(try cpu.readFloats(forwardMean.cpu, count: channels))
            let inverse = try pair(try cpu.readFloats(forwardInverse.cpu, count: channels))
            let dx = try poisonedPair(d.count), dgamma = try poisonedPair(channels), dbeta = try poisonedPair(channels)
            try gpu.batchNormBackward(x.gpu, dy.gpu, gamma.gpu, mean: mean.gpu, inverseStandardDeviation: inverse.gpu,
                                      dx.gpu, dgamma.gpu, dbeta.gpu, descriptor: d)
            try cpu.batchNormBackward(x.cpu, dy.cpu, gamma.cpu, mean: mean.cpu, inverseStandardDeviation: inverse.cpu,
                                      dx.cpu, dgamma.cpu, dbeta.cpu, descriptor: d)
            let what = "batch norm backward [\(batch), \(channels), \(spatial)]"
            // dγ and dβ are sums of M terms of size ≈ 1 with random signs: judged against √M.
            let sumScale = Float(batch * spatial).squareRoot()
            let gammas = try read(dgamma, count: channels)
            assertClose(gammas.gpu, gammas.cpu, tolerance: 1e-4, floor: sumScale, "\(what): dγ")
            let betas = try read(dbeta, count: channels)
            assertClose(betas.gpu, betas.cpu, tolerance: 1e-4, floor: sumScale, "\(what): dβ")
            // dx = k·dy − k·dβ/M − … with k = γ·invstd: the terms (up to |k|·max|dy| = 2|k|) may cancel (M = 1 gives
            // dx = 0 from terms of several hundred with ε = 1e-5), so the error is judged against their size.
            let gammaValues = try cpu.readFloats(gamma.cpu, count: channels)
            let inverseValues = try cpu.readFloats(inverse.cpu, count: channels)
            let termScale = zip(gammaValues, inverseValues).map { 2 * abs($0 * $1) }.max() ?? 1
            let dxs = try read(dx, count: d.count)
            assertClose(dxs.gpu, dxs.cpu, tolerance: 1e-4, floor: max(1, termScale), "\(what): dx")
        }
    }

    func testInvalidDescriptorThrows() throws {
        let buffer = try gpu.allocate(count: 16)
        for d in [BatchNormDescriptor(batch: 1, channels: 0, spatial: 1, epsilon: 1e-5),
                  BatchNormDescriptor(batch: 1, channels: 1, spatial: 1, epsilon: .nan),
                  BatchNormDescriptor(batch: 2, channels: 3, spatial: 5, epsilon: 1e-5)] {
            XCTAssertThrowsError(try gpu.batchNormForward(buffer, buffer, buffer, buffer, mean: buffer,
                                                          inverseStandardDeviation: buffer, descriptor: d))
        }
    }
}
