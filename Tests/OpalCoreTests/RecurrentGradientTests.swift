import XCTest
@testable import OpalCore
import OpalCPU

/// The recurrent ops at the tensor level on the CPU: autodiff gradients of `lstmCell`, `gruCell` and
/// `embeddingLookup` against finite differences, the fused cells against their composed forms
/// (forward and every gradient), a BPTT unroll over 6 steps, and the errors bad operands give.
/// (The same fused-vs-composed comparison on OpenCL lives in Tests/OpalOpenCLTests/RecurrentKernelTests.swift.)
final class RecurrentGradientTests: XCTestCase {
    func testLSTMCellGradients() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let (batch, hidden) = (3, 5)
        let gates = (random.values(batch * 4 * hidden, -2...2), Shape([batch, 4 * hidden]))
        let cell = (random.values(batch * hidden), Shape([batch, hidden]))
        try checkGradients([gates, cell], seed: seed, epsilon: 1e-2, tolerance: 1e-2, maximumProbes: 60) {
            let (h, c) = try $0[0].lstmCell(cell: $0[1])
            return try Tensor.concatenated([h, c], along: 1)
        }
        // Only one of the two outputs used: the other's gradient is zero, not missing.
        try checkGradients([gates, cell], seed: seed, epsilon: 1e-2, tolerance: 1e-2, maximumProbes: 60) {
            try $0[0].lstmCell(cell: $0[1]).cell
        }
    }

    func testGRUCellGradients() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let (batch, hidden) = (2, 7)
        let inputGates = (random.values(batch * 3 * hidden, -2...2), Shape([batch, 3 * hidden]))
        let hiddenGates = (random.values(batch * 3 * hidden, -2...2), Shape([batch, 3 * hidden]))
        let state = (random.values(batch * hidden), Shape([batch, hidden]))
        try checkGradients([inputGates, hiddenGates, state], seed: seed, epsilon: 1e-2, tolerance: 1e-2,
                           maximumProbes: 60) {
            try Tensor.gruCell(inputGates: $0[0], hiddenGates: $0[1], hidden: $0[2])
        }
    }

    /// Repeated ids (rows 1 and 3 hit several times, row 0 never) in a [2, 3] index tensor.
    func testEmbeddingLookupGradients() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let table = (random.values(5 * 4), Shape([5, 4]))
        let ids = try Tensor([1, 3, 1, 1, 4, 3] as [Int32], shape: [2, 3], on: cpuDevice)
        try checkGradients([table], seed: seed) { try $0[0].embeddingLookup(ids) }
        let y = try Tensor(table.0, shape: table.1, on: cpuDevice).embeddingLookup(ids)
        XCTAssertEqual(y.shape, [2, 3, 4])
        XCTAssertEqual(Array(try y.scalars()[8..<12]), Array(table.0[4..<8]), "token (0, 2) is row 1")
    }

    /// Out-of-range ids read and write nothing out of bounds: zero rows forward, no gradient.
    func testEmbeddingOutOfRangeIdsGiveZeroRows() throws {
        let table = try Tensor([1, 2, 3, 4], shape: [2, 2], on: cpuDevice).requiringGradient()
        let ids = try Tensor([0, -1, 2, 1] as [Int32], shape: [4], on: cpuDevice)
        let y = try table.embeddingLookup(ids)
        XCTAssertEqual(try y.scalars(), [1, 2, 0, 0, 0, 0, 3, 4])
        try y.sum().backward()
        XCTAssertEqual(try table.gradient?.scalars(), [1, 1, 1, 1])
    }

    func testFusedCellsMatchComposedOnCPU() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        for (batch, hidden) in [(1, 1), (3, 37), (2, 130)] {
            try assertLSTMFusedMatchesComposed(batch: batch, hidden: hidden, random: &random, seed: seed)
            try assertGRUFusedMatchesComposed(batch: batch, hidden: hidden, random: &random, seed: seed)
        }
    }

    private func assertLSTMFusedMatchesComposed(batch: Int, hidden: Int, random: inout TestRandom, seed: UInt64) throws {
        let gates = random.values(batch * 4 * hidden, -3...3), cell = random.values(batch * hidden)
        let weightsH = random.values(batch * hidden), weightsC = random.values(batch * hidden)
        func run(fused: Bool) throws -> [[Float]] {
            let g = try Tensor(gates, shape: [batch, 4 * hidden], on: cpuDevice).requiringGradient()
            let c = try Tensor(cell, shape: [batch, hidden], on: cpuDevice).requiringGradient()
            let (h, newCell) = try fused ? g.lstmCell(cell: c) : g.lstmCellComposed(cell: c)
            let loss = try (h * Tensor(weightsH, shape: [batch, hidden], on: cpuDevice)).sum()
                + (newCell * Tensor(weightsC, shape: [batch, hidden], on: cpuDevice)).sum()
            try loss.backward()
            return [try h.scalars(), try newCell.scalars(), try g.gradient!.scalars(), try c.gradient!.scalars()]
        }
        let fused = try run(fused: true), composed = try run(fused: false)
        for (index, name) in ["h", "c", "d gates", "d cell"].enumerated() {
            assertClose(fused[index], composed[index], "LSTM \(name) B\(batch) H\(hidden) (seed \(seed))")
        }
    }

    private func assertGRUFusedMatchesComposed(batch: Int, hidden: Int, random: inout TestRandom, seed: UInt64) throws {
        let inputGates = random.values(batch * 3 * hidden, -3...3), hiddenGates = random.values(batch * 3 * hidden, -3...3)
        let state = random.values(batch * hidden), weights = random.values(batch * hidden)
        func run(fused: Bool) throws -> [[Float]] {
            let gi = try Tensor(inputGates, shape: [batch, 3 * hidden], on: cpuDevice).requiringGradient()
            let gh = try Tensor(hiddenGates, shape: [batch, 3 * hidden], on: cpuDevice).requiringGradient()
            let h = try Tensor(state, shape: [batch, hidden], on: cpuDevice).requiringGradient()
            let y = try fused ? Tensor.gruCell(inputGates: gi, hiddenGates: gh, hidden: h)
                              : Tensor.gruCellComposed(inputGates: gi, hiddenGates: gh, hidden: h)
            try (y * Tensor(weights, shape: [batch, hidden], on: cpuDevice)).sum().backward()
            return [try y.scalars(), try gi.gradient!.scalars(), try gh.gradient!.scalars(), try h.gradient!.scalars()]
        }
        let fused = try run(fused: true), composed = try run(fused: false)
        for (index, name) in ["h", "d input gates", "d hidden gates", "d hidden"].enumerated() {
            assertClose(fused[index], composed[index], "GRU \(name) B\(batch) H\(hidden) (seed \(seed))")
        }
    }

    /// |fused − composed| ≤ 1e-5 · max(1, |composed|) elementwise: both are fp32 evaluations of the same formula.
    private func assertClose(_ actual: [Float], _ expected: [Float], _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        let bad = zip(actual, expected).enumerated().filter { !(abs($1.0 - $1.1) <= 1e-5 * max(1, abs($1.1))) }
        if let (index, (a, e)) = bad.first {
            XCTFail("\(what): element \(index) is \(a), expected \(e); \(bad.count) differ", file: file, line: line)
        }
    }

    /// An LSTM unrolled over 6 steps, `gates_t = x_t·W_ihᵀ + b + h_{t−1}·W_hhᵀ`, loss on every h_t:
    /// the gradients of the weights, the inputs and the initial state against finite differences.
    func testLSTMBackpropagationThroughTimeMatchesFiniteDifferences() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let (batch, input, hidden, steps) = (2, 3, 4, 6)
        let inputs: [(values: [Float], shape: Shape)] = [
            (random.values(4 * hidden * input, -0.8...0.8), [4 * hidden, input]),   // W_ih
            (random.values(4 * hidden * hidden, -0.8...0.8), [4 * hidden, hidden]), // W_hh
            (random.values(4 * hidden, -0.5...0.5), [4 * hidden]),                 // b
            (random.values(batch * steps * input), [batch, steps, input]),          // x
            (random.values(batch * hidden), [batch, hidden]),                       // h_0
            (random.values(batch * hidden), [batch, hidden]),                       // c_0
        ]
        try checkGradients(inputs, seed: seed, epsilon: 1e-2, tolerance: 1e-2, maximumProbes: 16) { t in
            var h = t[4], c = t[5]
            var outputs: [Tensor] = []
            for step in 0..<steps {
                let x = try t[3].sliced(along: 1, step..<(step + 1)).reshaped(to: [batch, input])
                let gates = try x.matmul(t[0], transposeOther: true) + t[2] + h.matmul(t[1], transposeOther: true)
                (h, c) = try gates.lstmCell(cell: c)
                outputs.append(h)
            }
            return try Tensor.concatenated(outputs + [c], along: 1)
        }
    }

    /// The same unroll through the fused GRU cell.
    func testGRUBackpropagationThroughTimeMatchesFiniteDifferences() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let (batch, input, hidden, steps) = (2, 3, 4, 6)
        let inputs: [(values: [Float], shape: Shape)] = [
            (random.values(3 * hidden * input, -0.8...0.8), [3 * hidden, input]),
            (random.values(3 * hidden * hidden, -0.8...0.8), [3 * hidden, hidden]),
            (random.values(3 * hidden, -0.5...0.5), [3 * hidden]),
            (random.values(batch * steps * input), [batch, steps, input]),
            (random.values(batch * hidden), [batch, hidden]),
        ]
        try checkGradients(inputs, seed: seed, epsilon: 1e-2, tolerance: 1e-2, maximumProbes: 16) { t in
            var h = t[4]
            var outputs: [Tensor] = []
            for step in 0..<steps {
                let x = try t[3].sliced(along: 1, step..<(step + 1)).reshaped(to: [batch, input])
                h = try Tensor.gruCell(inputGates: x.matmul(t[0], transposeOther: true) + t[2],
                                       hiddenGates: h.matmul(t[1], transposeOther: true), hidden: h)
                outputs.append(h)
            }
            return try Tensor.concatenated(outputs, along: 1)
        }
    }

    /// The multi-output recording the fused LSTM uses (Autodiff.swift): a toy op x ↦ (2x, 3x). The
    /// gradients of each output (one reaching it by two paths) must arrive separately, summed per
    /// output, and an output no path uses must arrive as nil.
    func testMultiOutputRecordingGathersEachOutputsGradient() throws {
        let x = try Tensor([1, -2], shape: [2], on: cpuDevice).requiringGradient()
        nonisolated(unsafe) var seen: [[Float]?] = []
        func toy() throws -> [Tensor] {
            Tensor.recorded([try x.detached() * 2, try x.detached() * 3], inputs: [x]) { upstreams, needs in
                XCTAssertEqual(needs, [true])
                seen = try upstreams.map { try $0?.scalars() }
                let first = try upstreams[0].map { try $0 * 2 } ?? Tensor.zeros([2], on: cpuDevice)
                let second = try upstreams[1].map { try $0 * 3 } ?? Tensor.zeros([2], on: cpuDevice)
                return [try first + second]
            }
        }
        var outputs = try toy()
        // L = Σ y0·[1, 2] + Σ y0 + Σ y1·[5, 7]: y0 gets [2, 3], y1 gets [5, 7]; dL/dx = 2·[2, 3] + 3·[5, 7].
        let loss = try (outputs[0] * Tensor([1, 2], on: cpuDevice)).sum() + outputs[0].sum()
            + (outputs[1] * Tensor([5, 7], on: cpuDevice)).sum()
        try loss.backward()
        XCTAssertEqual(seen.count, 2)
        XCTAssertEqual(seen[0], [2, 3]); XCTAssertEqual(seen[1], [5, 7])
        XCTAssertEqual(try x.gradient?.scalars(), [19, 27])
        // Backward from an output itself; the other output receives no gradient.
        x.zeroGradient()
        outputs = try toy()
        try outputs[1].backward(seed: Tensor([1, 1], on: cpuDevice))
        XCTAssertNil(seen[0] ?? nil)
        XCTAssertEqual(seen[1], [1, 1])
        XCTAssertEqual(try x.gradient?.scalars(), [3, 3])
    }

    /// `lstmCell` with gradients flowing from `hidden` only, `backward` called on it directly.
    func testLSTMCellBackwardFromHiddenMatchesComposed() throws {
        let seed = freshSeed()
        var random = TestRandom(seed)
        let gates = random.values(2 * 12, -2...2), cell = random.values(2 * 3), upstream = random.values(2 * 3)
        func gradients(fused: Bool) throws -> [[Float]] {
            let g = try Tensor(gates, shape: [2, 12], on: cpuDevice).requiringGradient()
            let c = try Tensor(cell, shape: [2, 3], on: cpuDevice).requiringGradient()
            let h = try fused ? g.lstmCell(cell: c).hidden : g.lstmCellComposed(cell: c).hidden
            try h.backward(seed: Tensor(upstream, shape: [2, 3], on: cpuDevice))
            return [try g.gradient!.scalars(), try c.gradient!.scalars()]
        }
        let fused = try gradients(fused: true), composed = try gradients(fused: false)
        assertClose(fused[0], composed[0], "d gates (seed \(seed))")
        assertClose(fused[1], composed[1], "d cell (seed \(seed))")
    }

    func testBadOperandsGiveClearErrors() throws {
        let gates = try Tensor.zeros([2, 8], on: cpuDevice)
        // [2, 8] gates need a [2, 2] cell.
        XCTAssertThrowsError(try gates.lstmCell(cell: Tensor.zeros([2, 3], on: cpuDevice))) { error in
            XCTAssertTrue("\(error)".contains("lstmCell"), "\(error)")
        }
        XCTAssertThrowsError(try gates.lstmCell(cell: Tensor.zeros([2], on: cpuDevice)))
        XCTAssertThrowsError(try gates.lstmCellComposed(cell: Tensor.zeros([3, 2], on: cpuDevice)))
        XCTAssertThrowsError(try Tensor.zeros([0, 8], on: cpuDevice).lstmCell(cell: Tensor.zeros([0, 2], on: cpuDevice)))
        let state = try Tensor.zeros([2, 2], on: cpuDevice)
        XCTAssertThrowsError(try Tensor.gruCell(inputGates: Tensor.zeros([2, 6], on: cpuDevice), hiddenGates: gates,
                                                hidden: state)) { error in
            XCTAssertTrue("\(error)".contains("gruCell"), "\(error)")
        }
        let ids = try Tensor([0, 1] as [Int32], shape: [2], on: cpuDevice)
        XCTAssertThrowsError(try Tensor.zeros([4], on: cpuDevice).embeddingLookup(ids))
        XCTAssertThrowsError(try Tensor.zeros([4, 2], on: cpuDevice).embeddingLookup(Tensor.zeros([2], on: cpuDevice))) {
            error in XCTAssertEqual(error as? TensorError, .dtypeMismatch(op: "embeddingLookup indices", expected: .int32,
                                                                        actual: .float32))
        }
        XCTAssertThrowsError(try Tensor.zeros([0, 2], on: cpuDevice).embeddingLookup(ids))
    }

    /// A backend without the recurrent op set: the cells fall back to their composed forms (same values
    /// and gradients), the embedding lookup names the missing op.
    func testBackendWithoutRecurrentOpsFallsBack() throws {
        let plain = Device(backend: PlainBackend())
        let gates = try Tensor([0.5, -1, 2, 0.25, 1, 0, -2, 3], shape: [1, 8], on: plain).requiringGradient()
        let cell = try Tensor([0.5, -0.5], shape: [1, 2], on: plain).requiringGradient()
        let (h, c) = try gates.lstmCell(cell: cell)
        try (h.sum() + c.sum()).backward()
        let reference = try Tensor(gates.scalars(), shape: [1, 8], on: cpuDevice).requiringGradient()
        let referenceCell = try Tensor(cell.scalars(), shape: [1, 2], on: cpuDevice).requiringGradient()
        let (rh, rc) = try reference.lstmCell(cell: referenceCell)
        try (rh.sum() + rc.sum()).backward()
        assertClose(try h.scalars() + c.scalars(), try rh.scalars() + rc.scalars(), "fallback LSTM forward")
        assertClose(try gates.gradient!.scalars(), try reference.gradient!.scalars(), "fallback LSTM d gates")
        let gru = try Tensor.gruCell(inputGates: Tensor.zeros([1, 6], on: plain), hiddenGates: Tensor.zeros([1, 6], on: plain),
                                     hidden: Tensor([1, -1], shape: [1, 2], on: plain))
        assertClose(try gru.scalars(), [0.5, -0.5], "fallback GRU (r = z = ½, n = 0)")
        XCTAssertThrowsError(try Tensor.zeros([3, 2], on: plain).embeddingLookup(Tensor([0] as [Int32], shape: [1], on: plain))) {
            XCTAssertTrue("\($0)".contains("embeddingLookup is not available"), "\($0)")
        }
    }

    /// No tokens: an empty [0, D] result whose backward gives a zero table gradient.
    func testEmbeddingLookupOfNoTokens() throws {
        let table = try Tensor([1, 2, 3, 4], shape: [2, 2], on: cpuDevice).requiringGradient()
        let y = try table.embeddingLookup(Tensor([] as [Int32], shape: [0], on: cpuDevice))
        XCTAssertEqual(y.shape, [0, 2])
        try y.sum().backward()
        XCTAssertEqual(try table.gradient?.scalars(), [0, 0, 0, 0])
    }
}

/// The CPU backend's plain op set only (no `RecurrentBackend` conformance), for the fallback paths.
private final class PlainBackend: Backend, @unchecked Sendable {
    let base = CPUBackend()
    var name: String { "plain" }
    var deviceDescription: String { "CPU backend without recurrent ops" }
    var kind: DeviceKind { .cpu }
    func allocate(count: Int) throws -> any DeviceBuffer { try base.allocate(count: count) }
    func write(_ values: [Float], to buffer: any DeviceBuffer) throws { try base.write(values, to: buffer) }
    func write(_ values: [Int32], to buffer: any DeviceBuffer) throws { try base.write(values, to: buffer) }
    func readFloats(_ buffer: any DeviceBuffer, count: Int) throws -> [Float] { try base.readFloats(buffer, count: count) }
    func readInts(_ buffer: any DeviceBuffer, count: Int) throws -> [Int32] { try base.readInts(buffer, count: count) }
    func fill(_ buffer: any DeviceBuffer, value: Float, count: Int) throws { try base.fill(buffer, value: value, count: count) }
    func unary(_ op: UnaryOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, count: Int) throws {
        try base.unary(op, x, y, count: count)
    }
    func binary(_ op: BinaryOp, _ a: any DeviceBuffer, _ b: any DeviceBuffer, _ out: any DeviceBuffer,
                layout: BroadcastLayout) throws { try base.binary(op, a, b, out, layout: layout) }
    func copy(_ src: any DeviceBuffer, _ dst: any DeviceBuffer, layout: StridedCopy) throws {
        try base.copy(src, dst, layout: layout)
    }
    func reduce(_ op: ReduceOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws {
        try base.reduce(op, x, y, layout: layout)
    }
    func argmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws {
        try base.argmax(x, y, layout: layout)
    }
    func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer, descriptor: GemmDescriptor) throws {
        try base.gemm(a, b, c, descriptor: descriptor)
    }
    func softmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, rows: Int, columns: Int, log: Bool) throws {
        try base.softmax(x, y, rows: rows, columns: columns, log: log)
    }
    func softmaxBackward(_ y: any DeviceBuffer, _ dy: any DeviceBuffer, _ dx: any DeviceBuffer, rows: Int, columns: Int,
                         log: Bool) throws {
        try base.softmaxBackward(y, dy, dx, rows: rows, columns: columns, log: log)
    }
    func crossEntropy(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer, _ losses: any DeviceBuffer, rows: Int,
                      columns: Int) throws {
        try base.crossEntropy(logits, labels, losses, rows: rows, columns: columns)
    }
    func crossEntropyBackward(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer, _ upstream: any DeviceBuffer,
                              _ dx: any DeviceBuffer, rows: Int, columns: Int, scale: Float) throws {
        try base.crossEntropyBackward(logits, labels, upstream, dx, rows: rows, columns: columns, scale: scale)
    }
    func dropoutMask(_ out: any DeviceBuffer, count: Int, probability: Float, seed: UInt32) throws {
        try base.dropoutMask(out, count: count, probability: probability, seed: seed)
    }
    func adamUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, m: any DeviceBuffer, v: any DeviceBuffer,
                    count: Int, step: AdamStep) throws {
        try base.adamUpdate(parameter: parameter, gradient: gradient, m: m, v: v, count: count, step: step)
    }
    func sgdUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, velocity: any DeviceBuffer, count: Int,
                   step: SGDStep) throws {
        try base.sgdUpdate(parameter: parameter, gradient: gradient, velocity: velocity, count: count, step: step)
    }
    func synchronize() throws {}
}
