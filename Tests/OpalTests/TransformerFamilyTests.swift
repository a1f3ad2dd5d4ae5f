import Foundation
import XCTest
@testable import Opal

/// The Transformer family learns on real data in CI time, on the native CPU and on the OpenCL device:
/// the GPT character model beats the unigram entropy, fine-tuning with frozen lower blocks improves the
/// loss on a second text without touching them, and the vision transformer learns Fashion-MNIST.
final class TransformerFamilyTests: XCTestCase {
    private var devices: [Device] {
        var result: [Device] = [.cpu]
        if !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0) { result.append(device) }
        return result
    }

    /// The embedded plays split in two texts: Romeo and Juliet (the first 40,000 characters) and Macbeth
    /// (its first 20,000), over one vocabulary.
    private func texts() throws -> (romeo: TextCorpus, macbeth: TextCorpus) {
        let text = try Shakespeare.text()
        let whole = try TextCorpus(text: text, name: "plays")
        guard let start = text.range(of: "THE TRAGEDY OF MACBETH") ?? text.range(of: "MACBETH") else {
            throw XCTSkip("the embedded text has no Macbeth title")
        }
        let romeo = try TextCorpus(text: String(text.prefix(40_000)), name: "Romeo and Juliet (start)", vocabulary: whole.vocabulary)
        let macbeth = try TextCorpus(text: String(text[start.lowerBound...].prefix(20_000)), name: "Macbeth (start)",
                                     vocabulary: whole.vocabulary)
        return (romeo, macbeth)
    }

    private func options(steps: Int) -> LanguageModelTrainingOptions {
        var options = LanguageModelTrainingOptions()
        options.steps = steps; options.batchSize = 16; options.sequenceLength = 32
        options.learningRate = 3e-3; options.evaluateEvery = steps; options.showProgress = false
        options.maximumGradientNorm = 1
        return options
    }

    private func smallGPT(vocabularySize: Int) throws -> GPT {
        try GPT(GPT.Configuration(vocabularySize: vocabularySize, contextLength: 32, modelSize: 48, headCount: 4, blockCount: 2))
    }

    /// 200 steps bring the validation loss well below the unigram entropy (≈ 3.2 nats/char) on every device.
    func testGPTBeatsTheUnigramEntropy() throws {
        let corpus = try texts().romeo
        for device in devices {
            Random.seed(21)
            let model = try smallGPT(vocabularySize: corpus.vocabularySize)
            let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: device, options: options(steps: 200))
            trainer.log = { print($0) }
            let started = Date()
            let before = try trainer.validationLoss()
            let after = try trainer.fit().last!.validationLoss
            print(String(format: "GPT on %@: validation loss %.3f → %.3f nats/char (unigram entropy %.3f) in %.1f s",
                         device.name, before, after, corpus.unigramEntropy, Date().timeIntervalSince(started)))
            XCTAssertEqual(before, log(Double(corpus.vocabularySize)), accuracy: 0.3, "an untrained model is near uniform")
            XCTAssertLessThan(after, 0.8 * corpus.unigramEntropy, "GPT validation loss on \(device.name)")
            let sample = try model.sample(vocabulary: corpus.vocabulary, prompt: "Rom", length: 50, temperature: 0.8, seed: 5, on: device)
            XCTAssertEqual(sample.unicodeScalars.count, 50)
        }
    }

    /// A GPT pretrained on Romeo and Juliet, fine-tuned on Macbeth with its embeddings and lower block
    /// frozen: the Macbeth validation loss falls, and the frozen weights stay bit for bit.
    func testFineTuningWithFrozenLowerBlocksImprovesTheSecondText() throws {
        let (romeo, macbeth) = try texts()
        Random.seed(22)
        let model = try smallGPT(vocabularySize: romeo.vocabularySize)
        let pretraining = try LanguageModelTrainer(model: model, corpus: romeo, device: .cpu, options: options(steps: 120))
        pretraining.log = { _ in }
        try pretraining.fit()
        try model.freezeLowerBlocks(1)
        let frozen = try [model.tokenEmbedding.weight, model.blocks[0].attention.inputProjectionWeight, model.blocks[0].norm2.weight]
            .map { try $0.value.scalars() }
        let fineTuning = try LanguageModelTrainer(model: model, corpus: macbeth, device: .cpu, options: options(steps: 80))
        fineTuning.log = { _ in }
        XCTAssertLessThan(fineTuning.optimizer.parameters.count, model.parameters.count, "frozen parameters are not optimised")
        let before = try fineTuning.validationLoss()
        let after = try fineTuning.fit().last!.validationLoss
        print(String(format: "fine-tuning on Macbeth: validation loss %.3f → %.3f nats/char", before, after))
        XCTAssertLessThan(after, before - 0.05)
        let unchanged = try [model.tokenEmbedding.weight, model.blocks[0].attention.inputProjectionWeight, model.blocks[0].norm2.weight]
            .map { try $0.value.scalars() }
        XCTAssertEqual(unchanged, frozen, "frozen embeddings and block 0 must not change")
    }

    /// A GPT's training state saved mid-run (`checkpointEvery`, then a stop) and resumed gives the same
    /// weights, bit for bit, as an uninterrupted run (Adam's moments and the position are in the checkpoint).
    /// With dropout too: the masks of step k are drawn after re-seeding from (dropoutSeed, k), so the resumed run
    /// draws what the straight one drew.
    func testGPTResumesExactly() throws {
        for dropout: Float in [0, 0.2] {
            try checkGPTResumesExactly(dropout: dropout)
        }
    }

    private func checkGPTResumesExactly(dropout: Float) throws {
        let corpus = try texts().romeo
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("opal-gpt-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        var settings = options(steps: 8)
        settings.batchSize = 4; settings.sequenceLength = 16; settings.checkpointURL = url; settings.checkpointEvery = 3
        settings.dropoutSeed = 7
        var lines: [String] = []
        func run(stopAfter: Int?, resume: URL?) throws -> [Float] {
            Random.seed(24)
            let model = try GPT(GPT.Configuration(vocabularySize: corpus.vocabularySize, contextLength: 16, modelSize: 16,
                                                  headCount: 2, blockCount: 2, dropout: dropout))
            let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: .cpu, options: settings)
            trainer.log = { lines.append($0) }
            trainer.stopRequested = { stopAfter.map { trainer.stepCount >= $0 } ?? false }
            try trainer.fit(resumingFrom: resume)
            return try model.parameters.flatMap { try $0.value.scalars() }
        }
        let straight = try run(stopAfter: nil, resume: nil)
        _ = try run(stopAfter: 5, resume: nil)
        lines = []
        let resumed = try run(stopAfter: nil, resume: url)
        XCTAssertTrue(lines.contains { $0.contains("resumed from") && $0.contains("at step 5 of 8") }, "\(lines)")
        XCTAssertEqual(straight, resumed, "dropout \(dropout)")
    }

    /// A small ViT (7×7 patches, d 32, 2 blocks) learns a 3,000-image Fashion-MNIST subset in 3 epochs.
    func testVisionTransformerLearnsFashionMNIST() throws {
        guard FashionMNIST.isInstalled() else { throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)") }
        let training = try FashionMNIST.load(split: .train).subset(0..<3000)
        let test = try FashionMNIST.load(split: .test).subset(0..<1000)
        for device in devices {
            Random.seed(23)
            let model = try VisionTransformer(imageShape: [1, 28, 28], patchSize: 7, modelSize: 32, headCount: 4, blockCount: 2, classes: 10)
            var options = ClassifierTrainingOptions()
            options.epochs = 3; options.batchSize = 64; options.learningRate = 3e-3; options.showProgress = false
            options.patience = nil
            let trainer = try ClassifierTrainer(model: model, device: device, options: options)
            trainer.log = { _ in }
            try trainer.fit(training: training, validation: training.subset(0..<0))
            let accuracy = try trainer.evaluate(test).report.accuracy
            print("ViT on \(device.name): test accuracy \(accuracy)")
            XCTAssertGreaterThan(accuracy, 0.65, "ViT test accuracy on a Fashion-MNIST subset, \(device.name)")
        }
    }
}
