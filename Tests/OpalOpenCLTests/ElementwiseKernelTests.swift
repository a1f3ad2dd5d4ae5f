import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/elementwise.cl against CPUBackend: unary ops, broadcasting binary ops, strided copies, fill.
final class ElementwiseKernelTests: KernelTestCase {
    static let unaryOps: [UnaryOp] = [
        .identity, .negate, .abs, .exp, .log, .sqrt, .reciprocal, .square, .relu, .leakyRelu(slope: 0.1),
        .sigmoid, .tanh, .gelu, .softplus, .power(2.5), .power(3), .affine(scale: -1.5, shift: 0.25), .step,
        .leakyReluDerivative(slope: 0.2), .geluDerivative,
    ]

    /// Inputs in each op's domain (positive for log, sqrt and non-integer powers).
    func inputs(for op: UnaryOp, count: Int) -> [Float] {
        switch op {
        case .log, .sqrt, .power(2.5): uniform(count, in: 0.05...4)
        case .reciprocal: uniform(count, in: 0.1...3).map { Bool.random(using: &random) ? $0 : -$0 }
        case .exp, .softplus, .sigmoid: uniform(count, in: -10...10)
        default: uniform(count, in: -3...3)
        }
    }

    func testUnaryMatchesCPU() throws {
        for op in Self.unaryOps {
            for count in awkwardSizes {
                let x = try pair(inputs(for: op, count: count))
                let y = try poisonedPair(count)
                try gpu.unary(op, x.gpu, y.gpu, count: count)
                try cpu.unary(op, x.cpu, y.cpu, count: count)
                let result = try read(y, count: count)
                // GELU and its derivative take exp of a cubic: near x ≈ −3 their small values carry the
                // float error of u, so judge those against 1e-2.
                let floor: Float = op == .gelu || op == .geluDerivative ? 1e-2 : 1e-3
                assertClose(result.gpu, result.cpu, tolerance: 2e-5, floor: floor, "unary \(op), count \(count)")
            }
        }
    }

    /// `unary_gradient_*`: dy · f'(x or y) against the CPU backend and against dy · f' in Double.
    /// (The OpenCL buffers are retained for the whole test: oclgrind 21.10 reports recycled buffers that
    /// kernels wrote as uninitialised.)
    func testUnaryGradientMatchesCPUAndDouble() throws {
        for op in [UnaryOp.relu, .leakyRelu(slope: 0.1), .sigmoid, .tanh, .gelu] {
            for count in awkwardSizes {
                let values = uniform(count, in: -5...5).map { Swift.abs($0) < 1e-3 ? $0 + 0.01 : $0 }   // off the kink
                let gradOutput = uniform(count)
                let x = (gpu: try buffer(values), cpu: try cpu.allocate(count: count))
                let dy = (gpu: try buffer(gradOutput), cpu: try cpu.allocate(count: count))
                try cpu.write(values, to: x.cpu)
                try cpu.write(gradOutput, to: dy.cpu)
                let y = (gpu: try poisoned(count), cpu: try cpu.allocate(count: count))
                try gpu.unary(op, x.gpu, y.gpu, count: count)
                try cpu.unary(op, x.cpu, y.cpu, count: count)
                let dx = (gpu: try poisoned(count), cpu: try cpu.allocate(count: count))
                try cpu.fill(dx.cpu, value: .nan, count: count)
                try gpu.unaryGradient(op, input: x.gpu, output: y.gpu, gradOutput: dy.gpu, gradInput: dx.gpu, count: count)
                try cpu.unaryGradient(op, input: x.cpu, output: y.cpu, gradOutput: dy.cpu, gradInput: dx.cpu, count: count)
                let result = try read(dx, count: count)
                // sigmoid and tanh take f' from the float output y (y(1 − y), 1 − y²), which cancels where the
                // derivative is small: y's few-ulp error (≈ 2e-7 near ±1) becomes ≈ 1e-6 of dx, hence the floor.
                assertClose(result.gpu, result.cpu, tolerance: 5e-5, floor: 5e-2, "\(op) gradient, count \(count)")
                let expected = zip(values, gradOutput).map { value, g -> Float in
                    let x = Double(value), h = 1e-5
                    let f: (Double) -> Double = switch op {
                    case .relu: { Swift.max($0, 0) }
                    case .leakyRelu: { $0 > 0 ? $0 : 0.1 * $0 }
                    case .sigmoid: { 1 / (1 + Foundation.exp(-$0)) }
                    case .tanh: { Foundation.tanh($0) }
                    default: { $0 / (1 + Foundation.exp(-2 * 0.7978845608028654 * ($0 + 0.044715 * $0 * $0 * $0))) }
                    }
                    return Float(Double(g) * (f(x + h) - f(x - h)) / (2 * h))
                }
                assertClose(result.gpu, expected, tolerance: 1e-4, floor: 1e-2, "\(op) gradient vs Double, count \(count)")
            }
        }
    }

    func testUnaryInPlaceAndPartialCount() throws {
        let values = uniform(50)
        let x = try pair(values)
        try gpu.unary(.square, x.gpu, x.gpu, count: 33)
        let result = try gpu.readFloats(x.gpu, count: 50)
        let expected = values.enumerated().map { $0.offset < 33 ? $0.element * $0.element : $0.element }
        assertClose(result, expected, tolerance: 1e-6, "in-place square of the first 33 of 50")
    }

    /// Every op on the flat fast paths: same shape, scalar b, scalar a.
    func testBinaryFlatPaths() throws {
        for op in [BinaryOp.add, .subtract, .multiply, .divide, .power, .maximum, .minimum] {
            for count in awkwardSizes {
                let a = try pair(uniform(count, in: 0.5...2))
                let b = try pair(uniform(count, in: 0.5...2))
                let s = try pair(uniform(1, in: 0.5...2))
                for (name, left, right, layout) in [
                    ("same shape", a, b, BroadcastLayout(shape: [count], stridesA: [1], stridesB: [1])),
                    ("scalar b", a, s, BroadcastLayout(shape: [count], stridesA: [1], stridesB: [0])),
                    ("scalar a", s, b, BroadcastLayout(shape: [count], stridesA: [0], stridesB: [1])),
                ] {
                    let out = try poisonedPair(count)
                    try gpu.binary(op, left.gpu, right.gpu, out.gpu, layout: layout)
                    try cpu.binary(op, left.cpu, right.cpu, out.cpu, layout: layout)
                    let result = try read(out, count: count)
                    assertClose(result.gpu, result.cpu, tolerance: 1e-5, "binary \(op) \(name), count \(count)")
                }
            }
        }
    }

    /// Random shapes of rank 1...4 where each input broadcasts along random axes (stride 0).
    func testBinaryBroadcastRankUpToFour() throws {
        let maximumExtent = small ? 4 : 9
        for trial in 0..<40 {
            let rank = Int.random(in: 1...4, using: &random)
            let shape = (0..<rank).map { _ in Int.random(in: 1...maximumExtent, using: &random) }
            var shapeA = shape, shapeB = shape
            for axis in 0..<rank {
                switch Int.random(in: 0..<4, using: &random) {
                case 0: shapeA[axis] = 1
                case 1: shapeB[axis] = 1
                default: break
                }
            }
            let stridesA = zip(shapeA, Shape(shapeA).strides).map { $0 == 1 ? 0 : $1 }
            let stridesB = zip(shapeB, Shape(shapeB).strides).map { $0 == 1 ? 0 : $1 }
            let layout = BroadcastLayout(shape: shape, stridesA: stridesA, stridesB: stridesB)
            let op = [BinaryOp.add, .subtract, .multiply, .divide, .maximum][trial % 5]
            let a = try pair(uniform(Shape(shapeA).count, in: 0.5...2))
            let b = try pair(uniform(Shape(shapeB).count, in: 0.5...2))
            let out = try poisonedPair(layout.count)
            try gpu.binary(op, a.gpu, b.gpu, out.gpu, layout: layout)
            try cpu.binary(op, a.cpu, b.cpu, out.cpu, layout: layout)
            let result = try read(out, count: layout.count)
            assertClose(result.gpu, result.cpu, tolerance: 1e-6, "binary \(op) over \(layout)")
        }
    }

    /// Layouts whose innermost axis is long (≥ 16) and contiguous, which CPU-class devices run with the
    /// one-row-per-work-item kernels: the attention head split ([B, N, 3, H, D] → [3, B, H, N, D]) and merge,
    /// a bias broadcast over rows, a column broadcast and a scalar-per-row broadcast.
    func testRowLayoutsOfPermutesAndBroadcasts() throws {
        let (b, n, h, d) = (2, small ? 3 : 7, 3, small ? 17 : 33)
        let split = [2, 0, 3, 1, 4]
        let shape = [b, n, 3, h, d]
        let strides = Shape(shape).strides
        let outShape = split.map { shape[$0] }
        for layout in [
            StridedCopy(shape: outShape, srcStrides: split.map { strides[$0] }, dstStrides: Shape(outShape).strides),
            StridedCopy(shape: [b, n, h, d], srcStrides: [h * n * d, d, n * d, 1], dstOffset: 5,
                        dstStrides: Shape([b, n, h, d]).strides),
        ] {
            let src = try pair(uniform(Shape(shape).count))
            let dst = try poisonedPair(layout.count + 5)
            try gpu.copy(src.gpu, dst.gpu, layout: layout)
            try cpu.copy(src.cpu, dst.cpu, layout: layout)
            let result = try read(dst, count: layout.count + 5)
            XCTAssertTrue(zip(result.gpu, result.cpu).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) },
                          context("row copy \(layout)"))
        }
        let rows = b * n, width = h * d
        for (stridesA, stridesB, countA, countB) in [
            ([width, 1], [0, 1], rows * width, width),          // x + bias
            ([width, 1], [1, 0], rows * width, rows),           // x · per-row scalar
            ([0, 1], [1, 0], width, rows),                      // row vector ⊕ column vector
        ] {
            let layout = BroadcastLayout(shape: [rows, width], stridesA: stridesA, stridesB: stridesB)
            for op in [BinaryOp.add, .multiply, .divide] {
                let x = try pair(uniform(countA, in: 0.5...2)), y = try pair(uniform(countB, in: 0.5...2))
                let out = try poisonedPair(layout.count)
                try gpu.binary(op, x.gpu, y.gpu, out.gpu, layout: layout)
                try cpu.binary(op, x.cpu, y.cpu, out.cpu, layout: layout)
                let result = try read(out, count: layout.count)
                assertClose(result.gpu, result.cpu, tolerance: 1e-6, "row binary \(op) over \(layout)")
            }
        }
    }

    /// Permutations of rank-3 and rank-4 tensors.
    func testStridedCopyPermutes() throws {
        let maximumExtent = small ? 5 : 13
        for trial in 0..<20 {
            let rank = trial % 2 == 0 ? 3 : 4
            let shape = (0..<rank).map { _ in Int.random(in: 1...maximumExtent, using: &random) }
            let permutation = Array(0..<rank).shuffled(using: &random)
            let strides = Shape(shape).strides
            let outShape = permutation.map { shape[$0] }
            let layout = StridedCopy(shape: outShape, srcStrides: permutation.map { strides[$0] },
                                     dstStrides: Shape(outShape).strides)
            let src = try pair(uniform(Shape(shape).count))
            let dst = try poisonedPair(layout.count)
            try gpu.copy(src.gpu, dst.gpu, layout: layout)
            try cpu.copy(src.cpu, dst.cpu, layout: layout)
            let result = try read(dst, count: layout.count)
            XCTAssertEqual(result.gpu, result.cpu, context("permute \(shape) by \(permutation)"))
        }
    }

    /// A slice of a [rows, columns] matrix copied into a region of a larger, NaN-filled one (concatenation),
    /// plus the contiguous fast path with offsets.
    func testStridedCopySlicesAndRegions() throws {
        let rows = small ? 9 : 37, columns = small ? 11 : 45
        let src = try pair(uniform(rows * columns))
        let dstColumns = columns + 5
        let dst = try poisonedPair(rows * dstColumns)
        let slice = StridedCopy(shape: [rows - 3, columns - 4], srcOffset: 2 * columns + 1, srcStrides: [columns, 1],
                                dstOffset: 3, dstStrides: [dstColumns, 1])
        try gpu.copy(src.gpu, dst.gpu, layout: slice)
        try cpu.copy(src.cpu, dst.cpu, layout: slice)
        var result = try read(dst, count: rows * dstColumns)
        assertClose(result.gpu, result.cpu, tolerance: 0, "slice into a region (untouched elements stay NaN)")
        XCTAssertTrue(result.gpu[0].isNaN && result.gpu[3].isNaN == false, context("region bounds"))

        let contiguous = StridedCopy(shape: [2, columns], srcOffset: 5, srcStrides: [columns, 1],
                                     dstOffset: 7, dstStrides: [columns, 1])
        try gpu.copy(src.gpu, dst.gpu, layout: contiguous)
        try cpu.copy(src.cpu, dst.cpu, layout: contiguous)
        result = try read(dst, count: rows * dstColumns)
        assertClose(result.gpu, result.cpu, tolerance: 0, "contiguous copy with offsets")

        let broadcastRow = StridedCopy(shape: [rows, columns], srcStrides: [0, 1], dstStrides: [dstColumns, 1])
        try gpu.copy(src.gpu, dst.gpu, layout: broadcastRow)
        try cpu.copy(src.cpu, dst.cpu, layout: broadcastRow)
        result = try read(dst, count: rows * dstColumns)
        assertClose(result.gpu, result.cpu, tolerance: 0, "broadcast copy of row 0")
    }

    func testFillWritesExactlyCount() throws {
        for count in awkwardSizes {
            let buffer = try gpu.allocate(count: count + 3)
            try gpu.fill(buffer, value: .nan, count: count + 3)
            try gpu.fill(buffer, value: 2.5, count: count)
            let values = try gpu.readFloats(buffer, count: count + 3)
            XCTAssertEqual(Array(values[..<count]), [Float](repeating: 2.5, count: count), context("fill \(count)"))
            XCTAssertTrue(values[count...].allSatisfy(\.isNaN), context("fill \(count) stays in range"))
        }
    }

    func testIntegerRoundTripAndTooSmallBuffer() throws {
        let labels: [Int32] = [3, -1, Int32.max, 0, 7]
        let buffer = try gpu.allocate(count: labels.count)
        try gpu.write(labels, to: buffer)
        XCTAssertEqual(try gpu.readInts(buffer, count: labels.count), labels)
        XCTAssertThrowsError(try gpu.unary(.exp, buffer, buffer, count: labels.count + 1))
        XCTAssertThrowsError(try gpu.unary(.exp, try cpu.allocate(count: 8), buffer, count: 1))
    }

    /// The ops only enqueue: no host waits until a read.
    func testOpsEnqueueWithoutHostWaits() throws {
        let count = small ? 40 : 1000
        let x = try gpu.allocate(count: count), y = try gpu.allocate(count: count)
        let m = try gpu.allocate(count: count), v = try gpu.allocate(count: count)
        let c = try gpu.allocate(count: count)
        try gpu.write(uniform(count), to: x)
        // Written rather than filled: oclgrind --uninitialized does not count clEnqueueFillBuffer as initialising.
        try gpu.write([Float](repeating: 0, count: count), to: m)
        try gpu.write([Float](repeating: 0, count: count), to: v)
        let before = gpu.hostWaitCount
        try gpu.unary(.tanh, x, y, count: count)
        try gpu.binary(.add, x, y, y, layout: BroadcastLayout(shape: [count], stridesA: [1], stridesB: [1]))
        try gpu.gemm(x, y, c, descriptor: GemmDescriptor(m: 4, n: 5, k: 6))
        try gpu.softmax(y, y, rows: 10, columns: count / 10, log: false)
        try gpu.adamUpdate(parameter: x, gradient: y, m: m, v: v, count: count,
                           step: AdamStep(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8,
                                          weightDecay: 0, decoupled: true, step: 1))
        try gpu.reduce(.sum, x, c, layout: ReduceLayout(outer: 1, size: count, inner: 1))
        XCTAssertEqual(gpu.hostWaitCount, before, "an op waited for the device")
        _ = try gpu.readFloats(c, count: 1)
        XCTAssertEqual(gpu.hostWaitCount, before + 1, "readFloats must wait once")
    }
}
