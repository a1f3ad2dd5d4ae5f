import ArgumentParser
import Foundation
import Opal

/// `opal train seq2seq`: the encoder–decoder Transformer learns to reverse random digit strings;
/// reports the held-out exact match and a few example reversals, and saves the weights.
struct TrainSeq2SeqCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seq2seq",
        abstract: "Train an encoder–decoder Transformer to reverse digit strings (d_model 64, 4 heads, 2+2 blocks) and report the held-out exact match.")

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "Optimisation steps (each a fresh batch of random strings).")
    var steps = 3000

    @Option(name: .customLong("batch-size"), help: "Strings per step.")
    var batchSize = 64

    @Option(name: .customLong("min-length"), help: "Shortest source string (digits).")
    var minLength = 1

    @Option(name: .customLong("max-length"), help: "Longest source string (digits).")
    var maxLength = 12

    @Option(name: .customLong("model-size"), help: "Model width d_model.")
    var modelSize = 64

    @Option(help: "Attention heads.")
    var heads = 4

    @Option(help: "Encoder blocks and decoder blocks (each).")
    var layers = 2

    @Option(name: .customLong("feed-forward"), help: "Hidden size of the blocks' MLP.")
    var feedForward = 256

    @Option(name: .customLong("learning-rate"), help: "Peak Adam learning rate (linear warm-up, then cosine decay to zero).")
    var learningRate: Float = 1e-3

    @Option(name: .customLong("warmup-steps"), help: "Steps of linear learning-rate warm-up.")
    var warmupSteps = 100

    @Option(name: .customLong("clip-norm"), help: "Clip the gradients' global norm to this (0: no clipping).")
    var clipNorm: Float = 1

    @Option(name: .customLong("evaluate-every"), help: "Measure the held-out exact match every N steps.")
    var evaluateEvery = 500

    @Option(name: .customLong("held-out"), help: "Number of held-out strings.")
    var heldOut = 500

    @Option(help: "Example reversals printed at the end.")
    var examples = 5

    @Option(help: "Seed for initialisation and the training stream (the held-out set uses seed + 1).")
    var seed: UInt64 = 42

    @Option(help: "Where to write the trained model and the training-state checkpoints (safetensors; default: the --resume file, else runs/seq2seq.safetensors).")
    var checkpoint: String?

    @Option(name: .customLong("checkpoint-every"), help: "Save the training state (weights, Adam state, step, stream position) to the checkpoint file every N steps.")
    var checkpointEvery: Int?

    @Option(help: "Resume exactly from a training-state checkpoint (written by --checkpoint-every or Ctrl-C) with the same options.")
    var resume: String?

    @Flag(name: .customLong("no-progress"), help: "Do not draw progress bars.")
    var noProgress = false

    func validate() throws {
        guard steps > 0 else { throw ValidationError("--steps must be positive, got \(steps)") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
        guard minLength > 0 else { throw ValidationError("--min-length must be positive, got \(minLength)") }
        guard maxLength > 0 else { throw ValidationError("--max-length must be positive, got \(maxLength)") }
        guard minLength <= maxLength else {
            throw ValidationError("--min-length (\(minLength)) must not exceed --max-length (\(maxLength))")
        }
        guard modelSize > 0 else { throw ValidationError("--model-size must be positive, got \(modelSize)") }
        guard heads > 0 else { throw ValidationError("--heads must be positive, got \(heads)") }
        guard modelSize % heads == 0 else { throw ValidationError("--heads (\(heads)) must divide --model-size (\(modelSize))") }
        guard layers > 0 else { throw ValidationError("--layers must be positive, got \(layers)") }
        guard feedForward > 0 else { throw ValidationError("--feed-forward must be positive, got \(feedForward)") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive, got \(learningRate)") }
        guard warmupSteps >= 0 else { throw ValidationError("--warmup-steps must be ≥ 0, got \(warmupSteps)") }
        guard clipNorm >= 0, clipNorm.isFinite else { throw ValidationError("--clip-norm must be ≥ 0, got \(clipNorm)") }
        guard evaluateEvery > 0 else { throw ValidationError("--evaluate-every must be positive, got \(evaluateEvery)") }
        guard heldOut > 0 else { throw ValidationError("--held-out must be positive, got \(heldOut)") }
        guard examples >= 0 else { throw ValidationError("--examples must be ≥ 0, got \(examples)") }
        if let checkpointEvery, checkpointEvery <= 0 { throw ValidationError("--checkpoint-every must be positive, got \(checkpointEvery)") }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        let task = try DigitReversal(minimumLength: minLength, maximumLength: maxLength)
        Random.seed(seed)
        let model = try Seq2SeqTransformer(.init(vocabularySize: DigitReversal.vocabularySize, modelSize: modelSize,
                                                 headCount: heads, encoderBlockCount: layers, decoderBlockCount: layers,
                                                 feedForwardSize: feedForward))
        print("task: reverse digit strings of \(minLength)…\(maxLength) digits · vocabulary \(DigitReversal.vocabularySize) (padding, begin, end, 10 digits)")
        print("model: encoder–decoder Transformer · d_model \(modelSize) · \(heads) heads · \(layers)+\(layers) blocks · MLP \(feedForward) · \(model.parameterCount) parameters")
        var options = Seq2SeqTrainingOptions()
        options.steps = steps; options.batchSize = batchSize; options.learningRate = learningRate
        options.warmupSteps = warmupSteps; options.maximumGradientNorm = clipNorm > 0 ? clipNorm : nil
        options.evaluateEvery = evaluateEvery; options.heldOutCount = heldOut; options.seed = seed
        let path = checkpoint ?? resume ?? "runs/seq2seq.safetensors"
        options.showProgress = !noProgress; options.checkpointURL = URL(fileURLWithPath: path)
        options.checkpointEvery = checkpointEvery
        let trainer = try Seq2SeqTrainer(model: model, task: task, device: device, options: options)
        print(String(format: "training: %d steps of %d strings · Adam %g (warm-up %d, cosine) · clip %@ · %d held-out strings", steps,
                     batchSize, learningRate, warmupSteps, clipNorm > 0 ? "\(clipNorm)" : "off", heldOut))
        trainer.log = { print($0); fflush(nil) }
        fflush(nil)
        let started = Date()
        // Ctrl-C: save the training state after the current step and exit 130 (a second one quits at once).
        try withInterruptHandler { stopRequested in
            trainer.stopRequested = stopRequested
            try trainer.fit(resumingFrom: resume.map { URL(fileURLWithPath: $0) })
        }
        if trainer.wasStopped {
            if let url = trainer.lastCheckpoint {
                print("interrupted: saved the training state to \(url.path) (step \(trainer.stepCount) of \(steps)); continue with --resume \(url.path)")
            } else {
                print("interrupted at step \(trainer.stepCount); no checkpoint was saved")
            }
            throw ExitCode(130)
        }
        let seconds = Date().timeIntervalSince(started)
        let (accuracy, outputs) = try trainer.evaluate()
        let correct = Int((accuracy * Double(heldOut)).rounded())
        print(String(format: "held-out exact match: %.2f%% (%d of %d strings) · trained in %.1f s", 100 * accuracy, correct, heldOut, seconds))
        for (source, output) in zip(trainer.heldOut, outputs).prefix(examples) {
            let mark = output == DigitReversal.target(of: source) ? "✓" : "✗"
            let text = output.isEmpty ? "(nothing)" : DigitReversal.text(output)
            print("  \(DigitReversal.text(source)) → \(text) \(mark)")
        }
        print("checkpoint: \(path)")
    }
}
