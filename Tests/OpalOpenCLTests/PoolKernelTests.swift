import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/pool.cl against CPUBackend: max/average pooling forward and backward over odd sizes,
/// kernel 2/3, stride 1/2/3, padding 0/1, batch 1 and 3.
final class PoolKernelTests: KernelTestCase {
    var descriptors: [Pool2DDescriptor] {
        var result: [Pool2DDescriptor] = []
        let sizes = small ? [(5, 7), (1, 3)] : [(7, 9), (1, 3), (13, 6), (33, 17), (64, 45)]
        for batch in [1, 3] {
            for (height, width) in sizes {
                for kernel in [2, 3] {
                    for stride in [1, 2, 3] {
                        for padding in [0, 1] {
                            let d = Pool2DDescriptor(batch: batch, channels: 2, inputHeight: height, inputWidth: width,
                                                     kernelHeight: kernel, kernelWidth: kernel == 2 ? 3 : 2,
                                                     strideHeight: stride, strideWidth: stride == 1 ? 2 : stride,
                                                     paddingHeight: padding, paddingWidth: padding)
                            if d.problem == nil { result.append(d) }
                        }
                    }
                }
            }
        }
        // 2×2 windows at stride 2 (the loop-free kernels): even sizes, and odd ones whose last row and column
        // lie in no window.
        for (height, width) in small ? [(8, 8), (5, 7)] : [(8, 8), (7, 9), (2, 3), (28, 28)] {
            result.append(Pool2DDescriptor(batch: 2, channels: 3, inputHeight: height, inputWidth: width,
                                           kernelHeight: 2, kernelWidth: 2, strideHeight: 2, strideWidth: 2))
        }
        return result
    }

    func describe(_ d: Pool2DDescriptor) -> String {
        "N\(d.batch) C\(d.channels) \(d.inputHeight)×\(d.inputWidth) k\(d.kernelHeight)×\(d.kernelWidth) "
            + "s\(d.strideHeight)×\(d.strideWidth) p\(d.paddingHeight)×\(d.paddingWidth)"
    }

    /// Continuous values, then values from {−3, −2, −1} that tie in almost every window (the first
    /// index must win, and padding must never win over the negative values).
    func testMaxPoolMatchesCPU() throws {
        for d in descriptors {
            for ties in [false, true] {
                let values = ties ? (0..<d.inputCount).map { _ in Float(Int.random(in: 0...2, using: &random)) - 3 }
                                  : uniform(d.inputCount)
                let x = try pair(values)
                let y = try poisonedPair(d.outputCount), indices = try poisonedPair(d.outputCount)
                try gpu.maxPool2D(x.gpu, y.gpu, indices.gpu, descriptor: d)
                try cpu.maxPool2D(x.cpu, y.cpu, indices.cpu, descriptor: d)
                let result = try read(y, count: d.outputCount)
                assertClose(result.gpu, result.cpu, tolerance: 0, "max pool \(ties ? "ties " : "")\(describe(d))")
                XCTAssertEqual(try gpu.readInts(indices.gpu, count: d.outputCount),
                               try cpu.readInts(indices.cpu, count: d.outputCount),
                               context("max pool indices \(ties ? "ties " : "")\(describe(d))"))
            }
        }
    }

    func testMaxPoolNaNWins() throws {
        let d = Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 2, inputWidth: 3, kernelHeight: 2,
                                 kernelWidth: 2, strideHeight: 1, strideWidth: 1)
        let x = try pair([1, .nan, 2, 3, 9, .nan])
        let y = try poisonedPair(2), indices = try poisonedPair(2)
        try gpu.maxPool2D(x.gpu, y.gpu, indices.gpu, descriptor: d)
        XCTAssertTrue(try gpu.readFloats(y.gpu, count: 2).allSatisfy(\.isNaN))
        XCTAssertEqual(try gpu.readInts(indices.gpu, count: 2), [1, 1])
        let row = Pool2DDescriptor(batch: 1, channels: 2, inputHeight: 1, inputWidth: 4, kernelHeight: 1,
                                   kernelWidth: 4, strideHeight: 1, strideWidth: 1)
        let rowInput = try pair([-.infinity, .infinity, 3, .infinity, .infinity, 2, .nan, .nan])
        let rowOutput = try poisonedPair(2), rowIndices = try poisonedPair(2)
        try gpu.maxPool2D(rowInput.gpu, rowOutput.gpu, rowIndices.gpu, descriptor: row)
        let values = try gpu.readFloats(rowOutput.gpu, count: 2)
        XCTAssertEqual(values[0], .infinity)
        XCTAssertTrue(values[1].isNaN)
        XCTAssertEqual(try gpu.readInts(rowIndices.gpu, count: 2), [1, 2])
        // The 2×2 stride-2 kernel: windows {1, NaN | 3, 9} → NaN at 1, {2, 5 | NaN, NaN} → NaN at 8,
        // {−∞, −∞ | −∞, 4} → 4 at 11.
        let tiles = Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 2, inputWidth: 6, kernelHeight: 2,
                                     kernelWidth: 2, strideHeight: 2, strideWidth: 2)
        let tileInput = try pair([1, .nan, 2, 5, -.infinity, -.infinity, 3, 9, .nan, .nan, -.infinity, 4])
        let tileOutput = try poisonedPair(3), tileIndices = try poisonedPair(3)
        try gpu.maxPool2D(tileInput.gpu, tileOutput.gpu, tileIndices.gpu, descriptor: tiles)
        let tileValues = try gpu.readFloats(tileOutput.gpu, count: 3)
        XCTAssertTrue(tileValues[0].isNaN && tileValues[1].isNaN)
        XCTAssertEqual(tileValues[2], 4)
        XCTAssertEqual(try gpu.readInts(tileIndices.gpu, count: 3), [1, 8, 11])
    }

    /// The indices come from the CPU forward pass, so both backward passes gather the same routing.
    func testMaxPoolBackwardMatchesCPU() throws {
        for d in descriptors {
            let ties = Bool.random(using: &random)
            let values = ties ? (0..<d.inputCount).map { _ in Float(Int.random(in: 0...2, using: &random)) }
                              : uniform(d.inputCount)
            let x = try pair(values)
            let y = try poisonedPair(d.outputCount), forwardIndices = try poisonedPair(d.outputCount)
            try cpu.maxPool2D(x.cpu, y.cpu, forwardIndices.cpu, descriptor: d)
            let indices = try pair(try cpu.readInts(forwardIndices.cpu, count: d.outputCount))
            let dy = try pair(uniform(d.outputCount))
            let dx = try poisonedPair(d.inputCount)
            try gpu.maxPool2DBackward(dy.gpu, indices.gpu, dx.gpu, descriptor: d)
            try cpu.maxPool2DBackward(dy.cpu, indices.cpu, dx.cpu, descriptor: d)
            let result = try read(dx, count: d.inputCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-6, "max pool backward \(ties ? "ties " : "")\(describe(d))")
        }
    }

    func testAvgPoolMatchesCPU() throws {
        for d in descriptors {
            let x = try pair(uniform(d.inputCount))
            let y = try poisonedPair(d.outputCount)
            try gpu.avgPool2D(x.gpu, y.gpu, descriptor: d)
            try cpu.avgPool2D(x.cpu, y.cpu, descriptor: d)
            let result = try read(y, count: d.outputCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-6, "avg pool \(describe(d))")
        }
    }

    func testAvgPoolBackwardMatchesCPU() throws {
        for d in descriptors {
            let dy = try pair(uniform(d.outputCount))
            let dx = try poisonedPair(d.inputCount)
            try gpu.avgPool2DBackward(dy.gpu, dx.gpu, descriptor: d)
            try cpu.avgPool2DBackward(dy.cpu, dx.cpu, descriptor: d)
            let result = try read(dx, count: d.inputCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "avg pool backward \(describe(d))")
        }
    }

    func testInvalidGeometryThrows() throws {
        let d = Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 4, inputWidth: 4, kernelHeight: 2, kernelWidth: 2,
                                 strideHeight: 1, strideWidth: 1, paddingHeight: 2)
        let buffer = try gpu.allocate(count: 64)
        XCTAssertThrowsError(try gpu.maxPool2D(buffer, buffer, buffer, descriptor: d))
        XCTAssertThrowsError(try gpu.avgPool2DBackward(buffer, buffer, descriptor: d))
        let large = Pool2DDescriptor(batch: 2, channels: 3, inputHeight: 8, inputWidth: 8, kernelHeight: 2,
                                     kernelWidth: 2, strideHeight: 2, strideWidth: 2)
        XCTAssertThrowsError(try gpu.avgPool2D(buffer, buffer, descriptor: large), "input buffer too small")
    }
}
