import XCTest
@testable import Opal

/// The image families learn on real data in CI time, on the native CPU and the OpenCL device.
final class ImageFamilyTests: XCTestCase {
    private var devices: [Device] {
        var result = [Device.cpu]
        if !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0) { result.append(device) }
        return result
    }

    func testCNNLearnsDigits() throws {
        let data = try Digits.load(split: .train), test = try Digits.load(split: .test)
        let (training, validation) = data.split(validationFraction: 0.1, seed: 1)
        for device in devices {
            Random.seed(5)
            let model = try CNN.simple(inputChannels: 1, imageSize: 8, classes: 10)
            var options = ClassifierTrainingOptions()
            options.epochs = 6; options.batchSize = 32; options.learningRate = 3e-3; options.showProgress = false
            let trainer = try ClassifierTrainer(model: model, device: device, options: options)
            trainer.log = { _ in }
            try trainer.fit(training: training, validation: validation)
            let accuracy = try trainer.evaluate(test).report.accuracy
            XCTAssertGreaterThan(accuracy, 0.9, "CNN test accuracy on digits, \(device.name)")
        }
    }

    func testDeepCNNWithBatchNormLearnsDigits() throws {
        let data = try Digits.load(split: .train), test = try Digits.load(split: .test)
        Random.seed(6)
        let model = try CNN.deep(inputChannels: 1, imageSize: 8, classes: 10)
        var options = ClassifierTrainingOptions()
        options.epochs = 6; options.batchSize = 32; options.learningRate = 3e-3; options.showProgress = false
        options.patience = nil
        let trainer = try ClassifierTrainer(model: model, device: .cpu, options: options)
        trainer.log = { _ in }
        try trainer.fit(training: data, validation: test.subset(0..<0))
        XCTAssertGreaterThan(try trainer.evaluate(test).report.accuracy, 0.85)
        // Evaluation mode uses the running statistics: the same input gives the same output twice.
        model.setTraining(false)
        let x = try Tensor(test.gather([0, 1]).features, shape: [2, 1, 8, 8], on: .cpu)
        XCTAssertEqual(try model(x).scalars(), try model(x).scalars())
    }

    func testAutoencodersReconstruct() throws {
        let data = try Digits.load(split: .train), test = try Digits.load(split: .test)
        for kind in Autoencoder.Kind.allCases {
            Random.seed(7)
            let model = try Autoencoder(kind: kind, imageShape: [1, 8, 8], codeSize: 16)
            var options = GenerativeTrainingOptions()
            options.epochs = kind == .convolutional ? 12 : 8; options.batchSize = 32; options.learningRate = 3e-3
            options.showProgress = false
            let trainer = try AutoencoderTrainer(model: model, device: .cpu, options: options)
            trainer.log = { _ in }
            let before = try trainer.evaluate(test)
            let history = try trainer.fit(training: data)
            let after = try trainer.evaluate(test)
            XCTAssertLessThan(after, before * 0.6, "\(kind): test MSE \(before) → \(after)")
            XCTAssertLessThan(history.last!, history.first!)
            let shown = try trainer.reconstructions(of: test, count: 4)
            XCTAssertEqual(shown.reconstructions.count, 4 * 64)
        }
    }

    func testVAELearnsAndSamples() throws {
        let data = try Digits.load(split: .train), test = try Digits.load(split: .test)
        for device in devices {
            Random.seed(8)
            let model = try VariationalAutoencoder(imageShape: [1, 8, 8], hiddenSize: 64, latentSize: 8)
            var options = GenerativeTrainingOptions()
            options.epochs = 8; options.batchSize = 32; options.learningRate = 3e-3; options.showProgress = false
            let trainer = try VAETrainer(model: model, device: device, options: options)
            trainer.log = { _ in }
            let before = try trainer.evaluate(test).loss
            let history = try trainer.fit(training: data)
            let after = try trainer.evaluate(test).loss
            XCTAssertLessThan(after, before * 0.8, "VAE test loss \(before) → \(after) on \(device.name)")
            XCTAssertGreaterThan(history.last!.kl, 0)
            let samples = try trainer.samples(count: 5, seed: 1)
            XCTAssertEqual(samples.count, 5 * 64)
            XCTAssertTrue(samples.allSatisfy { (0...1).contains($0) })
        }
    }

    func testGANStepsRunAndMoveBothNetworks() throws {
        guard FashionMNIST.isInstalled() else { throw XCTSkip("Fashion-MNIST is not installed") }
        let data = try FashionMNIST.load(split: .test).subset(0..<64)
        Random.seed(9)
        let model = try DCGAN(noiseSize: 16)
        var options = GenerativeTrainingOptions()
        options.batchSize = 32; options.learningRate = 2e-4; options.showProgress = false
        let trainer = try GANTrainer(model: model, device: .cpu, options: options)
        let generatorBefore = try model.generator.parameters[0].value.scalars()
        let discriminatorBefore = try model.discriminator.parameters[0].value.scalars()
        let images = try Tensor(data.features, shape: [64, 1, 28, 28], on: .cpu)
        for step in 0..<2 {
            let losses = try trainer.step(real: images.sliced(along: 0, (step * 32)..<(step * 32 + 32)))
            XCTAssertTrue(try losses.discriminator.item().isFinite)
            XCTAssertTrue(try losses.generator.item().isFinite)
        }
        XCTAssertNotEqual(try model.generator.parameters[0].value.scalars(), generatorBefore)
        XCTAssertNotEqual(try model.discriminator.parameters[0].value.scalars(), discriminatorBefore)
        let samples = try trainer.samples(count: 3, seed: 1)
        XCTAssertEqual(samples.shape, [3, 1, 28, 28])
        XCTAssertTrue(try samples.scalars().allSatisfy { (0...1).contains($0) })
        let quality = try GenerationQuality.measure(images: samples, classifier: CNN.simple(), classCount: 10)
        XCTAssertEqual(quality.histogram.reduce(0, +), 3)
    }
}
