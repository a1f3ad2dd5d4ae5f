/// Autoencoders: an encoder to a small code and a decoder back to the image (pixels in [0, 1]).
public final class Autoencoder: Layer {
    public enum Kind: String, CaseIterable, Sendable {
        /// R4: Linear 784-256 ReLU, 256-32; Linear 32-256 ReLU, 256-784 Sigmoid.
        case dense
        /// Conv 1→16 3×3 s2 p1, ReLU, Conv 16→32 3×3 s2 p1, ReLU; ConvTranspose 32→16, ReLU, ConvTranspose 16→1, Sigmoid.
        case convolutional
        /// The dense net trained to reconstruct clean images from corrupted ones.
        case denoising
    }

    public let kind: Kind
    public let encoder: Sequential, decoder: Sequential
    public let imageShape: [Int]
    public var isTraining = true

    /// - Parameter imageShape: [channels, height, width]; the convolutional kind needs sides divisible by 4.
    public init(kind: Kind, imageShape: [Int] = [1, 28, 28], codeSize: Int = 32) throws {
        self.kind = kind; self.imageShape = imageShape
        let pixels = imageShape.reduce(1, *)
        switch kind {
        case .dense, .denoising:
            encoder = try Sequential {
                Flatten()
                try Linear(inputSize: pixels, outputSize: 256); ReLU()
                try Linear(inputSize: 256, outputSize: codeSize)
            }
            decoder = try Sequential {
                try Linear(inputSize: codeSize, outputSize: 256); ReLU()
                try Linear(inputSize: 256, outputSize: pixels); Sigmoid()
                Reshape(imageShape)
            }
        case .convolutional:
            guard imageShape.count == 3, imageShape[1] % 4 == 0, imageShape[2] % 4 == 0 else {
                throw TensorError.invalidArgument(op: "Autoencoder(.convolutional)",
                                                  reason: "image sides must be divisible by 4, got \(imageShape)")
            }
            encoder = try Sequential {
                try Conv2D(inputChannels: imageShape[0], outputChannels: 16, kernelSize: 3, stride: 2, padding: 1); ReLU()
                try Conv2D(inputChannels: 16, outputChannels: 32, kernelSize: 3, stride: 2, padding: 1); ReLU()
            }
            decoder = try Sequential {
                try ConvTranspose2D(inputChannels: 32, outputChannels: 16, kernelSize: 3, stride: 2, padding: 1, outputPadding: 1)
                ReLU()
                try ConvTranspose2D(inputChannels: 16, outputChannels: imageShape[0], kernelSize: 3, stride: 2, padding: 1,
                                    outputPadding: 1)
                Sigmoid()
            }
        }
    }

    public var children: [(name: String, module: any Module)] { [("encoder", encoder), ("decoder", decoder)] }

    /// Reconstruction of `input` [N, C, H, W].
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try decoder(encoder(input)) }
}

/// Variational autoencoder (Kingma & Welling): encoder 784-400 → (μ, log σ²) of a 20-dimensional
/// Gaussian code, decoder 20-400-784 to Bernoulli logits.
///
/// Loss per example: reconstruction `Σ BCE(logits, x)` + `KL(q(z|x) ‖ N(0, I)) = −½ Σ (1 + log σ² − μ² − σ²)`.
public final class VariationalAutoencoder: Module {
    public let encoder: Sequential, mean: Linear, logVariance: Linear, decoder: Sequential
    public let imageShape: [Int], latentSize: Int
    public var isTraining = true

    public init(imageShape: [Int] = [1, 28, 28], hiddenSize: Int = 400, latentSize: Int = 20) throws {
        self.imageShape = imageShape; self.latentSize = latentSize
        let pixels = imageShape.reduce(1, *)
        encoder = try Sequential { Flatten(); try Linear(inputSize: pixels, outputSize: hiddenSize); ReLU() }
        mean = try Linear(inputSize: hiddenSize, outputSize: latentSize)
        logVariance = try Linear(inputSize: hiddenSize, outputSize: latentSize)
        decoder = try Sequential {
            try Linear(inputSize: latentSize, outputSize: hiddenSize); ReLU()
            try Linear(inputSize: hiddenSize, outputSize: pixels)
            Reshape(imageShape)
        }
    }

    public var children: [(name: String, module: any Module)] {
        [("encoder", encoder), ("mean", mean), ("log_variance", logVariance), ("decoder", decoder)]
    }

    /// The loss terms (means over the batch) and the reconstruction logits.
    /// - Parameter noise: standard normal samples [N, latentSize] for the reparameterisation `z = μ + σ·ε`.
    public func loss(_ input: Tensor, noise: Tensor) throws -> (total: Tensor, reconstruction: Tensor, kl: Tensor, logits: Tensor) {
        let hidden = try encoder(input)
        let mu = try mean(hidden), logVar = try logVariance(hidden)
        let z = try mu + (logVar * 0.5).exp() * noise
        let logits = try decoder(z)
        let batch = Float(input.shape[0])
        let pixels = Float(imageShape.reduce(1, *))
        let reconstruction = try binaryCrossEntropyWithLogits(logits, targets: input) * pixels
        let kl = try ((logVar + 1) - mu.squared() - logVar.exp()).sum() * (-0.5 / batch)
        return (try reconstruction + kl, reconstruction, kl, logits)
    }

    /// Images decoded from codes `z` [N, latentSize] (pixel probabilities).
    public func decode(_ z: Tensor) throws -> Tensor { try decoder(z).sigmoid() }
}
