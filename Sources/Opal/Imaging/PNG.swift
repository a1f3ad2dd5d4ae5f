import CZlib
import Foundation

/// Why an image could not be encoded or written. Each case names the problem (and the file).
public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Sizes, channel counts or pixel counts that do not describe an image (`what` names the call).
    case invalidImage(what: String, reason: String)
    /// zlib's `compress2` failed with `status`.
    case compressionFailed(status: Int32)
    /// The file could not be written (or moved into place).
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidImage(what, reason): "\(what): \(reason)"
        case let .compressionFailed(status): "PNG: zlib compress2 failed with status \(status)"
        case let .writeFailed(path, reason): "cannot write \(path): \(reason)"
        }
    }
}

/// A minimal PNG encoder: 8-bit grayscale or RGB, no interlacing, filter type 0 (None) on every row,
/// the image data deflated by zlib's `compress2` (a single zlib stream split over IDAT chunks of at most
/// 1 MiB), a CRC-32 (zlib's `crc32`) after every chunk.
///
/// File layout: the 8-byte signature, then IHDR, IDAT…, IEND, each chunk being
/// `length (4 bytes, big-endian) · type (4 ASCII bytes) · data · CRC-32 of type and data`.
public enum PNG {
    /// The 8 bytes every PNG file starts with.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    /// The largest IDAT chunk written.
    static let maximumChunkSize = 1 << 20

    /// Encodes an image as PNG.
    ///
    /// - Parameters:
    ///   - width, height: the size in pixels (1 … 2³¹ − 1).
    ///   - channels: 1 (grayscale) or 3 (RGB).
    ///   - pixels: `[height, width, channels]` row-major (interleaved RGB), `width · height · channels` bytes.
    /// - Throws: `ImageError.invalidImage` for bad sizes, `.compressionFailed` if zlib fails.
    public static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws -> Data {
        let limit = Int(Int32.max)
        guard width > 0, height > 0, width <= limit, height <= limit else {
            throw ImageError.invalidImage(what: "PNG", reason: "size \(width)×\(height) must be 1…\(limit) in each dimension")
        }
        guard channels == 1 || channels == 3 else {
            throw ImageError.invalidImage(what: "PNG", reason: "\(channels) channels (expected 1 for grayscale or 3 for RGB)")
        }
        let (rowBytes, rowOverflow) = width.multipliedReportingOverflow(by: channels)
        let (rawBytes, rawOverflow) = (rowBytes + 1).multipliedReportingOverflow(by: height)
        guard !rowOverflow, !rawOverflow, rawBytes <= Int(UInt32.max) else {
            throw ImageError.invalidImage(what: "PNG", reason: "\(width)×\(height)×\(channels) is too large to encode")
        }
        guard pixels.count == rowBytes * height else {
            throw ImageError.invalidImage(
                what: "PNG", reason: "\(pixels.count) pixel bytes for a \(width)×\(height) image with \(channels) "
                    + "channel(s) (expected \(rowBytes * height))")
        }

        // The filtered image: each row preceded by its filter type, 0 (None).
        var raw = [UInt8](repeating: 0, count: rawBytes)
        raw.withUnsafeMutableBufferPointer { target in
            pixels.withUnsafeBufferPointer { source in
                for row in 0..<height {
                    let destination = target.baseAddress! + row * (rowBytes + 1) + 1
                    destination.update(from: source.baseAddress! + row * rowBytes, count: rowBytes)
                }
            }
        }
        let compressed = try deflate(raw)

        var png = Data(signature)
        var header = Data()
        header.appendBigEndian(UInt32(width))
        header.appendBigEndian(UInt32(height))
        header.append(contentsOf: [8, channels == 1 ? 0 : 2, 0, 0, 0])  // depth, colour type, compression, filter, interlace
        appendChunk("IHDR", header, to: &png)
        var start = 0
        repeat {
            let end = min(start + maximumChunkSize, compressed.count)
            appendChunk("IDAT", compressed[start..<end], to: &png)
            start = end
        } while start < compressed.count
        appendChunk("IEND", Data(), to: &png)
        return png
    }

    /// Encodes an image (see `encode`) and writes it to `url` atomically.
    public static func write(width: Int, height: Int, channels: Int, pixels: [UInt8], to url: URL) throws {
        try writeAtomically(try encode(width: width, height: height, channels: channels, pixels: pixels), to: url)
    }

    /// Writes encoded bytes to `url` atomically: first to a temporary file in the same folder, which is
    /// then renamed over the target, so readers never see half a file.
    /// - Throws: `ImageError.writeFailed` naming the file.
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        let path = url.path(percentEncoded: false)
        let folder = url.deletingLastPathComponent()
        let temporary = folder.appending(path: ".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        do {
            try data.write(to: temporary)
        } catch {
            throw ImageError.writeFailed(path: path, reason: "\(error.localizedDescription)")
        }
        guard rename(temporary.path(percentEncoded: false), path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ImageError.writeFailed(path: path, reason: reason)
        }
    }

    /// zlib stream of `bytes` (`compress2`, default level).
    private static func deflate(_ bytes: [UInt8]) throws -> Data {
        var length = compressBound(uLong(bytes.count))
        var output = [UInt8](repeating: 0, count: Int(length))
        let status = output.withUnsafeMutableBufferPointer { target in
            bytes.withUnsafeBufferPointer { source in
                compress2(target.baseAddress, &length, source.baseAddress, uLong(source.count), Z_DEFAULT_COMPRESSION)
            }
        }
        guard status == Z_OK else { throw ImageError.compressionFailed(status: status) }
        return Data(output[0..<Int(length)])
    }

    /// Appends `length · type · data · crc32(type · data)`.
    private static func appendChunk(_ type: String, _ data: some DataProtocol, to png: inout Data) {
        var body = Data(type.utf8)
        body.append(contentsOf: data)
        png.appendBigEndian(UInt32(body.count - 4))
        png.append(body)
        let checksum = body.withUnsafeBytes { bytes in
            crc32(0, bytes.bindMemory(to: Bytef.self).baseAddress, uInt(bytes.count))
        }
        png.appendBigEndian(UInt32(checksum))
    }
}

extension Data {
    /// Appends `value` as 4 big-endian bytes.
    mutating func appendBigEndian(_ value: UInt32) {
        append(contentsOf: [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF),
                            UInt8(value & 0xFF)])
    }
}
