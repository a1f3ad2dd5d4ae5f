import XCTest
@testable import OpalCore

/// Image ops at the tensor level: autodiff gradients versus finite differences (CPU backend).
final class ImageOpGradientTests: XCTestCase {
    func testConv2DGradients() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        // stride 2, padding 1, dilation 1, bias
        let x = (random.values(2 * 3 * 7 * 6), Shape([2, 3, 7, 6]))
        let w = (random.values(4 * 3 * 3 * 3), Shape([4, 3, 3, 3]))
        let b = (random.values(4), Shape([4]))
        try checkGradients([x, w, b], seed: seed) { try $0[0].conv2D(weight: $0[1], bias: $0[2], stride: (2, 2), padding: (1, 1)) }
        // dilation 2, groups 2 (4 → 2 channels), no bias
        let x2 = (random.values(1 * 4 * 9 * 8), Shape([1, 4, 9, 8]))
        let w2 = (random.values(2 * 2 * 3 * 3), Shape([2, 2, 3, 3]))
        try checkGradients([x2, w2], seed: seed) {
            try $0[0].conv2D(weight: $0[1], padding: (2, 1), dilation: (2, 2), groups: 2)
        }
    }

    func testConvTranspose2DGradients() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let x = (random.values(2 * 3 * 4 * 5), Shape([2, 3, 4, 5]))
        let w = (random.values(3 * 2 * 3 * 3), Shape([3, 2, 3, 3]))
        let b = (random.values(2), Shape([2]))
        try checkGradients([x, w, b], seed: seed) {
            try $0[0].convTranspose2D(weight: $0[1], bias: $0[2], stride: (2, 2), padding: (1, 1), outputPadding: (1, 1))
        }
        let y = try Tensor(x.0, shape: x.1, on: cpuDevice)
            .convTranspose2D(weight: Tensor(w.0, shape: w.1, on: cpuDevice), stride: (2, 2), padding: (1, 1), outputPadding: (1, 1))
        XCTAssertEqual(y.shape, [2, 2, 8, 10])
    }

    func testPoolingGradients() throws {
        let seed = freshSeed()
        // Distinct values so each window's maximum is unique.
        let count = 2 * 3 * 7 * 5
        let values: [Float] = (0..<count).map { (index: Int) -> Float in Float(index) * 0.01 - 1 }.shuffled()
        let x = (values, Shape([2, 3, 7, 5]))
        try checkGradients([x], seed: seed, epsilon: 1e-3) { try $0[0].maxPool2D(kernel: (2, 2)) }
        try checkGradients([x], seed: seed, epsilon: 1e-3) { try $0[0].maxPool2D(kernel: (3, 3), stride: (2, 2), padding: (1, 1)) }
        try checkGradients([x], seed: seed) { try $0[0].avgPool2D(kernel: (2, 2)) }
        try checkGradients([x], seed: seed) { try $0[0].avgPool2D(kernel: (3, 3), stride: (2, 1), padding: (1, 1)) }
        try checkGradients([x], seed: seed) { try $0[0].upsampledNearest(factor: (2, 3)) }
    }

    func testBatchNormGradients() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let x = (random.values(4 * 3 * 5 * 2, -2...2), Shape([4, 3, 5, 2]))
        let gamma = (random.values(3, 0.5...1.5), Shape([3]))
        let beta = (random.values(3), Shape([3]))
        try checkGradients([x, gamma, beta], seed: seed, epsilon: 1e-2, tolerance: 3e-2) {
            try $0[0].batchNormalized(gamma: $0[1], beta: $0[2]).output
        }
        let flat = (random.values(6 * 4, -2...2), Shape([6, 4]))
        try checkGradients([flat, (random.values(4), Shape([4])), (random.values(4), Shape([4]))], seed: seed,
                           epsilon: 1e-2, tolerance: 3e-2) {
            try $0[0].batchNormalized(gamma: $0[1], beta: $0[2]).output
        }
    }

    func testBatchNormStatistics() throws {
        let x = try Tensor([1, 2, 3, 4, 10, 20, 30, 40], shape: [2, 2, 2], on: cpuDevice)   // channel 0: 1,2,10,20
        let (y, mean, variance) = try x.batchNormalized(gamma: Tensor([1, 1], on: cpuDevice),
                                                        beta: Tensor([0, 0], on: cpuDevice), epsilon: 0)
        XCTAssertEqual(try mean.scalars(), [8.25, 19.25])
        let v0: Float = ([1, 2, 10, 20].map { ($0 - 8.25) * ($0 - 8.25) }.reduce(0, +)) / 4
        XCTAssertEqual(try variance.scalars()[0], v0, accuracy: 1e-3)
        XCTAssertEqual(try y.scalars()[0], (1 - 8.25) / v0.squareRoot(), accuracy: 1e-4)
    }

    func testGeometryErrorsAreClear() throws {
        let x = try Tensor.zeros([1, 3, 5, 5], on: cpuDevice)
        XCTAssertThrowsError(try x.conv2D(weight: Tensor.zeros([4, 2, 3, 3], on: cpuDevice))) {
            XCTAssertTrue("\($0)".contains("conv2D"), "\($0)")
        }
        XCTAssertThrowsError(try x.conv2D(weight: Tensor.zeros([4, 3, 7, 7], on: cpuDevice))) {
            XCTAssertTrue("\($0)".contains("does not fit"), "\($0)")
        }
        XCTAssertThrowsError(try x.conv2D(weight: Tensor.zeros([4, 1, 3, 3], on: cpuDevice), groups: 3)) // 4 % 3 ≠ 0
        XCTAssertThrowsError(try Tensor.zeros([3, 5, 5], on: cpuDevice).maxPool2D(kernel: (2, 2))) {
            XCTAssertTrue("\($0)".contains("NCHW"), "\($0)")
        }
        XCTAssertThrowsError(try x.maxPool2D(kernel: (7, 7)))
    }
}
