import Foundation
import XCTest
@testable import Opal

/// The safetensors reader and writer: round trips, the reference implementation's exact bytes,
/// every malformed file we must reject, atomic writes, and interoperability with PyTorch.
final class SafeTensorsTests: ScratchDirectoryTestCase {
    private var seed: UInt64 = 0
    private var generator = SeededGenerator(seed: 0)

    override func setUpWithError() throws {
        try super.setUpWithError()
        seed = UInt64.random(in: 0...UInt64.max)
        generator = SeededGenerator(seed: seed)
    }

    override func tearDownWithError() throws {
        // The read-only-directory test may leave it unwritable: restore before the base class removes it.
        try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        try super.tearDownWithError()
    }

    private func randomFloats(_ count: Int) -> [Float] {
        (0..<count).map { _ in Float.random(in: -1000...1000, using: &generator) }
    }

    private func randomInts(_ count: Int) -> [Int32] {
        (0..<count).map { _ in Int32.random(in: Int32.min...Int32.max, using: &generator) }
    }

    /// Assert two contents hold identical bits (NaN-safe), shapes, dtypes and metadata.
    private func assertIdentical(_ a: CheckpointContents, _ b: CheckpointContents,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.metadata, b.metadata, "seed \(seed)", file: file, line: line)
        XCTAssertEqual(Set(a.tensors.keys), Set(b.tensors.keys), "seed \(seed)", file: file, line: line)
        for (name, x) in a.tensors {
            guard let y = b.tensors[name] else { continue }
            XCTAssertEqual(x.shape, y.shape, name, file: file, line: line)
            XCTAssertEqual(x.dtype, y.dtype, name, file: file, line: line)
            switch (x.values, y.values) {
            case let (.float32(u), .float32(v)):
                XCTAssertEqual(u.map(\.bitPattern), v.map(\.bitPattern), "\(name), seed \(seed)", file: file, line: line)
            case let (.int32(u), .int32(v)):
                XCTAssertEqual(u, v, "\(name), seed \(seed)", file: file, line: line)
            default:
                XCTFail("\(name): dtypes differ", file: file, line: line)
            }
        }
    }

    private func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// A file from a header string and a data buffer (the header is used exactly as given).
    private func craft(_ header: String, buffer: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
        let json = Array(header.utf8)
        let length = declaredLength ?? UInt64(json.count)
        return (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) } + json + buffer
    }

    private func craft(bytes header: [UInt8]) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: UInt64(header.count) >> (8 * $0)) } + header
    }

    /// Writes `bytes` to a file, reads it, and checks the error (and that it names the file).
    private func assertRejected(_ bytes: [UInt8], _ label: String, file: StaticString = #filePath, line: UInt = #line,
                                _ check: (CheckpointError) -> Bool) throws {
        let target = url("bad-\(label).safetensors")
        try Data(bytes).write(to: target)
        XCTAssertThrowsError(try CheckpointContents(contentsOf: target), label, file: file, line: line) { error in
            guard let error = error as? CheckpointError else {
                return XCTFail("\(label): not a CheckpointError: \(error)", file: file, line: line)
            }
            XCTAssert(check(error), "\(label): unexpected error \(error)", file: file, line: line)
            XCTAssert(error.description.contains(target.path), "\(label): \(error) does not name the file", file: file, line: line)
        }
    }

    // MARK: Round trip

    func testRoundTripKeepsValuesShapesDTypesAndMetadata() throws {
        var tensors: [String: CheckpointTensor] = [:]
        for (index, shape) in [[], [0], [1], [7], [33, 5], [2, 3, 7], [1000], [4, 0, 3]].enumerated() {
            let shape = Shape(shape)
            tensors["float.\(index)"] = try CheckpointTensor(shape: shape, floats: randomFloats(shape.count))
        }
        tensors["special"] = try CheckpointTensor(shape: [2, 3], floats: [.nan, .infinity, -.infinity, -0.0,
                                                                         .leastNonzeroMagnitude, .greatestFiniteMagnitude])
        tensors["labels"] = try CheckpointTensor(shape: [33], ints: randomInts(33))
        tensors["step"] = try CheckpointTensor(shape: [], ints: [42])
        tensors["empty.ints"] = try CheckpointTensor(shape: [0, 2], ints: [])
        tensors["ünïcödé \"quoted\"\n\\name"] = try CheckpointTensor(shape: [1], floats: [1.5])
        let metadata = ["format": "pt", "note": "line\nbreak \"quotes\" \\ tab\t \u{01} ✓ 🎉", "": "empty key"]
        let contents = CheckpointContents(tensors: tensors, metadata: metadata)

        let target = url("round.safetensors")
        try contents.write(to: target)
        assertIdentical(contents, try CheckpointContents(contentsOf: target))
        // In memory too, and the file holds exactly the encoded bytes.
        assertIdentical(contents, try SafeTensors.decode(try SafeTensors.encode(contents)))
        XCTAssertEqual(try Data(contentsOf: target), try SafeTensors.encode(contents))
        // Writing again replaces the file.
        let smaller = CheckpointContents(tensors: ["x": try CheckpointTensor(shape: [7], floats: randomFloats(7))])
        try smaller.write(to: target)
        assertIdentical(smaller, try CheckpointContents(contentsOf: target))
    }

    func testLayoutIsSortedAlignedAndPaddedWithSpaces() throws {
        var tensors: [String: CheckpointTensor] = [:]
        let names = (0..<17).map { _ in "t\(Int.random(in: 0...1_000_000, using: &generator))" }
        for name in names {
            let shape = Shape([Int.random(in: 0...9, using: &generator), Int.random(in: 1...5, using: &generator)])
            tensors[name] = try CheckpointTensor(shape: shape, floats: randomFloats(shape.count))
        }
        let bytes = [UInt8](try SafeTensors.encode(CheckpointContents(tensors: tensors, metadata: ["a": "b"])))
        let length = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(length % 8, 0)
        let header = String(decoding: bytes[8..<8 + length], as: UTF8.self)
        XCTAssert(header.hasPrefix("{\"__metadata__\":{\"a\":\"b\"},"), header)
        let trimmed = header.replacingOccurrences(of: " +$", with: "", options: .regularExpression)
        XCTAssert(trimmed.hasSuffix("}"))
        XCTAssertLessThan(header.count - trimmed.count, 8)
        // (All F32:) names appear in sorted order and offsets increase with them.
        let sortedNames = Set(names).sorted()
        let positions = sortedNames.map { header.range(of: "\"\($0)\":")!.lowerBound }
        XCTAssertEqual(positions, positions.sorted(), "seed \(seed)")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(header.utf8)) as? [String: Any])
        var expectedBegin = 0
        for name in sortedNames {
            let entry = try XCTUnwrap(object[name] as? [String: Any])
            let offsets = try XCTUnwrap(entry["data_offsets"] as? [Int])
            XCTAssertEqual(offsets[0], expectedBegin, name)
            expectedBegin = offsets[1]
        }
        XCTAssertEqual(8 + length + expectedBegin, bytes.count)
    }

    /// The exact bytes `safetensors.numpy.save` (0.8.0) writes for the same tensors and metadata.
    func testMatchesTheReferenceImplementationByteForByte() throws {
        let contents = CheckpointContents(tensors: ["b": try CheckpointTensor(shape: [1], ints: [3]),
                                                    "a": try CheckpointTensor(shape: [2], floats: [1, 2])],
                                          metadata: ["k": "v"])
        let header = #"{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}}   "#
        let expected: [UInt8] = [0x88, 0, 0, 0, 0, 0, 0, 0] + Array(header.utf8)
            + [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40, 3, 0, 0, 0]
        XCTAssertEqual([UInt8](try SafeTensors.encode(contents)), expected)
        XCTAssertEqual([UInt8](try SafeTensors.encode(CheckpointContents())),
                       [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        assertIdentical(contents, try SafeTensors.decode(Data(expected)))
        // F32 tensors come before I32 ones whatever their names (the reference sorts by dtype, then name).
        let mixed = CheckpointContents(tensors: ["a": try CheckpointTensor(shape: [1], ints: [3]),
                                                 "b": try CheckpointTensor(shape: [2], floats: [1.5, 2]),
                                                 "c": try CheckpointTensor(shape: [0], floats: [])])
        let mixedHeader = #"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""c":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},"a":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}}       "#
        XCTAssertEqual([UInt8](try SafeTensors.encode(mixed)),
                       [0xA8, 0, 0, 0, 0, 0, 0, 0] + Array(mixedHeader.utf8) + [0, 0, 0xC0, 0x3F, 0, 0, 0, 0x40, 3, 0, 0, 0])
    }

    func testReaderAcceptsValidVariations() throws {
        // Whitespace, escapes, key order, null metadata, unknown extra fields (as the reference does).
        let header = "{ \"b\" : {\"data_offsets\":[4,8], \"shape\":[1],\"dtype\":\"I32\", \"extra\": [1, {\"x\": null}]},\n"
            + "\"\\u0061\\/\\ud83c\\udf89\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}, \"__metadata__\": null }"
        let contents = try SafeTensors.decode(Data(craft(header, buffer: [0, 0, 0x80, 0x3F, 7, 0, 0, 0])))
        XCTAssertEqual(contents.tensors["a/🎉"]?.floats, [1])
        XCTAssertEqual(contents.tensors["b"]?.ints, [7])
        XCTAssertEqual(contents.metadata, [:])
    }

    func testRejectsValuesThatDoNotFitTheShape() {
        XCTAssertThrowsError(try CheckpointTensor(shape: [2, 3], floats: [1, 2])) { error in
            XCTAssert(String(describing: error).contains("2 values given for shape [2, 3]"), "\(error)")
        }
        XCTAssertThrowsError(try CheckpointTensor(shape: [-1], ints: []))
        XCTAssertThrowsError(try SafeTensors.encode(CheckpointContents(
            tensors: ["__metadata__": try! CheckpointTensor(shape: [1], floats: [1])]))) { error in
            XCTAssertEqual(error as? CheckpointError,
                           .invalidContents(reason: "\"__metadata__\" is reserved and cannot name a tensor"))
        }
    }

    // MARK: Malformed files

    func testRejectsTruncatedAndOversizedHeaders() throws {
        let missing = url("does-not-exist.safetensors")
        XCTAssertThrowsError(try CheckpointContents(contentsOf: missing)) { error in
            guard case .unreadableFile(missing.path, let reason)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssert(reason.contains("No such file"), reason)
        }
        XCTAssertThrowsError(try CheckpointContents(contentsOf: directory)) { error in
            guard case .unreadableFile? = error as? CheckpointError else { return XCTFail("\(error)") }
        }
        for count in [0, 1, 7] {
            try assertRejected([UInt8](repeating: 8, count: count), "short\(count)") {
                $0 == .fileTooShort(path: self.url("bad-short\(count).safetensors").path, byteCount: count)
            }
        }
        let valid = craft(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, buffer: [0, 0, 0, 0])
        let validLength = UInt64(valid.count - 12)
        // The declared length runs past the end of the file, by one byte or by far.
        for (label, length) in [("past-end", validLength + 5), ("huge", UInt64(200_000_000)), ("max", UInt64.max),
                                ("beyond-file", UInt64(valid.count))] {
            var bytes = valid
            for index in 0..<8 { bytes[index] = UInt8(truncatingIfNeeded: length >> (8 * index)) }
            try assertRejected(bytes, label) {
                guard case let .invalidHeaderLength(_, headerLength, fileSize) = $0 else { return false }
                return headerLength == length && fileSize == bytes.count
            }
        }
        // A header over the 100 MB limit is rejected even when the file is that large (sparse file).
        let sparse = url("sparse.safetensors")
        let limit = UInt64(SafeTensors.maximumHeaderLength + 1)
        try Data((0..<8).map { UInt8(truncatingIfNeeded: limit >> (8 * $0)) }).write(to: sparse)
        let handle = try FileHandle(forWritingTo: sparse)
        try handle.truncate(atOffset: limit + 8)
        try handle.close()
        XCTAssertThrowsError(try CheckpointContents(contentsOf: sparse)) { error in
            XCTAssertEqual(error as? CheckpointError,
                           .invalidHeaderLength(path: sparse.path, headerLength: limit, fileSize: Int(limit) + 8))
        }
    }

    func testRejectsHeadersThatAreNotJSONObjects() throws {
        func malformed(_ fragment: String) -> (CheckpointError) -> Bool {
            { error in
                guard case let .malformedHeader(_, reason) = error else { return false }
                return reason.contains(fragment)
            }
        }
        try assertRejected(craft("") , "empty", malformed("not a JSON object"))
        try assertRejected(craft("[]"), "array", malformed("not a JSON object"))
        try assertRejected(craft("\"text\""), "string", malformed("not a JSON object"))
        try assertRejected(craft(" {}"), "leading-space", malformed("must start with '{'"))
        try assertRejected(craft("{") , "unterminated", malformed("invalid JSON"))
        try assertRejected(craft("{}x"), "trailing", malformed("after the JSON value"))
        try assertRejected(craft("{}\0\0"), "nul-padding", malformed("after the JSON value"))
        try assertRejected(craft("{\"a\":}"), "no-value", malformed("invalid JSON"))
        try assertRejected(craft("{\"a\":{},}"), "trailing-comma", malformed("invalid JSON"))
        try assertRejected(craft("{'a':1}"), "single-quotes", malformed("invalid JSON"))
        try assertRejected(craft("{\"a\":01}"), "leading-zero", malformed("leading zero"))
        try assertRejected(craft("{\"a\":\"x\ny\"}"), "control", malformed("control character"))
        try assertRejected(craft("{\"\\ud800\":1}"), "lone-surrogate", malformed("surrogate"))
        try assertRejected(craft("{\"\\q\":1}"), "bad-escape", malformed("invalid escape"))
        try assertRejected(craft("{\"a\":tru}"), "bad-literal", malformed("invalid literal"))
        try assertRejected(craft("{\"a\":" + String(repeating: "[", count: 100_000) + "}"), "deep",
                           malformed("nesting deeper"))
        try assertRejected(craft("{\"a\":1}", declaredLength: nil).map { $0 == UInt8(ascii: "a") ? 0xFF : $0 }, "not-utf8",
                           malformed("not valid UTF-8"))
        try assertRejected(craft(bytes: Array("{\"".utf8) + [0xC3] + Array("\":1}".utf8)), "truncated-utf8",
                           malformed("not valid UTF-8"))
        // An entry that is not an object, or lacks a field, or has fields of the wrong kind.
        try assertRejected(craft(#"{"a":5}"#), "entry-number", malformed("is a number, not an object"))
        try assertRejected(craft(#"{"a":{"shape":[],"data_offsets":[0,4]}}"#, buffer: [0, 0, 0, 0]),
                           "no-dtype", malformed("has no \"dtype\" field"))
        try assertRejected(craft(#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, buffer: [0, 0, 0, 0]),
                           "no-shape", malformed("has no \"shape\" field"))
        try assertRejected(craft(#"{"a":{"dtype":"F32","shape":[]}}"#, buffer: [0, 0, 0, 0]),
                           "no-offsets", malformed("has no \"data_offsets\" field"))
        try assertRejected(craft(#"{"a":{"dtype":32,"shape":[],"data_offsets":[0,4]}}"#, buffer: [0, 0, 0, 0]),
                           "dtype-number", malformed("dtype of tensor \"a\" is not a string"))
        try assertRejected(craft(#"{"a":{"dtype":"F32","dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, buffer: [0, 0, 0, 0]),
                           "duplicate-field", malformed("duplicate key \"dtype\""))
    }

    func testRejectsDuplicateNamesAndBadMetadata() throws {
        let entry = #"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#
        try assertRejected(craft(#"{"a":\#(entry),"a":\#(entry)}"#, buffer: [0, 0, 0, 0]), "duplicate") {
            $0 == .duplicateName(path: self.url("bad-duplicate.safetensors").path, name: "a")
        }
        // The same name spelled with an escape is still the same name.
        try assertRejected(craft(#"{"a":\#(entry),"\u0061":\#(entry)}"#, buffer: [0, 0, 0, 0]), "duplicate-escaped") {
            $0 == .duplicateName(path: self.url("bad-duplicate-escaped.safetensors").path, name: "a")
        }
        try assertRejected(craft(#"{"__metadata__":{},"__metadata__":{}}"#), "duplicate-metadata") {
            $0 == .duplicateName(path: self.url("bad-duplicate-metadata.safetensors").path, name: "__metadata__")
        }
        for (label, metadata, fragment) in [("metadata-number", #"{"k":1}"#, "__metadata__[\"k\"] is a number"),
                                            ("metadata-null", #"{"k":null}"#, "__metadata__[\"k\"] is null"),
                                            ("metadata-nested", #"{"k":{"x":"y"}}"#, "__metadata__[\"k\"] is an object"),
                                            ("metadata-array", #"["k"]"#, "__metadata__ is an array"),
                                            ("metadata-string", #""k""#, "__metadata__ is a string")] {
            try assertRejected(craft(#"{"__metadata__":\#(metadata)}"#), label) { error in
                guard case let .malformedHeader(_, reason) = error else { return false }
                return reason.contains(fragment)
            }
        }
    }

    func testRejectsUnsupportedDTypesNamingThem() throws {
        for (dtype, size) in [("F16", 2), ("BF16", 2), ("F64", 8), ("I64", 8), ("U8", 1), ("BOOL", 1), ("f32", 4), ("", 4)] {
            let bytes = craft(#"{"w":{"dtype":"\#(dtype)","shape":[3],"data_offsets":[0,\#(3 * size)]}}"#,
                              buffer: [UInt8](repeating: 0, count: 3 * size))
            try assertRejected(bytes, "dtype-\(dtype)") {
                $0 == .unsupportedDType(path: self.url("bad-dtype-\(dtype).safetensors").path, tensor: "w", dtype: dtype)
            }
        }
    }

    func testRejectsInvalidShapesAndOffsets() throws {
        func entry(_ shape: String, _ offsets: String, dtype: String = "F32") -> String {
            #"{"w":{"dtype":"\#(dtype)","shape":\#(shape),"data_offsets":\#(offsets)}}"#
        }
        func shapeError(_ fragment: String) -> (CheckpointError) -> Bool {
            { error in
                guard case let .invalidShape(_, "w", reason) = error else { return false }
                return reason.contains(fragment)
            }
        }
        func offsetError(_ fragment: String) -> (CheckpointError) -> Bool {
            { error in
                guard case let .invalidDataOffsets(_, "w", reason) = error else { return false }
                return reason.contains(fragment)
            }
        }
        let four: [UInt8] = [0, 0, 0, 0]
        try assertRejected(craft(entry("[-1]", "[0,4]"), buffer: four), "negative-dim", shapeError("dimension -1 is negative"))
        try assertRejected(craft(entry("[1.5]", "[0,4]"), buffer: four), "fraction-dim", shapeError("1.5 is not an integer"))
        try assertRejected(craft(entry("[1e2]", "[0,4]"), buffer: four), "exponent-dim", shapeError("1e2 is not an integer"))
        try assertRejected(craft(entry("[99999999999999999999]", "[0,4]"), buffer: four), "huge-dim",
                           shapeError("is not an integer that fits"))
        try assertRejected(craft(entry("[\"2\"]", "[0,4]"), buffer: four), "string-dim", shapeError("a dimension is a string"))
        try assertRejected(craft(entry("3", "[0,4]"), buffer: four), "shape-not-array", shapeError("not an array"))
        // The element count fits in 64 bits but the byte count does not; and a product that overflows.
        try assertRejected(craft(entry("[4611686018427387904]", "[0,4]"), buffer: four), "overflow-bytes", shapeError("overflows"))
        try assertRejected(craft(entry("[4294967296,4294967296]", "[0,4]"), buffer: four), "overflow-product", shapeError("overflows"))
        // A zero dimension makes any later dimension harmless.
        try assertRejected(craft(entry("[0,4611686018427387904]", "[0,4]"), buffer: four), "zero-then-huge",
                           offsetError("holds 4 bytes, but F32 [0, 4611686018427387904] needs 0"))
        try assertRejected(craft(entry("[4611686018427387904,0]", "[0,4]"), buffer: four), "huge-then-zero",
                           offsetError("needs 0"))

        try assertRejected(craft(entry("[1]", "[0]"), buffer: four), "one-offset", offsetError("two integers"))
        try assertRejected(craft(entry("[1]", "[0,4,8]"), buffer: four), "three-offsets", offsetError("two integers"))
        try assertRejected(craft(entry("[1]", "{}"), buffer: four), "offsets-object", offsetError("two integers"))
        try assertRejected(craft(entry("[1]", "[-4,0]"), buffer: four), "negative-offset", offsetError("offset -4 is negative"))
        try assertRejected(craft(entry("[1]", "[0,4.0]"), buffer: four), "float-offset", offsetError("4.0 is not an integer"))
        try assertRejected(craft(entry("[1]", "[0,null]"), buffer: four), "null-offset", offsetError("an offset is null"))
        try assertRejected(craft(entry("[0]", "[4,0]"), buffer: four), "reversed", offsetError("begin 4 is after end 0"))
        try assertRejected(craft(entry("[1]", "[4,8]"), buffer: four), "out-of-range", offsetError("outside the 4-byte data buffer"))
        try assertRejected(craft(entry("[1]", "[0,18446744073709551615]"), buffer: four), "offset-u64",
                           offsetError("is not an integer that fits"))
        try assertRejected(craft(entry("[2]", "[0,4]"), buffer: four), "size-mismatch",
                           offsetError("holds 4 bytes, but F32 [2] needs 8"))
        try assertRejected(craft(entry("[1]", "[0,4]", dtype: "I32"), buffer: four + four), "trailing-bytes") { error in
            guard case let .invalidLayout(_, reason) = error else { return false }
            return reason.contains("bytes 4..<8 at the end of the data buffer belong to no tensor")
        }
    }

    func testRejectsOverlapsAndHoles() throws {
        func two(_ a: String, _ b: String) -> String {
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":\#(a)},"b":{"dtype":"F32","shape":[1],"data_offsets":\#(b)}}"#
        }
        func layoutError(_ fragment: String) -> (CheckpointError) -> Bool {
            { error in
                guard case let .invalidLayout(_, reason) = error else { return false }
                return reason.contains(fragment)
            }
        }
        let eight = [UInt8](repeating: 0, count: 8)
        try assertRejected(craft(two("[0,4]", "[0,4]"), buffer: eight), "same-range", layoutError("overlaps"))
        try assertRejected(craft(two("[0,4]", "[2,6]"), buffer: eight), "partial-overlap", layoutError("overlaps"))
        try assertRejected(craft(two("[0,4]", "[8,12]"), buffer: eight + [0, 0, 0, 0]), "hole", layoutError("bytes 4..<8"))
        try assertRejected(craft(two("[4,8]", "[8,12]"), buffer: eight + [0, 0, 0, 0]), "hole-at-start", layoutError("bytes 0..<4"))
        // Zero-size tensors may share an offset with anything: that is valid.
        let empty = #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"#
            + #""c":{"dtype":"I32","shape":[2,0],"data_offsets":[4,4]},"d":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        let contents = try SafeTensors.decode(Data(craft(empty, buffer: eight)))
        XCTAssertEqual(contents.tensors["a"]?.floats, [])
        XCTAssertEqual(contents.tensors["c"]?.shape, [2, 0])
        XCTAssertEqual(contents.tensors["d"]?.floats, [0])
    }

    /// Random corruptions of a valid file either decode or throw a `CheckpointError`; never trap.
    func testRandomCorruptionsNeverTrap() throws {
        let contents = CheckpointContents(tensors: ["a.weight": try CheckpointTensor(shape: [3, 5], floats: randomFloats(15)),
                                                    "b": try CheckpointTensor(shape: [2], ints: randomInts(2))],
                                          metadata: ["epoch": "3"])
        let valid = [UInt8](try SafeTensors.encode(contents))
        for _ in 0..<2000 {
            var bytes = valid
            switch Int.random(in: 0..<3, using: &generator) {
            case 0:
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            case 1:
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &generator))
            default:
                let index = Int.random(in: 8..<bytes.count, using: &generator)
                bytes[index] = [UInt8]("{}[]\",:0-9e.\\ ".utf8).randomElement(using: &generator)!
            }
            do {
                _ = try SafeTensors.decode(Data(bytes), path: "fuzz")
            } catch let error as CheckpointError {
                XCTAssert(error.description.hasPrefix("fuzz: "), "\(error)")
            }
        }
    }

    // MARK: Atomic writes

    private func directoryListing() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    func testFailedWritesLeaveThePreviousFileAndNoTemporaries() throws {
        let target = url("model.safetensors")
        let old = CheckpointContents(tensors: ["w": try CheckpointTensor(shape: [7, 3], floats: randomFloats(21))],
                                     metadata: ["version": "old"])
        try old.write(to: target)
        let oldBytes = try Data(contentsOf: target)
        XCTAssertEqual(try directoryListing(), ["model.safetensors"])

        let new = CheckpointContents(tensors: ["w": try CheckpointTensor(shape: [33, 5], floats: randomFloats(165)),
                                               "step": try CheckpointTensor(shape: [], ints: [9])],
                                     metadata: ["version": "new"])
        let newSize = try SafeTensors.encode(new).count
        var faults: [SafeTensors.WriteFaults] = [0, 1, 8, 20, newSize / 2, newSize - 1].map { .init(failAfterByteCount: $0) }
        faults.append(.init(failSync: true))
        faults.append(.init(failRename: true))
        for fault in faults {
            XCTAssertThrowsError(try SafeTensors.write(new, to: target, faults: fault)) { error in
                guard case let .writeFailed(path, reason)? = error as? CheckpointError else { return XCTFail("\(error)") }
                XCTAssertEqual(path, target.path)
                XCTAssert(reason.contains("injected failure"), reason)
                XCTAssert((error as! CheckpointError).description.contains("previous file there is unchanged"))
            }
            XCTAssertEqual(try Data(contentsOf: target), oldBytes, "\(fault)")
            assertIdentical(old, try CheckpointContents(contentsOf: target))
            XCTAssertEqual(try directoryListing(), ["model.safetensors"], "a temporary file was left behind after \(fault)")
        }
        // A failure limit past the end of the file does not trigger: the write succeeds.
        try SafeTensors.write(new, to: target, faults: .init(failAfterByteCount: newSize))
        assertIdentical(new, try CheckpointContents(contentsOf: target))
        XCTAssertEqual(try directoryListing(), ["model.safetensors"])
    }

    /// A real failure (not injected): the target is a non-empty directory, so the rename fails.
    func testRenameOntoADirectoryFailsCleanly() throws {
        let target = url("occupied")
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: false)
        try Data([1, 2, 3]).write(to: target.appendingPathComponent("keep"))
        let contents = CheckpointContents(tensors: ["x": try CheckpointTensor(shape: [1], floats: [1])])
        XCTAssertThrowsError(try contents.write(to: target)) { error in
            guard case let .writeFailed(path, reason)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, target.path)
            XCTAssert(reason.contains("cannot replace the file"), reason)
        }
        XCTAssertEqual(try directoryListing(), ["occupied"])
        XCTAssertEqual(try Data(contentsOf: target.appendingPathComponent("keep")), Data([1, 2, 3]))
        // A directory that does not exist: no temporary file can be created.
        let nowhere = url("missing/dir/x.safetensors")
        XCTAssertThrowsError(try contents.write(to: nowhere)) { error in
            guard case let .writeFailed(_, reason)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssert(reason.contains("cannot create a temporary file"), reason)
        }
    }

    func testReadOnlyDirectoryKeepsThePreviousFile() throws {
        try XCTSkipIf(geteuid() == 0, "running as root: a read-only directory does not stop root from writing")
        let target = url("model.safetensors")
        let old = CheckpointContents(tensors: ["w": try CheckpointTensor(shape: [3], floats: randomFloats(3))])
        try old.write(to: target)
        try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: directory.path)
        let new = CheckpointContents(tensors: ["w": try CheckpointTensor(shape: [4], floats: randomFloats(4))])
        XCTAssertThrowsError(try new.write(to: target)) { error in
            guard case .writeFailed? = error as? CheckpointError else { return XCTFail("\(error)") }
        }
        assertIdentical(old, try CheckpointContents(contentsOf: target))
    }

    // MARK: PyTorch interoperability

    /// `Benchmarks/peers/safetensors_check.py`, beside this package.
    private var peerScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Benchmarks/peers/safetensors_check.py").path
    }

    private func runPython(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    private func requirePyTorchSafetensors() throws {
        let probe = try? runPython(["-c", "import safetensors.torch, numpy"])
        guard let probe, probe.status == 0 else {
            let reason = "python3 cannot import safetensors.torch (pip install torch safetensors): \(probe?.output.suffix(200) ?? "no python3")"
            print("SafeTensorsTests: skipped: \(reason)")
            throw XCTSkip(reason)
        }
        try XCTSkipUnless(FileManager.default.fileExists(atPath: peerScript), "\(peerScript) not found")
    }

    private typealias Description = (reader: String?, metadata: [String: String]?,
                                     tensors: [String: (dtype: String, shape: [Int], bits: [Int64])])

    /// The script's JSON description of a file: reader, metadata, and
    /// name → (dtype, shape, values as int32 bit patterns).
    private func describe(_ file: URL) throws -> Description {
        let result = try runPython([peerScript, "read", file.path, "--json", "--values"])
        XCTAssertEqual(result.status, 0, result.output)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], result.output)
        let tensors = try XCTUnwrap(object["tensors"] as? [String: [String: Any]])
        return (object["reader"] as? String, object["metadata"] as? [String: String], try tensors.mapValues { entry in
            (try XCTUnwrap(entry["dtype"] as? String), try XCTUnwrap(entry["shape"] as? [Int]),
             try XCTUnwrap(entry["bits"] as? [Any]).map { try XCTUnwrap(($0 as? NSNumber)?.int64Value) })
        })
    }

    func testPyTorchReadsOurFiles() throws {
        try requirePyTorchSafetensors()
        let contents = CheckpointContents(
            tensors: ["0.weight": try CheckpointTensor(shape: [33, 7], floats: randomFloats(231)),
                      "0.bias": try CheckpointTensor(shape: [33], floats: randomFloats(33)),
                      "special": try CheckpointTensor(shape: [4], floats: [.nan, .infinity, -0.0, Float(bitPattern: 0x0001_2345)]),
                      "labels": try CheckpointTensor(shape: [2, 3], ints: randomInts(6)),
                      "scalar": try CheckpointTensor(shape: [], floats: [3.25]),
                      "empty": try CheckpointTensor(shape: [0, 5], floats: [])],
            metadata: ["format": "pt", "note": "ü \"x\""])
        let file = url("ours.safetensors")
        try contents.write(to: file)
        let description = try describe(file)
        XCTAssertEqual(description.reader, "safetensors.torch")
        XCTAssertEqual(description.metadata, contents.metadata)
        let read = description.tensors
        XCTAssertEqual(Set(read.keys), Set(contents.tensors.keys))
        for (name, tensor) in contents.tensors {
            let entry = try XCTUnwrap(read[name])
            XCTAssertEqual(entry.dtype, SafeTensors.name(of: tensor.dtype), name)
            XCTAssertEqual(entry.shape, tensor.shape.dimensions, name)
            let bits: [Int64] = tensor.floats.map { $0.map { Int64(Int32(bitPattern: $0.bitPattern)) } }
                ?? tensor.ints!.map(Int64.init)
            XCTAssertEqual(entry.bits, bits, "\(name), seed \(seed)")
        }
    }

    func testWeReadPyTorchFiles() throws {
        try requirePyTorchSafetensors()
        let file = url("theirs.safetensors")
        let result = try runPython([peerScript, "write", file.path, "--seed", String(seed % 1_000_000)])
        XCTAssertEqual(result.status, 0, result.output)
        let contents = try CheckpointContents(contentsOf: file)
        let expected = try describe(file).tensors
        XCTAssertEqual(Set(contents.tensors.keys), Set(expected.keys))
        XCTAssertEqual(contents.metadata, ["writer": "safetensors_check.py", "seed": String(seed % 1_000_000)])
        for (name, entry) in expected {
            let tensor = try XCTUnwrap(contents.tensors[name])
            XCTAssertEqual(tensor.shape.dimensions, entry.shape, name)
            let bits: [Int64] = tensor.floats.map { $0.map { Int64(Int32(bitPattern: $0.bitPattern)) } }
                ?? tensor.ints!.map(Int64.init)
            XCTAssertEqual(bits, entry.bits, name)
        }
        // Files with half precision are refused with the dtype's name.
        let half = url("half.safetensors")
        let halfResult = try runPython([peerScript, "write", half.path, "--dtype", "bfloat16"])
        XCTAssertEqual(halfResult.status, 0, halfResult.output)
        XCTAssertThrowsError(try CheckpointContents(contentsOf: half)) { error in
            guard case let .unsupportedDType(_, _, dtype)? = error as? CheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(dtype, "BF16")
        }
    }

    /// A PyTorch MLP's state_dict loads into `makeMLP` and gives PyTorch's outputs.
    func testPyTorchMLPWeightsReproduceItsOutputs() throws {
        try requirePyTorchSafetensors()
        let file = url("mlp.safetensors")
        let result = try runPython([peerScript, "mlp", file.path, "--sizes", "13,33,7,5", "--batch", "9",
                                    "--seed", String(seed % 1_000_000)])
        XCTAssertEqual(result.status, 0, result.output)
        var contents = try CheckpointContents(contentsOf: file)
        let input = try XCTUnwrap(contents.tensors.removeValue(forKey: "input"))
        let output = try XCTUnwrap(contents.tensors.removeValue(forKey: "output"))
        let model = try makeMLP(inputSize: 13, hiddenSizes: [33, 7], outputSize: 5)
        let report = try model.load(contents)
        XCTAssertEqual(report.loadedNames, ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"])
        let ours = try model(input.tensor(on: .cpu)).scalars()
        let theirs = try XCTUnwrap(output.floats)
        XCTAssertEqual(ours.count, theirs.count)
        let scale = theirs.map(abs).max() ?? 1
        for (a, b) in zip(ours, theirs) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, scale), "seed \(seed)") }
    }

    /// R2 both ways: PyTorch's weights give PyTorch's outputs in Opal, and Opal's checkpoint loads into
    /// the PyTorch module with `strict=True` and gives Opal's outputs there.
    func testCNNInterchangesWithPyTorch() throws {
        try requirePyTorchSafetensors()
        let theirs = url("torch-cnn.safetensors")
        let written = try runPython([peerScript, "cnn", theirs.path, "--batch", "3", "--seed", String(seed % 1_000_000)])
        XCTAssertEqual(written.status, 0, written.output)
        var contents = try CheckpointContents(contentsOf: theirs)
        let input = try XCTUnwrap(contents.tensors.removeValue(forKey: "input"))
        let output = try XCTUnwrap(try contents.tensors.removeValue(forKey: "output")?.floats)
        let model = try CNN.simple()
        try model.load(contents)   // strict: every parameter, nothing else
        let ours = try model(input.tensor(on: .cpu)).scalars()
        XCTAssertEqual(ours.count, output.count)
        let scale = max(1, output.map(abs).max() ?? 1)
        for (a, b) in zip(ours, output) { XCTAssertEqual(a, b, accuracy: 1e-5 * scale, "seed \(seed)") }

        Random.seed(seed)
        let mine = try CNN.simple()
        let x = try Tensor.normal([2, 1, 28, 28], seed: UInt32(truncatingIfNeeded: seed), on: .cpu)
        let y = try mine(x)
        let file = url("opal-cnn.safetensors")
        try mine.save(to: file, extraTensors: ["input": x, "output": y])
        let checked = try runPython([peerScript, "check-cnn", file.path])
        XCTAssertEqual(checked.status, 0, "PyTorch's output differs from Opal's: \(checked.output)")
        XCTAssertTrue(checked.output.contains("max_abs_difference"), checked.output)
    }

    /// The native CPU, and the first OpenCL device (PoCL here) when there is one.
    private var devices: [Device] {
        var result: [Device] = [.cpu]
        if !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0) { result.append(device) }
        return result
    }

    /// The GPT both ways (vocabulary 11, context 16, d_model 32, 4 heads, 2 blocks), on every device: PyTorch's
    /// `pytorch_reference.GPT` state_dict loads strictly into an Opal GPT and gives PyTorch's logits (computed in
    /// float64) on the same ids; Opal's checkpoint loads into the PyTorch module with `strict=True` and gives
    /// Opal's logits there (`check-gpt`). Every tensor is perturbed on both sides (biases, layer-norm gains and
    /// offsets included) and the ids cover the whole context on one side, so every parameter matters.
    func testGPTInterchangesWithPyTorch() throws {
        try requirePyTorchSafetensors()
        let configuration = GPT.Configuration(vocabularySize: 11, contextLength: 16, modelSize: 32, headCount: 4, blockCount: 2)
        let vocabulary = Array("abcdefghijk".unicodeScalars)
        for (index, device) in devices.enumerated() {
            let context = "\(device.name), seed \(seed)"
            // PyTorch → Opal: 3 sequences of 13 ids (not the whole context, so the cut of positions is checked).
            let theirs = url("torch-gpt-\(index).safetensors")
            let written = try runPython([peerScript, "gpt", theirs.path, "--vocabulary", "11", "--context", "16",
                                         "--width", "32", "--heads", "4", "--blocks", "2", "--batch", "3", "--time", "13",
                                         "--seed", String((seed &+ UInt64(index)) % 1_000_000)])
            XCTAssertEqual(written.status, 0, written.output)
            var contents = try CheckpointContents(contentsOf: theirs)
            let input = try XCTUnwrap(contents.tensors.removeValue(forKey: "input"))
            let output = try XCTUnwrap(try contents.tensors.removeValue(forKey: "output")?.floats)
            XCTAssertEqual(contents.metadata["opal.model"], "gpt")
            let model = try GPT(configuration)
            model.setTraining(false)
            try model.move(to: device)
            let report = try model.load(contents)   // strict: every parameter, nothing else
            XCTAssertEqual(report.loadedNames, model.namedParameters.map(\.name), context)
            let ours = try withoutGradients { try model(input.tensor(on: device)).scalars() }
            XCTAssertEqual(ours.count, 3 * 13 * 11, context)
            XCTAssertEqual(ours.count, output.count, context)
            let scale = max(1, output.map(abs).max() ?? 1)
            var largest: Float = 0
            for (a, b) in zip(ours, output) { largest = max(largest, abs(a - b)) }
            XCTAssertLessThanOrEqual(largest, 1e-5 * scale, "PyTorch → Opal GPT logits, \(context)")

            // Opal → PyTorch: 2 sequences over the whole context.
            Random.seed(seed &+ UInt64(index))
            let mine = try GPT(configuration)
            try withoutGradients {
                for (offset, (_, parameter)) in mine.namedParameters.enumerated() {
                    let noise = try Tensor.normal(parameter.shape, standardDeviation: 0.1,
                                                  seed: UInt32(truncatingIfNeeded: seed &+ UInt64(100 * index + offset)), on: .cpu)
                    try parameter.assign(parameter.value + noise)
                }
            }
            mine.setTraining(false)
            try mine.move(to: device)
            let ids = (0..<(2 * 16)).map { _ in Int32.random(in: 0..<11, using: &generator) }
            let x = try Tensor(ids, shape: [2, 16], on: device)
            let y = try withoutGradients { try mine(x) }
            let file = url("opal-gpt-\(index).safetensors")
            try mine.save(to: file, metadata: mine.descriptionMetadata(vocabulary: vocabulary, textName: "random ids"),
                          extraTensors: ["input": x, "output": y])
            let checked = try runPython([peerScript, "check-gpt", file.path])
            XCTAssertEqual(checked.status, 0, "PyTorch's GPT logits differ from Opal's (\(context)): \(checked.output)")
            XCTAssertTrue(checked.output.contains("max_abs_difference"), checked.output)
            print("SafeTensorsTests GPT on \(device.name): PyTorch → Opal max |Δ| \(largest) (scale \(scale)); "
                  + "Opal → PyTorch \(checked.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
