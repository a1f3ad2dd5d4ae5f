import OpalCore

/// Every kernel the OpenCL backend launches, named as in its `Kernels/<family>.cl` file.
/// Kernel names and op codes live here and nowhere else on the host side (tuning parameters: KernelParameters.swift).
enum OpenCLKernel: String, CaseIterable, Sendable {
    // elementwise.cl
    case fill, unary, binaryFlat = "binary_flat", binaryStrided = "binary_strided", stridedCopy = "strided_copy"
    case binaryStridedRows = "binary_strided_rows", stridedCopyRows = "strided_copy_rows"
    case unaryExp = "unary_exp", unarySigmoid = "unary_sigmoid", unaryTanh = "unary_tanh", unaryGELU = "unary_gelu"
    case unaryGELUDerivative = "unary_gelu_derivative", unaryReLU = "unary_relu", unaryLeakyReLU = "unary_leaky_relu"
    case unaryGradientReLU = "unary_gradient_relu", unaryGradientLeakyReLU = "unary_gradient_leaky_relu"
    case unaryGradientSigmoid = "unary_gradient_sigmoid", unaryGradientTanh = "unary_gradient_tanh"
    case unaryGradientGELU = "unary_gradient_gelu"
    case transposeTiled = "transpose_tiled"
    // reduce.cl
    case reduceRows = "reduce_rows", reduceColumns = "reduce_columns"
    case argmaxRows = "argmax_rows", argmaxColumns = "argmax_columns"
    // softmax.cl
    case softmaxRows = "softmax_rows", softmaxBackwardRows = "softmax_backward_rows"
    // loss.cl
    case crossEntropyRows = "cross_entropy_rows", crossEntropyBackwardRows = "cross_entropy_backward_rows"
    // optim.cl
    case adamUpdate = "adam_update", sgdUpdate = "sgd_update"
    // random.cl
    case dropoutMask = "dropout_mask"
    // gemm.cl
    case gemmTiled = "gemm_tiled", gemmFast = "gemm_fast", gemmEpilogue = "gemm_epilogue"
    // conv.cl
    case convIm2col = "conv_im2col", convCol2im = "conv_col2im", convScatter = "conv_scatter"
    case convGather = "conv_gather", convForwardImplicit = "conv_forward_implicit"
    case convForwardImplicitRows = "conv_forward_implicit_rows"
    case convBackwardWeightRows = "conv_backward_weight_rows", convSumChunks = "conv_sum_chunks"
    // pool.cl
    case maxPool2D = "max_pool_2d", maxPool2DBackward = "max_pool_2d_backward"
    case maxPool2D2x2 = "max_pool_2d_2x2", maxPool2D2x2Backward = "max_pool_2d_2x2_backward"
    case avgPool2D = "avg_pool_2d", avgPool2DBackward = "avg_pool_2d_backward"
    // norm.cl
    case batchNormForward = "batch_norm_forward", batchNormBackward = "batch_norm_backward"
    case batchNormForwardFeatures = "batch_norm_forward_features"
    case batchNormBackwardFeatures = "batch_norm_backward_features"
    case layerNormForward = "layer_norm_forward", layerNormBackward = "layer_norm_backward"
    case layerNormParamPartial = "layer_norm_param_partial", layerNormParamReduce = "layer_norm_param_reduce"
    // attention.cl (one program per head dimension: launched by AttentionKernelTable in OpenCLBackend+Attention.swift)
    case attentionForward = "attention_forward", attentionDelta = "attention_delta"
    case attentionBackwardKV = "attention_backward_kv", attentionBackwardQ = "attention_backward_q"
    // recurrent.cl
    case lstmCellForward = "lstm_cell_forward", lstmCellBackward = "lstm_cell_backward"
    case gruCellForward = "gru_cell_forward", gruCellBackward = "gru_cell_backward"
    // embedding.cl
    case embeddingGather = "embedding_gather", embeddingScatterPartial = "embedding_scatter_partial"
    case embeddingScatterReduce = "embedding_scatter_reduce"
    // peak.cl
    case peakFMA = "peak_fma", peakCopy = "peak_copy"

    /// The `Kernels/<family>.cl` file that defines the kernel.
    var family: String {
        switch self {
        case .fill, .unary, .binaryFlat, .binaryStrided, .stridedCopy, .transposeTiled, .binaryStridedRows,
             .stridedCopyRows, .unaryExp, .unarySigmoid, .unaryTanh, .unaryGELU, .unaryGELUDerivative, .unaryReLU,
             .unaryLeakyReLU, .unaryGradientReLU, .unaryGradientLeakyReLU, .unaryGradientSigmoid, .unaryGradientTanh,
             .unaryGradientGELU: "elementwise"
        case .reduceRows, .reduceColumns, .argmaxRows, .argmaxColumns: "reduce"
        case .softmaxRows, .softmaxBackwardRows: "softmax"
        case .crossEntropyRows, .crossEntropyBackwardRows: "loss"
        case .adamUpdate, .sgdUpdate: "optim"
        case .dropoutMask: "random"
        case .gemmTiled, .gemmFast, .gemmEpilogue: "gemm"
        case .convIm2col, .convCol2im, .convScatter, .convGather, .convForwardImplicit, .convForwardImplicitRows,
             .convBackwardWeightRows, .convSumChunks:
            "conv"
        case .maxPool2D, .maxPool2DBackward, .maxPool2D2x2, .maxPool2D2x2Backward, .avgPool2D, .avgPool2DBackward: "pool"
        case .batchNormForward, .batchNormBackward, .batchNormForwardFeatures, .batchNormBackwardFeatures,
             .layerNormForward, .layerNormBackward, .layerNormParamPartial,
             .layerNormParamReduce: "norm"
        case .attentionForward, .attentionDelta, .attentionBackwardKV, .attentionBackwardQ: "attention"
        case .lstmCellForward, .lstmCellBackward, .gruCellForward, .gruCellBackward: "recurrent"
        case .embeddingGather, .embeddingScatterPartial, .embeddingScatterReduce: "embedding"
        case .peakFMA, .peakCopy: "peak"
        }
    }
}

func largestPowerOfTwo(atMost value: Int) -> Int {
    var result = 1
    while result * 2 <= value { result *= 2 }
    return result
}

func smallestPowerOfTwo(atLeast value: Int) -> Int {
    var result = 1
    while result < value { result *= 2 }
    return result
}

extension UnaryOp {
    /// The `op` code of `unary` in elementwise.cl and its parameters (a, b).
    var kernelCode: (op: Int32, a: Float, b: Float) {
        switch self {
        case .identity: (0, 0, 0)
        case .negate: (1, 0, 0)
        case .abs: (2, 0, 0)
        case .exp: (3, 0, 0)
        case .log: (4, 0, 0)
        case .sqrt: (5, 0, 0)
        case .reciprocal: (6, 0, 0)
        case .square: (7, 0, 0)
        case .relu: (8, 0, 0)
        case let .leakyRelu(slope): (9, slope, 0)
        case .sigmoid: (10, 0, 0)
        case .tanh: (11, 0, 0)
        case .gelu: (12, 0, 0)
        case .softplus: (13, 0, 0)
        case let .power(exponent): (14, exponent, 0)
        case let .affine(scale, shift): (15, scale, shift)
        case .step: (16, 0, 0)
        case let .leakyReluDerivative(slope): (17, slope, 0)
        case .geluDerivative: (18, 0, 0)
        }
    }
}

extension BinaryOp {
    /// The `op` code of the binary kernels in elementwise.cl.
    var kernelCode: Int32 {
        switch self {
        case .add: 0
        case .subtract: 1
        case .multiply: 2
        case .divide: 3
        case .power: 4
        case .maximum: 5
        case .minimum: 6
        }
    }
}

extension ReduceOp {
    /// The `op` code of the reduce kernels in reduce.cl.
    var kernelCode: Int32 {
        switch self {
        case .sum: 0
        case .max: 1
        }
    }
}

/// A strided index space after dropping extent-1 axes and merging axes that are contiguous in every
/// stride set: `[4, 5]` with strides `[5, 1]` and `[0, 0]` becomes `[20]` with `[1]` and `[0]`.
struct CollapsedLayout: Equatable {
    var shape: [Int]
    var strides: [[Int]]

    init(shape: [Int], strides: [[Int]]) {
        var keptShape: [Int] = []
        var keptStrides = [[Int]](repeating: [], count: strides.count)
        for axis in shape.indices where shape[axis] != 1 {
            keptShape.append(shape[axis])
            for set in strides.indices { keptStrides[set].append(strides[set][axis]) }
        }
        var mergedShape: [Int] = []
        var mergedStrides = [[Int]](repeating: [], count: strides.count)
        for axis in keptShape.indices {
            if let last = mergedShape.indices.last,
               strides.indices.allSatisfy({ mergedStrides[$0][last] == keptStrides[$0][axis] * keptShape[axis] }) {
                mergedShape[last] *= keptShape[axis]
                for set in strides.indices { mergedStrides[set][last] = keptStrides[set][axis] }
            } else {
                mergedShape.append(keptShape[axis])
                for set in strides.indices { mergedStrides[set].append(keptStrides[set][axis]) }
            }
        }
        self.shape = mergedShape
        self.strides = mergedStrides
    }

    var rank: Int { shape.count }

    /// Shape or strides as the `int8` kernel argument (unused lanes 1 for the shape, 0 for strides).
    static func vector(_ values: [Int], padding: Int32) -> SIMD8<Int32> {
        var result = SIMD8<Int32>(repeating: padding)
        for (lane, value) in values.enumerated() { result[lane] = Int32(value) }
        return result
    }
}
