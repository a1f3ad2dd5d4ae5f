/// Convolutional classifiers for [N, channels, size, size] images.
public enum CNN {
    /// Spatial size after `pools` 2×2 max-poolings of a `size` input (floor mode).
    static func pooled(_ size: Int, _ pools: Int) -> Int { (0..<pools).reduce(size) { s, _ in s / 2 } }

    /// The reference net R2: Conv 1→32 3×3 p1, ReLU, MaxPool 2; Conv 32→64 3×3 p1, ReLU, MaxPool 2;
    /// Flatten; Linear 3136→128 (for 28×28 input), ReLU; Linear 128→classes.
    public static func simple(inputChannels: Int = 1, imageSize: Int = 28, classes: Int = 10) throws -> Sequential {
        let side = pooled(imageSize, 2)
        return try Sequential {
            try Conv2D(inputChannels: inputChannels, outputChannels: 32, kernelSize: 3, padding: 1); ReLU()
            MaxPool2D(kernelSize: 2)
            try Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 3, padding: 1); ReLU()
            MaxPool2D(kernelSize: 2)
            Flatten()
            try Linear(inputSize: 64 * side * side, outputSize: 128); ReLU()
            try Linear(inputSize: 128, outputSize: classes)
        }
    }

    /// A deeper net with batch normalisation and dropout: two blocks of (Conv 3×3, BatchNorm, ReLU) ×2 +
    /// MaxPool + Dropout 0.25, then Linear → 256, BatchNorm, ReLU, Dropout 0.5, Linear → classes.
    public static func deep(inputChannels: Int = 1, imageSize: Int = 28, classes: Int = 10) throws -> Sequential {
        let side = pooled(imageSize, 2)
        var layers: [any Layer] = []
        var channels = inputChannels
        for width in [32, 64] {
            for _ in 0..<2 {
                layers += [try Conv2D(inputChannels: channels, outputChannels: width, kernelSize: 3, padding: 1, bias: false),
                           try BatchNorm(channels: width), ReLU()]
                channels = width
            }
            layers += [MaxPool2D(kernelSize: 2), try Dropout(probability: 0.25)]
        }
        layers += [Flatten(), try Linear(inputSize: 64 * side * side, outputSize: 256, bias: false),
                   try BatchNorm(channels: 256), ReLU(), try Dropout(probability: 0.5),
                   try Linear(inputSize: 256, outputSize: classes)]
        return Sequential(layers)
    }
}
