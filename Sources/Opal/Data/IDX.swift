import Foundation

/// Element types of the IDX format (the third byte of the magic number).
public enum IDXElementType: UInt8, Sendable, CaseIterable {
    case uint8 = 0x08
    case int8 = 0x09
    case int16 = 0x0B
    case int32 = 0x0C
    case float32 = 0x0D
    case float64 = 0x0E

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .uint8, .int8: return 1
        case .int16: return 2
        case .int32, .float32: return 4
        case .float64: return 8
        }
    }
}

/// The contents of one IDX file: a dense row-major array of `dimensions` whose elements are stored
/// big-endian in `payload` (the bytes after the header).
public struct IDXArray: Sendable {
    public var elementType: IDXElementType
    /// e.g. [60000, 28, 28] for Fashion-MNIST training images, [60000] for its labels.
    public var dimensions: [Int]
    /// `count × elementType.byteCount` bytes, big-endian.
    public var payload: [UInt8]

    public init(elementType: IDXElementType, dimensions: [Int], payload: [UInt8]) {
        self.elementType = elementType
        self.dimensions = dimensions
        self.payload = payload
    }

    /// The number of elements (product of `dimensions`).
    public var count: Int { dimensions.reduce(1, *) }

    /// The elements converted to `Float` and multiplied by `scale` (e.g. 1/255 for pixels).
    public func floatValues(scale: Float = 1) -> [Float] {
        let count = self.count
        return payload.withUnsafeBufferPointer { bytes in
            [Float](unsafeUninitializedCapacity: count) { out, initialized in
                let source = bytes.baseAddress!
                let destination = out.baseAddress!
                switch elementType {
                case .uint8:
                    for i in 0..<count { destination[i] = Float(source[i]) * scale }
                case .int8:
                    for i in 0..<count { destination[i] = Float(Int8(bitPattern: source[i])) * scale }
                case .int16:
                    for i in 0..<count { destination[i] = Float(Int16(bitPattern: Self.bigEndian16(source, i))) * scale }
                case .int32:
                    for i in 0..<count { destination[i] = Float(Int32(bitPattern: Self.bigEndian32(source, i))) * scale }
                case .float32:
                    for i in 0..<count { destination[i] = Float(bitPattern: Self.bigEndian32(source, i)) * scale }
                case .float64:
                    for i in 0..<count { destination[i] = Float(Double(bitPattern: Self.bigEndian64(source, i))) * scale }
                }
                initialized = count
            }
        }
    }

    /// The elements as integers; nil for floating-point element types.
    public func integerValues() -> [Int32]? {
        let count = self.count
        return payload.withUnsafeBufferPointer { bytes -> [Int32]? in
            let source = bytes.baseAddress!
            switch elementType {
            case .uint8: return (0..<count).map { Int32(source[$0]) }
            case .int8: return (0..<count).map { Int32(Int8(bitPattern: source[$0])) }
            case .int16: return (0..<count).map { Int32(Int16(bitPattern: Self.bigEndian16(source, $0))) }
            case .int32: return (0..<count).map { Int32(bitPattern: Self.bigEndian32(source, $0)) }
            case .float32, .float64: return nil
            }
        }
    }

    @inline(__always)
    private static func bigEndian16(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt16 {
        UInt16(p[2 * i]) << 8 | UInt16(p[2 * i + 1])
    }

    @inline(__always)
    private static func bigEndian32(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt32 {
        let b = p + 4 * i
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }

    @inline(__always)
    private static func bigEndian64(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt64 {
        UInt64(bigEndian32(p, 2 * i)) << 32 | UInt64(bigEndian32(p, 2 * i + 1))
    }
}

/// Reader for the IDX format of MNIST and Fashion-MNIST.
///
/// Layout: bytes 0–1 are zero, byte 2 is the element type (`IDXElementType`), byte 3 the number of
/// dimensions d; then d big-endian UInt32 sizes; then the elements, big-endian, row-major.
/// The file must hold exactly that many bytes.
public enum IDXFile {
    /// Reads an IDX file, gzip-compressed (detected by its magic number) or plain.
    /// - Throws: `DataError` naming the file: unreadable, corrupt gzip, bad magic, unsupported type,
    ///   dimension overflow, truncated, or trailing bytes.
    public static func read(contentsOf url: URL) throws -> IDXArray {
        let path = url.path
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            if !FileManager.default.fileExists(atPath: path) {
                throw DataError.unreadableFile(path: path, reason: "no such file")
            }
            throw DataError.unreadableFile(path: path, reason: error.localizedDescription)
        }
        let bytes: [UInt8] = Gzip.isGzip(data) ? try Gzip.decompress(data, path: path) : [UInt8](data)
        return try parse(bytes, path: path)
    }

    /// Parses the bytes of an (uncompressed) IDX file; `path` names it in errors.
    public static func parse(_ bytes: [UInt8], path: String) throws -> IDXArray {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw DataError.badMagic(path: path, found: Array(bytes.prefix(4)))
        }
        guard let elementType = IDXElementType(rawValue: bytes[2]) else {
            throw DataError.unsupportedElementType(path: path, code: bytes[2])
        }
        let rank = Int(bytes[3])
        let headerSize = 4 + 4 * rank
        guard bytes.count >= headerSize else {
            throw DataError.truncated(path: path, expectedBytes: headerSize, actualBytes: bytes.count)
        }
        var dimensions: [Int] = []
        dimensions.reserveCapacity(rank)
        for axis in 0..<rank {
            let offset = 4 + 4 * axis
            let size = UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
                | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
            dimensions.append(Int(size))
        }
        var payloadSize = elementType.byteCount
        for size in dimensions {
            let (product, overflow) = payloadSize.multipliedReportingOverflow(by: size)
            guard !overflow, product <= Int.max - headerSize else {
                throw DataError.dimensionOverflow(path: path, dimensions: dimensions)
            }
            payloadSize = product
        }
        let expected = headerSize + payloadSize
        if bytes.count < expected {
            throw DataError.truncated(path: path, expectedBytes: expected, actualBytes: bytes.count)
        }
        if bytes.count > expected {
            throw DataError.trailingBytes(path: path, expectedBytes: expected, actualBytes: bytes.count)
        }
        return IDXArray(elementType: elementType, dimensions: dimensions, payload: Array(bytes[headerSize...]))
    }
}
