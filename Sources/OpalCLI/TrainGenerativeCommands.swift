import ArgumentParser
import Foundation
import Opal

/// Options shared by the autoencoder, VAE and GAN trainers.
struct GenerativeOptions: ParsableArguments {
    @Option(help: "Dataset: fashion-mnist or digits (default: fashion-mnist when installed, else the built-in digits).")
    var dataset: String?

    @Option(help: "Passes over the training set.")
    var epochs = 5

    @Option(name: .customLong("batch-size"), help: "Examples per optimisation step (default: 128; 64 for the GAN).")
    var batchSize: Int?

    @Option(name: .customLong("learning-rate"), help: "Adam learning rate (default: 1e-3; 2e-4 for the GAN).")
    var learningRate: Float?

    @Option(help: "Seed for initialisation, shuffling and noise.")
    var seed: UInt64 = 42

    @Option(help: "Train on the first N training examples only (quick runs).")
    var limit: Int?

    @Option(name: .customLong("output-dir"), help: "Folder for the checkpoint and the PNG grids.")
    var outputDirectory = "runs"

    @Flag(name: .customLong("no-progress"), help: "Do not draw progress bars.")
    var noProgress = false

    func validate() throws {
        if let dataset, DatasetName(rawValue: dataset) == nil {
            throw ValidationError("unknown dataset '\(dataset)': choose one of \(DatasetName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard epochs > 0 else { throw ValidationError("--epochs must be positive, got \(epochs)") }
        if let batchSize, batchSize <= 0 { throw ValidationError("--batch-size must be positive, got \(batchSize)") }
        if let learningRate, !(learningRate > 0) { throw ValidationError("--learning-rate must be positive, got \(learningRate)") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive, got \(limit)") }
    }

    func trainingOptions(batchSize defaultBatch: Int, learningRate defaultRate: Float) -> GenerativeTrainingOptions {
        var options = GenerativeTrainingOptions()
        options.epochs = epochs; options.batchSize = batchSize ?? defaultBatch
        options.learningRate = learningRate ?? defaultRate; options.seed = seed; options.showProgress = !noProgress
        return options
    }

    /// The chosen dataset (default: Fashion-MNIST when installed, else the digits, with a notice).
    var datasetName: DatasetName {
        if let dataset, let chosen = DatasetName(rawValue: dataset) { return chosen }
        return DatasetName.resolveDefault().name
    }

    /// One whole split of the chosen dataset (no `--limit`).
    func dataset(split: DatasetSplit) throws -> LabeledDataset { try datasetName.load(split: split) }

    func loadData() throws -> (training: LabeledDataset, test: LabeledDataset) {
        if dataset == nil, let notice = DatasetName.resolveDefault().notice { printError(notice) }
        let name = datasetName
        var training = try name.load(split: .train)
        if let limit, limit < training.count { training = training.subset(0..<limit) }
        let test = try name.load(split: .test)
        print("data: \(name.rawValue) · \(training.count) training, \(test.count) test images · \(training.featureShape)")
        return (training, test)
    }

    func path(_ file: String) throws -> URL {
        let directory = URL(fileURLWithPath: outputDirectory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.appendingPathComponent(file)
    }
}

/// Writes a PNG grid of NCHW images and says where.
func writeGrid(_ images: [Float], count: Int, shape: [Int], columns: Int, range: ClosedRange<Float> = 0...1,
               to url: URL, what: String) throws {
    let data = try ImageGrid.png(images: images, count: count, channels: shape[0], height: shape[1], width: shape[2],
                                 columns: columns, range: range)
    try PNG.writeAtomically(data, to: url)
    print("\(what): \(url.path)")
}

/// Writes inputs beside their reconstructions (pairs of columns) and says where.
func writePairs(_ inputs: [Float], _ outputs: [Float], count: Int, shape: [Int], to url: URL) throws {
    let data = try ImageGrid.pairs(original: inputs, reconstructed: outputs, count: count, channels: shape[0],
                                   height: shape[1], width: shape[2])
    try PNG.writeAtomically(data, to: url)
    print("inputs | reconstructions: \(url.path)")
}

/// `opal train autoencoder`: dense (R4), convolutional or denoising autoencoder.
struct TrainAutoencoderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autoencoder", abstract: "Train an autoencoder (dense R4, convolutional or denoising); writes inputs next to reconstructions.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: GenerativeOptions

    @Option(help: "dense, convolutional or denoising.")
    var kind: String = "dense"

    @Option(help: "Denoising: share of input pixels zeroed.")
    var corruption: Float = 0.3

    func validate() throws {
        guard Autoencoder.Kind(rawValue: kind) != nil else {
            throw ValidationError("unknown kind '\(kind)': choose one of \(Autoencoder.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard corruption >= 0, corruption < 1 else { throw ValidationError("--corruption must lie in [0, 1), got \(corruption)") }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        let data = try options.loadData()
        Random.seed(options.seed)
        let kind = Autoencoder.Kind(rawValue: kind) ?? .dense
        let model = try Autoencoder(kind: kind, imageShape: data.training.featureShape)
        print("model: \(kind.rawValue) autoencoder · \(model.parameterCount) parameters")
        var settings = options.trainingOptions(batchSize: 128, learningRate: 1e-3)
        settings.corruption = corruption
        let trainer = try AutoencoderTrainer(model: model, device: device, options: settings)
        try trainer.fit(training: data.training)
        let error = try trainer.evaluate(data.test)
        print(String(format: "test: reconstruction MSE %.5f per pixel", error) + (kind == .denoising ? " (from corrupted inputs)" : ""))
        let shown = try trainer.reconstructions(of: data.test, count: 16)
        try writePairs(shown.inputs, shown.reconstructions, count: shown.count, shape: data.training.featureShape,
                       to: try options.path("autoencoder-\(kind.rawValue).png"))
        try saveCheckpoint(model, to: try options.path("autoencoder-\(kind.rawValue).safetensors").path, metadata: [
            "opal.model": "autoencoder", "opal.kind": kind.rawValue, "opal.test_mse": String(error)])
    }
}

/// `opal train vae`: the variational autoencoder; writes reconstructions and samples from the prior.
struct TrainVAECommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vae", abstract: "Train a variational autoencoder; writes reconstructions and samples drawn from the prior.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: GenerativeOptions

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        let data = try options.loadData()
        Random.seed(options.seed)
        let model = try VariationalAutoencoder(imageShape: data.training.featureShape)
        print("model: VAE \(data.training.featureCount)-400-(2×20)-400-\(data.training.featureCount) · \(model.parameterCount) parameters")
        let trainer = try VAETrainer(model: model, device: device, options: options.trainingOptions(batchSize: 128, learningRate: 1e-3))
        try trainer.fit(training: data.training)
        let test = try trainer.evaluate(data.test)
        print(String(format: "test: loss %.2f nats per image · reconstruction MSE %.5f per pixel", test.loss, test.meanSquaredError))
        let shape = data.training.featureShape
        let shown = try trainer.reconstructions(of: data.test, count: 16)
        try writePairs(shown.inputs, shown.reconstructions, count: shown.count, shape: shape, to: try options.path("vae-reconstructions.png"))
        try writeGrid(try trainer.samples(count: 64, seed: UInt32(truncatingIfNeeded: options.seed)), count: 64, shape: shape,
                      columns: 8, to: try options.path("vae-samples.png"), what: "samples from the prior")
        try saveCheckpoint(model, to: try options.path("vae.safetensors").path, metadata: [
            "opal.model": "vae", "opal.image_shape": shape.map(String.init).joined(separator: ","),
            "opal.test_loss": String(test.loss)])
    }
}

/// `opal train gan`: DCGAN (R5); a sample grid per epoch and a classifier-based quality report.
struct TrainGANCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gan",
        abstract: "Train the DCGAN; writes a sample grid per epoch and judges the samples with a CNN classifier.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var options: GenerativeOptions

    @Option(help: "A CNN checkpoint from `opal train cnn` to judge the samples (default: train R2 for one epoch first).")
    var classifier: String?

    func run() throws {
        let device = try deviceOptions.resolve()
        print("device: \(device)")
        let data = try options.loadData()
        let shape = data.training.featureShape
        guard shape == [1, 28, 28] else {
            throw ValidationError("the DCGAN needs 28×28 single-channel images (fashion-mnist); \(data.training.name) has \(shape)")
        }
        Random.seed(options.seed)
        let judge = try CNN.simple(inputChannels: 1, imageSize: 28, classes: data.training.classCount)
        if let classifier {
            _ = try judge.load(from: URL(fileURLWithPath: classifier))
            try judge.move(to: device)
            print("judge: CNN from \(classifier)")
        } else {
            print("judge: training the CNN R2 for one epoch on all real training images (use --classifier FILE to reuse one)")
            var settings = ClassifierTrainingOptions()
            settings.epochs = 1; settings.batchSize = 64; settings.learningRate = 2e-3; settings.patience = nil
            settings.showProgress = !options.noProgress
            let trainer = try ClassifierTrainer(model: judge, device: device, options: settings)
            trainer.log = { _ in }
            let realImages = options.limit == nil ? data.training : try options.dataset(split: .train)
            try trainer.fit(training: realImages, validation: data.test.subset(0..<0))
            print(String(format: "judge: test accuracy %.2f%%", 100 * (try trainer.evaluate(data.test).report.accuracy)))
        }
        let model = try DCGAN()
        print("model: DCGAN · generator \(model.generator.parameterCount), discriminator \(model.discriminator.parameterCount) parameters")
        let trainer = try GANTrainer(model: model, device: device, options: options.trainingOptions(batchSize: 64, learningRate: 2e-4))
        let sampleSeed = UInt32(truncatingIfNeeded: options.seed &+ 7)
        try trainer.fit(training: data.training) { epoch in
            let samples = try trainer.samples(count: 64, seed: sampleSeed)
            try writeGrid(try samples.scalars(), count: 64, shape: shape, columns: 8,
                          to: try options.path("gan-epoch-\(epoch).png"), what: "samples")
        }
        let quality = try GenerationQuality.measure(images: trainer.samples(count: 1000, seed: sampleSeed &+ 1),
                                                    classifier: judge, classCount: data.training.classCount)
        print("quality of 1000 samples: \(quality)")
        try saveCheckpoint(model, to: try options.path("gan.safetensors").path, metadata: [
            "opal.model": "gan", "opal.noise_size": String(model.noiseSize),
            "opal.confident_share": String(quality.confidentShare), "opal.class_entropy": String(quality.classEntropy)])
    }
}

/// `opal sample gan|vae`: images from a trained generator.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample", abstract: "Generate a PNG grid of samples from a trained GAN or VAE checkpoint.")

    @Argument(help: "gan or vae")
    var family: String

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "The checkpoint written by `opal train gan|vae`.")
    var checkpoint: String

    @Option(help: "Output PNG file.")
    var out = "samples.png"

    @Option(help: "Number of samples.")
    var count = 64

    @Option(help: "Seed of the noise.")
    var seed: UInt32 = 1

    func validate() throws {
        guard ["gan", "vae"].contains(family) else { throw ValidationError("unknown family '\(family)': choose gan or vae") }
        guard count > 0, count <= 4096 else { throw ValidationError("--count must lie in 1…4096, got \(count)") }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        let url = URL(fileURLWithPath: checkpoint)
        let images: [Float]
        if family == "gan" {
            let model = try DCGAN()
            let metadata = try model.load(from: url)
            try requireModel("gan", in: metadata)
            let trainer = try GANTrainer(model: model, device: device, options: GenerativeTrainingOptions())
            images = try trainer.samples(count: count, seed: seed).scalars()
        } else {
            let model = try VariationalAutoencoder()
            let metadata = try model.load(from: url)
            try requireModel("vae", in: metadata)
            let trainer = try VAETrainer(model: model, device: device, options: GenerativeTrainingOptions())
            images = try trainer.samples(count: count, seed: seed)
        }
        try writeGrid(images, count: count, shape: [1, 28, 28], columns: Int(Double(count).squareRoot().rounded(.up)),
                      to: URL(fileURLWithPath: out), what: "\(count) samples")
    }

    private func requireModel(_ name: String, in metadata: [String: String]) throws {
        if let model = metadata["opal.model"], model != name {
            throw ValidationError("\(checkpoint) holds a '\(model)' model, not a \(name)")
        }
    }
}
