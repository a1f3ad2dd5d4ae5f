import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The safetensors file format (Hugging Face; read by PyTorch, JAX, MLX …).
///
/// Layout of a file:
///
///     [8 bytes]  N, the header length, little-endian UInt64
///     [N bytes]  UTF-8 JSON: {"__metadata__": {"key": "value", …},
///                             "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, …}
///                padded with spaces to a multiple of 8 bytes
///     [rest]     the byte buffer: each tensor little-endian, contiguous row-major, at
///                buffer[begin..<end] (offsets relative to the buffer's start)
///
/// The buffer must be covered exactly: sorted by offset, the tensors follow each other without gaps or
/// overlaps, and the last one ends at the end of the file. Opal reads and writes `F32` and `I32`.
///
/// The writer matches the reference implementation byte for byte for these dtypes: F32 tensors, then
/// I32 tensors, each sorted by name; `__metadata__` first (omitted when empty; its keys sorted, where
/// the reference's order is arbitrary); compact JSON; header padded with spaces.
/// It writes atomically (temporary file in the same directory, `fsync`, `rename`), so a failed save
/// leaves the previous file untouched.
public enum SafeTensors {
    /// Headers longer than this are rejected as corrupt (the reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000
    /// The header (and so the buffer's start) is padded to a multiple of this many bytes.
    static let headerAlignment = 8
    static let metadataKey = "__metadata__"

    // MARK: Reading

    /// Reads and validates a whole file.
    /// - Throws: `CheckpointError` naming the file and the problem.
    public static func read(from url: URL) throws -> CheckpointContents {
        let path = url.path
        let bytes = try readFile(at: path)
        return try bytes.withUnsafeBytes { try decode($0, path: path) }
    }

    /// Decodes the bytes of a safetensors file. `path` only names the source in errors.
    public static func decode(_ data: Data, path: String = "<memory>") throws -> CheckpointContents {
        try data.withUnsafeBytes { try decode($0, path: path) }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, path: String) throws -> CheckpointContents {
        guard bytes.count >= 8 else { throw CheckpointError.fileTooShort(path: path, byteCount: bytes.count) }
        var headerLength: UInt64 = 0
        for index in (0..<8).reversed() { headerLength = headerLength << 8 | UInt64(bytes[index]) }
        guard headerLength <= UInt64(maximumHeaderLength), headerLength <= UInt64(bytes.count - 8) else {
            throw CheckpointError.invalidHeaderLength(path: path, headerLength: headerLength, fileSize: bytes.count)
        }
        let bufferStart = 8 + Int(headerLength)
        let header = UnsafeRawBufferPointer(rebasing: bytes[8..<bufferStart])
        let buffer = UnsafeRawBufferPointer(rebasing: bytes[bufferStart...])
        let (entries, metadata) = try parseHeader(header, bufferSize: buffer.count, path: path)
        try validateLayout(entries, bufferSize: buffer.count, path: path)

        var tensors: [String: CheckpointTensor] = [:]
        tensors.reserveCapacity(entries.count)
        for entry in entries {
            let source = UnsafeRawBufferPointer(rebasing: buffer[entry.begin..<entry.end])
            let values: CheckpointTensor.Values
            switch entry.dtype {
            case .float32:
                var floats = copyElements(source, as: Float.self)
                #if _endian(big)
                floats = floats.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) }
                #endif
                values = .float32(floats)
            case .int32:
                var ints = copyElements(source, as: Int32.self)
                #if _endian(big)
                ints = ints.map { Int32(littleEndian: $0) }
                #endif
                values = .int32(ints)
            }
            tensors[entry.name] = CheckpointTensor(uncheckedShape: entry.shape, values: values)
        }
        return CheckpointContents(tensors: tensors, metadata: metadata)
    }

    /// One tensor's entry in the header, validated against the buffer size.
    struct Entry {
        var name: String
        var dtype: DType
        var shape: Shape
        var begin: Int
        var end: Int
    }

    /// The dtype names of the format, and the ones Opal reads.
    static func dtype(named name: String) -> DType? {
        switch name {
        case "F32": return .float32
        case "I32": return .int32
        default: return nil
        }
    }

    static func name(of dtype: DType) -> String {
        switch dtype {
        case .float32: return "F32"
        case .int32: return "I32"
        }
    }

    static func parseHeader(_ header: UnsafeRawBufferPointer, bufferSize: Int,
                            path: String) throws -> (entries: [Entry], metadata: [String: String]) {
        guard String(validating: header, as: UTF8.self) != nil else {
            throw CheckpointError.malformedHeader(path: path, reason: "the header is not valid UTF-8")
        }
        guard header.first == UInt8(ascii: "{") else {
            throw CheckpointError.malformedHeader(path: path, reason: "the header is not a JSON object (it must start with '{')")
        }
        let document: JSONValue
        do {
            var parser = JSONParser(header)
            document = try parser.parseDocument()
        } catch let error as JSONParser.Failure {
            switch error {
            case let .duplicateKey(key, depth) where depth == 1:
                throw CheckpointError.duplicateName(path: path, name: key)
            case let .duplicateKey(key, _):
                throw CheckpointError.malformedHeader(path: path, reason: "duplicate key \"\(key)\" in a header entry")
            case let .syntax(message, offset):
                throw CheckpointError.malformedHeader(path: path, reason: "invalid JSON at byte \(offset) of the header: \(message)")
            }
        }
        guard case let .object(members) = document else {
            throw CheckpointError.malformedHeader(path: path, reason: "the header is not a JSON object")
        }

        var entries: [Entry] = []
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == metadataKey {
                metadata = try parseMetadata(value, path: path)
            } else {
                entries.append(try parseEntry(name: name, value, bufferSize: bufferSize, path: path))
            }
        }
        return (entries, metadata)
    }

    static func parseMetadata(_ value: JSONValue, path: String) throws -> [String: String] {
        switch value {
        case .null:
            return [:]
        case let .object(members):
            var metadata: [String: String] = [:]
            for (key, item) in members {
                guard case let .string(text) = item else {
                    throw CheckpointError.malformedHeader(
                        path: path, reason: "__metadata__[\"\(key)\"] is \(item.kindName), but metadata values must be strings")
                }
                metadata[key] = text
            }
            return metadata
        default:
            throw CheckpointError.malformedHeader(
                path: path, reason: "__metadata__ is \(value.kindName), but it must be an object of strings")
        }
    }

    static func parseEntry(name: String, _ value: JSONValue, bufferSize: Int, path: String) throws -> Entry {
        guard case let .object(members) = value else {
            throw CheckpointError.malformedHeader(path: path, reason: "the entry of tensor \"\(name)\" is \(value.kindName), not an object")
        }
        func field(_ key: String) throws -> JSONValue {
            guard let found = members.first(where: { $0.key == key }) else {
                throw CheckpointError.malformedHeader(path: path, reason: "the entry of tensor \"\(name)\" has no \"\(key)\" field")
            }
            return found.value
        }
        // dtype
        guard case let .string(dtypeName) = try field("dtype") else {
            throw CheckpointError.malformedHeader(path: path, reason: "the dtype of tensor \"\(name)\" is not a string")
        }
        guard let dtype = dtype(named: dtypeName) else {
            throw CheckpointError.unsupportedDType(path: path, tensor: name, dtype: dtypeName)
        }
        // shape
        guard case let .array(shapeItems) = try field("shape") else {
            throw CheckpointError.invalidShape(path: path, tensor: name, reason: "the shape is not an array")
        }
        // The element count folds left to right like the reference implementation (and `Shape.count`),
        // so every accepted shape's `count` is computable without overflow.
        var dimensions: [Int] = []
        var elementCount = 1
        var overflow = false
        for item in shapeItems {
            switch item {
            case let .integer(dimension) where dimension >= 0:
                dimensions.append(dimension)
                if !overflow {
                    (elementCount, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
                }
            case let .integer(dimension):
                throw CheckpointError.invalidShape(path: path, tensor: name, reason: "dimension \(dimension) is negative")
            case let .number(text):
                throw CheckpointError.invalidShape(path: path, tensor: name, reason: "dimension \(text) is not an integer that fits in 64 bits")
            default:
                throw CheckpointError.invalidShape(path: path, tensor: name, reason: "a dimension is \(item.kindName), not an integer")
            }
        }
        let byteCount: Int
        (byteCount, overflow) = overflow ? (0, true) : elementCount.multipliedReportingOverflow(by: dtype.byteSize)
        if overflow {
            throw CheckpointError.invalidShape(
                path: path, tensor: name, reason: "the byte size of shape \(Shape(dimensions)) overflows 64 bits")
        }
        // data_offsets
        guard case let .array(offsetItems) = try field("data_offsets"), offsetItems.count == 2 else {
            throw CheckpointError.invalidDataOffsets(path: path, tensor: name, reason: "data_offsets must be an array of two integers")
        }
        var offsets: [Int] = []
        for item in offsetItems {
            switch item {
            case let .integer(offset) where offset >= 0:
                offsets.append(offset)
            case let .integer(offset):
                throw CheckpointError.invalidDataOffsets(path: path, tensor: name, reason: "offset \(offset) is negative")
            case let .number(text):
                throw CheckpointError.invalidDataOffsets(path: path, tensor: name, reason: "offset \(text) is not an integer that fits in 64 bits")
            default:
                throw CheckpointError.invalidDataOffsets(path: path, tensor: name, reason: "an offset is \(item.kindName), not an integer")
            }
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else {
            throw CheckpointError.invalidDataOffsets(path: path, tensor: name, reason: "begin \(begin) is after end \(end)")
        }
        guard end <= bufferSize else {
            throw CheckpointError.invalidDataOffsets(
                path: path, tensor: name, reason: "range \(begin)..<\(end) lies outside the \(bufferSize)-byte data buffer")
        }
        guard end - begin == byteCount else {
            throw CheckpointError.invalidDataOffsets(
                path: path, tensor: name,
                reason: "range \(begin)..<\(end) holds \(end - begin) bytes, but \(dtypeName) \(Shape(dimensions)) needs \(byteCount)")
        }
        return Entry(name: name, dtype: dtype, shape: Shape(dimensions), begin: begin, end: end)
    }

    /// The spec requires the tensors, sorted by offset, to tile the buffer exactly.
    static func validateLayout(_ entries: [Entry], bufferSize: Int, path: String) throws {
        let sorted = entries.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var covered = 0
        var previous: String?
        for entry in sorted {
            if entry.begin < covered, let previous {
                throw CheckpointError.invalidLayout(
                    path: path, reason: "tensor \"\(entry.name)\" (bytes \(entry.begin)..<\(entry.end)) overlaps tensor \"\(previous)\" (ending at byte \(covered))")
            }
            if entry.begin > covered {
                throw CheckpointError.invalidLayout(
                    path: path, reason: "bytes \(covered)..<\(entry.begin) of the data buffer belong to no tensor (a hole before \"\(entry.name)\")")
            }
            covered = entry.end
            previous = entry.name
        }
        if covered != bufferSize {
            throw CheckpointError.invalidLayout(
                path: path, reason: "bytes \(covered)..<\(bufferSize) at the end of the data buffer belong to no tensor")
        }
    }

    /// The elements stored in `bytes` (any alignment), copied as they are (file byte order).
    static func copyElements<Element: BitwiseCopyable>(_ bytes: UnsafeRawBufferPointer, as _: Element.Type) -> [Element] {
        let count = bytes.count / MemoryLayout<Element>.stride
        return [Element](unsafeUninitializedCapacity: count) { destination, initialized in
            if count > 0 {
                UnsafeMutableRawBufferPointer(destination).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: bytes[0..<count * MemoryLayout<Element>.stride]))
            }
            initialized = count
        }
    }

    /// The whole file; never allocates more than its size.
    static func readFile(at path: String) throws -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw CheckpointError.unreadableFile(path: path, reason: errnoDescription()) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw CheckpointError.unreadableFile(path: path, reason: errnoDescription())
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw CheckpointError.unreadableFile(path: path, reason: "not a regular file")
        }
        let size = Int(status.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            let result = bytes.withUnsafeMutableBytes { buffer in
                systemRead(descriptor, buffer.baseAddress! + filled, size - filled)
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.unreadableFile(path: path, reason: errnoDescription())
            }
            if result == 0 { break }   // the file shrank while we read it
            filled += result
        }
        if filled < size { bytes.removeSubrange(filled...) }
        return bytes
    }

    // MARK: Writing

    /// The bytes of a file holding `contents` (the same bytes `write(_:to:)` stores).
    public static func encode(_ contents: CheckpointContents) throws -> Data {
        let plan = try Plan(contents)
        var data = Data(capacity: plan.totalSize)
        data.append(contentsOf: plan.prefix)
        for name in plan.names {
            plan.withBytes(of: name) { data.append(contentsOf: $0) }
        }
        return data
    }

    /// Writes `contents` to `url` atomically: a temporary file in the same directory is written,
    /// flushed to disk (`fsync`) and renamed over `url`. On any error the temporary file is removed
    /// and a previous file at `url` is left as it was.
    /// - Throws: `CheckpointError.invalidContents` (reserved name, header too large) or `.writeFailed`.
    public static func write(_ contents: CheckpointContents, to url: URL) throws {
        try write(contents, to: url, faults: WriteFaults())
    }

    /// Failure points for tests of the atomic write (all off by default).
    struct WriteFaults: Sendable {
        /// Fail with ENOSPC once this many bytes of the temporary file have been written.
        var failAfterByteCount: Int?
        /// Fail instead of calling `fsync`.
        var failSync = false
        /// Fail instead of renaming the temporary file over the target.
        var failRename = false
    }

    static func write(_ contents: CheckpointContents, to url: URL, faults: WriteFaults) throws {
        let plan = try Plan(contents)
        let path = url.path
        let directory = url.deletingLastPathComponent()
        let temporaryPath = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp").path
        let descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw CheckpointError.writeFailed(
                path: path, reason: "cannot create a temporary file in \(directory.path): \(errnoDescription())")
        }
        var isOpen = true
        do {
            var written = 0
            func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
                var offset = 0
                while offset < bytes.count {
                    var chunk = bytes.count - offset
                    if let limit = faults.failAfterByteCount {
                        if written >= limit {
                            throw CheckpointError.writeFailed(path: path, reason: "injected failure: \(String(cString: strerror(ENOSPC)))")
                        }
                        chunk = min(chunk, limit - written)
                    }
                    let result = systemWrite(descriptor, bytes.baseAddress! + offset, chunk)
                    if result < 0 {
                        if errno == EINTR { continue }
                        throw CheckpointError.writeFailed(path: path, reason: errnoDescription())
                    }
                    offset += result
                    written += result
                }
            }
            try plan.prefix.withUnsafeBytes { try writeAll($0) }
            for name in plan.names { try plan.withBytes(of: name) { try writeAll($0) } }
            if faults.failSync {
                throw CheckpointError.writeFailed(path: path, reason: "injected failure: fsync: \(String(cString: strerror(EIO)))")
            }
            guard fsync(descriptor) == 0 else {
                throw CheckpointError.writeFailed(path: path, reason: "fsync: \(errnoDescription())")
            }
            isOpen = false
            guard close(descriptor) == 0 else {
                throw CheckpointError.writeFailed(path: path, reason: "close: \(errnoDescription())")
            }
            if faults.failRename {
                throw CheckpointError.writeFailed(path: path, reason: "injected failure: rename: \(String(cString: strerror(EXDEV)))")
            }
            guard rename(temporaryPath, path) == 0 else {
                throw CheckpointError.writeFailed(path: path, reason: "cannot replace the file: \(errnoDescription())")
            }
        } catch {
            if isOpen { close(descriptor) }
            unlink(temporaryPath)
            throw error
        }
        // Make the rename itself durable; failing here loses nothing already written, so it is not an error.
        let directoryDescriptor = open(directory.path, O_RDONLY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            _ = fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    /// The header and the order of the tensors of one file.
    struct Plan {
        /// The 8-byte length followed by the padded JSON header.
        var prefix: [UInt8]
        /// Tensor names in file order.
        var names: [String]
        var tensors: [String: CheckpointTensor]
        var totalSize: Int

        init(_ contents: CheckpointContents) throws {
            if contents.tensors[SafeTensors.metadataKey] != nil {
                throw CheckpointError.invalidContents(reason: "\"\(SafeTensors.metadataKey)\" is reserved and cannot name a tensor")
            }
            // The reference implementation's order: by dtype (F32 before I32), then by name's bytes.
            names = contents.tensors.keys.sorted { a, b in
                let (rankA, rankB) = (SafeTensors.fileOrder(contents.tensors[a]!.dtype), SafeTensors.fileOrder(contents.tensors[b]!.dtype))
                return rankA != rankB ? rankA < rankB : a.utf8.lexicographicallyPrecedes(b.utf8)
            }
            tensors = contents.tensors
            var json = "{"
            var members: [String] = []
            if !contents.metadata.isEmpty {
                let keys = contents.metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                let pairs = keys.map { "\(SafeTensors.quoted($0)):\(SafeTensors.quoted(contents.metadata[$0]!))" }
                members.append("\(SafeTensors.quoted(SafeTensors.metadataKey)):{\(pairs.joined(separator: ","))}")
            }
            var offset = 0
            for name in names {
                let tensor = contents.tensors[name]!
                let size = tensor.count * tensor.dtype.byteSize
                let shape = tensor.shape.dimensions.map(String.init).joined(separator: ",")
                members.append("\(SafeTensors.quoted(name)):{\"dtype\":\"\(SafeTensors.name(of: tensor.dtype))\","
                               + "\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + size)]}")
                offset += size
            }
            json += members.joined(separator: ",") + "}"
            var header = Array(json.utf8)
            let padding = (SafeTensors.headerAlignment - header.count % SafeTensors.headerAlignment) % SafeTensors.headerAlignment
            header += [UInt8](repeating: UInt8(ascii: " "), count: padding)
            guard header.count <= SafeTensors.maximumHeaderLength else {
                throw CheckpointError.invalidContents(
                    reason: "the header would be \(header.count) bytes, over the limit of \(SafeTensors.maximumHeaderLength)")
            }
            let length = UInt64(header.count)
            prefix = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) } + header
            totalSize = prefix.count + offset
        }

        /// The little-endian bytes of one tensor.
        func withBytes<Result>(of name: String, _ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
            switch tensors[name]!.values {
            case let .float32(values):
                #if _endian(little)
                return try values.withUnsafeBytes(body)
                #else
                return try values.map { $0.bitPattern.littleEndian }.withUnsafeBytes(body)
                #endif
            case let .int32(values):
                #if _endian(little)
                return try values.withUnsafeBytes(body)
                #else
                return try values.map { $0.littleEndian }.withUnsafeBytes(body)
                #endif
            }
        }
    }

    /// The reference implementation stores tensors by descending dtype (its enum order: … I32, U32, F32 …),
    /// then by name.
    static func fileOrder(_ dtype: DType) -> Int {
        switch dtype {
        case .float32: return 0
        case .int32: return 1
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped, the rest as UTF-8.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    static func errnoDescription() -> String { String(cString: strerror(errno)) }
}

// The C functions, named apart from the Swift methods `read`/`write` of this enum.
private func systemRead(_ descriptor: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(descriptor, buffer, count)
}

private func systemWrite(_ descriptor: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, buffer, count)
}

// MARK: - A small strict JSON parser

/// A parsed JSON value. Objects keep their members in file order; integers that fit in `Int` are
/// `.integer`, every other number keeps its text in `.number`.
enum JSONValue {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    case integer(Int)
    case number(String)
    case bool(Bool)
    case null

    var kindName: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .integer, .number: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }
}

/// RFC 8259 JSON over UTF-8 bytes that reports duplicate object keys (which `JSONSerialization`
/// silently merges) and limits nesting so that hostile input cannot exhaust the stack.
struct JSONParser {
    enum Failure: Error {
        case syntax(String, offset: Int)
        /// `depth` 1 is the top-level object.
        case duplicateKey(String, depth: Int)
    }

    static let maximumDepth = 64
    private let bytes: UnsafeRawBufferPointer
    private var index = 0
    private var depth = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// One value, then only whitespace to the end.
    mutating func parseDocument() throws -> JSONValue {
        let value = try parseValue()
        skipWhitespace()
        if index < bytes.count { throw fail("unexpected \(describeByte()) after the JSON value") }
        return value
    }

    private func fail(_ message: String) -> Failure { .syntax(message, offset: index) }

    private func describeByte() -> String {
        guard index < bytes.count else { return "end of header" }
        let byte = bytes[index]
        return (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func expect(_ character: Character) throws {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == character.asciiValue! else {
            throw fail("expected '\(character)', found \(describeByte())")
        }
        index += 1
    }

    private mutating func parseValue() throws -> JSONValue {
        skipWhitespace()
        guard index < bytes.count else { throw fail("unexpected end of header") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected \(describeByte())")
        }
    }

    private mutating func enter() throws {
        depth += 1
        if depth > Self.maximumDepth { throw fail("nesting deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func parseObject() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        index += 1   // {
        var members: [(key: String, value: JSONValue)] = []
        var keys = Set<String>()
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw fail("expected a string key, found \(describeByte())")
            }
            let key = try parseString()
            guard keys.insert(key).inserted else { throw Failure.duplicateKey(key, depth: depth) }
            try expect(":")
            members.append((key, try parseValue()))
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end of header inside an object") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            throw fail("expected ',' or '}', found \(describeByte())")
        }
    }

    private mutating func parseArray() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        index += 1   // [
        var items: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
        while true {
            items.append(try parseValue())
            skipWhitespace()
            guard index < bytes.count else { throw fail("unexpected end of header inside an array") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            throw fail("expected ',' or ']', found \(describeByte())")
        }
    }

    private mutating func parseLiteral(_ word: String) throws {
        for expected in word.utf8 {
            guard index < bytes.count, bytes[index] == expected else { throw fail("invalid literal (expected \(word))") }
            index += 1
        }
    }

    /// A string; the caller has checked the opening quote. The input is already known to be UTF-8.
    private mutating func parseString() throws -> String {
        index += 1   // "
        var scalars = String.UnicodeScalarView()
        var runStart = index
        func flushRun() {
            if runStart < index {
                scalars.append(contentsOf: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[runStart..<index]),
                                                  as: UTF8.self).unicodeScalars)
            }
        }
        while true {
            guard index < bytes.count else { throw fail("unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                flushRun()
                index += 1
                return String(scalars)
            }
            if byte < 0x20 { throw fail("unescaped control character 0x\(String(byte, radix: 16)) in a string") }
            if byte != UInt8(ascii: "\\") { index += 1; continue }
            flushRun()
            index += 1
            guard index < bytes.count else { throw fail("unterminated escape") }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                var value = try parseHex4()
                if (0xD800..<0xDC00).contains(value) {
                    guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                        throw fail("lone UTF-16 surrogate in a \\u escape")
                    }
                    index += 2
                    let low = try parseHex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid UTF-16 surrogate pair in a \\u escape") }
                    value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(value) {
                    throw fail("lone UTF-16 surrogate in a \\u escape")
                }
                guard let scalar = Unicode.Scalar(value) else { throw fail("invalid \\u escape") }
                scalars.append(scalar)
            default:
                index -= 1
                throw fail("invalid escape \\\(describeByte())")
            }
            runStart = index
        }
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard index + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail("invalid hex digit \(describeByte()) in a \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func parseNumber() throws -> JSONValue {
        let start = index
        func isDigit(_ position: Int) -> Bool {
            position < bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position])
        }
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard isDigit(index) else { throw fail("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if isDigit(index) { throw fail("invalid number (leading zero)") }
        } else {
            while isDigit(index) { index += 1 }
        }
        let integerEnd = index
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard isDigit(index) else { throw fail("invalid number (no digits after '.')") }
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { throw fail("invalid number (no digits in the exponent)") }
            while isDigit(index) { index += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard isInteger else { return .number(text) }
        var value = 0
        for position in (negative ? start + 1 : start)..<integerEnd {
            let digit = Int(bytes[position] - UInt8(ascii: "0"))
            let (scaled, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? scaled.subtractingReportingOverflow(digit) : scaled.addingReportingOverflow(digit)
            if overflow1 || overflow2 { return .number(text) }
            value = next
        }
        return .integer(value)
    }
}
