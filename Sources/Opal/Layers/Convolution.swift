/// 2-D convolution over NCHW input (PyTorch's `nn.Conv2d`).
///
/// - `weight`: [outputChannels, inputChannels / groups, kernelSize, kernelSize], `bias`: [outputChannels]
/// - Input [N, inputChannels, H, W] → output [N, outputChannels, (H + 2p − d(k − 1) − 1)/s + 1, …].
/// - Initialisation as PyTorch: W, b ~ U(−1/√fanIn, 1/√fanIn), fanIn = inputChannels/groups · k².
public final class Conv2D: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), groups: Int
    public var isTraining = true

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, on device: Device = .cpu) throws {
        guard inputChannels > 0, outputChannels > 0, kernelSize > 0, groups > 0,
              inputChannels % groups == 0, outputChannels % groups == 0 else {
            throw TensorError.invalidArgument(op: "Conv2D", reason: "channels \(inputChannels)→\(outputChannels), kernel \(kernelSize) and groups \(groups) must be positive, with groups dividing both channel counts")
        }
        try validateGeometry("Conv2D(\(inputChannels)→\(outputChannels))", stride: stride, padding: padding, dilation: dilation)
        let fanIn = inputChannels / groups * kernelSize * kernelSize
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(try Tensor.uniform([outputChannels, inputChannels / groups, kernelSize, kernelSize],
                                              in: -bound...bound, seed: Random.nextSeed(), on: device))
        self.bias = bias ? Parameter(try Tensor.uniform([outputChannels], in: -bound...bound,
                                                        seed: Random.nextSeed(), on: device)) : nil
        self.stride = (stride, stride); self.padding = (padding, padding); self.dilation = (dilation, dilation)
        self.groups = groups
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    /// "Conv2D(1→32, 3×3, stride 1, padding 1)".
    public var summary: String {
        "Conv2D(\(weight.shape[1] * groups)→\(weight.shape[0]), \(weight.shape[2])×\(weight.shape[3]), stride \(stride.0), padding \(padding.0)\(dilation.0 > 1 ? ", dilation \(dilation.0)" : "")\(groups > 1 ? ", groups \(groups)" : ""))"
    }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try withLayerContext(summary, input) {
            try input.conv2D(weight: weight.value, bias: bias?.value, stride: stride, padding: padding,
                             dilation: dilation, groups: groups)
        }
    }
}

/// 2-D transposed convolution (PyTorch's `nn.ConvTranspose2d`).
///
/// - `weight`: [inputChannels, outputChannels / groups, kernelSize, kernelSize], `bias`: [outputChannels]
/// - Output size: (H − 1)·s − 2p + d(k − 1) + outputPadding + 1.
public final class ConvTranspose2D: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: (Int, Int), padding: (Int, Int), outputPadding: (Int, Int), dilation: (Int, Int), groups: Int
    public var isTraining = true

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                outputPadding: Int = 0, dilation: Int = 1, groups: Int = 1, bias: Bool = true,
                on device: Device = .cpu) throws {
        guard inputChannels > 0, outputChannels > 0, kernelSize > 0, groups > 0,
              inputChannels % groups == 0, outputChannels % groups == 0 else {
            throw TensorError.invalidArgument(op: "ConvTranspose2D", reason: "channels \(inputChannels)→\(outputChannels), kernel \(kernelSize) and groups \(groups) must be positive, with groups dividing both channel counts")
        }
        try validateGeometry("ConvTranspose2D(\(inputChannels)→\(outputChannels))", stride: stride, padding: padding,
                             dilation: dilation)
        // PyTorch computes fan-in from weight dimension 1: outputChannels/groups · k².
        let fanIn = outputChannels / groups * kernelSize * kernelSize
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(try Tensor.uniform([inputChannels, outputChannels / groups, kernelSize, kernelSize],
                                              in: -bound...bound, seed: Random.nextSeed(), on: device))
        self.bias = bias ? Parameter(try Tensor.uniform([outputChannels], in: -bound...bound,
                                                        seed: Random.nextSeed(), on: device)) : nil
        self.stride = (stride, stride); self.padding = (padding, padding)
        self.outputPadding = (outputPadding, outputPadding); self.dilation = (dilation, dilation)
        self.groups = groups
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    /// "ConvTranspose2D(128→64, 4×4, stride 2, padding 1)".
    public var summary: String {
        "ConvTranspose2D(\(weight.shape[0])→\(weight.shape[1] * groups), \(weight.shape[2])×\(weight.shape[3]), stride \(stride.0), padding \(padding.0)\(outputPadding.0 > 0 ? ", output padding \(outputPadding.0)" : ""))"
    }

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try withLayerContext(summary, input) {
            try input.convTranspose2D(weight: weight.value, bias: bias?.value, stride: stride, padding: padding,
                                      outputPadding: outputPadding, dilation: dilation, groups: groups)
        }
    }
}

/// Rejects non-positive strides and dilations and negative padding when a layer is built.
func validateGeometry(_ layer: String, stride: Int, padding: Int, dilation: Int) throws {
    guard stride > 0 else { throw TensorError.invalidArgument(op: layer, reason: "stride must be positive, got \(stride)") }
    guard dilation > 0 else { throw TensorError.invalidArgument(op: layer, reason: "dilation must be positive, got \(dilation)") }
    guard padding >= 0 else { throw TensorError.invalidArgument(op: layer, reason: "padding must be ≥ 0, got \(padding)") }
}

/// Runs a layer's op and, when it fails on the input's shape, says which layer and which input.
func withLayerContext(_ layer: String, _ input: Tensor, _ body: () throws -> Tensor) throws -> Tensor {
    do {
        return try body()
    } catch let error as TensorError {
        switch error {
        case .shapeMismatch, .invalidShape, .invalidArgument:
            throw TensorError.invalidArgument(op: "\(layer) on input \(input.shape)", reason: "\(error)")
        default:
            throw error
        }
    }
}
