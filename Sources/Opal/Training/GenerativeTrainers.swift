import Foundation

/// Settings shared by the autoencoder, VAE and GAN trainers.
public struct GenerativeTrainingOptions: Sendable {
    public var epochs = 5
    public var batchSize = 128
    public var learningRate: Float = 1e-3
    public var seed: UInt64 = 42
    /// Denoising autoencoder: share of input pixels zeroed (masking noise).
    public var corruption: Float = 0.3
    public var showProgress = true
    public init() {}
}

/// Trains an `Autoencoder` with the mean squared reconstruction error (Adam).
/// The denoising kind reconstructs each clean image from a copy with `corruption` of its pixels zeroed
/// (a counter-based mask drawn on the device, fresh every step).
public final class AutoencoderTrainer {
    public let model: Autoencoder
    public let device: Device
    public let options: GenerativeTrainingOptions
    public let optimizer: Adam
    public var log: (String) -> Void = { print($0) }
    private var corruptionSeed: UInt32

    public init(model: Autoencoder, device: Device, options: GenerativeTrainingOptions) throws {
        self.model = model; self.device = device; self.options = options
        try model.move(to: device)
        optimizer = try Adam(parameters: model.trainableParameters, learningRate: options.learningRate)
        corruptionSeed = UInt32(truncatingIfNeeded: options.seed &* 0x9E37_79B9)
    }

    /// The model's input for clean `images`: a corrupted copy for the denoising kind.
    func corrupted(_ images: Tensor) throws -> Tensor {
        guard model.kind == .denoising, options.corruption > 0 else { return images }
        corruptionSeed &+= 0x9E37_79B9
        // dropout scales the kept pixels by 1/(1 − p); undo it so only the zeroing remains.
        return try images.dropout(probability: options.corruption, seed: corruptionSeed) * (1 - options.corruption)
    }

    /// Mean reconstruction error (MSE per pixel) per epoch.
    @discardableResult
    public func fit(training: LabeledDataset) throws -> [Double] {
        guard training.count > 0 else { throw TrainingError.emptyDataset("training") }
        let loop = EpochLoop(device: device, batchSize: options.batchSize, showProgress: options.showProgress)
        var history: [Double] = []
        for epoch in 1...options.epochs {
            let started = Date()
            model.setTraining(true)
            let means = try loop.run(training, epoch: epoch, of: options.epochs, seed: options.seed) { images, _ in
                optimizer.zeroGradients()
                let loss = try meanSquaredError(model(corrupted(images)), images)
                try loss.backward()
                try optimizer.step()
                return [("mse", loss)]
            }
            history.append(means[0].mean)
            log(String(format: "epoch %d: training reconstruction MSE %.5f · %.1f s", epoch, means[0].mean,
                       Date().timeIntervalSince(started)))
        }
        return history
    }

    /// Mean squared reconstruction error per pixel over `data` (from corrupted inputs for the denoising kind).
    public func evaluate(_ data: LabeledDataset, batchSize: Int = 500) throws -> Double {
        model.setTraining(false)
        defer { model.setTraining(true) }
        return try withoutGradients {
            var sum = try Tensor.zeros([], on: device)
            for start in stride(from: 0, to: data.count, by: batchSize) {
                let indices = Array(start..<min(start + batchSize, data.count))
                let images = try Tensor(data.gather(indices).features, shape: Shape([indices.count] + data.featureShape), on: device)
                sum = try sum + meanSquaredError(model(corrupted(images)), images) * Float(indices.count)
            }
            return Double(try sum.item()) / Double(max(data.count, 1))
        }
    }

    /// The first `count` images of `data`, the model's input (corrupted for the denoising kind) and the reconstructions.
    public func reconstructions(of data: LabeledDataset, count: Int) throws -> (inputs: [Float], reconstructions: [Float], count: Int) {
        model.setTraining(false)
        defer { model.setTraining(true) }
        let n = min(count, data.count)
        return try withoutGradients {
            let images = try Tensor(data.gather(Array(0..<n)).features, shape: Shape([n] + data.featureShape), on: device)
            let input = try corrupted(images)
            return (try input.scalars(), try model(input).scalars(), n)
        }
    }
}

/// Trains a `VariationalAutoencoder` on the negative evidence lower bound (reconstruction BCE + KL).
public final class VAETrainer {
    public let model: VariationalAutoencoder
    public let device: Device
    public let options: GenerativeTrainingOptions
    public let optimizer: Adam
    public var log: (String) -> Void = { print($0) }
    private var noiseSeed: UInt32

    public init(model: VariationalAutoencoder, device: Device, options: GenerativeTrainingOptions) throws {
        self.model = model; self.device = device; self.options = options
        try model.move(to: device)
        optimizer = try Adam(parameters: model.trainableParameters, learningRate: options.learningRate)
        noiseSeed = UInt32(truncatingIfNeeded: options.seed)
    }

    private func noise(_ count: Int) throws -> Tensor {
        noiseSeed &+= 1
        return try Tensor.normal([count, model.latentSize], seed: noiseSeed, on: device)
    }

    /// Per epoch: mean loss, reconstruction and KL terms (per example).
    @discardableResult
    public func fit(training: LabeledDataset) throws -> [(loss: Double, reconstruction: Double, kl: Double)] {
        guard training.count > 0 else { throw TrainingError.emptyDataset("training") }
        let loop = EpochLoop(device: device, batchSize: options.batchSize, showProgress: options.showProgress)
        var history: [(Double, Double, Double)] = []
        for epoch in 1...options.epochs {
            let started = Date()
            let means = try loop.run(training, epoch: epoch, of: options.epochs, seed: options.seed) { images, _ in
                optimizer.zeroGradients()
                let terms = try model.loss(images, noise: noise(images.shape[0]))
                try terms.total.backward()
                try optimizer.step()
                return [("loss", terms.total), ("bce", terms.reconstruction), ("kl", terms.kl)]
            }
            history.append((means[0].mean, means[1].mean, means[2].mean))
            log(String(format: "epoch %d: loss %.2f (reconstruction %.2f + KL %.2f nats per image) · %.1f s",
                       epoch, means[0].mean, means[1].mean, means[2].mean, Date().timeIntervalSince(started)))
        }
        return history
    }

    /// Test loss terms and the mean squared error of the reconstructions (z = μ, pixel probabilities).
    public func evaluate(_ data: LabeledDataset, batchSize: Int = 500) throws -> (loss: Double, meanSquaredError: Double) {
        try withoutGradients {
            var loss = try Tensor.zeros([], on: device), squared = try Tensor.zeros([], on: device)
            for start in stride(from: 0, to: data.count, by: batchSize) {
                let indices = Array(start..<min(start + batchSize, data.count))
                let images = try Tensor(data.gather(indices).features, shape: Shape([indices.count] + data.featureShape), on: device)
                let terms = try model.loss(images, noise: Tensor.zeros([indices.count, model.latentSize], on: device))
                loss = try loss + terms.total * Float(indices.count)
                squared = try squared + meanSquaredError(terms.logits.sigmoid(), images) * Float(indices.count)
            }
            let n = Double(max(data.count, 1))
            return (Double(try loss.item()) / n, Double(try squared.item()) / n)
        }
    }

    /// The first `count` images of `data` and their reconstructions (z = μ).
    public func reconstructions(of data: LabeledDataset, count: Int) throws -> (inputs: [Float], reconstructions: [Float], count: Int) {
        let n = min(count, data.count)
        return try withoutGradients {
            let images = try Tensor(data.gather(Array(0..<n)).features, shape: Shape([n] + data.featureShape), on: device)
            let logits = try model.loss(images, noise: Tensor.zeros([n, model.latentSize], on: device)).logits
            return (try images.scalars(), try logits.sigmoid().scalars(), n)
        }
    }

    /// `count` images decoded from codes drawn from the prior N(0, I).
    public func samples(count: Int, seed: UInt32) throws -> [Float] {
        try withoutGradients { try model.decode(Tensor.normal([count, model.latentSize], seed: seed, on: device)).scalars() }
    }
}

/// Trains a `DCGAN` with alternating updates: one discriminator step on a real and a generated
/// batch (BCE with logits, labels 1 and 0), then one generator step (labels 1 for its samples).
/// Adam with β1 = 0.5, as in the DCGAN paper. Images are scaled from [0, 1] to [−1, 1].
public final class GANTrainer {
    public let model: DCGAN
    public let device: Device
    public let options: GenerativeTrainingOptions
    public let generatorOptimizer: Adam, discriminatorOptimizer: Adam
    public var log: (String) -> Void = { print($0) }
    private var noiseSeed: UInt32

    public init(model: DCGAN, device: Device, options: GenerativeTrainingOptions) throws {
        self.model = model; self.device = device; self.options = options
        try model.move(to: device)
        generatorOptimizer = try Adam(parameters: model.generator.trainableParameters, learningRate: options.learningRate,
                                      beta1: 0.5)
        discriminatorOptimizer = try Adam(parameters: model.discriminator.trainableParameters,
                                          learningRate: options.learningRate, beta1: 0.5)
        noiseSeed = UInt32(truncatingIfNeeded: options.seed)
    }

    private func noise(_ count: Int) throws -> Tensor {
        noiseSeed &+= 1
        return try Tensor.normal([count, model.noiseSize], seed: noiseSeed, on: device)
    }

    /// One D step and one G step on a batch of real images in [0, 1]; returns (D loss, G loss) tensors.
    public func step(real images: Tensor) throws -> (discriminator: Tensor, generator: Tensor) {
        let n = images.shape[0]
        let real = try images * 2 - 1
        let ones = try Tensor.ones([n, 1], on: device), zeros = try Tensor.zeros([n, 1], on: device)
        // Discriminator: real → 1, generated (detached from G) → 0.
        discriminatorOptimizer.zeroGradients()
        let fake = try withoutGradients { try model.generator(noise(n)) }
        let dLoss = try binaryCrossEntropyWithLogits(model.discriminator(real), targets: ones)
            + binaryCrossEntropyWithLogits(model.discriminator(fake), targets: zeros)
        try dLoss.backward()
        try discriminatorOptimizer.step()
        // Generator: make D call fresh samples real. D is frozen meanwhile, so no weight gradients are
        // computed for it (the gradient still flows through it to G).
        generatorOptimizer.zeroGradients()
        model.discriminator.freeze()
        defer { model.discriminator.freeze(false) }
        let gLoss = try binaryCrossEntropyWithLogits(model.discriminator(model.generator(noise(n))), targets: ones)
        try gLoss.backward()
        try generatorOptimizer.step()
        return (dLoss, gLoss)
    }

    /// Trains for `options.epochs` epochs; `afterEpoch(epoch)` runs after each (e.g. to write a sample grid).
    @discardableResult
    public func fit(training: LabeledDataset, afterEpoch: (Int) throws -> Void = { _ in }) throws -> [(discriminator: Double, generator: Double)] {
        guard training.count > 0 else { throw TrainingError.emptyDataset("training") }
        let loop = EpochLoop(device: device, batchSize: options.batchSize, showProgress: options.showProgress)
        var history: [(Double, Double)] = []
        for epoch in 1...options.epochs {
            let started = Date()
            model.setTraining(true)
            let means = try loop.run(training, epoch: epoch, of: options.epochs, seed: options.seed) { images, _ in
                let losses = try step(real: images)
                return [("D", losses.discriminator), ("G", losses.generator)]
            }
            history.append((means[0].mean, means[1].mean))
            log(String(format: "epoch %d: discriminator loss %.4f · generator loss %.4f · %.1f s",
                       epoch, means[0].mean, means[1].mean, Date().timeIntervalSince(started)))
            try afterEpoch(epoch)
        }
        return history
    }

    /// `count` generated images in [0, 1], [count, 1, 28, 28] (evaluation mode: running batch statistics).
    public func samples(count: Int, seed: UInt32) throws -> Tensor {
        model.setTraining(false)
        defer { model.setTraining(true) }
        return try withoutGradients {
            try (model.generator(Tensor.normal([count, model.noiseSize], seed: seed, on: device)) + 1) * 0.5
        }
    }
}

/// Sample quality judged by a classifier trained on real data (mode collapse shows as low entropy).
public struct GenerationQuality: Sendable, CustomStringConvertible {
    /// Share of samples the classifier assigns to one class with probability ≥ `threshold`.
    public var confidentShare: Double
    public var threshold: Double
    /// Entropy (bits) of the histogram of predicted classes; log2(classes) is the uniform maximum.
    public var classEntropy: Double
    public var maximumEntropy: Double
    public var histogram: [Int]

    /// Classifies `images` [N, C, H, W] (pixels in [0, 1]) with `classifier` (evaluation mode, no gradients).
    public static func measure(images: Tensor, classifier: any Layer, classCount: Int, threshold: Double = 0.9,
                               batchSize: Int = 500) throws -> GenerationQuality {
        classifier.setTraining(false)
        defer { classifier.setTraining(true) }
        var confident = 0
        var histogram = [Int](repeating: 0, count: classCount)
        let n = images.shape[0]
        try withoutGradients {
            for start in stride(from: 0, to: n, by: batchSize) {
                let probabilities = try classifier(images.sliced(along: 0, start..<min(start + batchSize, n))).softmax()
                let best = try probabilities.max(alongAxis: -1).scalars()
                let predicted = try probabilities.argmax(alongAxis: -1).intScalars()
                confident += best.filter { Double($0) >= threshold }.count
                for p in predicted where (0..<classCount).contains(Int(p)) { histogram[Int(p)] += 1 }
            }
        }
        let total = Double(max(n, 1))
        let entropy = histogram.filter { $0 > 0 }.map { Double($0) / total }.map { -$0 * log2($0) }.reduce(0, +)
        return GenerationQuality(confidentShare: Double(confident) / total, threshold: threshold, classEntropy: entropy,
                                 maximumEntropy: log2(Double(classCount)), histogram: histogram)
    }

    public var description: String {
        String(format: "%.1f%% of samples classified with confidence ≥ %.1f · class entropy %.2f of %.2f bits",
               100 * confidentShare, threshold, classEntropy, maximumEntropy)
            + " · predicted classes " + histogram.map(String.init).joined(separator: " ")
    }
}
