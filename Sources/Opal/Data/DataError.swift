/// Errors from reading and preparing datasets. Each names the file (or dataset) and what is wrong.
public enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A dataset's files are missing; `hint` says how to install it.
    case datasetNotFound(name: String, path: String, hint: String)
    /// The file exists but cannot be read.
    case unreadableFile(path: String, reason: String)
    /// The gzip/zlib stream is damaged or incomplete. `path` is nil for in-memory data.
    case corruptCompressedData(path: String?, reason: String)
    /// Decompressing would produce more than `limit` bytes.
    case decompressedSizeLimitExceeded(path: String?, limit: Int)
    /// An IDX file does not start with two zero bytes, a known type code and a dimension count.
    case badMagic(path: String, found: [UInt8])
    /// An IDX file declares an element type code Opal does not read.
    case unsupportedElementType(path: String, code: UInt8)
    /// An IDX file's dimensions are negative or their product (× element size) overflows.
    case dimensionOverflow(path: String, dimensions: [Int])
    /// A file is shorter than its header says.
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    /// A file is longer than its header says.
    case trailingBytes(path: String, expectedBytes: Int, actualBytes: Int)
    /// A dataset's parts disagree or hold values out of range (image and label counts, label values …).
    case inconsistentDataset(name: String, reason: String)
    /// A line of a CSV file cannot be parsed.
    case malformedCSV(name: String, line: Int, reason: String)
    /// A resource that should be embedded in the binary is missing.
    case missingResource(name: String)

    public var description: String {
        switch self {
        case let .datasetNotFound(name, path, hint):
            return "\(name) not found at \(path): \(hint)"
        case let .unreadableFile(path, reason):
            return "cannot read \(path): \(reason)"
        case let .corruptCompressedData(path, reason):
            return "\(path ?? "gzip data"): corrupt compressed data: \(reason)"
        case let .decompressedSizeLimitExceeded(path, limit):
            return "\(path ?? "gzip data"): decompressed size exceeds the limit of \(limit) bytes"
        case let .badMagic(path, found):
            let hex = found.map { String($0, radix: 16, uppercase: true) }
                .map { $0.count == 1 ? "0" + $0 : $0 }.joined(separator: " ")
            return "\(path): not an IDX file (bad magic number \(hex.isEmpty ? "<empty>" : hex); "
                + "expected 00 00 <type> <rank>)"
        case let .unsupportedElementType(path, code):
            return "\(path): unsupported IDX element type 0x\(String(code, radix: 16, uppercase: true)) "
                + "(known: 0x08 UInt8, 0x09 Int8, 0x0B Int16, 0x0C Int32, 0x0D Float32, 0x0E Float64)"
        case let .dimensionOverflow(path, dimensions):
            return "\(path): IDX dimensions \(dimensions) are too large (their product overflows)"
        case let .truncated(path, expected, actual):
            return "\(path): truncated: the header declares \(expected) bytes but the file has \(actual)"
        case let .trailingBytes(path, expected, actual):
            return "\(path): \(actual - expected) unexpected bytes after the \(expected) bytes the header declares"
        case let .inconsistentDataset(name, reason):
            return "\(name): \(reason)"
        case let .malformedCSV(name, line, reason):
            return "\(name), line \(line): \(reason)"
        case let .missingResource(name):
            return "embedded resource \(name) is missing from this build of Opal"
        }
    }
}
