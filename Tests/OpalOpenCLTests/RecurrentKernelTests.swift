import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/recurrent.cl and Kernels/embedding.cl against CPUBackend (itself checked against Double
/// references in Tests/OpalCPUTests/RecurrentTests.swift), and against a Double reference for the
/// embedding scatter: hidden sizes that are not multiples of the work-group size, batch 1 and odd,
/// every output poisoned with NaN first.
final class RecurrentKernelTests: KernelTestCase {
    /// (batch, hidden): H = 1, 37 and 130 are not multiples of any work-group size.
    var shapes: [(Int, Int)] { small ? [(1, 1), (3, 37), (1, 130)] : [(1, 1), (3, 37), (1, 130), (5, 130), (7, 300)] }

    func testLSTMCellMatchesCPU() throws {
        for (batch, hidden) in shapes {
            let d = RecurrentCellDescriptor(batch: batch, hiddenSize: hidden)
            let gates = try pair(uniform(4 * d.stateCount, in: -3...3)), cell = try pair(uniform(d.stateCount))
            let h = try poisonedPair(d.stateCount), c = try poisonedPair(d.stateCount)
            let activations = try poisonedPair(5 * d.stateCount)
            try gpu.lstmCellForward(gates.gpu, cell.gpu, hidden: h.gpu, newCell: c.gpu, activations: activations.gpu,
                                    descriptor: d)
            try cpu.lstmCellForward(gates.cpu, cell.cpu, hidden: h.cpu, newCell: c.cpu, activations: activations.cpu,
                                    descriptor: d)
            let what = "B\(batch) H\(hidden)"
            var result = try read(h, count: d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "LSTM forward h_t \(what)")
            result = try read(c, count: d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "LSTM forward c_t \(what)")
            result = try read(activations, count: 5 * d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "LSTM forward activations \(what)")

            let gradHidden = try pair(uniform(d.stateCount)), gradNewCell = try pair(uniform(d.stateCount))
            let gradGates = try poisonedPair(4 * d.stateCount), gradCell = try poisonedPair(d.stateCount)
            // Both backends start from the CPU's saved activations, so the backward kernels are compared alone.
            let saved = try pair(cpu.readFloats(activations.cpu, count: 5 * d.stateCount))
            try gpu.lstmCellBackward(gradHidden: gradHidden.gpu, gradNewCell: gradNewCell.gpu, cell: cell.gpu,
                                     activations: saved.gpu, gradGates: gradGates.gpu, gradCell: gradCell.gpu, descriptor: d)
            try cpu.lstmCellBackward(gradHidden: gradHidden.cpu, gradNewCell: gradNewCell.cpu, cell: cell.cpu,
                                     activations: saved.cpu, gradGates: gradGates.cpu, gradCell: gradCell.cpu, descriptor: d)
            result = try read(gradGates, count: 4 * d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "LSTM backward d gates \(what)")
            result = try read(gradCell, count: d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "LSTM backward d cell \(what)")
        }
    }

    func testGRUCellMatchesCPU() throws {
        for (batch, hidden) in shapes {
            let d = RecurrentCellDescriptor(batch: batch, hiddenSize: hidden)
            let inputGates = try pair(uniform(3 * d.stateCount, in: -3...3))
            let hiddenGates = try pair(uniform(3 * d.stateCount, in: -3...3))
            let state = try pair(uniform(d.stateCount))
            let output = try poisonedPair(d.stateCount), activations = try poisonedPair(3 * d.stateCount)
            try gpu.gruCellForward(inputGates.gpu, hiddenGates.gpu, state.gpu, output.gpu, activations: activations.gpu,
                                   descriptor: d)
            try cpu.gruCellForward(inputGates.cpu, hiddenGates.cpu, state.cpu, output.cpu, activations: activations.cpu,
                                   descriptor: d)
            let what = "B\(batch) H\(hidden)"
            var result = try read(output, count: d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "GRU forward \(what)")
            result = try read(activations, count: 3 * d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "GRU forward activations \(what)")

            let gradOutput = try pair(uniform(d.stateCount))
            let saved = try pair(cpu.readFloats(activations.cpu, count: 3 * d.stateCount))
            let gradInput = try poisonedPair(3 * d.stateCount), gradHiddenGates = try poisonedPair(3 * d.stateCount)
            let gradHidden = try poisonedPair(d.stateCount)
            try gpu.gruCellBackward(gradOutput.gpu, hiddenGates.gpu, state.gpu, activations: saved.gpu, gradInput.gpu,
                                    gradHiddenGates.gpu, gradHidden.gpu, descriptor: d)
            try cpu.gruCellBackward(gradOutput.cpu, hiddenGates.cpu, state.cpu, activations: saved.cpu, gradInput.cpu,
                                    gradHiddenGates.cpu, gradHidden.cpu, descriptor: d)
            result = try read(gradInput, count: 3 * d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "GRU backward d input gates \(what)")
            result = try read(gradHiddenGates, count: 3 * d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "GRU backward d hidden gates \(what)")
            result = try read(gradHidden, count: d.stateCount)
            assertClose(result.gpu, result.cpu, tolerance: 1e-5, "GRU backward d hidden \(what)")
        }
    }

    /// Many tokens hit the same few rows (each table element sums several of them: the case that races
    /// with a naive per-token scatter), every 5th id is out of range (−1, V, Int32.max, Int32.min), and
    /// the shapes cover one and several token chunks (`EmbeddingDescriptor.scatterChunks`, e.g. 6 chunks
    /// of 34 tokens for V3 N200). The scatter must also be deterministic: two runs, identical bits.
    func testEmbeddingGatherAndScatterMatchReference() throws {
        let cases = small ? [(1, 1, 9), (5, 3, 40), (3, 37, 11), (3, 5, 200)]
                          : [(1, 1, 9), (5, 3, 40), (65, 37, 300), (7, 130, 61), (3, 5, 200), (65, 16, 2000)]
        for (rows, columns, tokens) in cases {
            let d = EmbeddingDescriptor(rows: rows, columns: columns, tokens: tokens)
            let table = uniform(d.tableCount), gradOutput = uniform(d.outputCount)
            let ids: [Int32] = (0..<tokens).map { n in
                if n % 5 == 4 { return [-1, Int32(rows), Int32.max, Int32.min][n / 5 % 4] }
                return Int32.random(in: 0..<Int32(min(rows, 2)), using: &random)
            }
            let idBuffers = try pair(ids), tableBuffers = try pair(table), gradBuffers = try pair(gradOutput)
            let output = try poisonedPair(d.outputCount), gradTable = try poisonedPair(d.tableCount)
            try gpu.embeddingGather(tableBuffers.gpu, idBuffers.gpu, output.gpu, descriptor: d)
            try gpu.embeddingScatter(gradBuffers.gpu, idBuffers.gpu, gradTable.gpu, descriptor: d)
            var expectedOutput = [Float](repeating: 0, count: d.outputCount)
            var expectedTable = [Double](repeating: 0, count: d.tableCount)
            var magnitude = [Double](repeating: 0, count: d.tableCount)   // Σ |terms|: the rounding scale
            for (n, id) in ids.enumerated() where id >= 0 && Int(id) < rows {
                for c in 0..<columns {
                    expectedOutput[n * columns + c] = table[Int(id) * columns + c]
                    expectedTable[Int(id) * columns + c] += Double(gradOutput[n * columns + c])
                    magnitude[Int(id) * columns + c] += abs(Double(gradOutput[n * columns + c]))
                }
            }
            let what = "V\(rows) D\(columns) N\(tokens)"
            assertClose(try gpu.readFloats(output.gpu, count: d.outputCount), expectedOutput, tolerance: 0,
                        "embedding gather \(what)")
            let scattered = try gpu.readFloats(gradTable.gpu, count: d.tableCount)
            for index in scattered.indices where !(abs(Double(scattered[index]) - expectedTable[index])
                                                      <= 1e-6 * max(magnitude[index], 1)) {
                XCTFail(context("embedding scatter \(what): element \(index) is \(scattered[index]), expected \(expectedTable[index])"))
                break
            }
            let again = try poisonedPair(d.tableCount)
            try gpu.embeddingScatter(gradBuffers.gpu, idBuffers.gpu, again.gpu, descriptor: d)
            XCTAssertEqual(try gpu.readFloats(again.gpu, count: d.tableCount).map(\.bitPattern), scattered.map(\.bitPattern),
                           context("embedding scatter is not deterministic \(what)"))
        }
    }
}

/// The recurrent ops at the tensor level on the OpenCL device: fused == composed (forward and every
/// gradient) and OpenCL == CPU. Not a `*KernelTests` class on purpose: under oclgrind 21.10's
/// `--uninitialized` pass, the slice pullback (a `fill` kernel, then a `clEnqueueCopyBuffer` into part of
/// that buffer) leaves the filled part marked uninitialised, so any autodiff graph with a slice is
/// reported (the composed cells, using no kernel of this family, are reported the same way). The kernels
/// themselves are checked under oclgrind by `RecurrentKernelTests` above.
final class RecurrentOpenCLTensorTests: KernelTestCase {
    var shapes: [(Int, Int)] { [(1, 1), (3, 37), (1, 130), (5, 130)] }

    /// Fused LSTM and GRU cells on OpenCL against their composed forms on OpenCL (forward and every
    /// gradient) and against the fused cells on the CPU.
    func testFusedCellsMatchComposedOnOpenCL() throws {
        let device = Device(backend: gpu), cpuDevice = Device(backend: cpu)
        for (batch, hidden) in shapes {
            let what = "B\(batch) H\(hidden)"
            let gates = uniform(batch * 4 * hidden, in: -3...3), cell = uniform(batch * hidden)
            let weightsH = uniform(batch * hidden), weightsC = uniform(batch * hidden)
            func lstm(_ on: Device, fused: Bool) throws -> [[Float]] {
                let g = try Tensor(gates, shape: [batch, 4 * hidden], on: on).requiringGradient()
                let c = try Tensor(cell, shape: [batch, hidden], on: on).requiringGradient()
                let (h, newCell) = try fused ? g.lstmCell(cell: c) : g.lstmCellComposed(cell: c)
                try ((h * Tensor(weightsH, shape: [batch, hidden], on: on)).sum()
                    + (newCell * Tensor(weightsC, shape: [batch, hidden], on: on)).sum()).backward()
                return [try h.scalars(), try newCell.scalars(), try g.gradient!.scalars(), try c.gradient!.scalars()]
            }
            let fused = try lstm(device, fused: true), composed = try lstm(device, fused: false)
            let reference = try lstm(cpuDevice, fused: true)
            for (index, name) in ["h", "c", "d gates", "d cell"].enumerated() {
                assertClose(fused[index], composed[index], tolerance: 1e-5, "LSTM fused vs composed \(name) \(what)")
                assertClose(fused[index], reference[index], tolerance: 1e-5, "LSTM OpenCL vs CPU \(name) \(what)")
            }

            let inputGates = uniform(batch * 3 * hidden, in: -3...3), hiddenGates = uniform(batch * 3 * hidden, in: -3...3)
            func gru(_ on: Device, fused: Bool) throws -> [[Float]] {
                let gi = try Tensor(inputGates, shape: [batch, 3 * hidden], on: on).requiringGradient()
                let gh = try Tensor(hiddenGates, shape: [batch, 3 * hidden], on: on).requiringGradient()
                let h = try Tensor(cell, shape: [batch, hidden], on: on).requiringGradient()
                let y = try fused ? Tensor.gruCell(inputGates: gi, hiddenGates: gh, hidden: h)
                                  : Tensor.gruCellComposed(inputGates: gi, hiddenGates: gh, hidden: h)
                try (y * Tensor(weightsH, shape: [batch, hidden], on: on)).sum().backward()
                return [try y.scalars(), try gi.gradient!.scalars(), try gh.gradient!.scalars(), try h.gradient!.scalars()]
            }
            let gruFused = try gru(device, fused: true), gruComposed = try gru(device, fused: false)
            let gruReference = try gru(cpuDevice, fused: true)
            for (index, name) in ["h", "d input gates", "d hidden gates", "d hidden"].enumerated() {
                assertClose(gruFused[index], gruComposed[index], tolerance: 1e-5, "GRU fused vs composed \(name) \(what)")
                assertClose(gruFused[index], gruReference[index], tolerance: 1e-5, "GRU OpenCL vs CPU \(name) \(what)")
            }
        }
    }

    /// `embeddingLookup` and its gradient on OpenCL against the CPU device, ids of shape [2, 5] with repeats.
    func testEmbeddingLookupMatchesCPU() throws {
        let device = Device(backend: gpu), cpuDevice = Device(backend: cpu)
        let (rows, columns) = (6, 13)
        let table = uniform(rows * columns), weights = uniform(10 * columns)
        let ids: [Int32] = (0..<10).map { _ in Int32.random(in: 0..<3, using: &random) }
        func run(_ on: Device) throws -> (output: [Float], gradient: [Float]) {
            let w = try Tensor(table, shape: [rows, columns], on: on).requiringGradient()
            let y = try w.embeddingLookup(Tensor(ids, shape: [2, 5], on: on))
            XCTAssertEqual(y.shape, [2, 5, columns])
            try (y * Tensor(weights, shape: [2, 5, columns], on: on)).sum().backward()
            return (try y.scalars(), try w.gradient!.scalars())
        }
        let opencl = try run(device), reference = try run(cpuDevice)
        assertClose(opencl.output, reference.output, tolerance: 0, "embeddingLookup forward")
        assertClose(opencl.gradient, reference.gradient, tolerance: 1e-5, "embeddingLookup table gradient")
    }
}
