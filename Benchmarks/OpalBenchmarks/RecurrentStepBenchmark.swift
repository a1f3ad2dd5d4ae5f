import Foundation
import Opal
import OpalOpenCL

/// R3: one training step of the character language model with the data already on the device.
///
/// `CharLanguageModel(vocabularySize: 65)` (Embedding 65×64 → LSTM 64→256 → Linear 256→65 at every
/// step), batch 32 of 64-character sequences (issue #6's table), zero initial state, mean cross-entropy
/// over all positions, backward, Adam 2e-3 (the trainer's default rate; no gradient clipping and no
/// state carried between steps, so the step is the same as PyTorch's). Timed with the fused LSTM cell
/// and, in the same run on the same model, with the cell composed from plain ops.
/// `Benchmarks/peers/pytorch_reference.py` builds the same model and optimizer in PyTorch ("R3").
public struct RecurrentStepBenchmark {
    public struct Shape: Sendable, Codable, CustomStringConvertible {
        public var vocabularySize: Int
        public var embeddingSize: Int
        public var hiddenSize: Int
        public var batch: Int
        public var sequenceLength: Int

        /// R3 as issue #6 states it: Embedding 65×64, LSTM 64→256, Linear 256→65, batch 32, seq 64.
        public static let r3 = Shape(vocabularySize: 65, embeddingSize: 64, hiddenSize: 256, batch: 32, sequenceLength: 64)

        public init(vocabularySize: Int, embeddingSize: Int, hiddenSize: Int, batch: Int, sequenceLength: Int) {
            self.vocabularySize = vocabularySize; self.embeddingSize = embeddingSize; self.hiddenSize = hiddenSize
            self.batch = batch; self.sequenceLength = sequenceLength
        }

        public var description: String {
            "Embedding \(vocabularySize)×\(embeddingSize) → LSTM \(embeddingSize)→\(hiddenSize) → Linear \(hiddenSize)→\(vocabularySize), batch \(batch), seq \(sequenceLength)"
        }

        /// Why the shape cannot be run, or nil.
        public var problem: String? {
            let sizes = [("vocabulary size", vocabularySize), ("embedding size", embeddingSize), ("hidden size", hiddenSize),
                         ("batch", batch), ("sequence length", sequenceLength)]
            return sizes.first { $0.1 <= 0 }.map { "the \($0.0) must be positive, got \($0.1)" }
        }

        /// 2 · the multiply-adds of the LSTM's input projection and recurrent GEMMs and of the output
        /// Linear, times 3 (forward, weight gradients, input gradients: the LSTM's input gradient feeds
        /// the embedding's). The embedding, cell nonlinearities, loss and Adam are left out.
        public var flopsPerStep: Double {
            let rows = Double(batch * sequenceLength)
            let lstm = rows * Double(4 * hiddenSize) * Double(embeddingSize + hiddenSize)
            let output = rows * Double(hiddenSize * vocabularySize)
            return 3 * 2 * (lstm + output)
        }
    }

    public struct Result: Sendable, Codable {
        public var device: String
        public var deviceDescription: String
        /// The step with the fused LSTM cell.
        public var step: Measurement
        /// The same step with `implementation = .composed`; nil when skipped.
        public var composedStep: Measurement?
        /// Host waits (blocking reads, finish, event waits) per fused step on OpenCL devices.
        public var hostWaitsPerStep: Double?
        public var flopsPerStep: Double
        public var gigaflopsPerSecond: Double { gigaflops(flopsPerStep, milliseconds: step.medianMilliseconds) }
        /// Composed time / fused time (above 1: the fused cell is faster).
        public var fusedSpeedup: Double? { composedStep.map { $0.medianMilliseconds / step.medianMilliseconds } }
    }

    public var shape: Shape
    /// Timed steps per implementation; nil picks them from the time of one step after warm-up: as many
    /// as fit in `timeBudgetSeconds`, at least `minimumRuns` and at most `maximumRuns`.
    public var runs: Int?
    public var warmup = 3
    public var timeBudgetSeconds = 10.0
    public var minimumRuns = 5
    public var maximumRuns = 50
    public var includeComposed = true

    public init(shape: Shape = .r3, runs: Int? = nil) {
        self.shape = shape; self.runs = runs
    }

    /// The timed step count `run(on:)` uses when one step takes `stepMilliseconds`.
    public func runCount(stepMilliseconds: Double) -> Int {
        if let runs { return runs }
        let fitting = Int(timeBudgetSeconds * 1000 / max(stepMilliseconds, 1e-3))
        return max(minimumRuns, min(maximumRuns, fitting))
    }

    public func run(on device: Device, progress: (String) -> Void = { _ in }) throws -> Result {
        if let problem = shape.problem { throw TensorError.invalidArgument(op: "bench train lstm", reason: "\(shape): \(problem)") }
        let (model, step) = try makeStep(on: device)
        func timed(_ implementation: RecurrentImplementation) throws -> Measurement {
            model.rnn.implementation = implementation
            progress("R3 \(implementation.rawValue) on \(device.name)…")
            for _ in 0..<warmup { try step() }
            try device.synchronize()
            var runs = self.runs ?? 0
            if self.runs == nil {
                let started = DispatchTime.now().uptimeNanoseconds
                try step()
                try device.synchronize()
                runs = runCount(stepMilliseconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
            }
            return try measure(on: device, warmup: 0, runs: runs, step)
        }
        let fused = try timed(.fused)
        let waits = try hostWaitsPerStep(on: device, stepMilliseconds: fused.medianMilliseconds, step)
        let composed = includeComposed ? try timed(.composed) : nil
        model.rnn.implementation = .fused
        return Result(device: device.name, deviceDescription: device.backend.deviceDescription, step: fused,
                      composedStep: composed, hostWaitsPerStep: waits, flopsPerStep: shape.flopsPerStep)
    }

    /// Builds the model, optimizer and batch on `device` and returns one training step.
    func makeStep(on device: Device) throws -> (CharLanguageModel, () throws -> Void) {
        Random.seed(1)
        let model = try CharLanguageModel(vocabularySize: shape.vocabularySize, embeddingSize: shape.embeddingSize,
                                          hiddenSize: shape.hiddenSize).moved(to: device)
        let optimizer = try Adam(parameters: model.trainableParameters, learningRate: 2e-3)
        let tokens = shape.batch * shape.sequenceLength
        var generator = SeededGenerator(seed: 3)
        let ids = (0...tokens).map { _ in Int32.random(in: 0..<Int32(shape.vocabularySize), using: &generator) }
        // The targets are the ids shifted by one position (the next character).
        let inputs = try model.embedding.indices(Array(ids.prefix(tokens)), shape: [shape.batch, shape.sequenceLength],
                                                 on: device)
        let targets = try Tensor(Array(ids.suffix(tokens)), shape: [shape.batch, shape.sequenceLength], on: device)
        return (model, {
            optimizer.zeroGradients()
            let (loss, _) = try model.loss(inputs, targets: targets)
            try loss.backward()
            try optimizer.step()
        })
    }
}
