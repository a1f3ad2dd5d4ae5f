import Foundation

/// The UCI optical-recognition handwritten digits as shipped by scikit-learn (`digits.csv.gz`,
/// BSD-3-Clause, © the scikit-learn developers): 1,797 images of 8×8 pixels with values 0…16, ten classes.
///
/// The file is embedded in the Opal binary (`embeddedResources`, generated at build time from
/// `Sources/Opal/Resources/`), so it is always available: it is the fallback when Fashion-MNIST is not
/// installed. Each CSV row holds 64 pixel values, row-major, then the label.
public enum Digits {
    public static let resourceName = "digits.csv.gz"
    public static let classNames = (0...9).map(String.init)
    /// One example: 1 channel, 8 rows, 8 columns.
    public static let featureShape = [1, 8, 8]
    public static let expectedCount = 1797
    /// The digits set has no official test split; `load(split:)` draws one with this seed.
    public static let splitSeed: UInt64 = 0x0D16_1750
    /// Fraction of the examples that `load(split: .test)` returns.
    public static let testFraction = 0.2

    /// All 1,797 examples, pixels scaled to [0, 1] (÷ 16); `features` is `[1797, 64]`.
    public static func load() throws -> LabeledDataset {
        guard let encoded = embeddedResources[resourceName], let compressed = Data(base64Encoded: encoded) else {
            throw DataError.missingResource(name: resourceName)
        }
        let text = try Gzip.decompress(compressed, path: resourceName)
        return try parse(csv: text, name: "Digits")
    }

    /// A deterministic 80/20 split of `load()`: the digits set has no official test split, so the
    /// examples are shuffled with the fixed seed `splitSeed` and the last 20 % (359 examples) form the
    /// test part, the other 1,438 the training part. Every run and platform gets the same split.
    public static func load(split: DatasetSplit) throws -> LabeledDataset {
        let parts = try load().split(validationFraction: testFraction, seed: splitSeed)
        var part = split == .train ? parts.train : parts.validation
        part.name = "Digits (\(split.rawValue))"
        return part
    }

    /// Parses CSV text of rows `p0,…,p63,label` with pixels in 0…16 and labels in 0…9.
    static func parse(csv bytes: [UInt8], name: String) throws -> LabeledDataset {
        let pixelCount = featureShape.reduce(1, *)
        var features: [Float] = []
        var labels: [Int32] = []
        features.reserveCapacity(expectedCount * pixelCount)
        labels.reserveCapacity(expectedCount)
        var row: [Int] = []
        row.reserveCapacity(pixelCount + 1)
        var lineNumber = 1
        var value = 0, digits = 0, sawFraction = false, fractionNonZero = false

        func finishField() throws {
            guard digits > 0 else {
                throw DataError.malformedCSV(name: name, line: lineNumber, reason: "empty or non-numeric field \(row.count + 1)")
            }
            guard !fractionNonZero else {
                throw DataError.malformedCSV(name: name, line: lineNumber, reason: "field \(row.count + 1) is not an integer")
            }
            row.append(value)
            value = 0; digits = 0; sawFraction = false; fractionNonZero = false
        }
        func finishRow() throws {
            guard row.count == pixelCount + 1 else {
                throw DataError.malformedCSV(name: name, line: lineNumber,
                                             reason: "\(row.count) fields, expected \(pixelCount + 1)")
            }
            for (index, pixel) in row.prefix(pixelCount).enumerated() where pixel > 16 {
                throw DataError.malformedCSV(name: name, line: lineNumber,
                                             reason: "pixel \(index) is \(pixel), outside 0…16")
            }
            guard let label = row.last, label <= 9 else {
                throw DataError.malformedCSV(name: name, line: lineNumber, reason: "label \(row.last ?? -1) is outside 0…9")
            }
            features.append(contentsOf: row.prefix(pixelCount).map { Float($0) / 16 })
            labels.append(Int32(label))
            row.removeAll(keepingCapacity: true)
        }

        for byte in bytes {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if sawFraction {
                    if byte != UInt8(ascii: "0") { fractionNonZero = true }
                } else {
                    value = value * 10 + Int(byte - UInt8(ascii: "0"))
                    digits += 1
                    guard digits <= 6 else {
                        throw DataError.malformedCSV(name: name, line: lineNumber, reason: "number too long")
                    }
                }
            case UInt8(ascii: "."):
                sawFraction = true
            case UInt8(ascii: ","):
                try finishField()
            case UInt8(ascii: "\n"):
                if digits > 0 || !row.isEmpty {
                    try finishField()
                    try finishRow()
                }
                lineNumber += 1
            case UInt8(ascii: "\r"), UInt8(ascii: " "):
                continue
            default:
                throw DataError.malformedCSV(name: name, line: lineNumber,
                                             reason: "unexpected character 0x\(String(byte, radix: 16))")
            }
        }
        if digits > 0 || !row.isEmpty {
            try finishField()
            try finishRow()
        }
        return try LabeledDataset(name: name, features: features, labels: labels, featureShape: featureShape,
                                  classNames: classNames).validated()
    }
}
