import XCTest
@testable import OpalCore

/// Every differentiable tensor op: autodiff gradient versus finite differences.
final class TensorGradientTests: XCTestCase {
    func testBroadcastingArithmetic() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let a = (random.values(3 * 1 * 5), Shape([3, 1, 5]))
        let b = (random.values(4 * 5), Shape([4, 5]))
        // For max/min, values on two interleaved grids so no pair lies within ε of a tie.
        let aGrid = ((0..<15).map { _ in Float(Int(random.next() % 20) - 10) * 0.1 + 0.05 }, Shape([3, 1, 5]))
        let bGrid = ((0..<20).map { _ in Float(Int(random.next() % 20) - 10) * 0.1 }, Shape([4, 5]))
        for op in ["+", "-", "*", "max", "min"] {
            let (a, b) = op.count == 3 ? (aGrid, bGrid) : (a, b)
            try checkGradients([a, b], seed: seed) { x in
                switch op {
                case "+": return try x[0] + x[1]
                case "-": return try x[0] - x[1]
                case "*": return try x[0] * x[1]
                case "max": return try x[0].maximum(x[1])
                default: return try x[0].minimum(x[1])
                }
            }
        }
        let positive = (random.values(4 * 5, 0.5...2), Shape([4, 5]))
        try checkGradients([a, positive], seed: seed) { x in try x[0] / x[1] }
        try checkGradients([positive, (random.values(5), Shape([5]))], seed: seed) { x in try x[0].pow(x[1]) }
    }

    func testUnaryFunctions() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        // Keep inputs away from the kinks of relu/abs so finite differences are meaningful.
        let values = random.values(33).map { $0 < 0 ? $0 - 0.1 : $0 + 0.1 }
        let input = [(values, Shape([3, 11]))]
        let positive = [(values.map { abs($0) + 0.2 }, Shape([3, 11]))]
        let ops: [(String, (Tensor) throws -> Tensor)] = [
            ("exp", { try $0.exp() }), ("relu", { try $0.relu() }), ("leakyRelu", { try $0.leakyRelu(slope: 0.1) }),
            ("sigmoid", { try $0.sigmoid() }), ("tanh", { try $0.tanh() }), ("gelu", { try $0.gelu() }),
            ("softplus", { try $0.softplus() }), ("square", { try $0.squared() }), ("abs", { try $0.absolute() }),
            ("negate", { try -$0 }), ("affine", { try $0 * 3 + 1 }), ("scalar-minus", { try 2 - $0 }),
        ]
        for (name, op) in ops {
            try checkGradients(input, seed: seed) { try op($0[0]) }
            _ = name
        }
        let positiveOps: [(Tensor) throws -> Tensor] = [
            { try $0.log() }, { try $0.sqrt() }, { try $0.reciprocal() }, { try $0.pow(2.5) }, { try 1 / $0 },
        ]
        for op in positiveOps { try checkGradients(positive, seed: seed) { try op($0[0]) } }
    }

    func testShapeOps() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let x = (random.values(2 * 3 * 4), Shape([2, 3, 4]))
        try checkGradients([x], seed: seed) { try $0[0].reshaped(to: [4, -1]) }
        try checkGradients([x], seed: seed) { try $0[0].permuted([2, 0, 1]) }
        try checkGradients([x], seed: seed) { try $0[0].transposed() }
        try checkGradients([x], seed: seed) { try $0[0].sliced(along: 1, 1..<3) }
        try checkGradients([x], seed: seed) { try $0[0].sliced(along: -1, 0..<1) }
        try checkGradients([(random.values(3), Shape([3, 1]))], seed: seed) { try $0[0].expanded(to: [2, 3, 5]) }
        let y = (random.values(2 * 5 * 4), Shape([2, 5, 4]))
        try checkGradients([x, y], seed: seed) { try Tensor.concatenated([$0[0], $0[1], $0[0]], along: 1) }
    }

    func testReductions() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        // Distinct values so the maximum is unique.
        let values = (0..<60).map { Float($0) * 0.05 - 1.5 }.shuffled()
        _ = random.next()
        let x = [(values, Shape([3, 4, 5]))]
        try checkGradients(x, seed: seed) { try $0[0].sum() }
        try checkGradients(x, seed: seed) { try $0[0].sum(alongAxes: [0, 2]) }
        try checkGradients(x, seed: seed) { try $0[0].sum(alongAxis: 1, keepingDimensions: true) }
        try checkGradients(x, seed: seed) { try $0[0].mean(alongAxis: -1) }
        try checkGradients(x, seed: seed) { try $0[0].mean() }
        try checkGradients(x, seed: seed) { try $0[0].max(alongAxis: 1) }
        try checkGradients(x, seed: seed) { try $0[0].max(alongAxis: 2, keepingDimensions: true) }
    }

    func testMatmulAllTransposesAndBatches() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let (m, k, n) = (3, 5, 4)
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                let a = (random.values(m * k), Shape(transposeA ? [k, m] : [m, k]))
                let b = (random.values(k * n), Shape(transposeB ? [n, k] : [k, n]))
                try checkGradients([a, b], seed: seed) { try $0[0].matmul($0[1], transposeSelf: transposeA, transposeOther: transposeB) }
                let batchedA = (random.values(2 * m * k), Shape(transposeA ? [2, k, m] : [2, m, k]))
                let batchedB = (random.values(2 * k * n), Shape(transposeB ? [2, n, k] : [2, k, n]))
                try checkGradients([batchedA, batchedB], seed: seed) {
                    try $0[0].matmul($0[1], transposeSelf: transposeA, transposeOther: transposeB)
                }
                // A shared 2-D right operand.
                try checkGradients([batchedA, b], seed: seed) {
                    try $0[0].matmul($0[1], transposeSelf: transposeA, transposeOther: transposeB)
                }
            }
        }
    }

    func testSoftmaxFamilyAndLosses() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let logits = (random.values(4 * 7, -2...2), Shape([4, 7]))
        try checkGradients([logits], seed: seed) { try $0[0].softmax() }
        try checkGradients([logits], seed: seed) { try $0[0].logSoftmax() }
        let labels = try Tensor([Int32](arrayLiteral: 0, 6, 3, 3), shape: [4], on: cpuDevice)
        try checkGradients([logits], seed: seed) { try Tensor.softmaxCrossEntropy(logits: $0[0], labels: labels) }
        let targets = try Tensor(random.values(28, 0...1), shape: [4, 7], on: cpuDevice)
        try checkGradients([logits], seed: seed) { try ($0[0].softplus() - $0[0] * targets).mean() }
    }

    func testDropoutGradientUsesTheSameMask() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let x = (random.values(50), Shape([5, 10]))
        try checkGradients([x], seed: seed) { try $0[0].dropout(probability: 0.3, seed: 1234) }
    }

    /// A hand-computed 2×2 case: y = relu(W·x + b), L = Σ y.
    func testHandComputedTwoByTwo() throws {
        let w = try Tensor([1, -2, 3, 4], shape: [2, 2], on: cpuDevice).requiringGradient()
        let x = try Tensor([1, 1], shape: [2, 1], on: cpuDevice)
        let b = try Tensor([0.5, -10], shape: [2, 1], on: cpuDevice).requiringGradient()
        let y = try (w.matmul(x) + b).relu()       // [−0.5, −3] → relu → [0, 0]? no: W·x = [−1, 7]
        XCTAssertEqual(try y.scalars(), [0, 0])     // [−1 + 0.5, 7 − 10] = [−0.5, −3]
        let w2 = try Tensor([1, 2, 3, 4], shape: [2, 2], on: cpuDevice).requiringGradient()
        let y2 = try (w2.matmul(x) + b).relu()      // [3.5, −3] → [3.5, 0]
        XCTAssertEqual(try y2.scalars(), [3.5, 0])
        try y2.sum().backward()
        XCTAssertEqual(try w2.gradient?.scalars(), [1, 1, 0, 0])
        XCTAssertEqual(try b.gradient?.scalars(), [1, 0])
    }

    func testGradientsAccumulateAcrossUses() throws {
        let x = try Tensor([2, 3], shape: [2], on: cpuDevice).requiringGradient()
        try (x * x + x).sum().backward()            // d/dx = 2x + 1
        XCTAssertEqual(try x.gradient?.scalars(), [5, 7])
        x.zeroGradient()
        XCTAssertNil(x.gradient)
    }
}
