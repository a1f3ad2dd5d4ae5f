import Foundation
import XCTest
@testable import Opal

/// Property-based fuzzing of the file parsers that read untrusted bytes: safetensors (`SafeTensors.decode`),
/// IDX (`IDXFile.parse`) and gzip/zlib (`Gzip.decompress`).
///
/// Each test mutates valid seed files thousands of times (bit flips, byte overwrites, truncations,
/// insertions, deletions, lying length fields, huge or negative dimensions, duplicate keys, random JSON)
/// and checks that every input either parses to something self-consistent or throws the parser's typed
/// error (`CheckpointError` / `DataError`): never a trap, never another error type, never a result larger
/// than the input allows (so no length is trusted before it is checked against the data).
///
/// Half of the inputs come from a fixed seed (the same inputs every run); the other half from a fresh
/// seed, printed in every failure message. Set `OPAL_PARSER_FUZZ_SEED` to replay a run.
/// `testCorpus` runs the parsers over `Corpus/{safetensors,idx,gzip}`: the valid seeds and every input
/// found by libFuzzer or these tests that once crashed or was interesting (`valid-*` files must parse,
/// `reject-*` files must be rejected with the typed error, `fuzz-*` files, kept from libFuzzer's corpus
/// for their coverage, may do either).
final class ParserFuzzTests: XCTestCase {
    /// Inputs per parser and seed (two seeds per test).
    static let iterations = 2_500
    static let fixedSeed: UInt64 = 0x0FA1_F022
    /// The most a parse may allocate for its result, relative to the input: safetensors and IDX copy
    /// the payload once; gzip output is capped by `gzipCap`.
    static let gzipCap = 1 << 16

    /// How much the process's peak resident memory may grow during one mutation test. Inputs are at
    /// most a few KiB, so a parser that trusted a length field (e.g. 2^32 elements) before checking it
    /// against the data would blow far past this.
    static let memoryBound = 256 << 20

    private var freshSeed: UInt64 = 0

    override func setUp() {
        if let text = ProcessInfo.processInfo.environment["OPAL_PARSER_FUZZ_SEED"], let value = UInt64(text) {
            freshSeed = value
        } else {
            freshSeed = UInt64.random(in: 0...UInt64.max)
        }
    }

    private var seeds: [UInt64] { [Self.fixedSeed, freshSeed] }

    // MARK: - safetensors

    func testSafeTensorsMutations() throws {
        let start = Date()
        let peakBefore = peakResidentBytes()
        var counts = Counts()
        for seed in seeds {
            var generator = SeededGenerator(seed: seed)
            let valid = try (0..<6).map { _ in try SafeTensors.encode(randomContents(&generator)) }
                + corpusFiles("safetensors").filter { $0.name.hasPrefix("valid-") }.map { Data($0.bytes) }
            for iteration in 0..<Self.iterations {
                let base = [UInt8](valid[Int.random(in: 0..<valid.count, using: &generator)])
                let input: [UInt8]
                switch iteration % 4 {
                case 0: input = mutateBytes(base, &generator)
                case 1: input = mutateHeaderLength(base, &generator)
                default: input = mutateHeaderJSON(base, &generator)
                }
                checkSafeTensors(input, context: "seed \(seed), iteration \(iteration)", counts: &counts)
            }
        }
        print("ParserFuzzTests safetensors: \(counts) (fresh seed \(freshSeed))")
        XCTAssertGreaterThan(counts.accepted, 0, "no mutated input parsed: the mutations are too destructive")
        XCTAssertGreaterThan(counts.rejected, counts.total / 4, "too few inputs rejected: the mutations are too weak")
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "fresh seed \(freshSeed)")
        XCTAssertLessThan(peakResidentBytes() - peakBefore, Self.memoryBound, "fresh seed \(freshSeed)")
    }

    /// Random JSON headers (arbitrary values, nesting, keys) in an otherwise well-formed file.
    func testSafeTensorsRandomJSONHeaders() {
        var counts = Counts()
        for seed in seeds {
            var generator = SeededGenerator(seed: seed)
            for iteration in 0..<Self.iterations / 2 {
                var json = Array(randomJSON(depth: 0, &generator).utf8)
                if Bool.random(using: &generator) {
                    // Make it look like a header: an object with tensor-like entries.
                    json = Array("{\"t\":{\"dtype\":\"F32\",\"shape\":\(randomJSON(depth: 2, &generator)),\"data_offsets\":\(randomJSON(depth: 2, &generator))}}".utf8)
                }
                let buffer = [UInt8](repeating: 0x3F, count: Int.random(in: 0...64, using: &generator))
                checkSafeTensors(safeTensorsFile(header: json, buffer: buffer),
                                 context: "seed \(seed), random JSON \(iteration)", counts: &counts)
            }
        }
        print("ParserFuzzTests random JSON headers: \(counts) (fresh seed \(freshSeed))")
        XCTAssertGreaterThan(counts.rejected, 0)
    }

    /// Checks one input: a typed error, or contents whose every tensor holds exactly `shape.count`
    /// values taken from the file (so never more bytes than the file has), and that re-encode to the
    /// same contents.
    private func checkSafeTensors(_ input: [UInt8], context: String, counts: inout Counts) {
        do {
            let contents = try SafeTensors.decode(Data(input), path: "fuzz")
            counts.accepted += 1
            var payloadBytes = 0
            for (name, tensor) in contents.tensors {
                let stored: Int
                switch tensor.values {
                case let .float32(values): stored = values.count
                case let .int32(values): stored = values.count
                }
                XCTAssertEqual(stored, tensor.shape.count, "\(name): \(context)")
                XCTAssertTrue(tensor.shape.dimensions.allSatisfy { $0 >= 0 }, "\(name): \(context)")
                payloadBytes += stored * tensor.dtype.byteSize
            }
            XCTAssertLessThanOrEqual(payloadBytes, input.count, context)
            XCTAssertNil(contents.tensors[SafeTensors.metadataKey], context)
            let again = try SafeTensors.decode(SafeTensors.encode(contents), path: "fuzz round trip")
            XCTAssertEqual(Set(again.tensors.keys), Set(contents.tensors.keys), context)
            XCTAssertEqual(again.metadata, contents.metadata, context)
            for (name, tensor) in contents.tensors {
                XCTAssertEqual(again.tensors[name]?.shape, tensor.shape, "\(name): \(context)")
            }
        } catch is CheckpointError {
            counts.rejected += 1
        } catch {
            XCTFail("untyped error \(type(of: error)) \(error): \(context)")
        }
    }

    // MARK: - IDX

    func testIDXMutations() {
        let start = Date()
        let peakBefore = peakResidentBytes()
        var counts = Counts()
        for seed in seeds {
            var generator = SeededGenerator(seed: seed)
            let valid = (0..<8).map { _ in randomIDX(&generator) }
                + corpusFiles("idx").filter { $0.name.hasPrefix("valid-") }.map(\.bytes)
            for iteration in 0..<Self.iterations {
                var input = valid[Int.random(in: 0..<valid.count, using: &generator)]
                if iteration % 2 == 0 {
                    input = mutateBytes(input, &generator)
                } else if input.count >= 4 {
                    // Lie in the header: type code, rank, or one dimension (huge, zero, off by one).
                    switch Int.random(in: 0..<3, using: &generator) {
                    case 0: input[2] = UInt8.random(in: 0...255, using: &generator)
                    case 1: input[3] = [0, 1, 4, 255, UInt8.random(in: 0...255, using: &generator)].randomElement(using: &generator)!
                    default:
                        let rank = Int(input[3])
                        guard rank > 0, input.count >= 4 + 4 * rank else { break }
                        let axis = Int.random(in: 0..<rank, using: &generator)
                        let old = input[(4 + 4 * axis)..<(8 + 4 * axis)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                        let value: UInt32 = [0, 1, .max, .max - 1, 1 << 31, old &+ 1, old &- 1, 1 << 16]
                            .randomElement(using: &generator)!
                        for k in 0..<4 { input[4 + 4 * axis + k] = UInt8(truncatingIfNeeded: value >> (24 - 8 * k)) }
                    }
                }
                checkIDX(input, context: "seed \(seed), iteration \(iteration)", counts: &counts)
            }
        }
        print("ParserFuzzTests IDX: \(counts) (fresh seed \(freshSeed))")
        XCTAssertGreaterThan(counts.accepted, 0)
        XCTAssertGreaterThan(counts.rejected, counts.total / 4)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "fresh seed \(freshSeed)")
        XCTAssertLessThan(peakResidentBytes() - peakBefore, Self.memoryBound, "fresh seed \(freshSeed)")
    }

    private func checkIDX(_ input: [UInt8], context: String, counts: inout Counts) {
        do {
            let array = try IDXFile.parse(input, path: "fuzz")
            counts.accepted += 1
            XCTAssertEqual(array.payload.count, array.count * array.elementType.byteCount, context)
            XCTAssertEqual(4 + 4 * array.dimensions.count + array.payload.count, input.count, context)
            XCTAssertEqual(array.floatValues().count, array.count, context)
            if let integers = array.integerValues() { XCTAssertEqual(integers.count, array.count, context) }
        } catch is DataError {
            counts.rejected += 1
        } catch {
            XCTFail("untyped error \(type(of: error)) \(error): \(context)")
        }
    }

    // MARK: - gzip

    func testGzipMutations() {
        let start = Date()
        let peakBefore = peakResidentBytes()
        var counts = Counts()
        for seed in seeds {
            var generator = SeededGenerator(seed: seed)
            let valid = (0..<4).map { _ in gzipStoredBlocks(randomIDX(&generator)) }
                // (Not the 1 MiB bomb: inflating it takes ~0.5 s in a debug build; testGzipBombStopsAtTheCap has it.)
                + corpusFiles("gzip").filter { $0.name.hasPrefix("valid-") && !$0.name.contains("zeros") }.map(\.bytes)
            for iteration in 0..<Self.iterations {
                var input = mutateBytes(valid[Int.random(in: 0..<valid.count, using: &generator)], &generator)
                if iteration % 5 == 0 {
                    // Concatenated members, the second one damaged or not.
                    input += valid[Int.random(in: 0..<valid.count, using: &generator)]
                }
                let cap = iteration % 3 == 0 ? 64 : Self.gzipCap
                do {
                    let output = try Gzip.decompress(input, maximumOutputSize: cap, path: "fuzz")
                    counts.accepted += 1
                    XCTAssertLessThanOrEqual(output.count, cap, "seed \(seed), iteration \(iteration)")
                    checkIDX(output, context: "gunzipped: seed \(seed), iteration \(iteration)", counts: &counts)
                } catch is DataError {
                    counts.rejected += 1
                } catch {
                    XCTFail("untyped error \(type(of: error)) \(error): seed \(seed), iteration \(iteration)")
                }
            }
        }
        print("ParserFuzzTests gzip: \(counts) (fresh seed \(freshSeed))")
        XCTAssertGreaterThan(counts.accepted, 0)
        XCTAssertGreaterThan(counts.rejected, counts.total / 4)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "fresh seed \(freshSeed)")
        XCTAssertLessThan(peakResidentBytes() - peakBefore, Self.memoryBound, "fresh seed \(freshSeed)")
    }

    /// A decompression bomb (1 MiB of zeros in ~1 KiB) stops at the cap instead of filling memory.
    func testGzipBombStopsAtTheCap() throws {
        let bomb = try XCTUnwrap(corpusFiles("gzip").first { $0.name == "valid-zeros-1MiB.gz" }, "missing corpus file")
        XCTAssertLessThan(bomb.bytes.count, 4096)
        XCTAssertEqual(try Gzip.decompress(bomb.bytes).count, 1 << 20)
        XCTAssertThrowsError(try Gzip.decompress(bomb.bytes, maximumOutputSize: (1 << 20) - 1)) { error in
            XCTAssertEqual(error as? DataError, .decompressedSizeLimitExceeded(path: nil, limit: (1 << 20) - 1))
        }
    }

    // MARK: - Corpus

    /// Every file under Corpus/: `valid-*` parses, `reject-*` is rejected with the typed error, `fuzz-*`
    /// does either; nothing traps or throws another error type.
    func testCorpus() throws {
        var checked = 0
        for file in corpusFiles("safetensors") {
            let url = corpusDirectory.appendingPathComponent("safetensors/\(file.name)")
            do {
                let contents = try SafeTensors.read(from: url)
                XCTAssertFalse(file.name.hasPrefix("reject-"), "\(file.name) should be rejected but parsed")
                for (name, tensor) in contents.tensors {
                    XCTAssertEqual(tensor.floats?.count ?? tensor.ints?.count, tensor.shape.count, "\(file.name): \(name)")
                }
            } catch let error as CheckpointError {
                XCTAssertFalse(file.name.hasPrefix("valid-"), "\(file.name): \(error)")
                XCTAssertTrue(error.description.contains(url.path), "the error names the file: \(error)")
            }
            checked += 1
        }
        for kind in ["idx", "gzip"] {
            for file in corpusFiles(kind) {
                let url = corpusDirectory.appendingPathComponent("\(kind)/\(file.name)")
                do {
                    // IDXFile.read gunzips when the file starts with the gzip magic number.
                    if kind == "gzip" && !Gzip.isGzip(file.bytes) {
                        _ = try IDXFile.parse(Gzip.decompress(file.bytes, maximumOutputSize: Self.gzipCap, path: url.path),
                                              path: url.path)
                    } else if file.name.contains("zeros") {
                        continue   // the decompression bomb: testGzipBombStopsAtTheCap
                    } else {
                        let array = try IDXFile.read(contentsOf: url)
                        XCTAssertEqual(array.payload.count, array.count * array.elementType.byteCount, file.name)
                    }
                    XCTAssertFalse(file.name.hasPrefix("reject-"), "\(kind)/\(file.name) should be rejected but parsed")
                } catch let error as DataError {
                    XCTAssertFalse(file.name.hasPrefix("valid-"), "\(kind)/\(file.name): \(error)")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 30, "the corpus at \(corpusDirectory.path) looks incomplete")
    }

    // MARK: - Inputs

    struct Counts: CustomStringConvertible {
        var accepted = 0
        var rejected = 0
        var total: Int { accepted + rejected }
        var description: String { "\(total) inputs, \(accepted) parsed, \(rejected) rejected with the typed error" }
    }

    /// The process's peak resident set size in bytes (`getrusage`; Linux reports KiB).
    private func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(0, &usage)   // RUSAGE_SELF (imported as an enum on Glibc, an Int32 on Darwin)
        return usage.ru_maxrss * 1024
    }

    private var corpusDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")
    }

    private func corpusFiles(_ kind: String) -> [(name: String, bytes: [UInt8])] {
        let folder = corpusDirectory.appendingPathComponent(kind)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path) else { return nil }
            return (name, [UInt8](data))
        }
    }

    private func randomContents(_ generator: inout SeededGenerator) throws -> CheckpointContents {
        var contents = CheckpointContents()
        for index in 0..<Int.random(in: 0...4, using: &generator) {
            let rank = Int.random(in: 0...3, using: &generator)
            let shape = Shape((0..<rank).map { _ in Int.random(in: 0...5, using: &generator) })
            let name = ["w", "layer.\(index).bias", "ü\(index)", "q\"\\\(index)"].randomElement(using: &generator)! + "\(index)"
            if Bool.random(using: &generator) {
                contents.tensors[name] = try CheckpointTensor(
                    shape: shape, floats: (0..<shape.count).map { _ in Float.random(in: -2...2, using: &generator) })
            } else {
                contents.tensors[name] = try CheckpointTensor(
                    shape: shape, ints: (0..<shape.count).map { _ in Int32.random(in: -9...9, using: &generator) })
            }
        }
        if Bool.random(using: &generator) { contents.metadata = ["format": "pt", "note": "line\nbreak"] }
        return contents
    }

    private func randomIDX(_ generator: inout SeededGenerator) -> [UInt8] {
        let type = IDXElementType.allCases.randomElement(using: &generator)!
        let dimensions = (0..<Int.random(in: 0...3, using: &generator)).map { _ in UInt32.random(in: 0...6, using: &generator) }
        var bytes: [UInt8] = [0, 0, type.rawValue, UInt8(dimensions.count)]
        for size in dimensions { bytes += (0..<4).map { UInt8(truncatingIfNeeded: size >> (24 - 8 * $0)) } }
        let count = dimensions.reduce(1) { $0 * Int($1) } * type.byteCount
        bytes += (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return bytes
    }

    private func safeTensorsFile(header: [UInt8], buffer: [UInt8]) -> [UInt8] {
        let length = UInt64(header.count)
        return (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) } + header + buffer
    }

    /// Generic byte-level damage.
    private func mutateBytes(_ input: [UInt8], _ generator: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...3, using: &generator) {
            switch Int.random(in: 0..<6, using: &generator) {
            case 0 where !bytes.isEmpty:   // flip bits
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] ^= 1 << UInt8.random(in: 0...7, using: &generator)
                }
            case 1 where !bytes.isEmpty:   // interesting byte values
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] =
                    [0, 0xFF, 0x7F, 0x80, 0x22, 0x5C, 0x7B, 0x5D].randomElement(using: &generator)!
            case 2:                        // truncate
                bytes.removeSubrange(Int.random(in: 0...bytes.count, using: &generator)...)
            case 3:                        // append
                bytes += (0..<Int.random(in: 1...16, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            case 4 where !bytes.isEmpty:   // delete a range
                let start = Int.random(in: 0..<bytes.count, using: &generator)
                bytes.removeSubrange(start..<min(bytes.count, start + Int.random(in: 1...8, using: &generator)))
            default:                       // insert a copy of a range (duplicates keys, dimensions …)
                guard !bytes.isEmpty else { break }
                let start = Int.random(in: 0..<bytes.count, using: &generator)
                let piece = bytes[start..<min(bytes.count, start + Int.random(in: 1...32, using: &generator))]
                bytes.insert(contentsOf: piece, at: Int.random(in: 0...bytes.count, using: &generator))
            }
        }
        return bytes
    }

    /// A lying header length: 0, huge, just past the file, just short of it, or random.
    private func mutateHeaderLength(_ input: [UInt8], _ generator: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        guard bytes.count >= 8 else { return bytes }
        let actual = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let length: UInt64 = [0, .max, 1 << 63, UInt64(SafeTensors.maximumHeaderLength) + 1, UInt64(bytes.count - 8),
                              UInt64(bytes.count - 7), actual &+ 1, actual &- 1, actual &+ 8,
                              UInt64.random(in: 0...UInt64.max, using: &generator)].randomElement(using: &generator)!
        for k in 0..<8 { bytes[k] = UInt8(truncatingIfNeeded: length >> (8 * k)) }
        return bytes
    }

    /// Edits the JSON header of a valid file: huge or negative dimensions, lying offsets, duplicate keys,
    /// other dtypes, deep nesting, and keeps the header length consistent (or not).
    private func mutateHeaderJSON(_ input: [UInt8], _ generator: inout SeededGenerator) -> [UInt8] {
        guard input.count >= 8 else { return input }
        let length = Int(input[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        guard 8 + length <= input.count else { return input }
        var header = String(decoding: input[8..<(8 + length)], as: UTF8.self)
        let buffer = Array(input[(8 + length)...])
        let replacements: [(String, String)] = [
            ("\"shape\":[", "\"shape\":[\(["9223372036854775807", "4294967296", "-1", "2147483648,2147483648,4", "1e3", "0.5", "\"2\"", "null", "99999999999999999999"].randomElement(using: &generator)!),"),
            ("\"shape\":[", "\"shape\":[0,"),
            ("\"data_offsets\":[", "\"data_offsets\":[\(["0,", "-8,", "9223372036854775807,", "4,", "1e2,"].randomElement(using: &generator)!)"),
            ("\"data_offsets\":[0,", "\"data_offsets\":[\(Int.random(in: 0...64, using: &generator)),"),
            (",\"data_offsets\"", ",\"data_offsets\":[0,0],\"data_offsets\""),   // duplicate key in an entry
            ("\"F32\"", ["\"F16\"", "\"I32\"", "\"BF16\"", "3", "\"\""].randomElement(using: &generator)!),
            ("\"I32\"", "\"F32\""),
            ("{\"", "{\"__metadata__\":{\"a\":\(["1", "\"b\"", "null", "[]", "{}"].randomElement(using: &generator)!)},\""),
            ("{\"", "{\"x\":\(String(repeating: "[", count: 70) + String(repeating: "]", count: 70)),\""),
            ("}", "},\"extra\":{}"),
            ("]", ",]"),
            ("\"", "\"\\ud800"),
        ]
        let (target, replacement) = replacements.randomElement(using: &generator)!
        if let range = header.range(of: target) {
            header.replaceSubrange(range, with: replacement)
        } else if let first = header.firstIndex(of: "{"), header.contains("dtype") {
            // Duplicate the first top-level entry (same name twice).
            let entryEnd = header.range(of: "]}")?.upperBound ?? header.endIndex
            let entry = header[header.index(after: first)..<entryEnd]
            header.insert(contentsOf: entry + ",", at: header.index(after: first))
        }
        var json = Array(header.utf8)
        if Int.random(in: 0..<4, using: &generator) == 0 { json.removeLast(min(json.count, Int.random(in: 1...3, using: &generator))) }
        return safeTensorsFile(header: json, buffer: buffer)
    }

    private func randomJSON(depth: Int, _ generator: inout SeededGenerator) -> String {
        let leaf = depth >= 4
        switch Int.random(in: 0..<(leaf ? 5 : 7), using: &generator) {
        case 0: return ["0", "-0", "7", "-3", "1.5e300", "9223372036854775808", "-9223372036854775809", "2147483647"]
            .randomElement(using: &generator)!
        case 1: return ["\"\"", "\"F32\"", "\"a\\u0000b\"", "\"\\ud83d\\ude00\"", "\"__metadata__\"", "\"\\x\""]
            .randomElement(using: &generator)!
        case 2: return ["true", "false", "null"].randomElement(using: &generator)!
        case 3: return ["[", "{", "\"", "1e", "-", "tru", "[1,]", "{\"a\"}"].randomElement(using: &generator)!   // broken
        case 4: return "[]"
        case 5:
            return "[" + (0..<Int.random(in: 0...4, using: &generator)).map { _ in randomJSON(depth: depth + 1, &generator) }
                .joined(separator: ",") + "]"
        default:
            let keys = ["dtype", "shape", "data_offsets", "__metadata__", "w", "w"]
            return "{" + (0..<Int.random(in: 0...4, using: &generator)).map { _ in
                "\"\(keys.randomElement(using: &generator)!)\":\(randomJSON(depth: depth + 1, &generator))"
            }.joined(separator: ",") + "}"
        }
    }
}

/// gzip with stored (uncompressed) deflate blocks, so that tests need no compressor.
private func gzipStoredBlocks(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]
    var offset = 0
    repeat {
        let length = min(65_535, bytes.count - offset)
        out.append(offset + length == bytes.count ? 1 : 0)
        out += fuzzLittleEndian(UInt16(length)) + fuzzLittleEndian(~UInt16(length))
        out += bytes[offset..<offset + length]
        offset += length
    } while offset < bytes.count
    return out + fuzzLittleEndian(fuzzCRC32(bytes)) + fuzzLittleEndian(UInt32(truncatingIfNeeded: bytes.count))
}

private func fuzzLittleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

private func fuzzCRC32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}
