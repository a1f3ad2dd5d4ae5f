import CZlib
import Foundation
import XCTest
@testable import Opal

/// PNG and ImageGrid: the tests decode Opal's own output (chunk structure, CRC-32 of every chunk checked
/// with zlib's `crc32`, IDAT inflated with zlib's `uncompress`) and compare the pixels.
final class PNGTests: XCTestCase {
    struct Decoded {
        var width: Int, height: Int, channels: Int
        var pixels: [UInt8]
        var chunkTypes: [String]
    }

    /// A strict decoder for what `PNG.encode` writes: 8-bit gray/RGB, no interlace, filter 0 on every row.
    func decode(_ data: Data, file: StaticString = #filePath, line: UInt = #line) throws -> Decoded {
        let bytes = [UInt8](data)
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "signature",
                       file: file, line: line)
        func bigEndian(_ offset: Int) -> Int {
            bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
        }
        var offset = 8
        var types: [String] = [], header: [UInt8] = [], compressed: [UInt8] = []
        while offset < bytes.count {
            let length = bigEndian(offset)
            XCTAssertLessThanOrEqual(offset + 12 + length, bytes.count, "chunk fits", file: file, line: line)
            let body = Array(bytes[(offset + 4)..<(offset + 8 + length)])
            let type = String(decoding: body.prefix(4), as: UTF8.self)
            let stored = UInt(bigEndian(offset + 8 + length))
            let computed = body.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
            XCTAssertEqual(stored, UInt(computed), "CRC of chunk \(type)", file: file, line: line)
            types.append(type)
            if type == "IHDR" { header = Array(body.dropFirst(4)) }
            if type == "IDAT" { compressed += body.dropFirst(4) }
            offset += 12 + length
        }
        XCTAssertEqual(types.first, "IHDR", file: file, line: line)
        XCTAssertEqual(types.last, "IEND", file: file, line: line)
        XCTAssertEqual(header.count, 13, "IHDR length", file: file, line: line)
        let width = header.prefix(4).reduce(0) { $0 << 8 | Int($1) }
        let height = header[4..<8].reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(header[8], 8, "bit depth", file: file, line: line)
        XCTAssertTrue(header[9] == 0 || header[9] == 2, "colour type \(header[9])", file: file, line: line)
        XCTAssertEqual(Array(header[10..<13]), [0, 0, 0], "compression, filter, interlace", file: file, line: line)
        let channels = header[9] == 0 ? 1 : 3
        let rowBytes = width * channels
        var raw = [UInt8](repeating: 0, count: height * (rowBytes + 1))
        var rawLength = uLong(raw.count)
        let status = raw.withUnsafeMutableBufferPointer { target in
            compressed.withUnsafeBufferPointer { uncompress(target.baseAddress, &rawLength, $0.baseAddress, uLong($0.count)) }
        }
        XCTAssertEqual(status, Z_OK, "IDAT inflates", file: file, line: line)
        XCTAssertEqual(Int(rawLength), raw.count, "inflated size", file: file, line: line)
        var pixels: [UInt8] = []
        for row in 0..<height {
            XCTAssertEqual(raw[row * (rowBytes + 1)], 0, "filter byte of row \(row)", file: file, line: line)
            pixels += raw[(row * (rowBytes + 1) + 1)..<((row + 1) * (rowBytes + 1))]
        }
        return Decoded(width: width, height: height, channels: channels, pixels: pixels, chunkTypes: types)
    }

    func testGrayAndRGBRoundTrip() throws {
        var generator = SystemRandomNumberGenerator()
        for (width, height, channels) in [(1, 1, 1), (7, 5, 1), (33, 2, 3), (300, 301, 3)] {
            let pixels = (0..<(width * height * channels)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let decoded = try decode(try PNG.encode(width: width, height: height, channels: channels, pixels: pixels))
            XCTAssertEqual(decoded.width, width)
            XCTAssertEqual(decoded.height, height)
            XCTAssertEqual(decoded.channels, channels)
            XCTAssertEqual(decoded.pixels, pixels, "pixels of \(width)×\(height)×\(channels)")
        }
    }

    /// Random bytes do not compress, so 700×600×3 bytes take more than one 1 MiB IDAT chunk.
    func testLargeImageSplitsIDAT() throws {
        let (width, height) = (700, 600)   // 1.26 MB of pixels
        var state = UInt64.random(in: 1...UInt64.max)
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for index in pixels.indices {   // xorshift64: fast incompressible bytes
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            pixels[index] = UInt8(truncatingIfNeeded: state >> 32)
        }
        let decoded = try decode(try PNG.encode(width: width, height: height, channels: 3, pixels: pixels))
        XCTAssertGreaterThan(decoded.chunkTypes.filter { $0 == "IDAT" }.count, 1)
        XCTAssertEqual(decoded.pixels, pixels)
    }

    func testBadSizesThrow() {
        XCTAssertThrowsError(try PNG.encode(width: 0, height: 1, channels: 1, pixels: []))
        XCTAssertThrowsError(try PNG.encode(width: 2, height: 2, channels: 2, pixels: [UInt8](repeating: 0, count: 8)))
        XCTAssertThrowsError(try PNG.encode(width: 2, height: 2, channels: 1, pixels: [1, 2, 3])) { error in
            XCTAssertTrue("\(error)".contains("3 pixel bytes"), "\(error)")
        }
        XCTAssertThrowsError(try ImageGrid.png(images: [0, 0, 0], count: 1, channels: 1, height: 2, width: 2, columns: 1))
        XCTAssertThrowsError(try ImageGrid.png(images: [0], count: 1, channels: 1, height: 1, width: 1, columns: 0))
        XCTAssertThrowsError(try ImageGrid.png(images: [0], count: 1, channels: 1, height: 1, width: 1, columns: 1,
                                               range: 1...1))
        XCTAssertThrowsError(try ImageGrid.pairs(original: [0, 0], reconstructed: [0], count: 2, channels: 1,
                                                 height: 1, width: 1))
    }

    /// Three 1-channel 2×1 images, 2 columns, padding 1, background 128:
    /// grid 2·2 + 3·1 = 7 wide, 2·1 + 3·1 = 5 high; values 0…1 map to 0…255.
    func testGridLayout() throws {
        let images: [Float] = [0, 1,  0.5, 0.25,  1, 0]
        let decoded = try decode(try ImageGrid.png(images: images, count: 3, channels: 1, height: 1, width: 2,
                                                   columns: 2, padding: 1, background: 128))
        XCTAssertEqual(decoded.width, 7)
        XCTAssertEqual(decoded.height, 5)
        let b: UInt8 = 128
        XCTAssertEqual(decoded.pixels, [
            b, b, b, b, b, b, b,
            b, 0, 255, b, 128, 64, b,
            b, b, b, b, b, b, b,
            b, 255, 0, b, b, b, b,
            b, b, b, b, b, b, b,
        ])
    }

    func testRGBGridAndClamping() throws {
        // One 3-channel 1×2 image, range −1…1: −5 clamps to 0, 5 to 255, NaN to 0, 0 → 128 (127.5 rounds up).
        let images: [Float] = [-5, 5,  0, .nan,  1, -1]
        let decoded = try decode(try ImageGrid.png(images: images, count: 1, channels: 3, height: 1, width: 2,
                                                   columns: 4, range: -1...1, padding: 0))
        XCTAssertEqual(decoded.width, 2)
        XCTAssertEqual(decoded.height, 1)
        XCTAssertEqual(decoded.channels, 3)
        XCTAssertEqual(decoded.pixels, [0, 128, 255,  255, 0, 0])
    }

    func testPairsPutOriginalsBesideReconstructions() throws {
        let original: [Float] = [0, 1], reconstructed: [Float] = [0.5, 0.25]  // two 1×1 images each
        let decoded = try decode(try ImageGrid.pairs(original: original, reconstructed: reconstructed, count: 2,
                                                     channels: 1, height: 1, width: 1, columns: 1, padding: 0))
        XCTAssertEqual(decoded.width, 2)
        XCTAssertEqual(decoded.height, 2)
        XCTAssertEqual(decoded.pixels, [0, 128, 255, 64])
    }

    func testWriteIsAtomicAndNamesTheFile() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "opal-png-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appending(path: "grid.png")
        try PNG.write(width: 2, height: 1, channels: 1, pixels: [0, 255], to: url)
        let written = try decode(try Data(contentsOf: url))
        XCTAssertEqual(written.pixels, [0, 255])
        // Overwriting replaces the file and leaves no temporary file behind.
        try PNG.write(width: 1, height: 1, channels: 1, pixels: [7], to: url)
        XCTAssertEqual(try decode(try Data(contentsOf: url)).pixels, [7])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path(percentEncoded: false)), ["grid.png"])

        let missing = folder.appending(path: "no-such-folder/grid.png")
        XCTAssertThrowsError(try PNG.write(width: 1, height: 1, channels: 1, pixels: [0], to: missing)) { error in
            XCTAssertTrue("\(error)".contains(missing.path(percentEncoded: false)), "\(error)")
        }
    }
}
