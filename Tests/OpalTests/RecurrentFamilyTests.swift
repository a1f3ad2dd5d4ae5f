import Foundation
import XCTest
@testable import Opal
import OpalOpenCL

/// The recurrent family learns on real data in CI time, on the native CPU and on the OpenCL device.
final class RecurrentFamilyTests: XCTestCase {
    /// The first 40,000 characters of the embedded plays (Romeo and Juliet), the last 10 % for validation.
    private func smallCorpus() throws -> TextCorpus {
        try TextCorpus(text: String(try Shakespeare.text().prefix(40_000)), name: "Romeo and Juliet (start)", validationFraction: 0.1)
    }

    /// A small character LSTM trained for 120 steps must predict the held-out text far better than the
    /// character frequencies alone (unigram entropy ≈ 3.2 nats/char).
    private func languageModelLearns(on device: Device, cell: RecurrentCellKind = .lstm) throws {
        let corpus = try smallCorpus()
        Random.seed(11)
        let model = try CharLanguageModel(vocabularySize: corpus.vocabularySize, embeddingSize: 16, hiddenSize: 64, cell: cell)
        var options = LanguageModelTrainingOptions()
        options.steps = 120; options.batchSize = 16; options.sequenceLength = 32
        options.learningRate = 1e-2; options.evaluateEvery = 120; options.showProgress = false
        let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: device, options: options)
        trainer.log = { print($0) }
        let started = Date()
        let before = try trainer.validationLoss()
        let reports = try trainer.fit()
        let after = reports.last!.validationLoss
        print(String(format: "%@ on %@: validation loss %.3f → %.3f nats/char (unigram entropy %.3f) in %.1f s",
                     cell.rawValue, device.name, before, after, corpus.unigramEntropy, Date().timeIntervalSince(started)))
        XCTAssertEqual(before, log(Double(corpus.vocabularySize)), accuracy: 0.3, "an untrained model is near uniform")
        XCTAssertLessThan(after, 0.8 * corpus.unigramEntropy, "validation loss must fall well below the unigram entropy")
        XCTAssertEqual(trainer.stepCount, 120)
        // The trained model samples text from its vocabulary, the same for the same seed.
        let sample = try model.sample(corpus: corpus, prompt: "Rom", length: 60, temperature: 0.8, seed: 5, on: device)
        XCTAssertEqual(sample.unicodeScalars.count, 60)
        XCTAssertEqual(sample, try model.sample(corpus: corpus, prompt: "Rom", length: 60, temperature: 0.8, seed: 5, on: device))
    }

    func testLanguageModelBeatsTheUnigramEntropyOnCPU() throws {
        try languageModelLearns(on: .cpu)
    }

    func testLanguageModelBeatsTheUnigramEntropyOnOpenCL() throws {
        try languageModelLearns(on: try openCLTestDevice())
    }

    /// Sampling carries the state step by step: the greedy continuation equals the argmax read off a
    /// full forward pass over prompt + continuation; unknown prompt characters are a clear error.
    func testSamplingCarriesTheStateAndChecksThePrompt() throws {
        let corpus = try smallCorpus()
        Random.seed(2)
        let model = try CharLanguageModel(vocabularySize: corpus.vocabularySize, embeddingSize: 8, hiddenSize: 12)
        let continuation = try model.sample(corpus: corpus, prompt: "Juliet", length: 6, temperature: 0, on: .cpu)
        let ids = try corpus.encode("Juliet" + continuation)
        model.setTraining(false)
        let logits = try model(try Tensor(ids, shape: [1, ids.count], on: .cpu)).logits
        let predicted = try logits.argmax(alongAxis: -1).intScalars()
        XCTAssertEqual(Array(predicted[5..<11]), Array(ids[6..<12]))
        XCTAssertThrowsError(try model.sample(corpus: corpus, prompt: "Ω", length: 3, on: .cpu)) { error in
            XCTAssertTrue("\(error)".contains("\"Ω\""), "\(error)")
        }
        XCTAssertThrowsError(try model.sample(corpus: corpus, prompt: "", length: 3, on: .cpu))
    }

    /// Fashion-MNIST read row by row (28 steps of 28 features): a small LSTM/GRU on a subset learns far beyond chance.
    private func sequenceClassifierLearns(on device: Device, cell: RecurrentCellKind) throws {
        guard FashionMNIST.isInstalled() else { throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)") }
        let training = try FashionMNIST.load(split: .train).subset(0..<2500)
        let test = try FashionMNIST.load(split: .test).subset(0..<1000)
        Random.seed(7)
        let model = try SequenceClassifier(rows: 28, columns: 28, hiddenSize: 48, cell: cell)
        var options = ClassifierTrainingOptions()
        options.epochs = 3; options.batchSize = 64; options.learningRate = 5e-3; options.showProgress = false; options.patience = nil
        let trainer = try ClassifierTrainer(model: model, device: device, options: options)
        trainer.log = { print($0) }
        let started = Date()
        try trainer.fit(training: training, validation: test.subset(0..<200))
        let accuracy = try trainer.evaluate(test).report.accuracy
        print(String(format: "%@ sequence classifier on %@: test accuracy %.1f%% in %.1f s", cell.rawValue, device.name,
                     100 * accuracy, Date().timeIntervalSince(started)))
        XCTAssertGreaterThan(accuracy, 0.5, "10 classes: chance is 10 %")
    }

    func testLSTMSequenceClassifierLearnsFashionMNISTOnCPU() throws {
        try sequenceClassifierLearns(on: .cpu, cell: .lstm)
    }

    func testGRUSequenceClassifierLearnsFashionMNISTOnOpenCL() throws {
        try sequenceClassifierLearns(on: try openCLTestDevice(), cell: .gru)
    }

    /// A language-model step (upload, forward over the sequence, backward through time, clipping by
    /// global norm, Adam) enqueues everything: zero host waits inside the steps.
    func testLanguageModelStepNeverWaitsOnTheHost() throws {
        let device = try openCLTestDevice()
        let backend = try XCTUnwrap(device.backend as? OpenCLBackend)
        let corpus = try smallCorpus()
        Random.seed(5)
        let model = try CharLanguageModel(vocabularySize: corpus.vocabularySize, embeddingSize: 8, hiddenSize: 20)
        var options = LanguageModelTrainingOptions()
        options.batchSize = 4; options.sequenceLength = 12; options.maximumGradientNorm = 0.5; options.showProgress = false
        let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: device, options: options)
        try trainer.step(batch: 0)
        try device.synchronize()
        let before = backend.hostWaitCount
        var loss = try trainer.step(batch: 1)
        for k in 2..<5 { loss = try trainer.step(batch: k) }
        XCTAssertEqual(backend.hostWaitCount - before, 0, "host waits inside 4 language-model steps")
        XCTAssertTrue(try loss.item().isFinite)
    }

    /// Training state saved mid-run and resumed gives the same weights as an uninterrupted run
    /// (the carried recurrent state and Adam's moments are part of the checkpoint).
    func testLanguageModelResumesExactly() throws {
        let corpus = try smallCorpus()
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("opal-lm-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        var options = LanguageModelTrainingOptions()
        options.steps = 8; options.batchSize = 4; options.sequenceLength = 16; options.evaluateEvery = 8
        options.showProgress = false; options.checkpointURL = url; options.checkpointEvery = 3
        func run(stopAfter: Int?, resume: URL?) throws -> [Float] {
            Random.seed(4)
            let model = try CharLanguageModel(vocabularySize: corpus.vocabularySize, embeddingSize: 8, hiddenSize: 16)
            let trainer = try LanguageModelTrainer(model: model, corpus: corpus, device: .cpu, options: options)
            trainer.log = { _ in }
            trainer.stopRequested = { stopAfter.map { trainer.stepCount >= $0 } ?? false }
            try trainer.fit(resumingFrom: resume)
            return try model.parameters.flatMap { try $0.value.scalars() }
        }
        let straight = try run(stopAfter: nil, resume: nil)
        _ = try run(stopAfter: 5, resume: nil)
        let resumed = try run(stopAfter: nil, resume: url)
        XCTAssertEqual(straight, resumed)
    }
}
