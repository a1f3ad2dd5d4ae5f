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

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try input.conv2D(weight: weight.value, bias: bias?.value, stride: stride, padding: padding,
                         dilation: dilation, groups: groups)
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

    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try input.convTranspose2D(weight: weight.value, bias: bias?.value, stride: stride, padding: padding,
                                  outputPadding: outputPadding, dilation: dilation, groups: groups)
    }
}
