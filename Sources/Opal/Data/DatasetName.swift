/// The datasets Opal can load by name (CLI `--dataset`).
public enum DatasetName: String, CaseIterable, Sendable {
    case fashionMNIST = "fashion-mnist"
    case digits

    /// The notice shown when the default falls back to the digits set.
    public static let fallbackNotice =
        "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); using the built-in 8×8 digits set"

    /// The default dataset: Fashion-MNIST when it is installed, else the embedded digits set together
    /// with a notice for the user.
    /// - Parameter fashionMNISTDirectory: where to look (nil: `$OPAL_FASHION_MNIST_DIR` or the default).
    public static func resolveDefault(fashionMNISTDirectory: String? = nil) -> (name: DatasetName, notice: String?) {
        FashionMNIST.isInstalled(directory: fashionMNISTDirectory) ? (.fashionMNIST, nil) : (.digits, fallbackNotice)
    }

    /// Loads one split of this dataset. For `.digits`, `.test` is the deterministic 20 % split
    /// described at `Digits.load(split:)`.
    public func load(split: DatasetSplit, fashionMNISTDirectory: String? = nil) throws -> LabeledDataset {
        switch self {
        case .fashionMNIST: return try FashionMNIST.load(split: split, directory: fashionMNISTDirectory)
        case .digits: return try Digits.load(split: split)
        }
    }
}
