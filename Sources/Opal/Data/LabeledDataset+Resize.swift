/// Resampling image datasets, so a model trained on one image size can be fine-tuned on another set.
extension LabeledDataset {
    /// The images resized to `height × width` by bilinear interpolation with half-pixel centres
    /// (PyTorch's `interpolate(mode="bilinear", align_corners=False)`); channels and labels unchanged.
    ///
    /// - Throws: `DataError.inconsistentDataset` when the examples are not images `[channels, height, width]`
    ///   or the target size is not positive.
    public func resized(height: Int, width: Int) throws -> LabeledDataset {
        guard featureShape.count == 3 else {
            throw DataError.inconsistentDataset(name: name, reason: "cannot resize examples of shape \(featureShape): expected images [channels, height, width]")
        }
        guard height > 0, width > 0 else {
            throw DataError.inconsistentDataset(name: name, reason: "cannot resize to \(height)×\(width): sizes must be positive")
        }
        let (channels, inputHeight, inputWidth) = (featureShape[0], featureShape[1], featureShape[2])
        if inputHeight == height && inputWidth == width { return self }
        /// Source index pair and weight of the upper/left neighbour for each output coordinate.
        func taps(_ outputSize: Int, _ inputSize: Int) -> [(Int, Int, Float)] {
            let scale = Float(inputSize) / Float(outputSize)
            return (0..<outputSize).map { o in
                let source = max(0, (Float(o) + 0.5) * scale - 0.5)
                let low = min(Int(source), inputSize - 1)
                let high = min(low + 1, inputSize - 1)
                return (low, high, 1 - (source - Float(low)))
            }
        }
        let rows = taps(height, inputHeight), columns = taps(width, inputWidth)
        let inputPlane = inputHeight * inputWidth, outputPlane = height * width
        var output = [Float](repeating: 0, count: count * channels * outputPlane)
        for plane in 0..<(count * channels) {
            let source = plane * inputPlane, target = plane * outputPlane
            for (y, (top, bottom, wy)) in rows.enumerated() {
                for (x, (left, right, wx)) in columns.enumerated() {
                    let upper = wx * features[source + top * inputWidth + left] + (1 - wx) * features[source + top * inputWidth + right]
                    let lower = wx * features[source + bottom * inputWidth + left] + (1 - wx) * features[source + bottom * inputWidth + right]
                    output[target + y * width + x] = wy * upper + (1 - wy) * lower
                }
            }
        }
        return LabeledDataset(name: "\(name) at \(height)×\(width)", features: output, labels: labels,
                              featureShape: [channels, height, width], classNames: classNames)
    }
}
