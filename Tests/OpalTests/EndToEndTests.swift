import XCTest
@testable import Opal

/// Models learn on real data in CI time, on the native CPU and on the OpenCL device.
final class EndToEndTests: XCTestCase {
    private func train(on device: Device, epochs: Int) throws -> Double {
        let data = try Digits.load(split: .train)
        let test = try Digits.load(split: .test)
        let (training, validation) = data.split(validationFraction: 0.1, seed: 1)
        Random.seed(3)
        let model = try makeMLP(inputSize: 64, hiddenSizes: [64], outputSize: 10)
        var options = ClassifierTrainingOptions()
        options.epochs = epochs; options.batchSize = 32; options.learningRate = 3e-3; options.showProgress = false
        let trainer = try ClassifierTrainer(model: model, device: device, options: options)
        trainer.log = { _ in }
        let history = try trainer.fit(training: training, validation: validation)
        XCTAssertLessThan(history.last!.trainingLoss, history.first!.trainingLoss)
        return try trainer.evaluate(test).report.accuracy
    }

    func testMLPLearnsDigitsOnCPU() throws {
        let accuracy = try train(on: .cpu, epochs: 8)
        XCTAssertGreaterThan(accuracy, 0.9, "test accuracy on the built-in digits")
    }

    func testMLPLearnsDigitsOnOpenCL() throws {
        guard !DeviceRegistry.shared.openCL.isEmpty else { throw XCTSkip("no OpenCL device") }
        let accuracy = try train(on: try Device.openCL(0), epochs: 8)
        XCTAssertGreaterThan(accuracy, 0.9, "test accuracy on the built-in digits")
    }

    func testMetrics() {
        let report = Metrics.classificationReport(predictions: [0, 1, 1, 2], labels: [0, 1, 2, 2], classCount: 3)
        XCTAssertEqual(report.accuracy, 0.75)
        // class 0: P=1 R=1; class 1: P=0.5 R=1; class 2: P=1 R=0.5
        XCTAssertEqual(report.macroPrecision, (1 + 0.5 + 1) / 3, accuracy: 1e-12)
        XCTAssertEqual(report.macroRecall, (1 + 1 + 0.5) / 3, accuracy: 1e-12)
        XCTAssertEqual(report.macroF1, (1 + 2.0 / 3 + 2.0 / 3) / 3, accuracy: 1e-12)
        XCTAssertEqual(Metrics.meanAbsoluteError([1, 2], [2, 4]), 1.5)
        XCTAssertEqual(Metrics.meanSquaredError([1, 2], [2, 4]), 2.5)
    }

    func testLossesMatchTheirFormulas() throws {
        let x = try Tensor([0.5, -1, 2], shape: [3], on: .cpu)
        let y = try Tensor([1, 0, 1], shape: [3], on: .cpu)
        let mse = try meanSquaredError(x, y).item()
        XCTAssertEqual(mse, (0.25 + 1 + 1) / 3, accuracy: 1e-6)
        let bce = try binaryCrossEntropyWithLogits(x, targets: y).item()
        let expected = [(0.5, 1.0), (-1, 0), (2, 1)].map { (z, t) -> Double in
            let p = 1 / (1 + Foundation.exp(-z)); return -(t * Foundation.log(p) + (1 - t) * Foundation.log(1 - p))
        }.reduce(0, +) / 3
        XCTAssertEqual(Double(bce), expected, accuracy: 1e-5)
        XCTAssertThrowsError(try meanSquaredError(x, try Tensor.zeros([4], on: .cpu)))
    }

    func testSGDAndAdamWMinimiseAQuadratic() throws {
        for makeOptimizer in [{ try SGD(parameters: $0, learningRate: 0.1, momentum: 0.9) as any Optimizer },
                              { try AdamW(parameters: $0, learningRate: 0.1, weightDecay: 0) as any Optimizer }] {
            let p = Parameter(try Tensor([3, -2], shape: [2], on: .cpu))
            let optimizer = try makeOptimizer([p])
            for _ in 0..<200 {
                optimizer.zeroGradients()
                try (p.value - 1).squared().sum().backward()
                try optimizer.step()
            }
            for value in try p.value.scalars() { XCTAssertEqual(value, 1, accuracy: 1e-2) }
        }
    }

    func testFrozenParametersGetNoUpdate() throws {
        let layer = try Linear(inputSize: 3, outputSize: 2)
        layer.weight.isTrainable = false
        let before = try layer.weight.value.scalars()
        let optimizer = try SGD(parameters: layer.parameters, learningRate: 0.5)
        try layer(try Tensor.ones([4, 3], on: .cpu)).sum().backward()
        try optimizer.step()
        XCTAssertEqual(try layer.weight.value.scalars(), before)
        XCTAssertNotNil(layer.bias?.gradient)
    }

    func testLayerGradientsMatchFiniteDifferences() throws {
        Random.seed(11)
        let layer = try Linear(inputSize: 5, outputSize: 3)
        let x = try Tensor.uniform([4, 5], in: -1...1, seed: 2, on: .cpu)
        func loss() throws -> Float { try layer(x).tanh().sum().item() }
        try layer(x).tanh().sum().backward()
        let analytic = try XCTUnwrap(layer.weight.gradient).scalars()
        var weights = try layer.weight.value.scalars()
        let epsilon: Float = 1e-2
        for index in [0, 4, 7, 14] {
            let original = weights[index]
            weights[index] = original + epsilon
            try layer.weight.assign(try Tensor(weights, shape: [3, 5], on: .cpu))
            let plus = try loss()
            weights[index] = original - epsilon
            try layer.weight.assign(try Tensor(weights, shape: [3, 5], on: .cpu))
            let minus = try loss()
            weights[index] = original
            XCTAssertEqual(analytic[index], (plus - minus) / (2 * epsilon), accuracy: 2e-3)
        }
        let dropout = try Dropout(probability: 0.5, seed: 1)
        dropout.isTraining = false
        XCTAssertEqual(try dropout(x).scalars(), try x.scalars())
    }
}
