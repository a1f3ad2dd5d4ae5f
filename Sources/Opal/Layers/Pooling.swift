/// Max pooling over `kernelSize` windows (stride defaults to the kernel size), as `nn.MaxPool2d`.
public final class MaxPool2D: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize; self.stride = stride ?? kernelSize; self.padding = padding
    }
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try withLayerContext("MaxPool2D(\(kernelSize)×\(kernelSize), stride \(stride), padding \(padding))", input) {
            try input.maxPool2D(kernel: (kernelSize, kernelSize), stride: (stride, stride), padding: (padding, padding))
        }
    }
}

/// Average pooling (padding counts as zeros), as `nn.AvgPool2d`.
public final class AvgPool2D: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public var isTraining = true
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize; self.stride = stride ?? kernelSize; self.padding = padding
    }
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try withLayerContext("AvgPool2D(\(kernelSize)×\(kernelSize), stride \(stride), padding \(padding))", input) {
            try input.avgPool2D(kernel: (kernelSize, kernelSize), stride: (stride, stride), padding: (padding, padding))
        }
    }
}

/// Nearest-neighbour upsampling by an integer factor, as `nn.Upsample(scale_factor:, mode: "nearest")`.
public final class Upsample: Layer {
    public let factor: Int
    public var isTraining = true
    public init(factor: Int) { self.factor = factor }
    public func callAsFunction(_ input: Tensor) throws -> Tensor { try input.upsampledNearest(factor: (factor, factor)) }
}

/// Reshapes every example: [N, …] → [N] + `shape` (as `nn.Unflatten(1, shape)`).
public final class Reshape: Layer {
    public let shape: [Int]
    public var isTraining = true
    public init(_ shape: [Int]) { self.shape = shape }
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        guard input.rank >= 1 else { throw TensorError.invalidShape(op: "Reshape", shape: input.shape, reason: "needs a batch axis") }
        return try input.reshaped(to: Shape([input.shape[0]] + shape))
    }
}
