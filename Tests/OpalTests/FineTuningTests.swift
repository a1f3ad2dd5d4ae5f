import Foundation
import XCTest
@testable import Opal

/// Transfer learning: load a trained CNN, replace its head, freeze its feature layers, fine-tune on
/// another dataset (Fashion-MNIST → the built-in digits, resized to 28×28).
final class FineTuningTests: ScratchDirectoryTestCase {
    func testBilinearResizeMatchesPyTorch() throws {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4), mode="bilinear", align_corners=False)
        let expected: [Float] = [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]
        let data = LabeledDataset(name: "tiny", features: [0, 1, 2, 3, 9, 9, 9, 9], labels: [1, 0],
                                  featureShape: [1, 2, 2], classNames: ["a", "b"])
        let resized = try data.resized(height: 4, width: 4)
        XCTAssertEqual(resized.featureShape, [1, 4, 4])
        XCTAssertEqual(resized.labels, [1, 0])
        for (got, want) in zip(resized.features[..<16], expected) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        XCTAssertEqual(Array(resized.features[16...]), [Float](repeating: 9, count: 16))
        // Downsampling (PyTorch: interpolate(y, size=(2, 2), ...) of the 4×4 result above).
        let down = try resized.resized(height: 2, width: 2)
        for (got, want) in zip(down.features[..<4], [Float(0.375), 1.125, 1.875, 2.625]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        // A non-square, non-integer scale: interpolate(arange(64.).reshape(1, 1, 8, 8), size=(3, 5), ...).
        let ramp = LabeledDataset(name: "ramp", features: (0..<64).map(Float.init), labels: [0], featureShape: [1, 8, 8], classNames: ["a"])
        let expectedRamp: [Float] = [6.9666677, 8.5666676, 10.166667, 11.766667, 13.366668, 28.3, 29.9, 31.5, 33.1, 34.7,
                                     49.633335, 51.233337, 52.833336, 54.433334, 56.033337]
        for (got, want) in zip(try ramp.resized(height: 3, width: 5).features, expectedRamp) { XCTAssertEqual(got, want, accuracy: 1e-4) }
        XCTAssertThrowsError(try data.resized(height: 0, width: 3))
        let flat = LabeledDataset(name: "flat", features: [1, 2], labels: [0], featureShape: [2], classNames: ["a"])
        XCTAssertThrowsError(try flat.resized(height: 2, width: 2)) { error in
            XCTAssertTrue("\(error)".contains("[2]"), "\(error)")
        }
    }

    func testLoadPretrainedSkipsTheHeadAndFreezingKeepsWeights() throws {
        Random.seed(UInt64.random(in: 1...1_000_000))
        let source = try CNN.simple(classes: 10)
        let url = directory.appendingPathComponent("source.safetensors")
        try source.save(to: url)
        let target = try CNN.simple(classes: 4)   // another head shape: 128 → 4
        XCTAssertEqual(target.headLayerName, "9")
        XCTAssertEqual(target.featureLayerNames, ["0", "1", "2", "3", "4", "5"])
        let headBefore = try target.namedParameters.first { $0.name == "9.weight" }!.parameter.value.scalars()
        let report = try target.loadPretrained(from: url, excluding: ["9"])
        XCTAssertFalse(report.loadedNames.contains("9.weight"))
        let sourceValues = Dictionary(uniqueKeysWithValues: try source.namedParameters.map { ($0.name, try $0.parameter.value.scalars()) })
        for (name, parameter) in target.namedParameters where !name.hasPrefix("9.") {
            XCTAssertEqual(try parameter.value.scalars(), sourceValues[name], "\(name) loaded from the checkpoint")
        }
        XCTAssertEqual(try target.namedParameters.first { $0.name == "9.weight" }!.parameter.value.scalars(), headBefore,
                       "the replaced head keeps its fresh initialisation")
        let frozen = target.freezeParameters(under: target.featureLayerNames)
        XCTAssertEqual(frozen, 32 * 9 + 32 + 64 * 32 * 9 + 64)
        XCTAssertEqual(target.trainableParameters.count, 4)   // 7.weight, 7.bias, 9.weight, 9.bias
        // A prefix names whole modules: "1" must not catch "10.*" (there is none here) nor "1x".
        XCTAssertTrue(Sequential.name("1.weight", isUnder: ["1"]))
        XCTAssertFalse(Sequential.name("10.weight", isUnder: ["1"]))

        // Errors name the file and the tensor.
        let other = try CNN.simple(inputChannels: 3, classes: 10)
        XCTAssertThrowsError(try other.loadPretrained(from: url, excluding: ["9"])) { error in
            XCTAssertTrue("\(error)".contains("0.weight") && "\(error)".contains(url.path), "\(error)")
        }
        let mlp = try makeMLP(inputSize: 784, hiddenSizes: [16], outputSize: 10)
        XCTAssertThrowsError(try mlp.loadPretrained(from: url, excluding: [])) { error in
            XCTAssertTrue("\(error)".contains(url.path), "\(error)")
        }
    }

    /// A small CNN of R2's form (8 and 16 channels) so that the debug-build test stays quick.
    private func smallCNN(classes: Int) throws -> Sequential {
        try Sequential {
            try Conv2D(inputChannels: 1, outputChannels: 8, kernelSize: 3, padding: 1); ReLU(); MaxPool2D(kernelSize: 2)
            try Conv2D(inputChannels: 8, outputChannels: 16, kernelSize: 3, padding: 1); ReLU(); MaxPool2D(kernelSize: 2)
            Flatten(); try Linear(inputSize: 16 * 7 * 7, outputSize: 32); ReLU(); try Linear(inputSize: 32, outputSize: classes)
        }
    }

    /// Fashion-MNIST CNN → digits: the frozen convolution stays bit for bit, the new head and the rest learn the digits.
    func testFineTuneFashionCNNOnDigits() throws {
        guard FashionMNIST.isInstalled() else { throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)") }
        // A fixed seed, as the other end-to-end learning tests use: the assertion is about learning, and a
        // 1,000-image pretraining run varies too much from seed to seed for a tight bound.
        Random.seed(17)
        let fashion = try FashionMNIST.load(split: .train).subset(0..<1000)
        let pretrained = try smallCNN(classes: 10)
        _ = try train(pretrained, on: fashion, epochs: 1)
        let url = directory.appendingPathComponent("fashion-cnn.safetensors")
        try pretrained.save(to: url)

        let digits = try Digits.load(split: .train).resized(height: 28, width: 28)
        let digitsTest = try Digits.load(split: .test).resized(height: 28, width: 28)
        let model = try smallCNN(classes: digits.classCount)
        XCTAssertEqual(model.headLayerName, "9")
        try model.loadPretrained(from: url, excluding: [model.headLayerName!])
        // Freeze the first convolution (the most generic features); the rest adapts to the digits.
        XCTAssertEqual(model.freezeParameters(under: ["0"]), 8 * 9 + 8)
        let frozenBefore = try model.namedParameters.filter { $0.name.hasPrefix("0.") }.map { try $0.parameter.value.scalars() }
        XCTAssertEqual(frozenBefore.count, 2)
        let headBefore = try model.namedParameters.first { $0.name == "9.weight" }!.parameter.value.scalars()
        let trainer = try train(model, on: digits, epochs: 6, learningRate: 3e-3)
        let accuracy = try trainer.evaluate(digitsTest).report.accuracy
        print("FineTuningTests: digits test accuracy after fine-tuning a Fashion-MNIST CNN with its first convolution frozen: \(accuracy)")
        XCTAssertGreaterThan(accuracy, 0.5, "well above the 10 % of chance")
        let frozenAfter = try model.namedParameters.filter { $0.name.hasPrefix("0.") }.map { try $0.parameter.value.scalars() }
        XCTAssertEqual(frozenAfter, frozenBefore, "frozen layers are not updated")
        XCTAssertNotEqual(try model.namedParameters.first { $0.name == "9.weight" }!.parameter.value.scalars(), headBefore)
    }

    private func train(_ model: Sequential, on data: LabeledDataset, epochs: Int, learningRate: Float = 2e-3) throws -> ClassifierTrainer {
        var options = ClassifierTrainingOptions()
        options.epochs = epochs; options.batchSize = 64; options.learningRate = learningRate; options.showProgress = false
        options.patience = nil
        let trainer = try ClassifierTrainer(model: model, device: .cpu, options: options)
        trainer.log = { _ in }
        try trainer.fit(training: data, validation: data.subset(0..<0))
        return trainer
    }
}
