import ArgumentParser
import Dispatch
import Foundation
import Opal
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The options every character language model shares (`opal train lstm|gru|rnn|gpt`): the text,
/// the optimisation, validation, the final sample and checkpoints.
struct TextTrainingOptions: ParsableArguments {
    @Option(help: "UTF-8 text file for the language model (default: the embedded Shakespeare plays, Romeo and Juliet and Macbeth).")
    var text: String?

    @Option(help: "Language model: optimisation steps.")
    var steps = 2000

    @Option(name: .customLong("seq-length"), help: "Language model: characters per row and step (recurrent: the truncation length of backpropagation through time; GPT: its context).")
    var sequenceLength = 64

    @Option(name: .customLong("batch-size"), help: "Sequences per step (default: 32 for the language model, 128 for the classifier).")
    var batchSize: Int?

    @Option(name: .customLong("learning-rate"), help: "Peak Adam learning rate (cosine decay to zero over the run).")
    var learningRate: Float = 2e-3

    @Option(name: .customLong("clip-norm"), help: "Language model: clip the gradients' global norm to this (0: no clipping).")
    var clipNorm: Float = 5

    @Option(name: .customLong("evaluate-every"), help: "Language model: measure the validation loss every N steps.")
    var evaluateEvery = 200

    @Option(name: .customLong("validation-fraction"), help: "Share of the text (or training set) held out for validation.")
    var validationFraction = 0.1

    @Option(help: "Language model: the prompt of the sample printed at the end.")
    var prompt = "ROMEO:"

    @Option(name: .customLong("sample-length"), help: "Language model: characters generated at the end (0: none).")
    var sampleLength = 300

    @Option(help: "Language model: sampling temperature of the final sample.")
    var temperature: Float = 0.8

    @Option(help: "Seed for initialisation, shuffling and sampling.")
    var seed: UInt64 = 42

    @Option(help: "Where to write the trained model (safetensors; default runs/<model>.safetensors).")
    var checkpoint: String?

    @Option(name: .customLong("checkpoint-every"), help: "Save the training state to the checkpoint file every N steps.")
    var checkpointEvery: Int?

    @Option(help: "Resume from a training-state checkpoint (written by --checkpoint-every or Ctrl-C) with the same options.")
    var resume: String?

    @Flag(name: .customLong("no-progress"), help: "Do not draw progress bars.")
    var noProgress = false

    func validate() throws {
        guard steps > 0 else { throw ValidationError("--steps must be positive, got \(steps)") }
        guard sequenceLength > 0 else { throw ValidationError("--seq-length must be positive, got \(sequenceLength)") }
        if let batchSize, batchSize <= 0 { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive, got \(learningRate)") }
        guard clipNorm >= 0, clipNorm.isFinite else { throw ValidationError("--clip-norm must be ≥ 0, got \(clipNorm)") }
        guard evaluateEvery > 0 else { throw ValidationError("--evaluate-every must be positive, got \(evaluateEvery)") }
        guard validationFraction > 0, validationFraction < 1 else {
            throw ValidationError("--validation-fraction must lie in (0, 1), got \(validationFraction)")
        }
        guard sampleLength >= 0 else { throw ValidationError("--sample-length must be ≥ 0, got \(sampleLength)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0, got \(temperature)") }
        if let checkpointEvery, checkpointEvery <= 0 { throw ValidationError("--checkpoint-every must be positive, got \(checkpointEvery)") }
    }

    /// The training text (`--text`, else the embedded plays), over `vocabulary` when one is fixed
    /// (fine-tuning a pretrained model), and a line describing it.
    func corpus(vocabulary: [Unicode.Scalar]? = nil) throws -> TextCorpus {
        var corpus = try text.map { try TextCorpus.load(contentsOf: URL(fileURLWithPath: $0), validationFraction: validationFraction) }
            ?? Shakespeare.corpus(validationFraction: validationFraction)
        if let vocabulary {
            corpus = try TextCorpus(text: corpus.decode(corpus.ids), name: corpus.name, vocabulary: vocabulary,
                                    validationFraction: validationFraction)
        }
        print(String(format: "text: %@ · %d characters (%d training, %d validation) · vocabulary %d · unigram entropy %.4f nats/char",
                     corpus.name, corpus.ids.count, corpus.training.count, corpus.validation.count, corpus.vocabularySize,
                     corpus.unigramEntropy))
        return corpus
    }

    /// Trains `model` on `corpus` (Ctrl-C saves the state and exits 130), prints a sample made by
    /// `sample(prompt, length, temperature, seed)` and writes the checkpoint.
    /// - Returns: the validation reports.
    @discardableResult
    func train(_ model: any CharacterLevelModel, corpus: TextCorpus, device: Device, defaultPath: String,
               description: [String: String],
               sample: (String, Int, Float, UInt64) throws -> String) throws -> [LanguageModelReport] {
        var options = LanguageModelTrainingOptions()
        options.steps = steps; options.batchSize = batchSize ?? 32; options.sequenceLength = sequenceLength
        options.learningRate = learningRate; options.maximumGradientNorm = clipNorm > 0 ? clipNorm : nil
        options.evaluateEvery = evaluateEvery; options.showProgress = !noProgress
        let path = checkpoint ?? resume ?? defaultPath
        options.checkpointURL = URL(fileURLWithPath: path)
        options.checkpointEvery = checkpointEvery
        options.checkpointMetadata = description
        options.dropoutSeed = seed
        let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: device, options: options)
        print(String(format: "training: %d steps of %d × %d characters · Adam %g (cosine) · clip %@", steps, options.batchSize,
                     sequenceLength, learningRate, clipNorm > 0 ? "\(clipNorm)" : "off"))
        trainer.log = { print($0); fflush(nil) }   // report lines appear at once, also when piped to a file
        fflush(nil)
        var reports: [LanguageModelReport] = []
        try withInterruptHandler { stopRequested in
            trainer.stopRequested = stopRequested
            reports = try trainer.fit(resumingFrom: resume.map { URL(fileURLWithPath: $0) })
        }
        if trainer.wasStopped {
            if let url = trainer.lastCheckpoint {
                print("interrupted: saved the training state to \(url.path) (step \(trainer.stepCount) of \(steps)); continue with --resume \(url.path)")
            } else {
                print("interrupted at step \(trainer.stepCount); no checkpoint was saved")
            }
            throw ExitCode(130)
        }
        if sampleLength > 0 {
            let text = try sample(prompt, sampleLength, temperature, seed)
            print("sample (temperature \(temperature)):\n\(prompt)\(text)")
        }
        try saveCheckpoint(model, to: path, metadata: description)
        return reports
    }
}

/// Set by the SIGINT handler of the language-model trainer.
private let textInterruptRequested = Atomic<Bool>(false)

/// Runs `body` with a SIGINT (Ctrl-C) handler: the first Ctrl-C asks the trainer (through the
/// closure handed to `body`) to save its state and stop after the current step; a second one quits at once.
/// Shared with `opal train seq2seq`.
func withInterruptHandler(_ body: (@escaping () -> Bool) throws -> Void) throws {
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
    source.setEventHandler {
        if textInterruptRequested.exchange(true, ordering: .relaxed) { _exit(130) }
        FileHandle.standardError.write(Data("\ninterrupt: saving the training state after this step (Ctrl-C again to quit at once)\n".utf8))
    }
    source.resume()
    defer {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
    try body { textInterruptRequested.load(ordering: .relaxed) }
}
