import XCTest
@testable import OpalCore

/// Forward behaviour and error reporting of the tensor API (on the CPU backend).
final class TensorTests: XCTestCase {
    func testCreationAndReadBack() throws {
        let t = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3], on: cpuDevice)
        XCTAssertEqual(try t.scalars(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try Tensor.zeros([3], on: cpuDevice).scalars(), [0, 0, 0])
        XCTAssertEqual(try Tensor.ones([2], on: cpuDevice).scalars(), [1, 1])
        XCTAssertEqual(try Tensor([Int32(4), 5], shape: [2], on: cpuDevice).intScalars(), [4, 5])
        let u = try Tensor.uniform([1000], in: -2...3, seed: 7, on: cpuDevice).scalars()
        XCTAssertTrue(u.allSatisfy { (-2...3).contains($0) })
        XCTAssertEqual(u, try Tensor.uniform([1000], in: -2...3, seed: 7, on: cpuDevice).scalars())
        let normal = try Tensor.normal([10_000], mean: 1, standardDeviation: 2, seed: 3, on: cpuDevice).scalars()
        let mean = normal.reduce(0, +) / Float(normal.count)
        let variance = normal.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(normal.count)
        XCTAssertEqual(mean, 1, accuracy: 0.1)
        XCTAssertEqual(variance.squareRoot(), 2, accuracy: 0.1)
    }

    func testShapeOpsForward() throws {
        let t = try Tensor((0..<6).map(Float.init), shape: [2, 3], on: cpuDevice)
        XCTAssertEqual(try t.transposed().scalars(), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(try t.sliced(along: 1, 1..<3).scalars(), [1, 2, 4, 5])
        XCTAssertEqual(try Tensor.concatenated([t, t.sliced(along: 0, 0..<1)], along: 0).scalars(), [0, 1, 2, 3, 4, 5, 0, 1, 2])
        XCTAssertEqual(try t.reshaped(to: [3, -1]).shape, [3, 2])
        XCTAssertEqual(try t.sum(alongAxis: 0).scalars(), [3, 5, 7])
        XCTAssertEqual(try t.max(alongAxis: 1).scalars(), [2, 5])
        XCTAssertEqual(try t.argmax(alongAxis: 1).intScalars(), [2, 2])
        XCTAssertEqual(try t.mean().item(), 2.5)
        XCTAssertEqual(try (t + Tensor([10, 20, 30], shape: [3], on: cpuDevice)).scalars(), [10, 21, 32, 13, 24, 35])
    }

    func testErrorsNameTheProblem() throws {
        let a = try Tensor.zeros([2, 3], on: cpuDevice)
        let b = try Tensor.zeros([4, 3], on: cpuDevice)
        XCTAssertThrowsError(try a + b) { error in
            XCTAssertEqual(error as? TensorError, .shapeMismatch(op: "add", lhs: [2, 3], rhs: [4, 3]))
            XCTAssertTrue("\(error)".contains("[2, 3]"))
        }
        XCTAssertThrowsError(try a.matmul(b))
        XCTAssertThrowsError(try a.reshaped(to: [5]))
        XCTAssertThrowsError(try a.sliced(along: 1, 2..<4))
        XCTAssertThrowsError(try a.sum(alongAxis: 2))
        XCTAssertThrowsError(try Tensor([1, 2], shape: [3], on: cpuDevice))
        XCTAssertThrowsError(try Tensor.zeros([-1], on: cpuDevice))
        let labels = try Tensor([Int32(0), 1], shape: [2], on: cpuDevice)
        XCTAssertThrowsError(try labels.exp()) { XCTAssertTrue("\($0)".contains("int32")) }
        let other = Device(backend: cpuDevice.backend)  // a different device object
        XCTAssertThrowsError(try a + Tensor.zeros([2, 3], on: other)) { error in
            guard case .deviceMismatch = error as? TensorError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try a.backward())
    }

    func testNoGradientsInsideWithoutGradients() throws {
        let x = try Tensor([1, 2], shape: [2], on: cpuDevice).requiringGradient()
        let y = try withoutGradients { try x * 2 }
        XCTAssertFalse(y.requiresGradient)
        XCTAssertTrue(try (x * 2).requiresGradient)
    }
}
