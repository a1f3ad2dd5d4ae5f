import Foundation

/// Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence): 28×28 grey images of clothing in 10 classes,
/// 60,000 for training and 10,000 for testing, read from the IDX files of the Debian package
/// `dataset-fashion-mnist`.
public enum FashionMNIST {
    /// Where the Debian package installs the files.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    /// Environment variable that overrides `defaultDirectory`.
    public static let directoryEnvironmentVariable = "OPAL_FASHION_MNIST_DIR"
    public static let installHint = "install it with `sudo apt-get install dataset-fashion-mnist` or set OPAL_FASHION_MNIST_DIR"

    public static let classNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]
    /// One example: 1 channel, 28 rows, 28 columns.
    public static let featureShape = [1, 28, 28]

    /// The directory to read: `directory` if given, else `$OPAL_FASHION_MNIST_DIR`, else `defaultDirectory`.
    public static func resolvedDirectory(_ directory: String? = nil) -> String {
        if let directory { return directory }
        if let fromEnvironment = ProcessInfo.processInfo.environment[directoryEnvironmentVariable],
           !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return defaultDirectory
    }

    /// True when all four IDX files (plain or `.gz`) are present.
    public static func isInstalled(directory: String? = nil) -> Bool {
        let root = resolvedDirectory(directory)
        return DatasetSplit.allCases.allSatisfy { split in
            let (images, labels) = fileStems(split)
            return locate(images, in: root) != nil && locate(labels, in: root) != nil
        }
    }

    /// Loads one split. Pixels are scaled to [0, 1] (÷ 255); `features` is `[count, 1·28·28]`.
    /// - Throws: `DataError.datasetNotFound` with install instructions when a file is missing, or the
    ///   `DataError` of a damaged file.
    public static func load(split: DatasetSplit, directory: String? = nil) throws -> LabeledDataset {
        let root = resolvedDirectory(directory)
        let (imageStem, labelStem) = fileStems(split)
        guard let imageURL = locate(imageStem, in: root), let labelURL = locate(labelStem, in: root) else {
            let missing = locate(imageStem, in: root) == nil ? imageStem : labelStem
            throw DataError.datasetNotFound(
                name: "Fashion-MNIST", path: (root as NSString).appendingPathComponent(missing + "[.gz]"),
                hint: installHint)
        }
        let images = try IDXFile.read(contentsOf: imageURL)
        let labels = try IDXFile.read(contentsOf: labelURL)
        let name = "Fashion-MNIST (\(split.rawValue))"
        guard images.elementType == .uint8, images.dimensions.count == 3,
              images.dimensions[1] == 28, images.dimensions[2] == 28 else {
            throw DataError.inconsistentDataset(
                name: name, reason: "\(imageURL.path) holds \(images.elementType) \(images.dimensions), "
                    + "expected uint8 [count, 28, 28]")
        }
        guard labels.elementType == .uint8, labels.dimensions.count == 1,
              labels.dimensions[0] == images.dimensions[0], let labelValues = labels.integerValues() else {
            throw DataError.inconsistentDataset(
                name: name, reason: "\(labelURL.path) holds \(labels.elementType) \(labels.dimensions), "
                    + "expected uint8 [\(images.dimensions[0])] to match the images")
        }
        return try LabeledDataset(name: name, features: images.floatValues(scale: 1 / 255),
                                  labels: labelValues, featureShape: featureShape,
                                  classNames: classNames).validated()
    }

    private static func fileStems(_ split: DatasetSplit) -> (images: String, labels: String) {
        switch split {
        case .train: return ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
        case .test: return ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
        }
    }

    /// `stem.gz` if present, else `stem`, else the dotted form `stem` with `-idx` written `.idx`.
    private static func locate(_ stem: String, in directory: String) -> URL? {
        let candidates = [stem + ".gz", stem, stem.replacingOccurrences(of: "-idx", with: ".idx") + ".gz",
                          stem.replacingOccurrences(of: "-idx", with: ".idx")]
        for candidate in candidates {
            let path = (directory as NSString).appendingPathComponent(candidate)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                return URL(fileURLWithPath: path)
            }
        }
        return nil
    }
}
