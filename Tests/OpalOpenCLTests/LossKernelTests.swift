import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/loss.cl against CPUBackend: per-row softmax cross-entropy and its gradient.
final class LossKernelTests: KernelTestCase {
    var shapes: [(rows: Int, columns: Int)] {
        small ? [(1, 1), (7, 10), (3, 64), (33, 3)] : [(1, 1), (7, 10), (64, 1000), (3, 4097), (1000, 7)]
    }

    func labels(rows: Int, columns: Int) -> [Int32] {
        (0..<rows).map { _ in Int32.random(in: 0..<Int32(columns), using: &random) }
    }

    func testForwardMatchesCPU() throws {
        for (rows, columns) in shapes {
            let logits = try pair(uniform(rows * columns, in: -6...6))
            let targets = try pair(labels(rows: rows, columns: columns))
            let losses = try poisonedPair(rows)
            try gpu.crossEntropy(logits.gpu, targets.gpu, losses.gpu, rows: rows, columns: columns)
            try cpu.crossEntropy(logits.cpu, targets.cpu, losses.cpu, rows: rows, columns: columns)
            let result = try read(losses, count: rows)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "cross-entropy \(rows)×\(columns)")
        }
    }

    func testBackwardMatchesCPU() throws {
        for (rows, columns) in shapes {
            let logits = try pair(uniform(rows * columns, in: -6...6))
            let targets = try pair(labels(rows: rows, columns: columns))
            let upstream = try pair(uniform(1, in: 0.5...2))
            let scale = 1 / Float(rows)
            let dx = try poisonedPair(rows * columns)
            try gpu.crossEntropyBackward(logits.gpu, targets.gpu, upstream.gpu, dx.gpu, rows: rows, columns: columns,
                                         scale: scale)
            try cpu.crossEntropyBackward(logits.cpu, targets.cpu, upstream.cpu, dx.cpu, rows: rows, columns: columns,
                                         scale: scale)
            let result = try read(dx, count: rows * columns)
            // Tiny probabilities carry a few ulps of exp's error: judge them against the row's scale.
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, floor: scale,
                        "cross-entropy backward \(rows)×\(columns)")
        }
    }

    /// logsumexp of a row of equal logits is log(columns) above them.
    func testEqualLogitsGiveLogColumns() throws {
        let rows = 3, columns = 10
        let logits = try pair([Float](repeating: 2, count: rows * columns))
        let targets = try pair(labels(rows: rows, columns: columns))
        let losses = try poisonedPair(rows)
        try gpu.crossEntropy(logits.gpu, targets.gpu, losses.gpu, rows: rows, columns: columns)
        assertClose(try gpu.readFloats(losses.gpu, count: rows), [Float](repeating: log(10), count: rows),
                    tolerance: 1e-6, "uniform logits")
    }
}
