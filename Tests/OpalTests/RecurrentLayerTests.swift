import Foundation
import XCTest
@testable import Opal

/// A per-step Double reference of `torch.nn.LSTM/GRU/RNN(batch_first=True)`, written from the
/// equations (not from Opal's code), for the layer tests.
struct RecurrentReference {
    enum Cell { case lstm, gru, tanh, relu }
    let cell: Cell, inputSize: Int, hiddenSize: Int, layers: Int, directions: Int

    var gates: Int { cell == .lstm ? 4 : cell == .gru ? 3 : 1 }

    static func sigmoid(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }

    /// `parameters` in the layer's `ownParameters` order (weight_ih, weight_hh, bias_ih, bias_hh per
    /// layer and direction); `input` [B, T, I], `h0`/`c0` [L·D, B, H], all row-major.
    /// Returns the output [B, T, D·H] and the final hidden and cell states [L·D, B, H].
    func run(parameters: [[Double]], input: [Double], batch: Int, time: Int, h0: [Double], c0: [Double]?)
        -> (output: [Double], hidden: [Double], cell: [Double]) {
        let h = hiddenSize
        var layerInput = input, features = inputSize
        var hn = [Double](repeating: 0, count: layers * directions * batch * h), cn = hn
        for layer in 0..<layers {
            var output = [Double](repeating: 0, count: batch * time * directions * h)
            for direction in 0..<directions {
                let slot = layer * directions + direction
                let p = Array(parameters[(slot * 4)..<(slot * 4 + 4)])
                let (wih, whh, bih, bhh) = (p[0], p[1], p[2], p[3])
                for b in 0..<batch {
                    var state = Array(h0[((slot * batch + b) * h)..<((slot * batch + b + 1) * h)])
                    var cellState = c0.map { Array($0[((slot * batch + b) * h)..<((slot * batch + b + 1) * h)]) }
                        ?? [Double](repeating: 0, count: h)
                    for step in 0..<time {
                        let t = direction == 0 ? step : time - 1 - step
                        let x = Array(layerInput[((b * time + t) * features)..<((b * time + t + 1) * features)])
                        var gi = [Double](repeating: 0, count: gates * h), gh = gi
                        for row in 0..<(gates * h) {
                            var sum = bih[row]
                            for k in 0..<features { sum += wih[row * features + k] * x[k] }
                            gi[row] = sum
                            var recurrent = bhh[row]
                            for k in 0..<h { recurrent += whh[row * h + k] * state[k] }
                            gh[row] = recurrent
                        }
                        var next = [Double](repeating: 0, count: h)
                        for j in 0..<h {
                            switch cell {
                            case .lstm:
                                let i = Self.sigmoid(gi[j] + gh[j]), f = Self.sigmoid(gi[h + j] + gh[h + j])
                                let g = Foundation.tanh(gi[2 * h + j] + gh[2 * h + j]), o = Self.sigmoid(gi[3 * h + j] + gh[3 * h + j])
                                cellState[j] = f * cellState[j] + i * g
                                next[j] = o * Foundation.tanh(cellState[j])
                            case .gru:
                                let r = Self.sigmoid(gi[j] + gh[j]), z = Self.sigmoid(gi[h + j] + gh[h + j])
                                let n = Foundation.tanh(gi[2 * h + j] + r * gh[2 * h + j])
                                next[j] = (1 - z) * n + z * state[j]
                            case .tanh: next[j] = Foundation.tanh(gi[j] + gh[j])
                            case .relu: next[j] = max(0, gi[j] + gh[j])
                            }
                        }
                        state = next
                        for j in 0..<h { output[((b * time + t) * directions + direction) * h + j] = state[j] }
                    }
                    for j in 0..<h {
                        hn[(slot * batch + b) * h + j] = state[j]
                        cn[(slot * batch + b) * h + j] = cellState[j]
                    }
                }
            }
            layerInput = output
            features = directions * h
        }
        return (layerInput, hn, cn)
    }
}

private func dot(_ a: [Double], _ b: [Double]) -> Double {
    var sum = 0.0
    for (x, y) in zip(a, b) { sum += x * y }
    return sum
}

final class RecurrentLayerTests: XCTestCase {
    private func freshSeed(_ name: String = #function) -> UInt64 {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("\(name): seed \(seed)")
        return seed
    }

    private var devices: [Device] {
        var result: [Device] = [.cpu]
        if !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0) { result.append(device) }
        return result
    }

    private func makeLayer(_ cell: RecurrentReference.Cell, input: Int, hidden: Int, layers: Int, bidirectional: Bool) throws -> RecurrentLayer {
        switch cell {
        case .lstm: return try LSTM(inputSize: input, hiddenSize: hidden, layers: layers, bidirectional: bidirectional)
        case .gru: return try GRU(inputSize: input, hiddenSize: hidden, layers: layers, bidirectional: bidirectional)
        case .tanh: return try RNN(inputSize: input, hiddenSize: hidden, layers: layers, nonlinearity: .tanh, bidirectional: bidirectional)
        case .relu: return try RNN(inputSize: input, hiddenSize: hidden, layers: layers, nonlinearity: .relu, bidirectional: bidirectional)
        }
    }

    private func assertClose(_ actual: [Float], _ expected: [Double], tolerance: Double, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, message, file: file, line: line)
        let scale = max(1, expected.map(abs).max() ?? 1)
        var worst = 0.0
        for (a, e) in zip(actual, expected) { worst = max(worst, abs(Double(a) - e)) }   // NaN fails below
        XCTAssertTrue(worst <= tolerance * scale, "\(message): largest difference \(worst) (scale \(scale))", file: file, line: line)
    }

    /// Forward of every cell kind, single and stacked bidirectional, both implementations, on every
    /// device: output and final state against the Double reference, from a random initial state.
    func testForwardMatchesThePerStepReference() throws {
        let seed = freshSeed()
        var random = SeededGenerator(seed: seed)
        let (batch, time, input, hidden) = (3, 7, 5, 6)
        print("devices: \(devices.map(\.name))")
        for cell in [RecurrentReference.Cell.lstm, .gru, .tanh, .relu] {
            for (layers, bidirectional) in [(1, false), (2, true)] {
                Random.seed(random.next())
                let layer = try makeLayer(cell, input: input, hidden: hidden, layers: layers, bidirectional: bidirectional)
                let d = bidirectional ? 2 : 1
                let x = (0..<(batch * time * input)).map { _ in Double.random(in: -1...1, using: &random) }
                let h0 = (0..<(layers * d * batch * hidden)).map { _ in Double.random(in: -1...1, using: &random) }
                let c0 = (0..<(layers * d * batch * hidden)).map { _ in Double.random(in: -1...1, using: &random) }
                let parameters = try layer.ownParameters.map { try $0.parameter.value.scalars().map(Double.init) }
                let reference = RecurrentReference(cell: cell, inputSize: input, hiddenSize: hidden, layers: layers, directions: d)
                let expected = reference.run(parameters: parameters, input: x, batch: batch, time: time, h0: h0,
                                             c0: cell == .lstm ? c0 : nil)
                for device in devices {
                    try layer.move(to: device)
                    for implementation in RecurrentImplementation.allCases {
                        layer.implementation = implementation
                        let stateShape: Shape = [layers * d, batch, hidden]
                        let state = RecurrentState(hidden: try Tensor(h0.map(Float.init), shape: stateShape, on: device),
                                                   cell: cell == .lstm ? try Tensor(c0.map(Float.init), shape: stateShape, on: device) : nil)
                        let (output, final) = try layer(try Tensor(x.map(Float.init), shape: [batch, time, input], on: device),
                                                        initialState: state)
                        let label = "\(layer.layerDescription) \(implementation) on \(device.name) (seed \(seed))"
                        XCTAssertEqual(output.shape, [batch, time, d * hidden], label)
                        assertClose(try output.scalars(), expected.output, tolerance: 1e-5, "output of " + label)
                        assertClose(try final.hidden.scalars(), expected.hidden, tolerance: 1e-5, "h_n of " + label)
                        if cell == .lstm {
                            assertClose(try final.cell!.scalars(), expected.cell, tolerance: 1e-5, "c_n of " + label)
                        } else {
                            XCTAssertNil(final.cell)
                        }
                    }
                }
            }
        }
    }

    /// Backpropagation through time over 6 steps: the gradients of every weight, the input and the
    /// initial state (of L = Σ output⊙w₁ + Σ h_n⊙w₂ + Σ c_n⊙w₃) against central differences of the
    /// Double reference, for every cell kind in a stacked bidirectional layer.
    func testGradientsMatchFiniteDifferencesThroughTime() throws {
        let seed = freshSeed()
        var random = SeededGenerator(seed: seed)
        let (batch, time, input, hidden, layers) = (2, 6, 3, 5, 2)
        for cell in [RecurrentReference.Cell.lstm, .gru, .tanh, .relu] {
            Random.seed(random.next())
            let layer = try makeLayer(cell, input: input, hidden: hidden, layers: layers, bidirectional: true)
            let reference = RecurrentReference(cell: cell, inputSize: input, hiddenSize: hidden, layers: layers, directions: 2)
            let stateCount = layers * 2 * batch * hidden
            let x = (0..<(batch * time * input)).map { _ in Double.random(in: -1...1, using: &random) }
            let h0 = (0..<stateCount).map { _ in Double.random(in: -0.5...0.5, using: &random) }
            let c0 = (0..<stateCount).map { _ in Double.random(in: -0.5...0.5, using: &random) }
            let wOutput = (0..<(batch * time * 2 * hidden)).map { _ in Double.random(in: -1...1, using: &random) }
            let wHidden = (0..<stateCount).map { _ in Double.random(in: -1...1, using: &random) }
            let wCell = (0..<stateCount).map { _ in Double.random(in: -1...1, using: &random) }
            let parameters = try layer.ownParameters.map { try $0.parameter.value.scalars().map(Double.init) }
            func objective(_ p: [[Double]], _ x: [Double], _ h0: [Double], _ c0: [Double]) -> Double {
                let r = reference.run(parameters: p, input: x, batch: batch, time: time, h0: h0, c0: cell == .lstm ? c0 : nil)
                var sum: Double = dot(r.output, wOutput)
                sum += dot(r.hidden, wHidden)
                if cell == .lstm { sum += dot(r.cell, wCell) }
                return sum
            }
            for device in devices {
                try layer.move(to: device)
                for implementation in RecurrentImplementation.allCases {
                    layer.implementation = implementation
                    layer.zeroGradients()
                    let stateShape: Shape = [layers * 2, batch, hidden]
                    let xLeaf = try Tensor(x.map(Float.init), shape: [batch, time, input], on: device).requiringGradient()
                    let hLeaf = try Tensor(h0.map(Float.init), shape: stateShape, on: device).requiringGradient()
                    let cLeaf = try Tensor(c0.map(Float.init), shape: stateShape, on: device).requiringGradient()
                    let (output, final) = try layer(xLeaf, initialState: RecurrentState(hidden: hLeaf, cell: cell == .lstm ? cLeaf : nil))
                    var loss = try (output * Tensor(wOutput.map(Float.init), shape: output.shape, on: device)).sum()
                        + (final.hidden * Tensor(wHidden.map(Float.init), shape: stateShape, on: device)).sum()
                    if cell == .lstm { loss = try loss + (final.cell! * Tensor(wCell.map(Float.init), shape: stateShape, on: device)).sum() }
                    try loss.backward()
                    let label = "\(layer.layerDescription) \(implementation) on \(device.name) (seed \(seed))"
                    let epsilon = 1e-5
                    func numeric(_ perturb: (inout [[Double]], inout [Double], inout [Double], inout [Double], Double) -> Void) -> Double {
                        var (p1, x1, h1, c1) = (parameters, x, h0, c0), (p2, x2, h2, c2) = (parameters, x, h0, c0)
                        perturb(&p1, &x1, &h1, &c1, epsilon); perturb(&p2, &x2, &h2, &c2, -epsilon)
                        return (objective(p1, x1, h1, c1) - objective(p2, x2, h2, c2)) / (2 * epsilon)
                    }
                    for (slot, (name, parameter)) in layer.ownParameters.enumerated() {
                        guard let analytic = try parameter.gradient?.scalars() else { XCTFail("\(name) has no gradient: \(label)"); continue }
                        let expected = (0..<analytic.count).map { e in numeric { p, _, _, _, d in p[slot][e] += d } }
                        assertClose(analytic, expected, tolerance: 2e-4, "d\(name) of \(label)")
                    }
                    let dx = (0..<x.count).map { e in numeric { _, x, _, _, d in x[e] += d } }
                    assertClose(try xLeaf.gradient!.scalars(), dx, tolerance: 2e-4, "dinput of \(label)")
                    let dh = (0..<h0.count).map { e in numeric { _, _, h, _, d in h[e] += d } }
                    assertClose(try hLeaf.gradient!.scalars(), dh, tolerance: 2e-4, "dh0 of \(label)")
                    if cell == .lstm {
                        let dc = (0..<c0.count).map { e in numeric { _, _, _, c, d in c[e] += d } }
                        assertClose(try cLeaf.gradient!.scalars(), dc, tolerance: 2e-4, "dc0 of \(label)")
                    }
                }
            }
        }
    }

    /// The final state of one call, fed into the next, continues the sequence exactly (TBPTT's carried state).
    func testCarriedStateContinuesTheSequence() throws {
        let seed = freshSeed()
        Random.seed(seed)
        let layer = try LSTM(inputSize: 4, hiddenSize: 9, layers: 2)
        let x = try Tensor.uniform([2, 10, 4], in: -1...1, seed: UInt32(truncatingIfNeeded: seed), on: .cpu)
        let whole = try layer(x, initialState: nil)
        let first = try layer(x.sliced(along: 1, 0..<4), initialState: nil)
        let second = try layer(x.sliced(along: 1, 4..<10), initialState: first.state.detached())
        let joined = try Tensor.concatenated([first.output, second.output], along: 1).scalars()
        for (a, b) in zip(try whole.output.scalars(), joined) { XCTAssertEqual(a, b, accuracy: 1e-6, "seed \(seed)") }
        for (a, b) in zip(try whole.state.cell!.scalars(), try second.state.cell!.scalars()) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// PyTorch's state_dict names, shapes and U(−1/√H, 1/√H) initialisation.
    func testParameterNamesShapesAndInitialisationFollowPyTorch() throws {
        let lstm = try LSTM(inputSize: 10, hiddenSize: 20, layers: 2, bidirectional: true, dropout: 0.2)
        let names = lstm.namedParameters.map(\.name)
        XCTAssertEqual(names, ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                               "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
                               "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
                               "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse"])
        let shapes = Dictionary(uniqueKeysWithValues: lstm.namedParameters.map { ($0.name, $0.parameter.shape) })
        XCTAssertEqual(shapes["weight_ih_l0"], [80, 10]); XCTAssertEqual(shapes["weight_hh_l0"], [80, 20])
        XCTAssertEqual(shapes["weight_ih_l1_reverse"], [80, 40]); XCTAssertEqual(shapes["bias_hh_l1"], [80])
        XCTAssertEqual(try GRU(inputSize: 3, hiddenSize: 7).namedParameters.map(\.parameter.shape), [[21, 3], [21, 7], [21], [21]])
        XCTAssertEqual(try RNN(inputSize: 3, hiddenSize: 7).namedParameters.map(\.parameter.shape), [[7, 3], [7, 7], [7], [7]])
        let bound = 1 / Float(20).squareRoot()
        let values = try lstm.parameters.flatMap { try $0.value.scalars() }
        XCTAssertTrue(values.allSatisfy { abs($0) <= bound })
        XCTAssertGreaterThan(values.map(abs).max()!, 0.9 * bound)   // spread over the whole range
        // A checkpoint round trip keeps every tensor.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("opal-lstm-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try lstm.save(to: url)
        let copy = try LSTM(inputSize: 10, hiddenSize: 20, layers: 2, bidirectional: true)
        try copy.load(from: url)
        for (a, b) in zip(lstm.parameters, copy.parameters) { XCTAssertEqual(try a.value.scalars(), try b.value.scalars()) }
    }

    /// Dropout between layers acts only in training mode.
    func testDropoutBetweenLayersOnlyInTraining() throws {
        let layer = try GRU(inputSize: 3, hiddenSize: 8, layers: 2, dropout: 0.5)
        XCTAssertNotNil(layer.dropout)
        let x = try Tensor.uniform([2, 5, 3], in: -1...1, seed: 3, on: .cpu)
        let training = try layer(x).scalars()
        layer.setTraining(false)
        let evaluation1 = try layer(x).scalars(), evaluation2 = try layer(x).scalars()
        XCTAssertEqual(evaluation1, evaluation2)
        XCTAssertNotEqual(training, evaluation1)
        XCTAssertNil(try GRU(inputSize: 3, hiddenSize: 8, layers: 1, dropout: 0.5).dropout)
    }

    func testBadInputsAreClearErrors() throws {
        let lstm = try LSTM(inputSize: 4, hiddenSize: 6, layers: 2)
        func message(_ body: () throws -> Any) -> String {
            do { _ = try body(); return "no error" } catch { return "\(error)" }
        }
        let x = try Tensor.zeros([3, 5, 4], on: .cpu)
        let wrongFeatures = message { try lstm(try Tensor.zeros([3, 5, 7], on: .cpu)) }
        XCTAssertTrue(wrongFeatures.contains("LSTM(4→6, 2 layers)") && wrongFeatures.contains("[3, 5, 7]")
                      && wrongFeatures.contains("[batch, time, 4]"), wrongFeatures)
        let wrongRank = message { try lstm(try Tensor.zeros([15, 4], on: .cpu)) }
        XCTAssertTrue(wrongRank.contains("[15, 4]"), wrongRank)
        let empty = message { try lstm(try Tensor.zeros([3, 0, 4], on: .cpu)) }
        XCTAssertTrue(empty.contains("sequence length") && empty.contains("0"), empty)
        let badState = message {
            try lstm(x, initialState: RecurrentState(hidden: try Tensor.zeros([1, 3, 6], on: .cpu), cell: try Tensor.zeros([1, 3, 6], on: .cpu)))
        }
        XCTAssertTrue(badState.contains("hidden state") && badState.contains("[1, 3, 6]") && badState.contains("[2, 3, 6]"), badState)
        let badCell = message {
            try lstm(x, initialState: RecurrentState(hidden: try Tensor.zeros([2, 3, 6], on: .cpu), cell: try Tensor.zeros([2, 4, 6], on: .cpu)))
        }
        XCTAssertTrue(badCell.contains("cell state") && badCell.contains("[2, 4, 6]"), badCell)
        let noCell = message { try lstm(x, initialState: RecurrentState(hidden: try Tensor.zeros([2, 3, 6], on: .cpu))) }
        XCTAssertTrue(noCell.contains("no cell state"), noCell)
        let gru = try GRU(inputSize: 4, hiddenSize: 6)
        let gruCell = message {
            try gru(x, initialState: RecurrentState(hidden: try Tensor.zeros([1, 3, 6], on: .cpu), cell: try Tensor.zeros([1, 3, 6], on: .cpu)))
        }
        XCTAssertTrue(gruCell.contains("GRU") && gruCell.contains("no cell state"), gruCell)
        XCTAssertThrowsError(try LSTM(inputSize: 0, hiddenSize: 3))
        XCTAssertThrowsError(try LSTM(inputSize: 2, hiddenSize: 3, dropout: 1))

        let embedding = try Embedding(vocabularySize: 65, dimension: 8)
        let outOfVocabulary = message { try embedding.indices([3, 64, 65, 2], shape: [4], on: .cpu) }
        XCTAssertTrue(outOfVocabulary.contains("token id 65") && outOfVocabulary.contains("vocabulary of 65"), outOfVocabulary)
        let negative = message { try embedding.indices([-1], shape: [1], on: .cpu) }
        XCTAssertTrue(negative.contains("token id -1"), negative)
        let floats = message { try embedding(try Tensor.zeros([2], on: .cpu)) }
        XCTAssertTrue(floats.contains("int32"), floats)
    }

    /// Embedding forward = the table's rows; backward = the upstream rows summed per id (repeated ids add up).
    func testEmbeddingLooksUpAndScatterAddsOnEveryDevice() throws {
        let seed = freshSeed()
        Random.seed(seed)
        let embedding = try Embedding(vocabularySize: 11, dimension: 5)
        let table = try embedding.weight.value.scalars()
        let ids: [Int32] = [3, 0, 10, 3, 3, 7]
        var random = SeededGenerator(seed: seed)
        let upstream = (0..<(ids.count * 5)).map { _ in Float.random(in: -1...1, using: &random) }
        var expectedGradient = [Double](repeating: 0, count: 55)
        for (position, id) in ids.enumerated() {
            for j in 0..<5 { expectedGradient[Int(id) * 5 + j] += Double(upstream[position * 5 + j]) }
        }
        for device in devices {
            try embedding.move(to: device)
            embedding.zeroGradients()
            let output = try embedding(try embedding.indices(ids, shape: [2, 3], on: device))
            XCTAssertEqual(output.shape, [2, 3, 5])
            XCTAssertEqual(try output.scalars(), ids.flatMap { table[(Int($0) * 5)..<(Int($0) * 5 + 5)] })
            try (output * Tensor(upstream, shape: [2, 3, 5], on: device)).sum().backward()
            assertClose(try embedding.weight.gradient!.scalars(), expectedGradient, tolerance: 1e-6, "on \(device.name)")
        }
    }

    /// Clipping by global norm against a Double reference: scaled when the norm is above the bound,
    /// unchanged below it; the returned norm is the one before clipping.
    func testGradientClippingMatchesADoubleReference() throws {
        let seed = freshSeed()
        var random = SeededGenerator(seed: seed)
        for device in devices {
            for maximumNorm: Float in [0.5, 1e3] {
                let shapes: [Shape] = [[3, 7], [5], [2, 2, 3]]
                let parameters = try shapes.map { Parameter(try Tensor.zeros($0, on: device)) }
                let gradients = shapes.map { shape in (0..<shape.count).map { _ in Float.random(in: -2...2, using: &random) } }
                var loss = try Tensor.zeros([], on: device)
                for (parameter, gradient) in zip(parameters, gradients) {
                    loss = try loss + (parameter.value * Tensor(gradient, shape: parameter.shape, on: device)).sum()
                }
                try loss.backward()
                let norm = gradients.joined().map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
                let scale = min(1, Double(maximumNorm) / (norm + 1e-6))
                let returned = try GradientClipping.clipByGlobalNorm(parameters, maximumNorm: maximumNorm)
                XCTAssertEqual(Double(try returned!.item()), norm, accuracy: 1e-5 * norm, "seed \(seed)")
                for (parameter, gradient) in zip(parameters, gradients) {
                    assertClose(try parameter.gradient!.scalars(), gradient.map { Double($0) * scale }, tolerance: 1e-6,
                                "max norm \(maximumNorm) on \(device.name) (seed \(seed))")
                }
            }
        }
        XCTAssertThrowsError(try GradientClipping.clipByGlobalNorm([], maximumNorm: 0))
        XCTAssertNil(try GradientClipping.clipByGlobalNorm([Parameter(try Tensor.zeros([2], on: .cpu))], maximumNorm: 1))
    }
}

/// Checkpoints interchange with PyTorch: a stacked bidirectional LSTM and GRU saved by Opal load with
/// `load_state_dict(strict=True)` into `torch.nn.LSTM/GRU(batch_first=True)`, which then computes the
/// same output and final state. Skipped where `python3 -c "import torch"` fails.
final class RecurrentPyTorchInterchangeTests: XCTestCase {
    private static let script = #"""
import json, sys
try:
    import torch
    from safetensors.torch import load_file
except ImportError:
    sys.exit(3)
data, results = json.loads(sys.stdin.read()), {}
x = torch.tensor(data["x"]).reshape(data["batch"], data["time"], data["input"])
for kind, path in data["checkpoints"].items():
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    layer = cls(data["input"], data["hidden"], data["layers"], batch_first=True, bidirectional=True)
    layer.load_state_dict(load_file(path), strict=True)
    with torch.no_grad():
        output, state = layer(x)
    hidden = state[0] if kind == "lstm" else state
    results[kind] = {"output": output.flatten().tolist(), "hidden": hidden.flatten().tolist()}
print(json.dumps(results))
"""#

    private func python(_ arguments: [String], input: Data) throws -> (status: Int32, output: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin; process.standardOutput = stdout; process.standardError = FileHandle.nullDevice
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    func testStackedBidirectionalLayersRunInPyTorch() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("seed \(seed)")
        Random.seed(seed)
        let (batch, time, input, hidden, layers) = (2, 5, 3, 4, 2)
        let x = try Tensor.uniform([batch, time, input], in: -1...1, seed: UInt32(truncatingIfNeeded: seed), on: .cpu)
        let models: [String: RecurrentLayer] = [
            "lstm": try LSTM(inputSize: input, hiddenSize: hidden, layers: layers, bidirectional: true),
            "gru": try GRU(inputSize: input, hiddenSize: hidden, layers: layers, bidirectional: true)]
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("opal-torch-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var checkpoints: [String: String] = [:]
        for (kind, layer) in models {
            let url = directory.appendingPathComponent("\(kind).safetensors")
            try layer.save(to: url)
            checkpoints[kind] = url.path
        }
        let request = try JSONSerialization.data(withJSONObject: [
            "input": input, "hidden": hidden, "layers": layers, "batch": batch, "time": time,
            "x": try x.scalars().map(Double.init), "checkpoints": checkpoints] as [String: Any])
        guard let result = try? python(["-c", Self.script], input: request), result.status != 3, result.status != 127 else {
            throw XCTSkip("python3 with PyTorch and safetensors is not installed")
        }
        XCTAssertEqual(result.status, 0, "python failed")
        let answers = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.output) as? [String: [String: [Double]]])
        for (kind, layer) in models {
            let (output, state) = try layer(x, initialState: nil)
            for (name, ours, theirs) in [("output", try output.scalars(), answers[kind]?["output"] ?? []),
                                         ("h_n", try state.hidden.scalars(), answers[kind]?["hidden"] ?? [])] {
                XCTAssertEqual(ours.count, theirs.count, "\(kind) \(name)")
                for (a, b) in zip(ours, theirs) { XCTAssertEqual(Double(a), b, accuracy: 1e-5, "\(kind) \(name) (seed \(seed))") }
            }
        }
    }
}
