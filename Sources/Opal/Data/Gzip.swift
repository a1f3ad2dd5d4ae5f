import CZlib
import Foundation

/// gzip and zlib decompression through the system zlib.
public enum Gzip {
    /// The default cap on decompressed output: 1 GiB.
    public static let defaultMaximumOutputSize = 1 << 30

    /// Inflates gzip or zlib data (the header is detected: zlib `windowBits` 15 + 32).
    /// Concatenated gzip members are decompressed one after another, as `gunzip` does.
    ///
    /// - Parameters:
    ///   - data: the compressed bytes.
    ///   - maximumOutputSize: the most bytes to produce; more throws `decompressedSizeLimitExceeded`.
    ///   - path: the file name to put in errors, if any.
    /// - Throws: `DataError.corruptCompressedData` for damaged or truncated input.
    public static func decompress(_ data: Data, maximumOutputSize: Int = defaultMaximumOutputSize,
                                  path: String? = nil) throws -> [UInt8] {
        guard !data.isEmpty else {
            throw DataError.corruptCompressedData(path: path, reason: "the input is empty")
        }
        return try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) -> [UInt8] in
            try inflate(input, maximumOutputSize: maximumOutputSize, path: path)
        }
    }

    /// Convenience for byte arrays.
    public static func decompress(_ bytes: [UInt8], maximumOutputSize: Int = defaultMaximumOutputSize,
                                  path: String? = nil) throws -> [UInt8] {
        try decompress(Data(bytes), maximumOutputSize: maximumOutputSize, path: path)
    }

    /// True when `bytes` start with the gzip magic number 1F 8B.
    public static func isGzip(_ bytes: some Collection<UInt8>) -> Bool {
        var iterator = bytes.makeIterator()
        return iterator.next() == 0x1F && iterator.next() == 0x8B
    }

    private static func inflate(_ input: UnsafeRawBufferPointer, maximumOutputSize: Int,
                                path: String?) throws -> [UInt8] {
        var stream = z_stream()
        let headerDetection: Int32 = 15 + 32
        var status = inflateInit2_(&stream, headerDetection, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            throw DataError.corruptCompressedData(path: path, reason: "inflateInit2 failed (\(status))")
        }
        defer { inflateEnd(&stream) }

        let base = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress!)
        var consumed = 0
        // Guess 4× the input (gzip of images compresses ~2–5×), grown by doubling.
        var output = [UInt8](repeating: 0, count: min(maximumOutputSize, max(4096, input.count * 4)))
        var produced = 0

        while true {
            if produced == output.count {
                guard output.count < maximumOutputSize else {
                    throw DataError.decompressedSizeLimitExceeded(path: path, limit: maximumOutputSize)
                }
                output.append(contentsOf: repeatElement(0, count: min(output.count, maximumOutputSize - output.count)))
            }
            let chunkIn = min(input.count - consumed, Int(UInt32.max))
            let chunkOut = min(output.count - produced, Int(UInt32.max))
            stream.next_in = base + consumed
            stream.avail_in = uInt(chunkIn)
            status = output.withUnsafeMutableBufferPointer { buffer -> Int32 in
                stream.next_out = buffer.baseAddress! + produced
                stream.avail_out = uInt(chunkOut)
                return CZlib.inflate(&stream, Z_NO_FLUSH)
            }
            consumed += chunkIn - Int(stream.avail_in)
            produced += chunkOut - Int(stream.avail_out)

            switch status {
            case Z_STREAM_END:
                if consumed == input.count {
                    output.removeSubrange(produced...)
                    return output
                }
                // Another gzip member follows.
                guard inflateReset(&stream) == Z_OK else {
                    throw DataError.corruptCompressedData(path: path, reason: "inflateReset failed")
                }
            case Z_OK:
                continue
            case Z_BUF_ERROR:
                // No progress possible: either the output is full (grow it) or the input ran out.
                if produced == output.count { continue }
                throw DataError.corruptCompressedData(
                    path: path, reason: "unexpected end of data after \(consumed) of \(input.count) bytes "
                        + "(the file is truncated)")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                throw DataError.corruptCompressedData(path: path, reason: "\(message) at input byte \(consumed)")
            }
        }
    }
}
