import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

// Double references for Sources/OpalCPU/Recurrent.swift. The cells are evaluated one unit at a time
// straight from their textbook formulas; the backward references are central differences of those
// Double formulas (step 1e-5, error ~1e-10), so they share no algebra with the hand-derived kernels.

private func logistic(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }

/// One LSTM unit: inputs (i, f, g, o pre-activations, c_{t−1}) → (h_t, c_t).
func referenceLSTMUnit(_ x: [Double]) -> (hidden: Double, cell: Double) {
    let cell = logistic(x[1]) * x[4] + logistic(x[0]) * Foundation.tanh(x[2])
    return (logistic(x[3]) * Foundation.tanh(cell), cell)
}

/// One GRU unit: inputs (i_r, i_z, i_n, h_r, h_z, h_n, h_{t−1}) → h_t (PyTorch semantics).
func referenceGRUUnit(_ x: [Double]) -> Double {
    let r = logistic(x[0] + x[3]), z = logistic(x[1] + x[4])
    let n = Foundation.tanh(x[2] + r * x[5])
    return (1 - z) * n + z * x[6]
}

/// ∂f/∂x_k for every k, by central differences in Double.
func centralDifferences(_ x: [Double], _ f: ([Double]) -> Double) -> [Double] {
    let step = 1e-5
    return x.indices.map { k in
        var plus = x, minus = x
        plus[k] += step; minus[k] -= step
        return (f(plus) - f(minus)) / (2 * step)
    }
}

final class RecurrentTests: CPUTestCase {
    /// (batch, hidden): odd sizes, H = 1, and one shape large enough to split rows across threads.
    let shapes = [(1, 1), (3, 37), (5, 130), (1, 7), (40, 1000)]

    /// Gathers unit (b, j)'s operands out of row-major [B, k·H] tensors: for each (tensor, k), the k gate values.
    private func unitInputs(_ parts: [([Float], Int)], b: Int, j: Int, h: Int) -> [Double] {
        parts.flatMap { values, gates in (0..<gates).map { Double(values[b * gates * h + $0 * h + j]) } }
    }

    func testLSTMCellForwardMatchesReference() throws {
        for (batch, h) in shapes {
            let d = RecurrentCellDescriptor(batch: batch, hiddenSize: h)
            let gates = uniform(4 * d.stateCount, in: -3...3), cell = uniform(d.stateCount)
            let hidden = try poisoned(d.stateCount), newCell = try poisoned(d.stateCount)
            let activations = try poisoned(5 * d.stateCount)
            try backend.lstmCellForward(buffer(gates), buffer(cell), hidden: hidden, newCell: newCell,
                                        activations: activations, descriptor: d)
            var expectedHidden = [Double](repeating: 0, count: d.stateCount), expectedCell = expectedHidden
            var expectedActivations = [Double](repeating: 0, count: 5 * d.stateCount)
            for b in 0..<batch {
                for j in 0..<h {
                    let x = unitInputs([(gates, 4), (cell, 1)], b: b, j: j, h: h)
                    (expectedHidden[b * h + j], expectedCell[b * h + j]) = referenceLSTMUnit(x)
                    let saved = [logistic(x[0]), logistic(x[1]), Foundation.tanh(x[2]), logistic(x[3]),
                                 Foundation.tanh(expectedCell[b * h + j])]
                    for (k, value) in saved.enumerated() { expectedActivations[b * 5 * h + k * h + j] = value }
                }
            }
            assertClose(try read(hidden), expectedHidden, magnitude: 1, "LSTM h_t B\(batch) H\(h)")
            assertClose(try read(newCell), expectedCell, magnitude: 1, "LSTM c_t B\(batch) H\(h)")
            assertClose(try read(activations), expectedActivations, magnitude: 1, "LSTM activations B\(batch) H\(h)")
        }
    }

    func testLSTMCellBackwardMatchesReference() throws {
        for (batch, h) in shapes {
            let d = RecurrentCellDescriptor(batch: batch, hiddenSize: h)
            let gates = uniform(4 * d.stateCount, in: -3...3), cell = uniform(d.stateCount)
            let gradHidden = uniform(d.stateCount), gradNewCell = uniform(d.stateCount)
            let hidden = try poisoned(d.stateCount), newCell = try poisoned(d.stateCount)
            let activations = try poisoned(5 * d.stateCount)
            let cellBuffer = try buffer(cell)
            try backend.lstmCellForward(buffer(gates), cellBuffer, hidden: hidden, newCell: newCell,
                                        activations: activations, descriptor: d)
            let gradGates = try poisoned(4 * d.stateCount), gradCell = try poisoned(d.stateCount)
            try backend.lstmCellBackward(gradHidden: buffer(gradHidden), gradNewCell: buffer(gradNewCell), cell: cellBuffer,
                                         activations: activations, gradGates: gradGates, gradCell: gradCell, descriptor: d)
            var expectedGates = [Double](repeating: 0, count: 4 * d.stateCount)
            var expectedCell = [Double](repeating: 0, count: d.stateCount)
            for b in 0..<batch {
                for j in 0..<h {
                    let dh = Double(gradHidden[b * h + j]), dc = Double(gradNewCell[b * h + j])
                    let gradient = centralDifferences(unitInputs([(gates, 4), (cell, 1)], b: b, j: j, h: h)) {
                        let y = referenceLSTMUnit($0)
                        return dh * y.hidden + dc * y.cell
                    }
                    for k in 0..<4 { expectedGates[b * 4 * h + k * h + j] = gradient[k] }
                    expectedCell[b * h + j] = gradient[4]
                }
            }
            assertClose(try read(gradGates), expectedGates, relative: 1e-4, absolute: 1e-5, magnitude: 1, "LSTM d gates B\(batch) H\(h)")
            assertClose(try read(gradCell), expectedCell, relative: 1e-4, absolute: 1e-5, magnitude: 1, "LSTM d cell B\(batch) H\(h)")
        }
    }

    func testGRUCellForwardMatchesReference() throws {
        for (batch, h) in shapes {
            let d = RecurrentCellDescriptor(batch: batch, hiddenSize: h)
            let inputGates = uniform(3 * d.stateCount, in: -3...3), hiddenGates = uniform(3 * d.stateCount, in: -3...3)
            let hidden = uniform(d.stateCount)
            let output = try poisoned(d.stateCount), activations = try poisoned(3 * d.stateCount)
            try backend.gruCellForward(buffer(inputGates), buffer(hiddenGates), buffer(hidden), output,
                                       activations: activations, descriptor: d)
            var expected = [Double](repeating: 0, count: d.stateCount)
            var expectedActivations = [Double](repeating: 0, count: 3 * d.stateCount)
            for b in 0..<batch {
                for j in 0..<h {
                    let x = unitInputs([(inputGates, 3), (hiddenGates, 3), (hidden, 1)], b: b, j: j, h: h)
                    expected[b * h + j] = referenceGRUUnit(x)
                    let r = logistic(x[0] + x[3]), z = logistic(x[1] + x[4]), n = Foundation.tanh(x[2] + r * x[5])
                    for (k, value) in [r, z, n].enumerated() { expectedActivations[b * 3 * h + k * h + j] = value }
                }
            }
            assertClose(try read(output), expected, magnitude: 1, "GRU output B\(batch) H\(h)")
            assertClose(try read(activations), expectedActivations, magnitude: 1, "GRU activations B\(batch) H\(h)")
        }
    }

    func testGRUCellBackwardMatchesReference() throws {
        for (batch, h) in shapes {
            let d = RecurrentCellDescriptor(batch: batch, hiddenSize: h)
            let inputGates = uniform(3 * d.stateCount, in: -3...3), hiddenGates = uniform(3 * d.stateCount, in: -3...3)
            let hidden = uniform(d.stateCount), gradOutput = uniform(d.stateCount)
            let hiddenGatesBuffer = try buffer(hiddenGates), hiddenBuffer = try buffer(hidden)
            let output = try poisoned(d.stateCount), activations = try poisoned(3 * d.stateCount)
            try backend.gruCellForward(buffer(inputGates), hiddenGatesBuffer, hiddenBuffer, output,
                                       activations: activations, descriptor: d)
            let gradInput = try poisoned(3 * d.stateCount), gradHiddenGates = try poisoned(3 * d.stateCount)
            let gradHidden = try poisoned(d.stateCount)
            try backend.gruCellBackward(buffer(gradOutput), hiddenGatesBuffer, hiddenBuffer, activations: activations,
                                        gradInput, gradHiddenGates, gradHidden, descriptor: d)
            var expectedInput = [Double](repeating: 0, count: 3 * d.stateCount)
            var expectedHiddenGates = expectedInput
            var expectedHidden = [Double](repeating: 0, count: d.stateCount)
            for b in 0..<batch {
                for j in 0..<h {
                    let dy = Double(gradOutput[b * h + j])
                    let gradient = centralDifferences(
                        unitInputs([(inputGates, 3), (hiddenGates, 3), (hidden, 1)], b: b, j: j, h: h)) {
                        dy * referenceGRUUnit($0)
                    }
                    for k in 0..<3 {
                        expectedInput[b * 3 * h + k * h + j] = gradient[k]
                        expectedHiddenGates[b * 3 * h + k * h + j] = gradient[3 + k]
                    }
                    expectedHidden[b * h + j] = gradient[6]
                }
            }
            let what = "B\(batch) H\(h)"
            assertClose(try read(gradInput), expectedInput, relative: 1e-4, absolute: 1e-5, magnitude: 1, "GRU d input gates \(what)")
            assertClose(try read(gradHiddenGates), expectedHiddenGates, relative: 1e-4, absolute: 1e-5, magnitude: 1,
                        "GRU d hidden gates \(what)")
            assertClose(try read(gradHidden), expectedHidden, relative: 1e-4, absolute: 1e-5, magnitude: 1, "GRU d hidden \(what)")
        }
    }

    /// Hand-computed 1×1 LSTM: gates all 0 → σ = ½, tanh g = 0; c_{t−1} = 2 → c_t = 1, h_t = ½·tanh 1.
    func testLSTMCellHandComputed() throws {
        let d = RecurrentCellDescriptor(batch: 1, hiddenSize: 1)
        let hidden = try poisoned(1), newCell = try poisoned(1), activations = try poisoned(5)
        try backend.lstmCellForward(buffer([0, 0, 0, 0]), buffer([2]), hidden: hidden, newCell: newCell,
                                    activations: activations, descriptor: d)
        assertClose(try read(hidden), [0.5 * Foundation.tanh(1.0)], "hand-computed LSTM h_t")
        assertClose(try read(newCell), [1.0], "hand-computed LSTM c_t")
        assertClose(try read(activations), [0.5, 0.5, 0, 0.5, Foundation.tanh(1.0)], "hand-computed LSTM activations")
    }

    /// Many tokens hit the same rows (the race case on a device), ids in and out of range:
    /// gather gives the row (zeros out of range), scatter sums every token's row in Double.
    func testEmbeddingGatherAndScatterMatchReference() throws {
        for (rows, columns, tokens) in [(1, 1, 5), (5, 3, 40), (65, 37, 300), (7, 130, 9), (3, 4, 0)] {
            let d = EmbeddingDescriptor(rows: rows, columns: columns, tokens: tokens)
            let table = uniform(d.tableCount), gradOutput = uniform(d.outputCount)
            // Mostly rows 0 and rows − 1 (heavy repetition); every 7th token out of range.
            let ids: [Int32] = (0..<tokens).map { n in
                if n % 7 == 6 { return [-1, Int32(rows), Int32.max, Int32.min][n / 7 % 4] }
                return Int.random(in: 0..<4, using: &random) == 0 ? Int32.random(in: 0..<Int32(rows), using: &random)
                                                                     : (n % 2 == 0 ? 0 : Int32(rows - 1))
            }
            let idBuffer = try intBuffer(ids)
            let output = try poisoned(d.outputCount), gradTable = try poisoned(d.tableCount)
            if tokens > 0 { try backend.embeddingGather(buffer(table), idBuffer, output, descriptor: d) }
            try backend.embeddingScatter(buffer(gradOutput), idBuffer, gradTable, descriptor: d)
            var expectedOutput = [Double](repeating: 0, count: d.outputCount)
            var expectedTable = [Double](repeating: 0, count: d.tableCount)
            for (n, id) in ids.enumerated() where id >= 0 && Int(id) < rows {
                for c in 0..<columns {
                    expectedOutput[n * columns + c] = Double(table[Int(id) * columns + c])
                    expectedTable[Int(id) * columns + c] += Double(gradOutput[n * columns + c])
                }
            }
            if tokens > 0 { assertClose(try read(output), expectedOutput, "gather V\(rows) D\(columns) N\(tokens)") }
            assertClose(try read(gradTable), expectedTable, relative: 1e-5, absolute: 1e-5,
                        "scatter V\(rows) D\(columns) N\(tokens)")
        }
    }

    func testInvalidGeometryThrows() throws {
        let empty = try poisoned(1)
        XCTAssertThrowsError(try backend.lstmCellForward(empty, empty, hidden: empty, newCell: empty, activations: empty,
                                                         descriptor: RecurrentCellDescriptor(batch: 0, hiddenSize: 3)))
        // Buffers too small for the descriptor are reported, never overrun.
        XCTAssertThrowsError(try backend.gruCellForward(empty, empty, empty, empty, activations: empty,
                                                        descriptor: RecurrentCellDescriptor(batch: 2, hiddenSize: 3)))
        XCTAssertThrowsError(try backend.embeddingGather(empty, intBuffer([0]), empty,
                                                         descriptor: EmbeddingDescriptor(rows: 0, columns: 1, tokens: 1)))
    }
}
