/// A small vision transformer (Dosovitskiy et al.) for image classification: the image is cut into
/// p×p patches, each patch flattened and projected to the model width, a learned position embedding
/// added, then pre-LN encoder blocks (bidirectional attention), a final LayerNorm, the mean over the
/// patches and a linear head.
///
/// - Input [B, C, H, W] with H and W multiples of `patchSize` → logits [B, classes].
/// - Parameter names: `patch_embedding.{weight,bias}` [E, C·p²], `position_embedding` [T, E],
///   `blocks.{i}.…` (see `TransformerBlock`), `ln_f.*`, `head.*`.
public final class VisionTransformer: Layer {
    public let imageShape: [Int]
    public let patchSize: Int
    public let modelSize: Int
    public let patchEmbedding: Linear
    public let positionEmbedding: Parameter
    public let blocks: [TransformerBlock]
    public let finalNorm: LayerNorm
    public let head: Linear
    public var isTraining = true

    /// Patches per image: T = (H/p)·(W/p).
    public var patchCount: Int { (imageShape[1] / patchSize) * (imageShape[2] / patchSize) }

    /// - Parameters:
    ///   - imageShape: [C, H, W].
    /// - Throws: `TensorError.invalidArgument` when the patch size does not divide the image, or the
    ///   heads do not divide the width.
    public init(imageShape: [Int], patchSize: Int = 7, modelSize: Int = 64, headCount: Int = 4, blockCount: Int = 4,
                feedForwardSize: Int? = nil, classes: Int, dropout: Float = 0) throws {
        let op = "VisionTransformer"
        guard imageShape.count == 3, imageShape.allSatisfy({ $0 > 0 }) else {
            throw TensorError.invalidArgument(op: op, reason: "the image shape must be [channels, height, width], got \(imageShape)")
        }
        guard patchSize > 0, imageShape[1] % patchSize == 0, imageShape[2] % patchSize == 0 else {
            throw TensorError.invalidArgument(op: op, reason: "patches of \(patchSize)×\(patchSize) do not tile \(imageShape[1])×\(imageShape[2]) images")
        }
        guard classes > 0, blockCount > 0 else {
            throw TensorError.invalidArgument(op: op, reason: "classes (\(classes)) and blocks (\(blockCount)) must be positive")
        }
        self.imageShape = imageShape; self.patchSize = patchSize; self.modelSize = modelSize
        let patchFeatures = imageShape[0] * patchSize * patchSize
        patchEmbedding = try Linear(inputSize: patchFeatures, outputSize: modelSize)
        let tokens = (imageShape[1] / patchSize) * (imageShape[2] / patchSize)
        positionEmbedding = Parameter(try Tensor.normal([tokens, modelSize], standardDeviation: 0.02, seed: Random.nextSeed(), on: .cpu))
        blocks = try (0..<blockCount).map { _ in
            try TransformerBlock(modelSize: modelSize, headCount: headCount, feedForwardSize: feedForwardSize,
                                 causal: false, dropout: dropout)
        }
        finalNorm = try LayerNorm(featureCount: modelSize)
        head = try Linear(inputSize: modelSize, outputSize: classes)
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("position_embedding", positionEmbedding)] }

    public var children: [(name: String, module: any Module)] {
        [("patch_embedding", patchEmbedding as any Module)]
            + blocks.enumerated().map { ("blocks.\($0.offset)", $0.element as any Module) }
            + [("ln_f", finalNorm), ("head", head)]
    }

    /// [B, C, H, W] → [B, T, C·p²], patches in row-major order, each flattened channel-major.
    public func patches(_ images: Tensor) throws -> Tensor {
        guard images.rank == 4, Array(images.shape.dimensions.dropFirst()) == imageShape else {
            throw TensorError.invalidShape(op: "VisionTransformer", shape: images.shape,
                                           reason: "the input must be [batch, \(imageShape.map(String.init).joined(separator: ", "))]")
        }
        let (b, c, p) = (images.shape[0], imageShape[0], patchSize)
        let (rows, columns) = (imageShape[1] / p, imageShape[2] / p)
        return try images.reshaped(to: [b, c, rows, p, columns, p]).permuted([0, 2, 4, 1, 3, 5])
            .reshaped(to: [b, rows * columns, c * p * p])
    }

    /// - Parameter input: [B, C, H, W] (or [B, C·H·W], reshaped). - Returns: logits [B, classes].
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        let images = input.rank == 2 && input.shape[1] == imageShape.reduce(1, *)
            ? try input.reshaped(to: Shape([input.shape[0]] + imageShape)) : input
        var x = try patchEmbedding(patches(images)) + positionEmbedding.value
        for block in blocks { x = try block(x) }
        return try head(finalNorm(x).mean(alongAxis: 1))
    }
}
