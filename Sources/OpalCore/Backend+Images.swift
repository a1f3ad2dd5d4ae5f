// The image op set (convolution, pooling, batch normalisation) and the fused GEMM epilogue.
// Each backend implements these; the defaults below only report that a backend lacks one.

/// Geometry of a 2-D convolution over NCHW tensors (PyTorch's `Conv2d` semantics).
///
/// - input  x: [batch, inputChannels, inputHeight, inputWidth]
/// - weight w: [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
/// - output y: [batch, outputChannels, outputHeight, outputWidth], with
///   `outputHeight = (inputHeight + 2·paddingHeight − dilationHeight·(kernelHeight − 1) − 1) / strideHeight + 1`.
///
/// `y[n, co, oh, ow] = bias[co] + Σ_{ci ∈ group(co), kh, kw} x[n, ci, oh·sH − pH + kh·dH, ow·sW − pW + kw·dW] · w[co, ci − g·Cin/G, kh, kw]`,
/// where out-of-range input positions count as zero.
public struct Conv2DDescriptor: Hashable, Sendable, CustomStringConvertible {
    public var batch: Int, inputChannels: Int, inputHeight: Int, inputWidth: Int
    public var outputChannels: Int, kernelHeight: Int, kernelWidth: Int
    public var strideHeight: Int, strideWidth: Int
    public var paddingHeight: Int, paddingWidth: Int
    public var dilationHeight: Int, dilationWidth: Int
    public var groups: Int

    public init(batch: Int, inputChannels: Int, inputHeight: Int, inputWidth: Int, outputChannels: Int,
                kernelHeight: Int, kernelWidth: Int, strideHeight: Int = 1, strideWidth: Int = 1,
                paddingHeight: Int = 0, paddingWidth: Int = 0, dilationHeight: Int = 1, dilationWidth: Int = 1,
                groups: Int = 1) {
        self.batch = batch; self.inputChannels = inputChannels
        self.inputHeight = inputHeight; self.inputWidth = inputWidth
        self.outputChannels = outputChannels; self.kernelHeight = kernelHeight; self.kernelWidth = kernelWidth
        self.strideHeight = strideHeight; self.strideWidth = strideWidth
        self.paddingHeight = paddingHeight; self.paddingWidth = paddingWidth
        self.dilationHeight = dilationHeight; self.dilationWidth = dilationWidth
        self.groups = groups
    }

    public var outputHeight: Int {
        (inputHeight + 2 * paddingHeight - dilationHeight * (kernelHeight - 1) - 1) / strideHeight + 1
    }
    public var outputWidth: Int {
        (inputWidth + 2 * paddingWidth - dilationWidth * (kernelWidth - 1) - 1) / strideWidth + 1
    }
    public var inputChannelsPerGroup: Int { inputChannels / groups }
    public var outputChannelsPerGroup: Int { outputChannels / groups }
    public var inputCount: Int { batch * inputChannels * inputHeight * inputWidth }
    public var weightCount: Int { outputChannels * inputChannelsPerGroup * kernelHeight * kernelWidth }
    public var outputCount: Int { batch * outputChannels * outputHeight * outputWidth }
    /// Multiply-adds ×2 of the forward pass (each backward pass costs the same).
    public var flops: Double {
        2 * Double(outputCount) * Double(inputChannelsPerGroup * kernelHeight * kernelWidth)
    }

    /// Nil when the geometry is valid, else the reason.
    public var problem: String? {
        let positive = [batch, inputChannels, inputHeight, inputWidth, outputChannels, kernelHeight, kernelWidth,
                        strideHeight, strideWidth, dilationHeight, dilationWidth, groups]
        if positive.contains(where: { $0 <= 0 }) { return "sizes, strides, dilations and groups must be positive" }
        if paddingHeight < 0 || paddingWidth < 0 { return "padding must be ≥ 0" }
        if inputChannels % groups != 0 || outputChannels % groups != 0 {
            return "groups (\(groups)) must divide the input (\(inputChannels)) and output (\(outputChannels)) channels"
        }
        let spanHeight = dilationHeight * (kernelHeight - 1) + 1, spanWidth = dilationWidth * (kernelWidth - 1) + 1
        if spanHeight > inputHeight + 2 * paddingHeight || spanWidth > inputWidth + 2 * paddingWidth {
            return "the kernel (\(kernelHeight)×\(kernelWidth), dilation \(dilationHeight)×\(dilationWidth)) does not fit the padded input (\(inputHeight)×\(inputWidth) + padding \(paddingHeight)×\(paddingWidth))"
        }
        return nil
    }

    public var description: String {
        "conv N\(batch) C\(inputChannels) \(inputHeight)×\(inputWidth) → C\(outputChannels) k\(kernelHeight)×\(kernelWidth) s\(strideHeight)×\(strideWidth) p\(paddingHeight)×\(paddingWidth) d\(dilationHeight)×\(dilationWidth) g\(groups)"
    }
}

/// Geometry of 2-D max/average pooling over NCHW tensors (PyTorch's `MaxPool2d`/`AvgPool2d`,
/// floor mode; average pooling counts padded positions, as `count_include_pad=True`).
///
/// `outputHeight = (inputHeight + 2·paddingHeight − kernelHeight) / strideHeight + 1`.
public struct Pool2DDescriptor: Hashable, Sendable {
    public var batch: Int, channels: Int, inputHeight: Int, inputWidth: Int
    public var kernelHeight: Int, kernelWidth: Int
    public var strideHeight: Int, strideWidth: Int
    public var paddingHeight: Int, paddingWidth: Int

    public init(batch: Int, channels: Int, inputHeight: Int, inputWidth: Int, kernelHeight: Int, kernelWidth: Int,
                strideHeight: Int, strideWidth: Int, paddingHeight: Int = 0, paddingWidth: Int = 0) {
        self.batch = batch; self.channels = channels; self.inputHeight = inputHeight; self.inputWidth = inputWidth
        self.kernelHeight = kernelHeight; self.kernelWidth = kernelWidth
        self.strideHeight = strideHeight; self.strideWidth = strideWidth
        self.paddingHeight = paddingHeight; self.paddingWidth = paddingWidth
    }

    public var outputHeight: Int { (inputHeight + 2 * paddingHeight - kernelHeight) / strideHeight + 1 }
    public var outputWidth: Int { (inputWidth + 2 * paddingWidth - kernelWidth) / strideWidth + 1 }
    public var inputCount: Int { batch * channels * inputHeight * inputWidth }
    public var outputCount: Int { batch * channels * outputHeight * outputWidth }

    public var problem: String? {
        if [batch, channels, inputHeight, inputWidth, kernelHeight, kernelWidth, strideHeight, strideWidth]
            .contains(where: { $0 <= 0 }) { return "sizes, kernel and stride must be positive" }
        if paddingHeight < 0 || paddingWidth < 0 || 2 * paddingHeight > kernelHeight || 2 * paddingWidth > kernelWidth {
            return "padding must lie in 0…kernel/2"
        }
        if kernelHeight > inputHeight + 2 * paddingHeight || kernelWidth > inputWidth + 2 * paddingWidth {
            return "the \(kernelHeight)×\(kernelWidth) window does not fit the padded \(inputHeight)×\(inputWidth) input"
        }
        return nil
    }
}

/// Geometry of batch normalisation: the input is viewed as `[batch, channels, spatial]` and
/// statistics are taken per channel over `batch · spatial` values.
public struct BatchNormDescriptor: Hashable, Sendable {
    public var batch: Int, channels: Int, spatial: Int
    public var epsilon: Float
    public init(batch: Int, channels: Int, spatial: Int, epsilon: Float) {
        self.batch = batch; self.channels = channels; self.spatial = spatial; self.epsilon = epsilon
    }
    public var count: Int { batch * channels * spatial }
}

/// What a fused GEMM applies to its result before storing it:
/// `C = activation(α·op(A)·op(B) + β·C + bias + residual)`.
/// `bias` has one value per column of C (`[n]`, the Linear/attention case) or, with
/// `biasPerRow`, one per row (`[m]`, the convolution-as-GEMM case); it is shared by every batch
/// element. `residual` has C's layout (same ldc, offset and batch stride).
public struct GemmEpilogue: Sendable {
    public var bias: (any DeviceBuffer)?
    public var biasPerRow: Bool
    public var residual: (any DeviceBuffer)?
    public var activation: UnaryOp?
    public init(bias: (any DeviceBuffer)? = nil, biasPerRow: Bool = false, residual: (any DeviceBuffer)? = nil,
                activation: UnaryOp? = nil) {
        self.bias = bias; self.biasPerRow = biasPerRow; self.residual = residual; self.activation = activation
    }
    public var isEmpty: Bool { bias == nil && residual == nil && activation == nil }
}

/// Image ops and fused GEMM. Contract as for `Backend`: buffers validated by the caller, outputs
/// fully written (gradients are overwritten, not accumulated), work enqueued without host waits.
public protocol ImageBackend: Backend {
    /// `y = conv2D(x, w) + bias` (bias optional, one value per output channel).
    func conv2D(_ input: any DeviceBuffer, _ weight: any DeviceBuffer, _ bias: (any DeviceBuffer)?,
                _ output: any DeviceBuffer, descriptor: Conv2DDescriptor) throws
    /// `dx[n, ci, ih, iw] = Σ dy[n, co, oh, ow] · w[co, ci, kh, kw]` over every (oh, ow, kh, kw) with
    /// `ih = oh·sH − pH + kh·dH`, `iw = ow·sW − pW + kw·dW` (the transposed convolution).
    func conv2DBackwardData(_ gradOutput: any DeviceBuffer, _ weight: any DeviceBuffer,
                            _ gradInput: any DeviceBuffer, descriptor: Conv2DDescriptor) throws
    /// `dw[co, ci, kh, kw] = Σ_{n, oh, ow} dy[n, co, oh, ow] · x[n, ci, ih, iw]`.
    func conv2DBackwardWeight(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer,
                              _ gradWeight: any DeviceBuffer, descriptor: Conv2DDescriptor) throws

    /// Max pooling; `indices[n, c, oh, ow]` (Int32) = `ih·inputWidth + iw` of the maximum (first on ties;
    /// padding never wins).
    func maxPool2D(_ input: any DeviceBuffer, _ output: any DeviceBuffer, _ indices: any DeviceBuffer,
                   descriptor: Pool2DDescriptor) throws
    /// `dx[n, c, p] = Σ_{outputs o whose index is p} dy[n, c, o]` (every element of dx written).
    func maxPool2DBackward(_ gradOutput: any DeviceBuffer, _ indices: any DeviceBuffer, _ gradInput: any DeviceBuffer,
                           descriptor: Pool2DDescriptor) throws
    /// Average pooling (padding counts as zeros in the average: divisor kernelHeight·kernelWidth).
    func avgPool2D(_ input: any DeviceBuffer, _ output: any DeviceBuffer, descriptor: Pool2DDescriptor) throws
    func avgPool2DBackward(_ gradOutput: any DeviceBuffer, _ gradInput: any DeviceBuffer,
                           descriptor: Pool2DDescriptor) throws

    /// Training-mode batch norm: per channel c, `mean_c` and biased `var_c` over batch and spatial,
    /// `y = (x − mean_c)·invstd_c·γ_c + β_c` with `invstd_c = 1/√(var_c + ε)`; writes `mean` and
    /// `inverseStandardDeviation` ([channels]) for the backward pass.
    func batchNormForward(_ input: any DeviceBuffer, _ gamma: any DeviceBuffer, _ beta: any DeviceBuffer,
                          _ output: any DeviceBuffer, mean: any DeviceBuffer, inverseStandardDeviation: any DeviceBuffer,
                          descriptor: BatchNormDescriptor) throws
    /// With `x̂ = (x − mean)·invstd` and M = batch·spatial:
    /// `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂`, `dx = γ_c·invstd_c/M · (M·dy − dβ_c − x̂·dγ_c)`.
    func batchNormBackward(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer, _ gamma: any DeviceBuffer,
                           mean: any DeviceBuffer, inverseStandardDeviation: any DeviceBuffer,
                           _ gradInput: any DeviceBuffer, _ gradGamma: any DeviceBuffer, _ gradBeta: any DeviceBuffer,
                           descriptor: BatchNormDescriptor) throws

    /// GEMM with a fused epilogue (see `GemmEpilogue`).
    func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer, descriptor: GemmDescriptor,
              epilogue: GemmEpilogue) throws
}
