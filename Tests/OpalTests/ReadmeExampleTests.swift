import XCTest
import Opal

/// The README's Swift example, on the built-in digits so it runs anywhere in CI time.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeExampleCompilesAndLearns() throws {
        let device = Device.best
        Random.seed(42)
        let model = try Sequential {
            Flatten()
            try Linear(inputSize: 64, outputSize: 256); ReLU()
            try Dropout(probability: 0.1)
            try Linear(inputSize: 256, outputSize: 10)
        }.moved(to: device)
        let optimizer = try Adam(parameters: model.parameters, learningRate: 1e-3)

        let data = try Digits.load(split: .train)
        var firstLoss: Float?, lastLoss: Float = 0
        for epoch in 1...3 {
            for batch in data.batchIndices(batchSize: 128, shuffle: true, seed: 1, epoch: epoch) {
                let (features, labels) = data.gather(batch)
                let x = try Tensor(features, shape: [batch.count, 1, 8, 8], on: device)
                let y = try Tensor(labels, shape: [batch.count], on: device)
                optimizer.zeroGradients()
                let loss = try crossEntropy(logits: model(x), labels: y)
                try loss.backward()
                try optimizer.step()
                lastLoss = try loss.item()
                if firstLoss == nil { firstLoss = lastLoss }
            }
        }
        XCTAssertLessThan(lastLoss, try XCTUnwrap(firstLoss) * 0.75)

        var options = ClassifierTrainingOptions()
        options.epochs = 2
        options.showProgress = false
        let trainer = try ClassifierTrainer(model: model, device: device, options: options)
        trainer.log = { _ in }
        let (training, validation) = data.split(validationFraction: 1.0 / 12, seed: 42)
        try trainer.fit(training: training, validation: validation)
        XCTAssertGreaterThan(try trainer.evaluate(try Digits.load(split: .test)).report.accuracy, 0.8)
    }
}
