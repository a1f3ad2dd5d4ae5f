import Foundation
import XCTest
@testable import Opal

final class DataTests: XCTestCase {
    private var seed: UInt64 = 0
    private var generator = SeededGenerator(seed: 0)
    private var temporaryDirectory: URL!

    override func setUpWithError() throws {
        seed = UInt64.random(in: 0...UInt64.max)
        generator = SeededGenerator(seed: seed)
        temporaryDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("opal-data-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temporaryDirectory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: temporaryDirectory)
    }

    // MARK: Fashion-MNIST (the real files)

    func testFashionMNISTLoadsBothSplits() throws {
        try XCTSkipUnless(FashionMNIST.isInstalled(),
                          "Fashion-MNIST is not installed at \(FashionMNIST.resolvedDirectory())")
        for (split, expectedCount, firstLabels) in [(DatasetSplit.train, 60_000, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]),
                                                    (.test, 10_000, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])] {
            let dataset = try FashionMNIST.load(split: split)
            XCTAssertEqual(dataset.count, expectedCount)
            XCTAssertEqual(dataset.featureShape, [1, 28, 28])
            XCTAssertEqual(dataset.featureCount, 784)
            XCTAssertEqual(dataset.features.count, expectedCount * 784)
            XCTAssertEqual(dataset.classCount, 10)
            XCTAssertEqual(dataset.classNames[0], "T-shirt/top")
            XCTAssertEqual(dataset.classNames[9], "Ankle boot")
            XCTAssertEqual(dataset.labels.prefix(10).map(Int.init), firstLabels)
            // Fashion-MNIST is balanced: 6,000 (train) or 1,000 (test) examples per class.
            var perClass = [Int](repeating: 0, count: 10)
            for label in dataset.labels {
                XCTAssert((0..<10).contains(label), "label \(label) out of range")
                perClass[Int(label)] += 1
            }
            XCTAssertEqual(perClass, [Int](repeating: expectedCount / 10, count: 10))
            let (low, high) = dataset.features.reduce((Float.infinity, -Float.infinity)) { (min($0.0, $1), max($0.1, $1)) }
            XCTAssertEqual(low, 0)
            XCTAssertEqual(high, 1)
            // The first image's bytes sum to 76,247 (train) / 33,456 (test), from Python's gzip module.
            let firstSum = dataset.features.prefix(784).reduce(0, +) * 255
            XCTAssertEqual(firstSum, split == .train ? 76_247 : 33_456, accuracy: 0.5)
        }
    }

    func testMissingFashionMNISTNamesPathAndInstallCommand() {
        let missing = temporaryDirectory.appendingPathComponent("nowhere").path
        XCTAssertFalse(FashionMNIST.isInstalled(directory: missing))
        XCTAssertThrowsError(try FashionMNIST.load(split: .train, directory: missing)) { error in
            let text = String(describing: error)
            XCTAssert(text.hasPrefix("Fashion-MNIST not found at \(missing)/"), text)
            XCTAssert(text.contains("sudo apt-get install dataset-fashion-mnist"), text)
            XCTAssert(text.contains("OPAL_FASHION_MNIST_DIR"), text)
        }
        let resolved = DatasetName.resolveDefault(fashionMNISTDirectory: missing)
        XCTAssertEqual(resolved.name, .digits)
        XCTAssertEqual(resolved.notice,
                       "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); using the built-in 8×8 digits set")
    }

    /// A miniature Fashion-MNIST in a temporary directory: images gzip-compressed, labels plain.
    func testFashionMNISTLoaderReadsSmallFilesGzipAndPlain() throws {
        let count = 1 + generator.nextIndex(below: 40)
        let pixels = (0..<count * 784).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let labels = (0..<count).map { _ in UInt8(generator.nextIndex(below: 10)) }
        for stem in ["train", "t10k"] {
            try Data(gzipStored(idx(type: 0x08, dimensions: [count, 28, 28], payload: pixels)))
                .write(to: temporaryDirectory.appendingPathComponent("\(stem)-images-idx3-ubyte.gz"))
            try Data(idx(type: 0x08, dimensions: [count], payload: labels))
                .write(to: temporaryDirectory.appendingPathComponent("\(stem)-labels-idx1-ubyte"))
        }
        XCTAssert(FashionMNIST.isInstalled(directory: temporaryDirectory.path))
        XCTAssertEqual(DatasetName.resolveDefault(fashionMNISTDirectory: temporaryDirectory.path).name, .fashionMNIST)
        let dataset = try FashionMNIST.load(split: .test, directory: temporaryDirectory.path)
        XCTAssertEqual(dataset.count, count, "seed \(seed)")
        XCTAssertEqual(dataset.labels, labels.map(Int32.init), "seed \(seed)")
        for i in [0, pixels.count / 2, pixels.count - 1] {
            XCTAssertEqual(dataset.features[i], Float(pixels[i]) / 255, accuracy: 1e-7, "seed \(seed)")
        }
    }

    // MARK: IDX

    func testIDXDecodesEveryElementTypeBigEndian() throws {
        let dimensions = [1 + generator.nextIndex(below: 6), 7]
        let count = dimensions.reduce(1, *)
        let integers = (0..<count).map { _ in Int32(truncatingIfNeeded: generator.next()) }
        let cases: [(UInt8, (Int32) -> [UInt8], (Int32) -> Float)] = [
            (0x08, { [UInt8(truncatingIfNeeded: $0)] }, { Float(UInt8(truncatingIfNeeded: $0)) }),
            (0x09, { [UInt8(truncatingIfNeeded: $0)] }, { Float(Int8(truncatingIfNeeded: $0)) }),
            (0x0B, { bigEndian(UInt16(truncatingIfNeeded: $0)) }, { Float(Int16(truncatingIfNeeded: $0)) }),
            (0x0C, { bigEndian(UInt32(bitPattern: $0)) }, { Float($0) }),
            (0x0D, { bigEndian(Float($0).bitPattern) }, { Float($0) }),
            (0x0E, { bigEndian(Double($0).bitPattern) }, { Float(Double($0)) }),
        ]
        for (code, encode, expected) in cases {
            let url = temporaryDirectory.appendingPathComponent("values-\(code).idx")
            try Data(idx(type: code, dimensions: dimensions, payload: integers.flatMap(encode))).write(to: url)
            let array = try IDXFile.read(contentsOf: url)
            XCTAssertEqual(array.elementType.rawValue, code)
            XCTAssertEqual(array.dimensions, dimensions)
            XCTAssertEqual(array.floatValues(), integers.map(expected), "type 0x\(String(code, radix: 16)), seed \(seed)")
            if code <= 0x0C {
                XCTAssertEqual(array.integerValues()?.map(Float.init), integers.map(expected))
            } else {
                XCTAssertNil(array.integerValues())
            }
        }
    }

    func testTruncatedIDXNamesFileAndSizes() throws {
        let url = temporaryDirectory.appendingPathComponent("short-images-idx3-ubyte")
        // Header says 10 × 4 bytes but only 30 follow.
        try Data(idx(type: 0x08, dimensions: [10, 4], payload: [UInt8](repeating: 1, count: 30))).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url),
                     DataError.truncated(path: url.path, expectedBytes: 52, actualBytes: 42),
                     mentioning: [url.path, "truncated", "52", "42"])
        // A header cut short.
        try Data([0, 0, 0x08, 3, 0, 0]).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url),
                     DataError.truncated(path: url.path, expectedBytes: 16, actualBytes: 6), mentioning: [url.path])
    }

    func testLyingDimensionsAreRejected() throws {
        let url = temporaryDirectory.appendingPathComponent("lying.idx")
        // Dimensions that claim more data than the file holds.
        try Data(idx(type: 0x08, dimensions: [60_000, 28, 28], payload: [UInt8](repeating: 0, count: 784)))
            .write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url),
                     DataError.truncated(path: url.path, expectedBytes: 16 + 60_000 * 784, actualBytes: 16 + 784),
                     mentioning: [url.path, "truncated"])
        // Dimensions whose product overflows Int.
        let huge = [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF]
        try Data(idx(type: 0x0D, dimensions: huge, payload: [])).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url), DataError.dimensionOverflow(path: url.path, dimensions: huge),
                     mentioning: [url.path, "overflow"])
        // Fewer dimensions than the data: extra bytes after the declared payload.
        try Data(idx(type: 0x08, dimensions: [3], payload: [1, 2, 3, 4, 5])).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url),
                     DataError.trailingBytes(path: url.path, expectedBytes: 11, actualBytes: 13),
                     mentioning: [url.path, "2 unexpected bytes"])
    }

    func testBadMagicAndUnsupportedTypeAreRejected() throws {
        let url = temporaryDirectory.appendingPathComponent("not-idx")
        try Data("hello, world".utf8).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url),
                     DataError.badMagic(path: url.path, found: Array("hell".utf8)), mentioning: [url.path, "68 65 6C 6C"])
        try Data([0, 0, 0x0A, 1, 0, 0, 0, 0]).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url), DataError.unsupportedElementType(path: url.path, code: 0x0A),
                     mentioning: [url.path, "0xA"])
        try Data().write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url), DataError.badMagic(path: url.path, found: []),
                     mentioning: [url.path, "<empty>"])
        let missing = temporaryDirectory.appendingPathComponent("missing.idx")
        assertThrows(try IDXFile.read(contentsOf: missing),
                     DataError.unreadableFile(path: missing.path, reason: "no such file"), mentioning: [missing.path])
    }

    // MARK: gzip

    func testGzipRoundTripOfStoredBlocksAndMultipleMembers() throws {
        let length = generator.nextIndex(below: 200_000)  // spans several 65,535-byte stored blocks
        let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        XCTAssertEqual(try Gzip.decompress(gzipStored(bytes)), bytes, "seed \(seed)")
        // Concatenated members decompress to the concatenation, as with gunzip.
        let tail: [UInt8] = Array("tail".utf8)
        XCTAssertEqual(try Gzip.decompress(gzipStored(bytes) + gzipStored(tail)), bytes + tail, "seed \(seed)")
    }

    func testCorruptGzipThrowsClearErrors() throws {
        let bytes = (0..<(1 + generator.nextIndex(below: 5000))).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let good = gzipStored(idx(type: 0x08, dimensions: [bytes.count], payload: bytes))
        let url = temporaryDirectory.appendingPathComponent("corrupt-labels-idx1-ubyte.gz")

        var flipped = good
        flipped[good.count / 2] ^= 0x55  // payload damage: the CRC-32 no longer matches
        try Data(flipped).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url), mentioning: [url.path, "corrupt compressed data", "incorrect data check"])

        try Data(good.prefix(good.count - 5)).write(to: url)  // cut inside the trailer
        assertThrows(try IDXFile.read(contentsOf: url), mentioning: [url.path, "corrupt compressed data", "truncated"])

        var badHeader = good
        badHeader[2] = 7  // compression method other than deflate
        try Data(badHeader).write(to: url)
        assertThrows(try IDXFile.read(contentsOf: url), mentioning: [url.path, "corrupt compressed data"])

        XCTAssertThrowsError(try Gzip.decompress(Data()))
        XCTAssertEqual(try IDXFile.parse(Gzip.decompress(good), path: "x").integerValues(), bytes.map(Int32.init))
    }

    func testGzipOutputCapIsEnforced() throws {
        let compressed = try XCTUnwrap(Data(base64Encoded: XCTUnwrap(embeddedResources[Digits.resourceName])))
        XCTAssertThrowsError(try Gzip.decompress(compressed, maximumOutputSize: 10_000)) { error in
            XCTAssertEqual(error as? DataError, .decompressedSizeLimitExceeded(path: nil, limit: 10_000))
        }
        // Real deflate-compressed data (not only stored blocks) inflates under a sufficient cap.
        XCTAssertGreaterThan(try Gzip.decompress(compressed, maximumOutputSize: 1 << 20).count, 100_000)
    }

    // MARK: Digits

    func testDigitsLoadsFromEmbeddedResource() throws {
        let digits = try Digits.load()
        XCTAssertEqual(digits.count, 1797)
        XCTAssertEqual(digits.featureShape, [1, 8, 8])
        XCTAssertEqual(digits.features.count, 1797 * 64)
        XCTAssertEqual(digits.classNames, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])
        XCTAssertEqual(Set(digits.labels), Set(0...9))
        XCTAssert(digits.features.allSatisfy { (0...1).contains($0) })
        XCTAssertEqual(digits.features.max(), 1)
        // First row of sklearn's file: 0,0,5,13,9,1,0,0, … label 0.
        XCTAssertEqual(Array(digits.features.prefix(8)), [0, 0, 5, 13, 9, 1, 0, 0].map { Float($0) / 16 })
        XCTAssertEqual(digits.labels.first, 0)
    }

    func testDigitsSplitIsDeterministicAndDisjoint() throws {
        let train = try Digits.load(split: .train), test = try Digits.load(split: .test)
        XCTAssertEqual(train.count, 1438)
        XCTAssertEqual(test.count, 359)
        XCTAssertEqual(try Digits.load(split: .test).labels, test.labels)
        XCTAssertEqual(try Digits.load(split: .test).features, test.features)
        XCTAssertEqual(try DatasetName.digits.load(split: .train).labels, train.labels)
        // Together the parts hold every image once (rows compared as multisets).
        let all = try Digits.load()
        func rows(_ d: LabeledDataset) -> [[Float]] {
            (0..<d.count).map { Array(d.features[$0 * 64..<($0 + 1) * 64]) + [Float(d.labels[$0])] }
        }
        let key = { (row: [Float]) in row.map { String(Int($0 * 16)) }.joined(separator: ",") }
        XCTAssertEqual((rows(train) + rows(test)).map(key).sorted(), rows(all).map(key).sorted())
    }

    func testMalformedDigitsCSVIsRejected() {
        let row = (0..<64).map { _ in "3" }.joined(separator: ",")
        XCTAssertEqual(try Digits.parse(csv: Array("\(row),7\n\(row),2.0\n".utf8), name: "t").labels, [7, 2])
        assertThrows(try Digits.parse(csv: Array("\(row)\n".utf8), name: "t"),
                     DataError.malformedCSV(name: "t", line: 1, reason: "64 fields, expected 65"))
        assertThrows(try Digits.parse(csv: Array("\(row),1\n\(row),12\n".utf8), name: "t"),
                     DataError.malformedCSV(name: "t", line: 2, reason: "label 12 is outside 0…9"))
        assertThrows(try Digits.parse(csv: Array("17,\(row)\n".utf8), name: "t"),
                     DataError.malformedCSV(name: "t", line: 1, reason: "pixel 0 is 17, outside 0…16"))
        assertThrows(try Digits.parse(csv: Array("\(row),x\n".utf8), name: "t"), mentioning: ["line 1", "unexpected character"])
    }

    // MARK: LabeledDataset

    /// A dataset whose example i has features [i, −i, i + 0.5] and label i mod 7.
    private func indexDataset(count: Int) -> LabeledDataset {
        LabeledDataset(name: "index", features: (0..<count).flatMap { [Float($0), -Float($0), Float($0) + 0.5] },
                       labels: (0..<count).map { Int32($0 % 7) }, featureShape: [3],
                       classNames: (0..<7).map(String.init))
    }

    func testSplitIsSeededDeterministicAndDisjoint() throws {
        let count = 1 + generator.nextIndex(below: 1000)
        let dataset = indexDataset(count: count)
        let splitSeed = generator.next()
        let (train, validation) = dataset.split(validationFraction: 0.25, seed: splitSeed)
        XCTAssertEqual(validation.count, Int((Double(count) * 0.25).rounded()), "seed \(seed)")
        let trainIndices = stride(from: 0, to: train.features.count, by: 3).map { Int(train.features[$0]) }
        let validationIndices = stride(from: 0, to: validation.features.count, by: 3).map { Int(validation.features[$0]) }
        XCTAssertEqual((trainIndices + validationIndices).sorted(), Array(0..<count), "seed \(seed)")
        XCTAssertEqual(train.labels, trainIndices.map { Int32($0 % 7) })
        let again = dataset.split(validationFraction: 0.25, seed: splitSeed)
        XCTAssertEqual(again.train.features, train.features)
        XCTAssertEqual(again.validation.labels, validation.labels)
        if count > 20 {
            let other = dataset.split(validationFraction: 0.25, seed: splitSeed &+ 1)
            XCTAssertNotEqual(other.validation.features, validation.features, "seed \(seed)")
        }
        XCTAssertEqual(dataset.split(validationFraction: 2, seed: 1).validation.count, count)
        XCTAssertEqual(dataset.split(validationFraction: -1, seed: 1).train.count, count)
    }

    func testBatchIndicesCoverEveryIndexOncePerEpoch() {
        let count = 1 + generator.nextIndex(below: 1000)
        let batchSize = 1 + generator.nextIndex(below: 70)
        let dataset = indexDataset(count: count)
        let batchSeed = generator.next()
        var orders: [[Int]] = []
        for epoch in 0..<3 {
            let batches = dataset.batchIndices(batchSize: batchSize, shuffle: true, seed: batchSeed, epoch: epoch)
            XCTAssertEqual(batches.count, (count + batchSize - 1) / batchSize, "seed \(seed)")
            XCTAssert(batches.dropLast().allSatisfy { $0.count == batchSize }, "seed \(seed)")
            XCTAssertEqual(batches.last?.count, count % batchSize == 0 ? batchSize : count % batchSize)
            XCTAssertEqual(batches.joined().sorted(), Array(0..<count), "seed \(seed)")
            XCTAssertEqual(dataset.batchIndices(batchSize: batchSize, shuffle: true, seed: batchSeed, epoch: epoch), batches)
            orders.append(Array(batches.joined()))
        }
        if count > 20 {
            XCTAssertNotEqual(orders[0], orders[1], "seed \(seed)")
            XCTAssertNotEqual(orders[1], orders[2], "seed \(seed)")
        }
        XCTAssertEqual(Array(dataset.batchIndices(batchSize: batchSize, shuffle: false, seed: 0, epoch: 0).joined()),
                       Array(0..<count))
        XCTAssertEqual(dataset.batchIndices(batchSize: 0, shuffle: false, seed: 0, epoch: 0).count, count)
        XCTAssertEqual(indexDataset(count: 0).batchIndices(batchSize: 4, shuffle: true, seed: 0, epoch: 0), [])
    }

    func testGatherAndSubsetCopyRows() {
        let count = 1 + generator.nextIndex(below: 500)
        let dataset = indexDataset(count: count)
        let indices = (0..<(1 + generator.nextIndex(below: 100))).map { _ in generator.nextIndex(below: count) }
        let (features, labels) = dataset.gather(indices)
        XCTAssertEqual(features, indices.flatMap { [Float($0), -Float($0), Float($0) + 0.5] }, "seed \(seed)")
        XCTAssertEqual(labels, indices.map { Int32($0 % 7) })
        let subset = dataset.subset(indices)
        XCTAssertEqual(subset.features, features)
        XCTAssertEqual(subset.featureShape, [3])
        XCTAssertEqual(subset.classCount, 7)
        XCTAssertEqual(dataset.gather([]).features, [])
    }

    func testValidatedRejectsInconsistentDatasets() {
        var dataset = indexDataset(count: 5)
        dataset.labels[3] = 7
        assertThrows(try dataset.validated(), mentioning: ["label 7 of example 3 is outside 0..<7"])
        dataset = indexDataset(count: 5)
        dataset.features.removeLast()
        assertThrows(try dataset.validated(), mentioning: ["14 feature values for 5 labels"])
    }

    // MARK: SeededGenerator

    func testSeededGeneratorMatchesSplitMix64Reference() {
        // Reference values of SplitMix64 from seed 0 (Vigna's splitmix64.c).
        var reference = SeededGenerator(seed: 0)
        XCTAssertEqual(reference.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(reference.next(), 0x6E78_9E6A_A1B9_65F4)
        // nextIndex stays in range and hits every value of a small range.
        var seen = Set<Int>()
        for _ in 0..<2000 {
            let value = generator.nextIndex(below: 13)
            XCTAssert((0..<13).contains(value))
            seen.insert(value)
        }
        XCTAssertEqual(seen.count, 13, "seed \(seed)")
        let unit = (0..<1000).map { _ in generator.nextUnitDouble() }
        XCTAssert(unit.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(unit.reduce(0, +) / 1000, 0.5, accuracy: 0.06, "seed \(seed)")
        var a = SeededGenerator(seed: seed, stream: 1), b = SeededGenerator(seed: seed, stream: 2)
        XCTAssertNotEqual(a.next(), b.next())
    }

    // MARK: Helpers

    private func assertThrows<T>(_ expression: @autoclosure () throws -> T, _ expected: DataError? = nil,
                                 mentioning fragments: [String] = [], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            guard let dataError = error as? DataError else {
                return XCTFail("expected a DataError, got \(error)", file: file, line: line)
            }
            if let expected { XCTAssertEqual(dataError, expected, file: file, line: line) }
            let text = dataError.description
            for fragment in fragments {
                XCTAssert(text.contains(fragment), "“\(text)” does not mention “\(fragment)”", file: file, line: line)
            }
        }
    }
}

// MARK: Building test files

private func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
}

/// An IDX file: 00 00 type rank, big-endian UInt32 dimensions, payload.
private func idx(type: UInt8, dimensions: [Int], payload: [UInt8]) -> [UInt8] {
    [0, 0, type, UInt8(dimensions.count)] + dimensions.flatMap { bigEndian(UInt32($0)) } + payload
}

/// A gzip member holding `bytes` in stored (uncompressed) deflate blocks, with its CRC-32 and length,
/// written by hand so the tests need no compressor.
private func gzipStored(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]
    var offset = 0
    repeat {
        let length = min(65_535, bytes.count - offset)
        let isFinal = offset + length == bytes.count
        out.append(isFinal ? 1 : 0)
        out += littleEndian(UInt16(length)) + littleEndian(~UInt16(length))
        out += bytes[offset..<offset + length]
        offset += length
    } while offset < bytes.count
    return out + littleEndian(crc32(bytes)) + littleEndian(UInt32(truncatingIfNeeded: bytes.count))
}

private func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

private func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}
