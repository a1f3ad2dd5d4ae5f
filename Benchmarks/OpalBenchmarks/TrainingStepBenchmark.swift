import Foundation
import Opal
import OpalOpenCL

/// One training step of a reference workload with the data already on the device: forward, loss,
/// backward and optimizer update (R5: one discriminator and one generator update).
///
/// - R1: MLP 784-512-512-10 (ReLU), cross-entropy, Adam 1e-3, batch 128.
/// - R2: `CNN.simple()` (Conv 1→32 3×3 p1, ReLU, MaxPool 2; Conv 32→64 3×3 p1, ReLU, MaxPool 2;
///   Linear 3136→128, ReLU; Linear 128→10), cross-entropy, Adam 1e-3, batch 64 of [1, 28, 28] images.
/// - R4: `Autoencoder(kind: .dense)` (784-256 ReLU, 256-32; 32-256 ReLU, 256-784 Sigmoid), MSE against
///   the input, Adam 1e-3, batch 128.
/// - R5: `DCGAN()` stepped by `GANTrainer.step(real:)` (noise size 100, Adam 2e-4 with β1 = 0.5), batch 64.
/// - R6: `GPT` (vocabulary 65, context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4× GELU) on
///   random ids [32, 64] with next-id targets, cross-entropy, Adam 1e-3.
///
/// `Benchmarks/peers/pytorch_reference.py` builds the same models and optimizers in PyTorch.
public struct TrainingStepBenchmark {
    public enum Workload: String, CaseIterable, Sendable, Codable {
        case mlp = "R1"
        case cnn = "R2"
        case autoencoder = "R4"
        case gan = "R5"
        case gpt = "R6"

        /// The workload's identifier in the issue and in the PyTorch reference ("R1" …).
        public var identifier: String { rawValue }

        public var summary: String {
            switch self {
            case .mlp: "MLP 784-512-512-10, batch 128, cross-entropy, Adam"
            case .cnn: "CNN conv 1→32→64 3×3 + max-pool, linear 3136-128-10, batch 64, cross-entropy, Adam"
            case .autoencoder: "dense autoencoder 784-256-32-256-784, batch 128, MSE, Adam"
            case .gan: "DCGAN-small, one D + one G update, batch 64, BCE with logits, Adam 2e-4 β1 0.5"
            case .gpt: "GPT vocab 65, context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4× GELU, batch 32, Adam"
            }
        }

        public var batchSize: Int {
            switch self {
            case .mlp, .autoencoder: 128
            case .cnn, .gan: 64
            case .gpt: 32
            }
        }

        /// Floating-point operations of one step: 2 · the multiply-adds of the matrix products and
        /// convolutions (forward, weight gradients, and input gradients where they are needed; the
        /// first layer's input gradient is not computed). Activations, pooling, losses, batch
        /// normalisation and the optimizer are left out.
        public var flopsPerStep: Double {
            let n = Double(batchSize)
            /// Multiply-adds of a dense layer and of a convolution (or transposed convolution, counted
            /// on its smaller side) producing `outputPixels` pixels of `outputChannels` channels.
            func dense(_ input: Double, _ output: Double) -> Double { n * input * output }
            func conv(_ input: Double, _ output: Double, pixels: Double, kernel: Double) -> Double {
                n * input * output * pixels * kernel * kernel
            }
            switch self {
            case .mlp:
                let sizes = [784.0, 512, 512, 10]
                let layers = zip(sizes, sizes.dropFirst()).map { dense($0, $1) }
                return 2 * (2 * layers[0] + 3 * layers.dropFirst().reduce(0, +))
            case .cnn:
                let convolution1 = conv(1, 32, pixels: 28 * 28, kernel: 3)
                let rest = conv(32, 64, pixels: 14 * 14, kernel: 3) + dense(3136, 128) + dense(128, 10)
                return 2 * (2 * convolution1 + 3 * rest)
            case .autoencoder:
                let rest = dense(256, 32) + dense(32, 256) + dense(256, 784)
                return 2 * (2 * dense(784, 256) + 3 * rest)
            case .gan:
                // G: Linear 100→6272; ConvTranspose 128→64 on 7×7 inputs; ConvTranspose 64→1 on 14×14 inputs.
                let gLinear = dense(100, 6272), gConv1 = conv(128, 64, pixels: 7 * 7, kernel: 4)
                let gConv2 = conv(64, 1, pixels: 14 * 14, kernel: 4)
                // D: Conv 1→64 to 14×14; Conv 64→128 to 7×7; Linear 6272→1.
                let dConv1 = conv(1, 64, pixels: 14 * 14, kernel: 4), dConv2 = conv(64, 128, pixels: 7 * 7, kernel: 4)
                let dLinear = dense(6272, 1)
                let g = gLinear + gConv1 + gConv2, d = dConv1 + dConv2 + dLinear
                // D update: G forward without gradients; D forward + weight gradients + input gradients
                // (except the first layer's) on the real and on the generated batch.
                let discriminatorStep = g + 2 * (d + d + dConv2 + dLinear)
                // G update: G and D forward; D input gradients only (frozen); G weight gradients and
                // input gradients (except the first layer's).
                let generatorStep = g + d + d + g + gConv1 + gConv2
                return 2 * (discriminatorStep + generatorStep)
            case .gpt:
                // Per token and block: Q, K, V and output projections (4E²) and the MLP (8E²), plus the
                // causal attention products (QKᵀ and PV over on average T/2 keys: T·E); then the head E·V.
                // Forward once, backward twice (input and weight gradients); the embeddings are lookups.
                let (e, t, v, blocks) = (128.0, 64.0, 65.0, 2.0)
                let perToken = blocks * (12 * e * e + t * e) + e * v
                return 2 * 3 * n * t * perToken
            }
        }

        /// Untimed steps before timing (the first also builds the OpenCL programs).
        var warmupSteps: Int {
            switch self {
            case .mlp, .autoencoder: 10
            case .cnn: 3
            case .gan: 2
            case .gpt: 3
            }
        }

        /// The most timed steps taken when the caller does not fix the count.
        var maximumRuns: Int {
            switch self {
            case .mlp: 50
            case .autoencoder: 100
            case .cnn: 30
            case .gan: 20
            case .gpt: 30
            }
        }
    }

    public struct Result: Sendable, Codable {
        public var device: String
        public var deviceDescription: String
        public var step: Measurement
        /// Host waits (blocking reads, finish, event waits) per training step on OpenCL devices.
        public var hostWaitsPerStep: Double?
        /// See `Workload.flopsPerStep`.
        public var flopsPerStep: Double
        public var gigaflopsPerSecond: Double { gigaflops(flopsPerStep, milliseconds: step.medianMilliseconds) }
    }

    public var workload: Workload
    /// Timed steps per device; nil picks them from the time of one step after warm-up: as many as fit
    /// in `timeBudgetSeconds`, at least `minimumRuns` and at most the workload's maximum.
    public var runs: Int?
    /// Untimed steps; nil uses the workload's default.
    public var warmup: Int?
    public var timeBudgetSeconds = 10.0
    public var minimumRuns = 5

    public init(workload: Workload, runs: Int? = nil) {
        self.workload = workload
        self.runs = runs
    }

    /// The timed step count `run(on:)` uses when one step takes `stepMilliseconds`.
    public func runCount(stepMilliseconds: Double) -> Int {
        if let runs { return runs }
        let fitting = Int(timeBudgetSeconds * 1000 / max(stepMilliseconds, 1e-3))
        return max(minimumRuns, min(workload.maximumRuns, fitting))
    }

    public func run(on device: Device) throws -> Result {
        let step = try makeStep(on: device)
        for _ in 0..<(warmup ?? workload.warmupSteps) { try step() }
        try device.synchronize()
        var runs = self.runs ?? 0
        if self.runs == nil {
            let started = DispatchTime.now().uptimeNanoseconds
            try step()
            try device.synchronize()
            runs = runCount(stepMilliseconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
        }
        let measurement = try measure(on: device, warmup: 0, runs: runs, step)
        let waits = try hostWaitsPerStep(on: device, stepMilliseconds: measurement.medianMilliseconds, step)
        return Result(device: device.name, deviceDescription: device.backend.deviceDescription,
                      step: measurement, hostWaitsPerStep: waits, flopsPerStep: workload.flopsPerStep)
    }

    /// The device time per kernel over `steps` training steps (after warm-up) on an OpenCL device; nil
    /// elsewhere. CLBlast's GEMMs, where used, are not included.
    public func kernelProfile(on device: Device, steps: Int = 5) throws -> [KernelProfile.Entry]? {
        guard let backend = device.backend as? OpenCLBackend else { return nil }
        let step = try makeStep(on: device)
        for _ in 0..<(warmup ?? workload.warmupSteps) { try step() }
        try device.synchronize()
        let profile = KernelProfile()
        backend.kernelProfile = profile
        defer { backend.kernelProfile = nil }
        for _ in 0..<steps { try step() }
        try device.synchronize()
        return try profile.summary().map {
            KernelProfile.Entry(kernel: $0.kernel, launches: $0.launches / steps, milliseconds: $0.milliseconds / Double(steps))
        }
    }

    /// Builds the model, optimizer(s) and batch on `device` and returns one training step.
    func makeStep(on device: Device) throws -> () throws -> Void {
        Random.seed(1)
        let n = workload.batchSize
        let labels = try Tensor((0..<n).map { Int32($0 % 10) }, shape: [n], on: device)
        switch workload {
        case .mlp:
            let model = try makeMLP(inputSize: 784, hiddenSizes: [512, 512], outputSize: 10).moved(to: device)
            let optimizer = try Adam(parameters: model.parameters, learningRate: 1e-3)
            let features = try Tensor.uniform([n, 784], in: 0...1, seed: 3, on: device)
            return {
                optimizer.zeroGradients()
                let loss = try crossEntropy(logits: model(features), labels: labels)
                try loss.backward()
                try optimizer.step()
            }
        case .cnn:
            let model = try CNN.simple().moved(to: device)
            let optimizer = try Adam(parameters: model.trainableParameters, learningRate: 1e-3)
            let images = try Tensor.uniform([n, 1, 28, 28], in: 0...1, seed: 3, on: device)
            return {
                optimizer.zeroGradients()
                let loss = try crossEntropy(logits: model(images), labels: labels)
                try loss.backward()
                try optimizer.step()
            }
        case .autoencoder:
            let model = try Autoencoder(kind: .dense).moved(to: device)
            let optimizer = try Adam(parameters: model.trainableParameters, learningRate: 1e-3)
            let images = try Tensor.uniform([n, 1, 28, 28], in: 0...1, seed: 3, on: device)
            return {
                optimizer.zeroGradients()
                let loss = try meanSquaredError(model(images), images)
                try loss.backward()
                try optimizer.step()
            }
        case .gan:
            var options = GenerativeTrainingOptions()
            options.batchSize = n
            options.learningRate = 2e-4
            options.seed = 1
            options.showProgress = false
            let trainer = try GANTrainer(model: DCGAN(), device: device, options: options)
            let images = try Tensor.uniform([n, 1, 28, 28], in: 0...1, seed: 3, on: device)
            return { _ = try trainer.step(real: images) }
        case .gpt:
            let model = try GPT(GPT.Configuration(vocabularySize: 65)).moved(to: device)
            let optimizer = try Adam(parameters: model.trainableParameters, learningRate: 1e-3)
            var generator = SeededGenerator(seed: 3)
            let ids = (0..<(n * 65)).map { _ in Int32.random(in: 0..<65, using: &generator) }
            let inputs = try Tensor(ids.enumerated().filter { $0.offset % 65 != 64 }.map(\.element), shape: [n, 64], on: device)
            let targets = try Tensor(ids.enumerated().filter { $0.offset % 65 != 0 }.map(\.element), shape: [n, 64], on: device)
            return {
                optimizer.zeroGradients()
                let (loss, _) = try model.loss(inputs, targets: targets)
                try loss.backward()
                try optimizer.step()
            }
        }
    }
}

/// Host waits per training step on an OpenCL device (nil elsewhere): `step` run up to 10 times (about 2 s
/// at most) between two readings of the backend's wait counter. A step that never reads the device back
/// gives 0.
func hostWaitsPerStep(on device: Device, stepMilliseconds: Double, _ step: () throws -> Void) throws -> Double? {
    guard let backend = device.backend as? OpenCLBackend else { return nil }
    let count = max(1, min(10, Int(2000 / max(stepMilliseconds, 1e-3))))
    try device.synchronize()
    let before = backend.hostWaitCount
    for _ in 0..<count { try step() }
    let waits = Double(backend.hostWaitCount - before) / Double(count)
    try device.synchronize()
    return waits
}
