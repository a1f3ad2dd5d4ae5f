import Foundation

/// Tiles a batch of NCHW images into one PNG: `columns` images per row, `padding` pixels of `background`
/// around and between them, values mapped linearly from `range` to 0…255 (clamped; NaN → 0).
///
/// Grid size: `width·c + padding·(c + 1)` × `height·r + padding·(r + 1)` for c = min(columns, count) columns
/// and r = ⌈count / columns⌉ rows; image i sits in row i / c, column i % c. Unused cells stay `background`.
public enum ImageGrid {
    /// - Parameters:
    ///   - images: `[count, channels, height, width]` values.
    ///   - channels: 1 (grayscale) or 3 (RGB).
    ///   - range: the values shown as 0 and 255 (`lowerBound < upperBound`).
    ///   - background: the gray level of the padding.
    /// - Throws: `ImageError.invalidImage` naming the bad argument.
    public static func png(images: [Float], count: Int, channels: Int, height: Int, width: Int, columns: Int,
                           range: ClosedRange<Float> = 0...1, padding: Int = 2, background: UInt8 = 128) throws -> Data {
        let grid = try pixels(images: images, count: count, channels: channels, height: height, width: width,
                              columns: columns, range: range, padding: padding, background: background)
        return try PNG.encode(width: grid.width, height: grid.height, channels: channels, pixels: grid.pixels)
    }

    /// Inputs beside their reconstructions: each row holds `columns` pairs, the original on the left.
    /// - Parameters:
    ///   - original, reconstructed: `[count, channels, height, width]` values each.
    public static func pairs(original: [Float], reconstructed: [Float], count: Int, channels: Int, height: Int,
                             width: Int, columns: Int = 8, range: ClosedRange<Float> = 0...1, padding: Int = 2,
                             background: UInt8 = 128) throws -> Data {
        let size = count * channels * height * width
        guard count > 0, channels > 0, height > 0, width > 0 else {
            throw ImageError.invalidImage(
                what: "ImageGrid.pairs", reason: "count \(count), channels \(channels), size \(height)×\(width) must be positive")
        }
        guard original.count == size, reconstructed.count == size else {
            throw ImageError.invalidImage(
                what: "ImageGrid.pairs", reason: "\(original.count) original and \(reconstructed.count) reconstructed values "
                    + "for \(count) images of \(channels)×\(height)×\(width) (expected \(size) each)")
        }
        guard columns > 0 else {
            throw ImageError.invalidImage(what: "ImageGrid.pairs", reason: "columns \(columns) must be positive")
        }
        let image = channels * height * width
        var interleaved: [Float] = []
        interleaved.reserveCapacity(2 * size)
        for index in 0..<count {
            interleaved += original[(index * image)..<((index + 1) * image)]
            interleaved += reconstructed[(index * image)..<((index + 1) * image)]
        }
        return try png(images: interleaved, count: 2 * count, channels: channels, height: height, width: width,
                       columns: 2 * columns, range: range, padding: padding, background: background)
    }

    /// The grid as `[gridHeight, gridWidth, channels]` bytes (what `png` encodes).
    static func pixels(images: [Float], count: Int, channels: Int, height: Int, width: Int, columns: Int,
                       range: ClosedRange<Float>, padding: Int, background: UInt8) throws
        -> (pixels: [UInt8], width: Int, height: Int) {
        func invalid(_ reason: String) -> ImageError { .invalidImage(what: "ImageGrid", reason: reason) }
        guard count > 0, height > 0, width > 0 else {
            throw invalid("count \(count) and size \(height)×\(width) must be positive")
        }
        guard channels == 1 || channels == 3 else { throw invalid("\(channels) channels (expected 1 or 3)") }
        guard columns > 0 else { throw invalid("columns \(columns) must be positive") }
        guard padding >= 0 else { throw invalid("padding \(padding) must be ≥ 0") }
        guard range.lowerBound.isFinite, range.upperBound.isFinite, range.lowerBound < range.upperBound else {
            throw invalid("range \(range) must be finite with lowerBound < upperBound")
        }
        let (imageSize, overflow) = (channels * height).multipliedReportingOverflow(by: width)
        guard !overflow, imageSize.multipliedReportingOverflow(by: count).overflow == false,
              images.count == imageSize * count else {
            throw invalid("\(images.count) values for \(count) images of \(channels)×\(height)×\(width) "
                + "(expected \(imageSize &* count))")
        }
        let gridColumns = min(columns, count)
        let gridRows = (count + gridColumns - 1) / gridColumns
        let gridWidth = gridColumns * width + (gridColumns + 1) * padding
        let gridHeight = gridRows * height + (gridRows + 1) * padding
        guard gridWidth.multipliedReportingOverflow(by: gridHeight * channels).overflow == false,
              gridWidth <= Int(Int32.max), gridHeight <= Int(Int32.max) else {
            throw invalid("a \(gridWidth)×\(gridHeight) grid is too large")
        }
        var pixels = [UInt8](repeating: background, count: gridWidth * gridHeight * channels)
        let scale = 255 / (range.upperBound - range.lowerBound), lower = range.lowerBound
        for index in 0..<count {
            let top = padding + (index / gridColumns) * (height + padding)
            let left = padding + (index % gridColumns) * (width + padding)
            for channel in 0..<channels {
                let plane = (index * channels + channel) * height * width
                for y in 0..<height {
                    let rowStart = ((top + y) * gridWidth + left) * channels + channel
                    for x in 0..<width {
                        pixels[rowStart + x * channels] = byte(images[plane + y * width + x], lower: lower, scale: scale)
                    }
                }
            }
        }
        return (pixels, gridWidth, gridHeight)
    }

    /// `(value − lower)·scale` rounded and clamped to 0…255; NaN gives 0.
    @inline(__always)
    static func byte(_ value: Float, lower: Float, scale: Float) -> UInt8 {
        let level = ((value - lower) * scale).rounded()
        guard level > 0 else { return 0 }   // also NaN
        return level >= 255 ? 255 : UInt8(level)
    }
}
