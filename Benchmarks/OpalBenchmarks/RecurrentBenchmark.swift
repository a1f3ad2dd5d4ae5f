import Foundation
import Opal

/// K4 (LSTM) and K5 (GRU): one recurrent layer, forward and backward over the whole sequence.
///
/// One run: `y = layer(x)` for `x` [batch, time, input] (zero initial state), `loss = Σ y`, and
/// `loss.backward()`, which computes the gradients of all four weight tensors and of `x`. The layer is
/// timed twice in the same run on the same weights: with the fused cell kernels
/// (`RecurrentImplementation.fused`) and with the same cell composed from plain ops (`.composed`).
/// `Benchmarks/peers/pytorch_reference.py` times `torch.nn.LSTM` / `torch.nn.GRU` on the same shapes.
public struct RecurrentBenchmark {
    public enum Cell: String, CaseIterable, Sendable, Codable {
        case lstm = "K4"
        case gru = "K5"

        /// The workload's identifier in the issue and in the PyTorch reference ("K4", "K5").
        public var identifier: String { rawValue }
        public var name: String { self == .lstm ? "LSTM" : "GRU" }
        /// Gates per hidden unit: 4 (i, f, g, o) or 3 (r, z, n).
        public var gateCount: Int { self == .lstm ? 4 : 3 }
    }

    public struct Shape: Sendable, Codable, CustomStringConvertible {
        public var batch: Int
        public var sequenceLength: Int
        public var inputSize: Int
        public var hiddenSize: Int

        /// The issue's K4/K5 shape: batch 64, seq 128, input 256, hidden 512.
        public static let issue = Shape(batch: 64, sequenceLength: 128, inputSize: 256, hiddenSize: 512)

        public init(batch: Int, sequenceLength: Int, inputSize: Int, hiddenSize: Int) {
            self.batch = batch; self.sequenceLength = sequenceLength; self.inputSize = inputSize; self.hiddenSize = hiddenSize
        }

        public var description: String {
            "batch \(batch), seq \(sequenceLength), input \(inputSize), hidden \(hiddenSize)"
        }

        /// Why the shape cannot be run, or nil.
        public var problem: String? {
            let sizes = [("batch", batch), ("sequence length", sequenceLength), ("input size", inputSize),
                         ("hidden size", hiddenSize)]
            return sizes.first { $0.1 <= 0 }.map { "the \($0.0) must be positive, got \($0.1)" }
        }
    }

    public struct Result: Sendable, Codable {
        public var workload: String
        public var device: String
        public var deviceDescription: String
        /// Fused cell kernels.
        public var fused: Measurement
        /// The same layer with `implementation = .composed`; nil when skipped.
        public var composed: Measurement?
        /// See `RecurrentBenchmark.flops(cell:shape:)`.
        public var flops: Double
        public var fusedGigaflops: Double { gigaflops(flops, milliseconds: fused.medianMilliseconds) }
        public var composedGigaflops: Double? { composed.map { gigaflops(flops, milliseconds: $0.medianMilliseconds) } }
        /// Composed time / fused time (above 1: the fused kernels are faster).
        public var fusedSpeedup: Double? { composed.map { $0.medianMilliseconds / fused.medianMilliseconds } }

        enum CodingKeys: String, CodingKey {
            case workload, device, deviceDescription, fused, composed, flops
            case fusedGigaflops, composedGigaflops, fusedSpeedup
        }

        public init(workload: String, device: String, deviceDescription: String, fused: Measurement,
                    composed: Measurement?, flops: Double) {
            self.workload = workload; self.device = device; self.deviceDescription = deviceDescription
            self.fused = fused; self.composed = composed; self.flops = flops
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(workload: try c.decode(String.self, forKey: .workload), device: try c.decode(String.self, forKey: .device),
                      deviceDescription: try c.decode(String.self, forKey: .deviceDescription),
                      fused: try c.decode(Measurement.self, forKey: .fused),
                      composed: try c.decodeIfPresent(Measurement.self, forKey: .composed),
                      flops: try c.decode(Double.self, forKey: .flops))
        }

        /// The stored figures plus the derived GFLOP/s and speed-up, so a script needs no arithmetic.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(workload, forKey: .workload); try c.encode(device, forKey: .device)
            try c.encode(deviceDescription, forKey: .deviceDescription)
            try c.encode(fused, forKey: .fused); try c.encodeIfPresent(composed, forKey: .composed)
            try c.encode(flops, forKey: .flops); try c.encode(fusedGigaflops, forKey: .fusedGigaflops)
            try c.encodeIfPresent(composedGigaflops, forKey: .composedGigaflops)
            try c.encodeIfPresent(fusedSpeedup, forKey: .fusedSpeedup)
        }
    }

    /// Floating-point operations of one forward + backward run: 2 · the multiply-adds of the input
    /// projection GEMM ([B·T, I] × [I, G·H]) and of the T recurrent GEMMs ([B, H] × [H, G·H]), times 3
    /// (forward, weight gradients, input gradients). The cell nonlinearities and the reductions of the
    /// bias gradients are left out.
    public static func flops(cell: Cell, shape: Shape) -> Double {
        let rows = Double(shape.batch * shape.sequenceLength)
        let gates = Double(cell.gateCount * shape.hiddenSize)
        return 3 * 2 * rows * gates * Double(shape.inputSize + shape.hiddenSize)
    }

    public var cell: Cell
    public var shape: Shape
    /// Timed runs per implementation; nil: 10 on GPUs, 3 elsewhere (a full-size run takes seconds on a CPU).
    public var runs: Int?
    /// Untimed runs before timing (the first also builds the OpenCL programs).
    public var warmup = 1
    /// Also time the `.composed` layer.
    public var includeComposed = true

    public init(cell: Cell, shape: Shape = .issue, runs: Int? = nil) {
        self.cell = cell; self.shape = shape; self.runs = runs
    }

    /// Runs on `device`, reporting each timed run through `progress`.
    public func run(on device: Device, progress: (String) -> Void = { _ in }) throws -> Result {
        if let problem = shape.problem {
            throw TensorError.invalidArgument(op: "bench \(cell.name.lowercased())", reason: "\(shape): \(problem)")
        }
        let runs = self.runs ?? (device.kind == .gpu ? 10 : 3)
        Random.seed(1)
        let layer: RecurrentLayer = switch cell {
        case .lstm: try LSTM(inputSize: shape.inputSize, hiddenSize: shape.hiddenSize, seed: 11, on: device)
        case .gru: try GRU(inputSize: shape.inputSize, hiddenSize: shape.hiddenSize, seed: 11, on: device)
        }
        let input = try Tensor.uniform([shape.batch, shape.sequenceLength, shape.inputSize], in: -1...1, seed: 3,
                                       on: device).requiringGradient()
        let step = {
            layer.zeroGradients()
            input.zeroGradient()
            try layer(input).sum().backward()
        }
        func timed(_ implementation: RecurrentImplementation) throws -> Measurement {
            layer.implementation = implementation
            let label = "\(cell.identifier) \(cell.name) \(implementation.rawValue) on \(device.name)"
            progress("\(label): \(warmup) warm-up + \(runs) timed runs…")
            var samples: [Double] = []
            var clock = "wall-clock"
            for run in 0..<runs {
                let once = try measure(on: device, warmup: run == 0 ? warmup : 0, runs: 1, step)
                samples.append(once.medianMilliseconds)
                clock = once.clock
                progress("  \(label): run \(run + 1)/\(runs) \(String(format: "%.1f", once.medianMilliseconds)) ms")
            }
            return Measurement(samples: samples, clock: clock)
        }
        let fused = try timed(.fused)
        let composed = includeComposed ? try timed(.composed) : nil
        layer.implementation = .fused
        return Result(workload: cell.identifier, device: device.name, deviceDescription: device.backend.deviceDescription,
                      fused: fused, composed: composed, flops: Self.flops(cell: cell, shape: shape))
    }

    /// One piece of a run timed alone (see `phases(on:)`).
    public struct Phase: Sendable, Codable {
        public var name: String
        public var time: Measurement
        /// Counted FLOPs of the GEMM phases; nil for the others.
        public var flops: Double?
        public var gigaflopsPerSecond: Double? { flops.map { gigaflops($0, milliseconds: time.medianMilliseconds) } }
    }

    /// Where the time of a run goes: the pieces of the forward pass timed one by one without recording
    /// gradients (the input projection GEMM, the T recurrent GEMMs as the layer does them and with
    /// W_hhᵀ stored transposed, the T gate additions, the T fused and composed cell updates), then the
    /// whole forward pass and forward + backward, on the same shapes as `run(on:)`. The backward pass
    /// is the difference of the last two.
    public func phases(on device: Device, progress: (String) -> Void = { _ in }) throws -> [Phase] {
        if let problem = shape.problem {
            throw TensorError.invalidArgument(op: "bench \(cell.name.lowercased())", reason: "\(shape): \(problem)")
        }
        let runs = self.runs ?? (device.kind == .gpu ? 10 : 3)
        let (b, t, i, h) = (shape.batch, shape.sequenceLength, shape.inputSize, shape.hiddenSize)
        let gates = cell.gateCount * h
        Random.seed(1)
        let layer: RecurrentLayer = switch cell {
        case .lstm: try LSTM(inputSize: i, hiddenSize: h, seed: 11, on: device)
        case .gru: try GRU(inputSize: i, hiddenSize: h, seed: 11, on: device)
        }
        let weights = layer.weights[0][0]
        let input = try Tensor.uniform([b, t, i], in: -1...1, seed: 3, on: device)
        let rows = try input.reshaped(to: [b * t, i])
        let hidden = try Tensor.uniform([b, h], in: -1...1, seed: 4, on: device)
        let gateInputs = try Tensor.uniform([b, gates], in: -1...1, seed: 5, on: device)
        let otherGates = try Tensor.uniform([b, gates], in: -1...1, seed: 6, on: device)
        var result: [Phase] = []
        func phase(_ name: String, flops: Double? = nil, _ body: () throws -> Void) throws {
            progress("\(cell.identifier) phase on \(device.name): \(name)…")
            result.append(Phase(name: name, time: try measure(on: device, warmup: 1, runs: runs, body), flops: flops))
        }
        try withoutGradients {
            try phase("input projection GEMM [B·T, I]·W_ihᵀ", flops: 2 * Double(b * t) * Double(i) * Double(gates)) {
                _ = try rows.matmul(weights.inputWeight.value, transposeOther: true)
            }
            try phase("\(t) × recurrent GEMM [B, H]·W_hhᵀ", flops: 2 * Double(b * t) * Double(h) * Double(gates)) {
                for _ in 0..<t { _ = try hidden.matmul(weights.hiddenWeight.value, transposeOther: true) }
            }
            // The layer multiplies by W_hhᵀ (transposeOther); this is the same product with W_hh
            // transposed once beforehand, which shows what a per-step transpose (or packing) costs.
            let transposedHidden = try weights.hiddenWeight.value.transposed()
            try phase("\(t) × recurrent GEMM [B, H]·(W_hhᵀ stored)", flops: 2 * Double(b * t) * Double(h) * Double(gates)) {
                for _ in 0..<t { _ = try hidden.matmul(transposedHidden) }
            }
            try phase("\(t) × gate addition [B, G·H]") {
                for _ in 0..<t { _ = try gateInputs + otherGates }
            }
            for implementation in RecurrentImplementation.allCases {
                try phase("\(t) × \(implementation.rawValue) cell update") {
                    for _ in 0..<t {
                        switch (cell, implementation) {
                        case (.lstm, .fused): _ = try gateInputs.lstmCell(cell: hidden)
                        case (.lstm, .composed): _ = try gateInputs.lstmCellComposed(cell: hidden)
                        case (.gru, .fused):
                            _ = try Tensor.gruCell(inputGates: gateInputs, hiddenGates: otherGates, hidden: hidden)
                        case (.gru, .composed):
                            _ = try Tensor.gruCellComposed(inputGates: gateInputs, hiddenGates: otherGates, hidden: hidden)
                        }
                    }
                }
            }
            try phase("whole forward pass, fused (no gradients)") { _ = try layer(input) }
        }
        let differentiable = input.requiringGradient()
        try phase("forward + backward, fused") {
            layer.zeroGradients()
            differentiable.zeroGradient()
            try layer(differentiable).sum().backward()
        }
        return result
    }
}
