import Foundation
import Opal
import OpalOpenCL

/// R1: one training step of the MLP 784-512-512-10 (ReLU, cross-entropy, Adam), batch 128,
/// data already on the device: forward + backward + optimizer update.
public struct MLPStepBenchmark {
    public struct Result: Sendable, Codable {
        public var device: String
        public var deviceDescription: String
        public var step: Measurement
        /// Host waits (blocking reads, finish, event waits) per training step on OpenCL devices.
        public var hostWaitsPerStep: Double?
        /// 2·(forward + 2·backward) multiply-adds of the three layers (the first layer's input
        /// gradient is not computed).
        public var flopsPerStep: Double
        public var gigaflopsPerSecond: Double { gigaflops(flopsPerStep, milliseconds: step.medianMilliseconds) }
    }

    public var batchSize = 128
    public var runs = 50
    public init() {}

    public static let layerSizes = [784, 512, 512, 10]

    public func run(on device: Device) throws -> Result {
        Random.seed(1)
        let model = try makeMLP(inputSize: 784, hiddenSizes: [512, 512], outputSize: 10).moved(to: device)
        let optimizer = try Adam(parameters: model.parameters, learningRate: 1e-3)
        let features = try Tensor.uniform([batchSize, 784], in: 0...1, seed: 3, on: device)
        let labels = try Tensor((0..<batchSize).map { Int32($0 % 10) }, shape: [batchSize], on: device)
        func step() throws {
            optimizer.zeroGradients()
            let loss = try crossEntropy(logits: model(features), labels: labels)
            try loss.backward()
            try optimizer.step()
        }
        let measurement = try measure(on: device, warmup: 10, runs: runs, step)
        var waits: Double?
        if let backend = device.backend as? OpenCLBackend {
            try device.synchronize()
            let before = backend.hostWaitCount
            for _ in 0..<10 { try step() }
            waits = Double(backend.hostWaitCount - before) / 10
            try device.synchronize()
        }
        let sizes = Self.layerSizes
        var multiplyAdds = 0.0
        for (index, (input, output)) in zip(sizes, sizes.dropFirst()).enumerated() {
            let layer = Double(batchSize * input * output)
            multiplyAdds += layer * (index == 0 ? 2 : 3)   // forward, weight gradient, input gradient
        }
        return Result(device: device.name, deviceDescription: device.backend.deviceDescription,
                      step: measurement, hostWaitsPerStep: waits, flopsPerStep: 2 * multiplyAdds)
    }
}

