import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// The simple Double references of the unary ops.
func referenceUnary(_ op: UnaryOp, _ x: Double) -> Double {
    switch op {
    case .identity: return x
    case .negate: return -x
    case .abs: return Swift.abs(x)
    case .exp: return Foundation.exp(x)
    case .log: return Foundation.log(x)
    case .sqrt: return x.squareRoot()
    case .reciprocal: return 1 / x
    case .square: return x * x
    case .relu: return Swift.max(x, 0)
    case let .leakyRelu(slope): return x > 0 ? x : Double(slope) * x
    case .sigmoid: return 1 / (1 + Foundation.exp(-x))
    case .tanh: return Foundation.tanh(x)
    // 0.5·x·(1 + tanh u) as x·σ(2u): 1 + tanh u cancels in the negative tail even in Double.
    case .gelu: return x / (1 + Foundation.exp(-2 * (2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
    case .softplus: return Foundation.log(1 + Foundation.exp(x))
    case let .power(p): return Foundation.pow(x, Double(p))
    case let .affine(scale, shift): return Double(scale) * x + Double(shift)
    case .step: return x > 0 ? 1 : 0
    case let .leakyReluDerivative(slope): return x > 0 ? 1 : Double(slope)
    case .geluDerivative:
        // Not the formula under test: a central difference of the GELU reference in Double.
        let h = 1e-5
        return (referenceUnary(.gelu, x + h) - referenceUnary(.gelu, x - h)) / (2 * h)
    }
}

func referenceBinary(_ op: BinaryOp, _ a: Double, _ b: Double) -> Double {
    switch op {
    case .add: return a + b
    case .subtract: return a - b
    case .multiply: return a * b
    case .divide: return a / b
    case .power: return Foundation.pow(a, b)
    case .maximum: return Swift.max(a, b)
    case .minimum: return Swift.min(a, b)
    }
}

/// Calls `body(index, offsets)` for every row-major index of `shape`, with Σ idx·strides per operand.
func forEachIndex(_ shape: [Int], _ strides: [[Int]], _ body: (Int, [Int]) -> Void) {
    let count = shape.reduce(1, *)
    for flat in 0..<count {
        var rest = flat
        var offsets = [Int](repeating: 0, count: strides.count)
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            let index = rest % shape[axis]
            rest /= shape[axis]
            for k in strides.indices { offsets[k] += index * strides[k][axis] }
        }
        body(flat, offsets)
    }
}

final class ElementwiseTests: CPUTestCase {
    /// Each op with an input domain where it is defined and well conditioned.
    let unaryCases: [(UnaryOp, ClosedRange<Float>)] = [
        (.identity, -3...3), (.negate, -3...3), (.abs, -3...3), (.exp, -10...10), (.log, 0.01...100),
        (.sqrt, 0...100), (.reciprocal, 0.1...10), (.square, -3...3), (.relu, -3...3),
        (.leakyRelu(slope: 0.01), -3...3), (.sigmoid, -20...20), (.tanh, -5...5), (.gelu, -6...6),
        (.softplus, -30...30), (.power(1.7), 0.01...10), (.power(2), -3...3), (.power(0.5), 0...9),
        (.power(-1), 0.1...10), (.power(1), -3...3), (.affine(scale: -1.5, shift: 0.25), -3...3),
        (.step, -3...3), (.leakyReluDerivative(slope: 0.2), -3...3), (.geluDerivative, -6...6),
    ]

    func testUnaryMatchesDoubleReference() throws {
        for (op, domain) in unaryCases {
            // One large size (split across threads) for a cheap and two expensive ops keeps the test fast.
            let large = [UnaryOp.relu, .exp, .gelu].contains(op) ? [300_001] : []
            for size in awkwardSizes + large {
                let values = uniform(size, in: domain)
                let y = try poisoned(size)
                try backend.unary(op, try buffer(values), y, count: size)
                let expected = values.map { referenceUnary(op, Double($0)) }
                // GELU's derivative is checked against a finite difference here, so it gets a looser bound.
                let relative = op == .geluDerivative ? 1e-4 : 1e-5
                assertClose(try read(y), expected, relative: relative, absolute: 1e-6, "\(op), size \(size)")
            }
        }
    }

    /// The vector-math loops (AVX2 + FMA where available) at the ends of their ranges: exp underflows to
    /// exactly 0 and overflows to +∞ like libm, tanh and sigmoid saturate, NaN passes through.
    func testTranscendentalsAtExtremes() throws {
        let values: [Float] = [-200, -87.5, -50, 0, 50, 88.5, 88.72, 89, 200, .nan, -.infinity, .infinity]
        for op in [UnaryOp.exp, .sigmoid, .tanh, .gelu] {
            let y = try poisoned(values.count)
            try backend.unary(op, try buffer(values), y, count: values.count)
            let result = try read(y)
            for (x, value) in zip(values, result) {
                let expected = Float(referenceUnary(op, Double(x)))
                if expected.isNaN || (op == .gelu && x.isInfinite) {
                    continue   // NaN in, and GELU at ±∞ (∞·σ: the Double reference gives NaN at −∞)
                }
                if expected.magnitude < Float.leastNormalMagnitude {   // below −87 exp flushes to 0
                    XCTAssertLessThan(value.magnitude, Float.leastNormalMagnitude, context("\(op)(\(x)) = \(value)"))
                    continue
                }
                let error = expected.isInfinite || expected == 0 ? (value == expected ? 0 : 1)
                    : Swift.abs(Double(value) - Double(expected)) / Swift.abs(Double(expected))
                XCTAssertLessThan(error, 2e-6, context("\(op)(\(x)) = \(value), expected \(expected)"))
            }
            XCTAssertTrue(result[values.firstIndex { $0.isNaN }!].isNaN, context("\(op)(NaN) is NaN"))
        }
    }

    /// `unaryGradient` (one pass) against dy · f'(x) in Double, f' a central difference of f's reference.
    func testFusedActivationGradientsMatchDoubleReference() throws {
        for op in [UnaryOp.relu, .leakyRelu(slope: 0.1), .sigmoid, .tanh, .gelu] {
            for size in awkwardSizes + [300_001] {
                let values = uniform(size, in: -6...6).map { Swift.abs($0) < 1e-3 ? $0 + 0.01 : $0 }
                let gradOutput = uniform(size)
                let output = try poisoned(size)
                let x = try buffer(values)
                try backend.unary(op, x, output, count: size)
                let gradInput = try poisoned(size)
                try backend.unaryGradient(op, input: x, output: output, gradOutput: try buffer(gradOutput),
                                          gradInput: gradInput, count: size)
                let h = 1e-5
                let expected = zip(values, gradOutput).map { value, dy -> Double in
                    let x = Double(value)
                    return Double(dy) * (referenceUnary(op, x + h) - referenceUnary(op, x - h)) / (2 * h)
                }
                // sigmoid and tanh take f' from the float output (y(1 − y), 1 − y²): y's ulp near ±1 is ≈ 1e-6 of dx.
                assertClose(try read(gradInput), expected, relative: 1e-4, absolute: 1e-6, magnitude: 2, "\(op) gradient, size \(size)")
            }
        }
        // In place (dx = dy) and an op without a fused gradient.
        let values = uniform(100), dy = try buffer(uniform(100))
        let expected = zip(values, try read(dy)).map { Double($1) * (1 - Foundation.tanh(Double($0)) * Foundation.tanh(Double($0))) }
        let y = try poisoned(100)
        try backend.unary(.tanh, try buffer(values), y, count: 100)
        try backend.unaryGradient(.tanh, input: try buffer(values), output: y, gradOutput: dy, gradInput: dy, count: 100)
        assertClose(try read(dy), expected, relative: 1e-5, absolute: 1e-6, "tanh gradient in place")
        XCTAssertThrowsError(try backend.unaryGradient(.log, input: y, output: y, gradOutput: dy, gradInput: dy, count: 100))
    }

    func testUnaryInPlace() throws {
        let values = uniform(1000)
        let x = try buffer(values)
        try backend.unary(.tanh, x, x, count: 1000)
        assertClose(try read(x), values.map { Foundation.tanh(Double($0)) }, "tanh in place")
        try backend.unary(.identity, x, x, count: 1000)
        assertClose(try read(x), values.map { Foundation.tanh(Double($0)) }, "identity in place")
    }

    func testUnaryWritesOnlyCountElements() throws {
        let y = try poisoned(40)
        try backend.unary(.exp, try buffer(uniform(40)), y, count: 33)
        let result = try read(y)
        XCTAssertFalse(result[..<33].contains { $0.isNaN }, context("exp wrote every element"))
        XCTAssertTrue(result[33...].allSatisfy(\.isNaN), context("exp wrote past count"))
    }

    func testSoftplusIsStableAtExtremes() throws {
        let y = try poisoned(4)
        try backend.unary(.softplus, try buffer([-200, 200, 0, 90]), y, count: 4)
        assertClose(try read(y), [Foundation.exp(-200.0), 200, Foundation.log(2.0), 90], "softplus extremes")
    }

    /// The `…Derivative` ops against central differences (in Double) of the forward op's reference.
    func testDerivativeOpsMatchFiniteDifferencesOfTheirForwardOp() throws {
        let pairs: [(derivative: UnaryOp, forward: UnaryOp)] = [
            (.step, .relu), (.leakyReluDerivative(slope: 0.1), .leakyRelu(slope: 0.1)), (.geluDerivative, .gelu),
        ]
        for (derivative, forward) in pairs {
            for size in awkwardSizes {
                // Keep away from the kink at 0 where the finite difference straddles two pieces.
                let values = uniform(size, in: -4...4).map { Swift.abs($0) < 1e-3 ? $0 + 0.01 : $0 }
                let y = try poisoned(size)
                try backend.unary(derivative, try buffer(values), y, count: size)
                let h = 1e-4
                let expected = values.map { value -> Double in
                    let x = Double(value)
                    return (referenceUnary(forward, x + h) - referenceUnary(forward, x - h)) / (2 * h)
                }
                assertClose(try read(y), expected, relative: 1e-4, absolute: 1e-5, "\(derivative), size \(size)")
            }
        }
        // The formula of the GELU derivative at hand-checked points: 0.5 at 0, → 1 far right, → 0 far left.
        let y = try poisoned(3)
        try backend.unary(.geluDerivative, try buffer([0, 10, -10]), y, count: 3)
        assertClose(try read(y), [0.5, 1, 0], "geluDerivative at 0, 10, -10")
    }

    // MARK: Binary

    /// (shape, strides of a, strides of b, elements in a, elements in b)
    func broadcastCases() -> [(String, BroadcastLayout, Int, Int)] {
        var cases: [(String, BroadcastLayout, Int, Int)] = []
        for n in awkwardSizes + [300_001] {
            cases.append(("same shape \(n)", BroadcastLayout(shape: [n], stridesA: [1], stridesB: [1]), n, n))
            cases.append(("scalar b \(n)", BroadcastLayout(shape: [n], stridesA: [1], stridesB: [0]), n, 1))
            cases.append(("scalar a \(n)", BroadcastLayout(shape: [n], stridesA: [0], stridesB: [1]), 1, n))
        }
        for (rows, columns) in [(1, 1), (7, 33), (33, 7), (3, 1000)] {
            cases.append(("bias row [\(rows), \(columns)]",
                          BroadcastLayout(shape: [rows, columns], stridesA: [columns, 1], stridesB: [0, 1]),
                          rows * columns, columns))
            cases.append(("column [\(rows), \(columns)]",
                          BroadcastLayout(shape: [rows, columns], stridesA: [columns, 1], stridesB: [1, 0]),
                          rows * columns, rows))
            cases.append(("transposed a [\(rows), \(columns)]",
                          BroadcastLayout(shape: [rows, columns], stridesA: [1, rows], stridesB: [columns, 1]),
                          rows * columns, rows * columns))
            cases.append(("outer product [\(rows), \(columns)]",
                          BroadcastLayout(shape: [rows, columns], stridesA: [1, 0], stridesB: [0, 1]),
                          rows, columns))
        }
        cases.append(("rank 4 mixed", BroadcastLayout(shape: [2, 3, 1, 5], stridesA: [15, 5, 0, 1],
                                                      stridesB: [0, 1, 0, 3]), 30, 15))
        cases.append(("rank 3 permuted", BroadcastLayout(shape: [4, 3, 7], stridesA: [1, 28, 4],
                                                         stridesB: [21, 7, 1]), 84, 84))
        cases.append(("rank 5 with unit axes", BroadcastLayout(shape: [1, 3, 1, 4, 2], stridesA: [0, 8, 0, 2, 1],
                                                               stridesB: [0, 0, 0, 1, 0]), 24, 4))
        return cases
    }

    func testBinaryMatchesDoubleReference() throws {
        for (name, layout, countA, countB) in broadcastCases() {
            // The large flat cases (split across threads) run two ops only, to keep the test fast.
            let ops: [BinaryOp] = layout.count > 100_000 ? [.subtract, .maximum]
                                                          : [.add, .subtract, .multiply, .divide, .power, .maximum, .minimum]
            for op in ops {
                let domain: ClosedRange<Float> = op == .power || op == .divide ? 0.5...2 : -3...3
                let a = uniform(countA, in: domain), b = uniform(countB, in: domain)
                let out = try poisoned(layout.count)
                try backend.binary(op, try buffer(a), try buffer(b), out, layout: layout)
                var expected = [Double](repeating: .nan, count: layout.count)
                forEachIndex(layout.shape, [layout.stridesA, layout.stridesB]) { flat, offsets in
                    expected[flat] = referenceBinary(op, Double(a[offsets[0]]), Double(b[offsets[1]]))
                }
                assertClose(try read(out), expected, "\(op), \(name)")
            }
        }
    }

    func testBinaryInPlaceAccumulate() throws {
        let a = uniform(1000), b = uniform(1000)
        let x = try buffer(a)
        try backend.binary(.add, x, try buffer(b), x, layout: BroadcastLayout(shape: [1000], stridesA: [1], stridesB: [1]))
        assertClose(try read(x), zip(a, b).map { Double($0) + Double($1) }, "a += b")
        let y = try buffer(b)   // out is b, with a broadcast row: y = a_row − y
        try backend.binary(.subtract, try buffer(a), y, y,
                           layout: BroadcastLayout(shape: [10, 100], stridesA: [0, 1], stridesB: [100, 1]))
        assertClose(try read(y), (0..<1000).map { Double(a[$0 % 100]) - Double(b[$0]) }, "b = a_row − b")
    }

    func testBinaryRejectsBadLayouts() throws {
        let small = try poisoned(4)
        XCTAssertThrowsError(try backend.binary(.add, small, small, small,
                                                layout: BroadcastLayout(shape: [5], stridesA: [1], stridesB: [1])))
        XCTAssertThrowsError(try backend.binary(.add, small, small, small,
                                                layout: BroadcastLayout(shape: [2, 2], stridesA: [1], stridesB: [1])))
    }

    // MARK: Strided copy

    func testStridedCopyMatchesReference() throws {
        var cases: [(String, StridedCopy, Int, Int)] = []   // (name, layout, source count, destination count)
        for (rows, columns) in [(1, 1), (7, 33), (33, 7), (3, 1000)] {
            cases.append(("transpose [\(rows), \(columns)]",
                          StridedCopy(shape: [columns, rows], srcStrides: [1, columns], dstStrides: [rows, 1]),
                          rows * columns, rows * columns))
            cases.append(("contiguous [\(rows), \(columns)]",
                          StridedCopy(shape: [rows, columns], srcStrides: [columns, 1], dstStrides: [columns, 1]),
                          rows * columns, rows * columns))
            cases.append(("broadcast row into [\(rows), \(columns)]",
                          StridedCopy(shape: [rows, columns], srcStrides: [0, 1], dstStrides: [columns, 1]),
                          columns, rows * columns))
            cases.append(("broadcast column into [\(rows), \(columns)]",
                          StridedCopy(shape: [rows, columns], srcStrides: [1, 0], dstStrides: [columns, 1]),
                          rows, rows * columns))
        }
        // Slice columns 2..<9 of a [5, 11] matrix into the middle of a [5, 20] one (concatenation).
        cases.append(("slice into region", StridedCopy(shape: [5, 7], srcOffset: 2, srcStrides: [11, 1],
                                                       dstOffset: 4, dstStrides: [20, 1]), 55, 100))
        cases.append(("permute rank 4", StridedCopy(shape: [3, 2, 5, 4], srcStrides: [1, 60, 3, 15],
                                                    dstStrides: [40, 20, 4, 1]), 120, 120))
        cases.append(("reverse", StridedCopy(shape: [33], srcOffset: 32, srcStrides: [-1], dstStrides: [1]), 33, 33))
        cases.append(("scalar", StridedCopy(shape: [], srcOffset: 3, srcStrides: [], dstOffset: 1, dstStrides: []),
                      7, 7))
        for (name, layout, sourceCount, destinationCount) in cases {
            let source = uniform(sourceCount)
            let destination = try poisoned(destinationCount)
            try backend.copy(try buffer(source), destination, layout: layout)
            var expected = [Double](repeating: .nan, count: destinationCount)   // untouched elements stay NaN
            forEachIndex(layout.shape, [layout.srcStrides, layout.dstStrides]) { _, offsets in
                expected[layout.dstOffset + offsets[1]] = Double(source[layout.srcOffset + offsets[0]])
            }
            assertClose(try read(destination), expected, relative: 0, absolute: 0, name)
        }
    }

    func testStridedCopyMovesInt32BitsExactly() throws {
        let ints = (0..<77).map { _ in Int32.random(in: .min ... .max, using: &random) }
        let destination = try backend.allocate(count: 77)
        try backend.copy(try intBuffer(ints), destination,
                         layout: StridedCopy(shape: [7, 11], srcStrides: [1, 7], dstStrides: [11, 1]))
        var expected = [Int32](repeating: 0, count: 77)
        for i in 0..<7 { for j in 0..<11 { expected[i * 11 + j] = ints[j * 7 + i] } }
        XCTAssertEqual(try backend.readInts(destination, count: 77), expected, context("Int32 transpose"))
    }

    func testStridedCopyRejectsOutOfRangeLayouts() throws {
        let small = try poisoned(10)
        XCTAssertThrowsError(try backend.copy(small, small, layout: StridedCopy(shape: [11], srcStrides: [1],
                                                                                  dstStrides: [0])))
        XCTAssertThrowsError(try backend.copy(small, small, layout: StridedCopy(shape: [2], srcOffset: 0,
                                                                                  srcStrides: [-1], dstStrides: [1])))
    }

    // MARK: Dropout

    func testDropoutMaskMatchesCounterBasedGenerator() throws {
        for size in awkwardSizes + [200_003] {
            for probability: Float in [0, 0.1, 0.5, 0.9, 1] {
                let seed = UInt32.random(in: 0 ... .max, using: &random)
                let out = try poisoned(size)
                try backend.dropoutMask(out, count: size, probability: probability, seed: seed)
                let expected = (0..<size).map { index -> Double in
                    let u = OpalRandom.uniform(seed: seed, index: UInt32(index))
                    return u >= probability ? 1 / (1 - Double(probability)) : 0
                }
                let result = try read(out)
                assertClose(result, expected, "dropout p \(probability), size \(size)")
                if size >= 1000 {
                    let kept = Double(result.filter { $0 != 0 }.count) / Double(size)
                    XCTAssertEqual(kept, 1 - Double(probability), accuracy: 0.06,
                                   context("kept fraction, p \(probability), size \(size)"))
                }
            }
        }
        XCTAssertThrowsError(try backend.dropoutMask(try poisoned(1), count: 1, probability: 1.5, seed: 0))
    }
}
