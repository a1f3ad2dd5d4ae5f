import XCTest
@testable import Opal

/// Each image family learns on real Fashion-MNIST data in CI time, on the native CPU and on the OpenCL
/// device (PoCL in CI), and the tests assert the learned quality. Subsets and small widths keep the
/// debug-build suite fast; the full-size runs are the CLI's (README, Benchmarks/RESULTS.md).
final class ImageFamilyTests: XCTestCase {
    private var devices: [Device] {
        var result = [Device.cpu]
        if !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0) { result.append(device) }
        return result
    }

    private func fashion(training: Int, test: Int) throws -> (training: LabeledDataset, test: LabeledDataset) {
        guard FashionMNIST.isInstalled() else { throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)") }
        return (try FashionMNIST.load(split: .train).subset(0..<training), try FashionMNIST.load(split: .test).subset(0..<test))
    }

    /// A small convolutional classifier on 28×28 images (the judge of the GAN test too).
    private func smallCNN() throws -> Sequential {
        try Sequential {
            try Conv2D(inputChannels: 1, outputChannels: 8, kernelSize: 3, padding: 1); ReLU(); MaxPool2D(kernelSize: 2)
            try Conv2D(inputChannels: 8, outputChannels: 16, kernelSize: 3, padding: 1); ReLU(); MaxPool2D(kernelSize: 2)
            Flatten(); try Linear(inputSize: 16 * 7 * 7, outputSize: 10)
        }
    }

    private func trainClassifier(_ model: Sequential, on device: Device, data: LabeledDataset, epochs: Int) throws -> ClassifierTrainer {
        var options = ClassifierTrainingOptions()
        options.epochs = epochs; options.batchSize = 64; options.learningRate = 3e-3; options.showProgress = false
        options.patience = nil
        let trainer = try ClassifierTrainer(model: model, device: device, options: options)
        trainer.log = { _ in }
        try trainer.fit(training: data, validation: data.subset(0..<0))
        return trainer
    }

    func testCNNLearnsFashionMNIST() throws {
        let data = try fashion(training: 3000, test: 1000)
        for device in devices {
            Random.seed(5)
            let trainer = try trainClassifier(try smallCNN(), on: device, data: data.training, epochs: 3)
            let accuracy = try trainer.evaluate(data.test).report.accuracy
            XCTAssertGreaterThan(accuracy, 0.72, "CNN test accuracy on a Fashion-MNIST subset, \(device.name)")
        }
    }

    func testDeepCNNWithBatchNormAndDropout() throws {
        let data = try fashion(training: 1000, test: 300)
        Random.seed(6)
        let model = try CNN.deep(inputChannels: 1, imageSize: 28, classes: 10)
        let trainer = try trainClassifier(model, on: .cpu, data: data.training, epochs: 2)
        XCTAssertGreaterThan(try trainer.evaluate(data.test).report.accuracy, 0.6)
        // Evaluation mode uses the running statistics and no dropout: the same input gives the same output.
        model.setTraining(false)
        let x = try Tensor(data.test.gather([0, 1]).features, shape: [2, 1, 28, 28], on: .cpu)
        XCTAssertEqual(try model(x).scalars(), try model(x).scalars())
    }

    func testAutoencodersReconstructWellBelowUntrained() throws {
        let data = try fashion(training: 2000, test: 500)
        for device in devices {
            for kind in Autoencoder.Kind.allCases {
                Random.seed(7)
                let model = try Autoencoder(kind: kind, imageShape: [1, 28, 28])
                var options = GenerativeTrainingOptions()
                options.epochs = 3; options.batchSize = 64; options.learningRate = 3e-3; options.showProgress = false
                let trainer = try AutoencoderTrainer(model: model, device: device, options: options)
                trainer.log = { _ in }
                let untrained = try trainer.evaluate(data.test)
                try trainer.fit(training: data.training)
                let trained = try trainer.evaluate(data.test)
                XCTAssertLessThan(trained, untrained * 0.5, "\(kind) on \(device.name): test MSE \(untrained) → \(trained)")
            }
        }
    }

    func testVAELearnsAndSamples() throws {
        let data = try fashion(training: 2000, test: 500)
        for device in devices {
            Random.seed(8)
            let model = try VariationalAutoencoder(imageShape: [1, 28, 28], hiddenSize: 128, latentSize: 10)
            var options = GenerativeTrainingOptions()
            options.epochs = 3; options.batchSize = 64; options.learningRate = 3e-3; options.showProgress = false
            let trainer = try VAETrainer(model: model, device: device, options: options)
            trainer.log = { _ in }
            let untrained = try trainer.evaluate(data.test)
            let history = try trainer.fit(training: data.training)
            let trained = try trainer.evaluate(data.test)
            XCTAssertLessThan(trained.loss, untrained.loss * 0.7, "VAE test loss \(untrained.loss) → \(trained.loss) on \(device.name)")
            XCTAssertLessThan(trained.meanSquaredError, untrained.meanSquaredError * 0.7)
            XCTAssertGreaterThan(history.last!.kl, 0.5, "the code carries information (KL > 0)")
            let samples = try trainer.samples(count: 5, seed: 1)
            XCTAssertEqual(samples.count, 5 * 784)
            XCTAssertTrue(samples.allSatisfy { (0...1).contains($0) })
        }
    }

    /// The GAN trains without the discriminator collapsing, and its samples convince a classifier
    /// trained on real images more often than the untrained generator's do.
    func testGANImprovesOverTheUntrainedGenerator() throws {
        let data = try fashion(training: 1920, test: 500)
        Random.seed(3)
        let judge = try trainClassifier(try smallCNN(), on: .cpu, data: data.training, epochs: 3).model
        for device in devices {
            Random.seed(9)
            let model = try DCGAN(noiseSize: 32)
            var options = GenerativeTrainingOptions()
            options.epochs = 1; options.batchSize = 32; options.learningRate = 2e-4; options.showProgress = false
            let trainer = try GANTrainer(model: model, device: device, options: options)
            trainer.log = { _ in }
            let untrained = try GenerationQuality.measure(images: trainer.samples(count: 200, seed: 4).moved(to: .cpu),
                                                          classifier: judge, classCount: 10, threshold: 0.9)
            let history = try trainer.fit(training: data.training)
            let trained = try GenerationQuality.measure(images: trainer.samples(count: 200, seed: 4).moved(to: .cpu),
                                                        classifier: judge, classCount: 10, threshold: 0.9)
            let (dLoss, gLoss) = history[0]
            XCTAssertTrue(dLoss.isFinite && gLoss.isFinite)
            // Not collapsed: D neither wins outright (loss → 0, G's gradient vanishes) nor is fooled completely.
            XCTAssertGreaterThan(dLoss, 0.05, "discriminator loss on \(device.name)")
            XCTAssertLessThan(dLoss, 2.5, "discriminator loss on \(device.name)")
            XCTAssertGreaterThan(trained.confidentShare, untrained.confidentShare,
                                 "confident share \(untrained.confidentShare) → \(trained.confidentShare) on \(device.name)")
            print("GAN on \(device.name): D \(dLoss), G \(gLoss); untrained \(untrained); trained \(trained)")
        }
    }
}

/// Bad input to the image layers: one clear error naming the layer and the shapes.
final class ImageLayerErrorTests: XCTestCase {
    func testErrorsNameTheLayerAndTheShapes() throws {
        let conv = try Conv2D(inputChannels: 3, outputChannels: 8, kernelSize: 3, padding: 1)
        // Channel mismatch.
        XCTAssertThrowsError(try conv(Tensor.zeros([2, 1, 8, 8], on: .cpu))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("Conv2D(3→8, 3×3") && text.contains("[2, 1, 8, 8]"), text)
        }
        // Kernel larger than the padded input.
        let wide = try Conv2D(inputChannels: 1, outputChannels: 2, kernelSize: 7)
        XCTAssertThrowsError(try wide(Tensor.zeros([1, 1, 5, 5], on: .cpu))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("Conv2D(1→2, 7×7") && text.contains("does not fit") && text.contains("[1, 1, 5, 5]"), text)
        }
        // Not an image.
        XCTAssertThrowsError(try conv(Tensor.zeros([2, 3, 8], on: .cpu))) { XCTAssertTrue("\($0)".contains("NCHW"), "\($0)") }
        // Zero or negative stride, negative padding.
        XCTAssertThrowsError(try Conv2D(inputChannels: 1, outputChannels: 2, kernelSize: 3, stride: 0)) {
            XCTAssertTrue("\($0)".contains("stride must be positive"), "\($0)")
        }
        XCTAssertThrowsError(try ConvTranspose2D(inputChannels: 1, outputChannels: 2, kernelSize: 3, stride: -1)) {
            XCTAssertTrue("\($0)".contains("ConvTranspose2D") && "\($0)".contains("stride"), "\($0)")
        }
        XCTAssertThrowsError(try Conv2D(inputChannels: 1, outputChannels: 2, kernelSize: 3, padding: -1))
        XCTAssertThrowsError(try MaxPool2D(kernelSize: 3)(Tensor.zeros([1, 1, 2, 2], on: .cpu))) {
            XCTAssertTrue("\($0)".contains("MaxPool2D(3×3") && "\($0)".contains("[1, 1, 2, 2]"), "\($0)")
        }
        XCTAssertThrowsError(try MaxPool2D(kernelSize: 2, stride: 0)(Tensor.zeros([1, 1, 4, 4], on: .cpu))) {
            XCTAssertTrue("\($0)".contains("stride"), "\($0)")
        }
        XCTAssertThrowsError(try BatchNorm(channels: 4)(Tensor.zeros([2, 3, 4, 4], on: .cpu))) {
            XCTAssertTrue("\($0)".contains("BatchNorm(4)"), "\($0)")
        }
    }
}
