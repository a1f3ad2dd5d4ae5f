/// DCGAN-small (R5) for 28×28 single-channel images in [−1, 1].
///
/// Generator: Linear noise→128·7·7, BatchNorm, ReLU, reshape; ConvTranspose 128→64 4×4 s2 p1 (14×14),
/// BatchNorm, ReLU; ConvTranspose 64→1 4×4 s2 p1 (28×28), Tanh.
/// Discriminator: Conv 1→64 4×4 s2 p1, LeakyReLU 0.2; Conv 64→128 4×4 s2 p1, BatchNorm, LeakyReLU 0.2;
/// Flatten; Linear 6272→1 (a logit).
public final class DCGAN: Module {
    public let generator: Sequential, discriminator: Sequential
    public let noiseSize: Int
    public var isTraining = true

    public init(noiseSize: Int = 100, imageChannels: Int = 1) throws {
        self.noiseSize = noiseSize
        generator = try Sequential {
            try Linear(inputSize: noiseSize, outputSize: 128 * 7 * 7, bias: false)
            try BatchNorm(channels: 128 * 7 * 7); ReLU()
            Reshape([128, 7, 7])
            try ConvTranspose2D(inputChannels: 128, outputChannels: 64, kernelSize: 4, stride: 2, padding: 1, bias: false)
            try BatchNorm(channels: 64); ReLU()
            try ConvTranspose2D(inputChannels: 64, outputChannels: imageChannels, kernelSize: 4, stride: 2, padding: 1)
            Tanh()
        }
        discriminator = try Sequential {
            try Conv2D(inputChannels: imageChannels, outputChannels: 64, kernelSize: 4, stride: 2, padding: 1)
            LeakyReLU(slope: 0.2)
            try Conv2D(inputChannels: 64, outputChannels: 128, kernelSize: 4, stride: 2, padding: 1, bias: false)
            try BatchNorm(channels: 128); LeakyReLU(slope: 0.2)
            Flatten()
            try Linear(inputSize: 128 * 7 * 7, outputSize: 1)
        }
    }

    public var children: [(name: String, module: any Module)] { [("generator", generator), ("discriminator", discriminator)] }
}
