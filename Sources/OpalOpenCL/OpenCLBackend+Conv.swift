import Foundation
import OpalCore
import OpenCLKit

/// How `OpenCLBackend` computes a convolution's forward pass (`Kernels/conv.cl`).
public enum ConvolutionAlgorithm: String, Sendable, CaseIterable {
    /// Chosen per shape and device by `OpenCLBackend.chosenConvolutionAlgorithm(for:)`.
    case automatic
    /// im2col into a column matrix in device memory, the backend's GEMM (CLBlast or gemm.cl), scatter + bias.
    case im2col
    /// Opal's tiled implicit-GEMM kernel: the column matrix is built tile by tile in local memory only.
    case implicitGemm
}

/// The two implicit-GEMM forward kernels of conv.cl.
public enum ImplicitGemmKernel: String, Sendable, CaseIterable {
    /// `conv_forward_implicit`: CONV_TM×CONV_TN output tiles, col and weight tiles staged in local memory,
    /// 4×4 register blocks per work-item (GPUs).
    case localTiles
    /// `conv_forward_implicit_rows`: CONV_VM output channels × 16 positions of one output row per work-item in
    /// float16 registers, no local memory or barriers (CPU devices such as PoCL).
    case vectorRows
}

/// How `OpenCLBackend.conv2DBackwardWeight` computes the weight gradient (`Kernels/conv.cl`).
public enum BackwardWeightAlgorithm: String, Sendable, CaseIterable {
    /// Chosen per device by `OpenCLBackend.chosenBackwardWeightAlgorithm(for:)`.
    case automatic
    /// im2col, gather dy, the backend's GEMM `dW_g (+)= dyT · col_gᵀ` accumulated over batch chunks.
    case im2col
    /// `conv_backward_weight_rows`: no column matrix; CONV_BWM × CONV_BWK blocks of dW per work-item, summed
    /// over 16 output positions at a time in float16 registers, per chunk of output rows (CPU devices such as
    /// PoCL); `conv_sum_chunks` adds the chunks' partial sums.
    case implicitRows
}

/// Tile sizes of `conv_forward_implicit`; they mirror the `#define` defaults at the top of conv.cl.
struct ImplicitGemmTiles {
    static let outputChannels = 64      // CONV_TM
    static let positions = 64           // CONV_TN
    static let channelsPerItem = 4      // CONV_WPM
    static let positionsPerItem = 4     // CONV_WPN
    static var localSize: [Int] { [positions / positionsPerItem, outputChannels / channelsPerItem, 1] }
    static var workGroupSize: Int { localSize.reduce(1, *) }
}

/// Per-backend convolution settings (an extension cannot add stored properties to `OpenCLBackend`).
private final class ConvolutionSettings: @unchecked Sendable {
    // @unchecked: the dictionaries are only touched under `lock`.
    private let lock = NSLock()
    private var algorithms: [ObjectIdentifier: ConvolutionAlgorithm] = [:]
    private var kernels: [ObjectIdentifier: ImplicitGemmKernel] = [:]
    private var weightAlgorithms: [ObjectIdentifier: BackwardWeightAlgorithm] = [:]

    func weightAlgorithm(of backend: OpenCLBackend) -> BackwardWeightAlgorithm {
        lock.withLock { weightAlgorithms[ObjectIdentifier(backend)] ?? .automatic }
    }

    func set(_ algorithm: BackwardWeightAlgorithm, for backend: OpenCLBackend) {
        lock.withLock { weightAlgorithms[ObjectIdentifier(backend)] = algorithm }
    }

    func kernel(of backend: OpenCLBackend) -> ImplicitGemmKernel? {
        lock.withLock { kernels[ObjectIdentifier(backend)] }
    }

    func set(_ kernel: ImplicitGemmKernel, for backend: OpenCLBackend) {
        lock.withLock { kernels[ObjectIdentifier(backend)] = kernel }
    }

    func algorithm(of backend: OpenCLBackend) -> ConvolutionAlgorithm {
        lock.withLock { algorithms[ObjectIdentifier(backend)] ?? .automatic }
    }

    func set(_ algorithm: ConvolutionAlgorithm, for backend: OpenCLBackend) {
        lock.withLock { algorithms[ObjectIdentifier(backend)] = algorithm }
    }

    static let shared = ConvolutionSettings()
}

extension OpenCLBackend {
    /// The forward algorithm of `conv2D` (`.automatic` by default). Backward-data always uses col2im with the
    /// backend's GEMM; backward-weight follows `backwardWeightAlgorithm`.
    public var convolutionAlgorithm: ConvolutionAlgorithm {
        get { ConvolutionSettings.shared.algorithm(of: self) }
        set { ConvolutionSettings.shared.set(newValue, for: self) }
    }

    /// The algorithm of `conv2DBackwardWeight` (`.automatic` by default).
    public var backwardWeightAlgorithm: BackwardWeightAlgorithm {
        get { ConvolutionSettings.shared.weightAlgorithm(of: self) }
        set { ConvolutionSettings.shared.set(newValue, for: self) }
    }

    /// The algorithm `conv2DBackwardWeight` uses for `descriptor` under `.automatic`.
    ///
    /// Rule: on CPU devices (PoCL) with Opal's own GEMM engine, `.implicitRows`, which beat im2col + Opal's GEMM
    /// and im2col + CLBlast on every K2 and R2 shape (PoCL, 2 AVX-512 cores: K2 3×3 ~140 ms against ~900 ms and
    /// ~750 ms; R2 conv1 1.2 ms against 12 ms, R2 conv2, 14 wide, 20 ms against 31 ms); elsewhere, whenever the
    /// engine is CLBlast (the reference `opal bench conv` times), and for output rows narrower than 8 (more than
    /// half of the kernel's 16 lanes would idle; not measured), im2col + the backend's GEMM.
    public func chosenBackwardWeightAlgorithm(for descriptor: Conv2DDescriptor) -> BackwardWeightAlgorithm {
        switch backwardWeightAlgorithm {
        case .im2col: return .im2col
        case .implicitRows: return .implicitRows
        case .automatic:
            guard device.type == .cpu, gemmEngine == .opal, descriptor.outputWidth >= 8 else { return .im2col }
            return .implicitRows
        }
    }

    /// Which implicit-GEMM kernel `.implicitGemm` runs: `.vectorRows` on CPU devices, `.localTiles` elsewhere,
    /// unless set.
    public var implicitGemmKernel: ImplicitGemmKernel {
        get { ConvolutionSettings.shared.kernel(of: self) ?? (device.type == .cpu ? .vectorRows : .localTiles) }
        set { ConvolutionSettings.shared.set(newValue, for: self) }
    }

    /// Column-matrix budget of the im2col path: 64 Mi floats (256 MiB), or a quarter of the device's
    /// largest allocation if that is smaller. Larger batches are processed in chunks of batch elements.
    var convolutionColumnBudget: Int {
        min(64 << 20, Int(min(device.maxAllocationBytes / 16, UInt64(Int32.max))))
    }

    /// The algorithm `conv2D` uses for `descriptor` under `.automatic`.
    ///
    /// Rule, per device and shape: on CPU devices (PoCL) the `.vectorRows` implicit-GEMM kernel, which beat
    /// im2col + CLBlast on every measured shape (R2 conv1/conv2 by 9×/6×, K2 3×3 by 2.7×, K2 7×7 s2 by 6×;
    /// see the report in Benchmarks/RESULTS.md); elsewhere im2col + the backend's GEMM, until the `.localTiles`
    /// kernel has been measured against CLBlast on a GPU. A shape whose input rows are narrower than a
    /// quarter of the kernel's 16-wide vector (output width < 4) also takes im2col: most lanes would idle.
    public func chosenConvolutionAlgorithm(for descriptor: Conv2DDescriptor) -> ConvolutionAlgorithm {
        switch convolutionAlgorithm {
        case .im2col: return .im2col
        case .implicitGemm: return .implicitGemm
        case .automatic:
            guard implicitGemmKernel == .vectorRows, descriptor.outputWidth >= 4 else { return .im2col }
            return .implicitGemm
        }
    }

    // MARK: Forward

    /// `y = conv2D(x, w) + bias` (see `Conv2DDescriptor`) with `chosenConvolutionAlgorithm(for:)`.
    /// - Parameters:
    ///   - input: x, [batch, inputChannels, inputHeight, inputWidth]
    ///   - weight: w, [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
    ///   - bias: [outputChannels], or nil
    ///   - output: y, [batch, outputChannels, outputHeight, outputWidth] (fully overwritten)
    public func conv2D(_ input: any DeviceBuffer, _ weight: any DeviceBuffer, _ bias: (any DeviceBuffer)?,
                       _ output: any DeviceBuffer, descriptor d: Conv2DDescriptor) throws {
        try conv2D(input, weight, bias, output, descriptor: d, algorithm: chosenConvolutionAlgorithm(for: d))
    }

    /// `conv2D` with an explicit algorithm (`.automatic` chooses as `conv2D` does).
    public func conv2D(_ input: any DeviceBuffer, _ weight: any DeviceBuffer, _ bias: (any DeviceBuffer)?,
                       _ output: any DeviceBuffer, descriptor d: Conv2DDescriptor,
                       algorithm: ConvolutionAlgorithm) throws {
        try checkConvolution(d, op: "conv2D")
        let x = try own(input, "conv2D", elements: d.inputCount)
        let w = try own(weight, "conv2D", elements: d.weightCount)
        let b = try bias.map { try own($0, "conv2D", elements: d.outputChannels) }
        let y = try own(output, "conv2D", elements: d.outputCount)
        switch algorithm == .automatic ? chosenConvolutionAlgorithm(for: d) : algorithm {
        case .implicitGemm: try implicitGemmForward(x, w, b, y, d)
        case .im2col, .automatic: try im2colForward(x, w, b, y, d)
        }
    }

    private func implicitGemmForward(_ x: OpenCLBuffer, _ w: OpenCLBuffer, _ bias: OpenCLBuffer?,
                                     _ y: OpenCLBuffer, _ d: Conv2DDescriptor) throws {
        if implicitGemmKernel == .vectorRows {
            let items = d.batch * d.outputHeight * ((d.outputWidth + 15) / 16)
            let channelsPerItem = parameters.conv.channelsPerItem   // CONV_VM
            let global1 = (d.outputChannelsPerGroup + channelsPerItem - 1) / channelsPerItem
            try enqueue(.convForwardImplicitRows, [
                .buffer(x.buffer), .buffer(w.buffer), .buffer((bias ?? w).buffer), .buffer(y.buffer),
                .int32(bias == nil ? 0 : 1), .int(d.batch), .int(d.outputChannels), .int(d.groups),
            ] + geometry(d), global: { local in [roundUp(items, to: local), global1, d.groups] },
            local: { limit in [largestPowerOfTwo(atMost: min(self.parameters.conv.workGroupSize, limit)), 1, 1] })
            return
        }
        let columns = d.batch * d.outputHeight * d.outputWidth
        let local = ImplicitGemmTiles.localSize
        let global = [roundUp(columns, to: ImplicitGemmTiles.positions) / ImplicitGemmTiles.positionsPerItem,
                      roundUp(d.outputChannelsPerGroup, to: ImplicitGemmTiles.outputChannels)
                          / ImplicitGemmTiles.channelsPerItem,
                      d.groups]
        try enqueue(.convForwardImplicit, [
            .buffer(x.buffer), .buffer(w.buffer), .buffer((bias ?? w).buffer), .buffer(y.buffer),
            .int32(bias == nil ? 0 : 1), .int(d.batch), .int(d.outputChannels), .int(d.groups),
        ] + geometry(d), global: { _ in global }, local: { limit in
            guard ImplicitGemmTiles.workGroupSize <= limit else {
                throw TensorError.device("conv_forward_implicit: work-groups of \(ImplicitGemmTiles.workGroupSize) exceed the limit \(limit) of \(self.device.name); use ConvolutionAlgorithm.im2col")
            }
            return local
        })
    }

    private func im2colForward(_ x: OpenCLBuffer, _ w: OpenCLBuffer, _ bias: OpenCLBuffer?,
                               _ y: OpenCLBuffer, _ d: Conv2DDescriptor) throws {
        let chunk = columnChunk(d)
        let (mg, k, p) = (d.outputChannelsPerGroup, d.inputChannelsPerGroup * d.kernelHeight * d.kernelWidth,
                          d.outputHeight * d.outputWidth)
        let col = try allocate(count: d.inputChannels * d.kernelHeight * d.kernelWidth * p * chunk)
        let product = try allocate(count: mg * p * chunk)
        let colBuffer = try own(col, "conv2D", elements: 0), productBuffer = try own(product, "conv2D", elements: 0)
        for first in stride(from: 0, to: d.batch, by: chunk) {
            let count = min(chunk, d.batch - first)
            let columns = count * p
            try im2col(x, colBuffer, d, first: first, count: count)
            for g in 0..<d.groups {
                try gemm(w, col, product, descriptor: GemmDescriptor(m: mg, n: columns, k: k, offsetA: g * mg * k,
                                                                     offsetB: g * k * columns))
                try launch2D(.convScatter, [
                    .buffer(productBuffer.buffer), .buffer(y.buffer), .buffer((bias ?? w).buffer),
                    .int32(bias == nil ? 0 : 1), .int(first), .int(count), .int(d.outputChannels), .int(mg), .int(g),
                    .int(p),
                ], columns: columns, rows: mg)
            }
        }
    }

    // MARK: Backward

    /// `dx = conv2Dᵀ(dy, w)`, the gradient of `conv2D` with respect to its input (overwrites dx):
    /// gather dy, GEMM `colGrad = W_gᵀ · dyT`, col2im.
    public func conv2DBackwardData(_ gradOutput: any DeviceBuffer, _ weight: any DeviceBuffer,
                                   _ gradInput: any DeviceBuffer, descriptor d: Conv2DDescriptor) throws {
        try checkConvolution(d, op: "conv2DBackwardData")
        let dy = try own(gradOutput, "conv2DBackwardData", elements: d.outputCount)
        let w = try own(weight, "conv2DBackwardData", elements: d.weightCount)
        let dx = try own(gradInput, "conv2DBackwardData", elements: d.inputCount)
        let chunk = columnChunk(d)
        let (mg, k, p) = (d.outputChannelsPerGroup, d.inputChannelsPerGroup * d.kernelHeight * d.kernelWidth,
                          d.outputHeight * d.outputWidth)
        let col = try allocate(count: d.inputChannels * d.kernelHeight * d.kernelWidth * p * chunk)
        let gathered = try allocate(count: mg * p * chunk)
        let colBuffer = try own(col, "conv2DBackwardData", elements: 0)
        let gatheredBuffer = try own(gathered, "conv2DBackwardData", elements: 0)
        for first in stride(from: 0, to: d.batch, by: chunk) {
            let count = min(chunk, d.batch - first)
            let columns = count * p
            for g in 0..<d.groups {
                try launch2D(.convGather, [
                    .buffer(dy.buffer), .buffer(gatheredBuffer.buffer), .int(first), .int(count),
                    .int(d.outputChannels), .int(mg), .int(g), .int(p),
                ], columns: columns, rows: mg)
                try gemm(w, gathered, col, descriptor: GemmDescriptor(transposeA: true, m: k, n: columns, k: mg,
                                                                      offsetA: g * mg * k, offsetC: g * k * columns))
            }
            let elements = count * d.inputChannels * d.inputHeight * d.inputWidth
            try launch(.convCol2im, [.buffer(colBuffer.buffer), .buffer(dx.buffer), .int(first), .int(count)]
                       + geometry(d), count: elements)
        }
    }

    /// `dw = Σ_n dy_n ⋆ x_n`, the gradient of `conv2D` with respect to its weight (overwrites dw), with
    /// `chosenBackwardWeightAlgorithm(for:)`.
    /// - Parameters:
    ///   - input: x, [batch, inputChannels, inputHeight, inputWidth]
    ///   - gradOutput: dy, [batch, outputChannels, outputHeight, outputWidth]
    ///   - gradWeight: dw, [outputChannels, inputChannels / groups, kernelHeight, kernelWidth]
    public func conv2DBackwardWeight(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer,
                                     _ gradWeight: any DeviceBuffer, descriptor d: Conv2DDescriptor) throws {
        try conv2DBackwardWeight(input, gradOutput, gradWeight, descriptor: d,
                                 algorithm: chosenBackwardWeightAlgorithm(for: d))
    }

    /// `conv2DBackwardWeight` with an explicit algorithm (`.automatic` chooses as `conv2DBackwardWeight` does).
    public func conv2DBackwardWeight(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer,
                                     _ gradWeight: any DeviceBuffer, descriptor d: Conv2DDescriptor,
                                     algorithm: BackwardWeightAlgorithm) throws {
        try checkConvolution(d, op: "conv2DBackwardWeight")
        let x = try own(input, "conv2DBackwardWeight", elements: d.inputCount)
        let dy = try own(gradOutput, "conv2DBackwardWeight", elements: d.outputCount)
        let dw = try own(gradWeight, "conv2DBackwardWeight", elements: d.weightCount)
        switch algorithm == .automatic ? chosenBackwardWeightAlgorithm(for: d) : algorithm {
        case .implicitRows: try implicitRowsBackwardWeight(x, dy, dw, d)
        case .im2col, .automatic: try im2colBackwardWeight(x, dy, gradWeight, d)
        }
    }

    /// im2col, gather dy, GEMM `dW_g (+)= dyT · col_gᵀ` accumulated over batch chunks.
    private func im2colBackwardWeight(_ x: OpenCLBuffer, _ dy: OpenCLBuffer, _ gradWeight: any DeviceBuffer,
                                      _ d: Conv2DDescriptor) throws {
        let chunk = columnChunk(d)
        let (mg, k, p) = (d.outputChannelsPerGroup, d.inputChannelsPerGroup * d.kernelHeight * d.kernelWidth,
                          d.outputHeight * d.outputWidth)
        let col = try allocate(count: d.inputChannels * d.kernelHeight * d.kernelWidth * p * chunk)
        let gathered = try allocate(count: mg * p * chunk)
        let colBuffer = try own(col, "conv2DBackwardWeight", elements: 0)
        let gatheredBuffer = try own(gathered, "conv2DBackwardWeight", elements: 0)
        for first in stride(from: 0, to: d.batch, by: chunk) {
            let count = min(chunk, d.batch - first)
            let columns = count * p
            try im2col(x, colBuffer, d, first: first, count: count)
            for g in 0..<d.groups {
                try launch2D(.convGather, [
                    .buffer(dy.buffer), .buffer(gatheredBuffer.buffer), .int(first), .int(count),
                    .int(d.outputChannels), .int(mg), .int(g), .int(p),
                ], columns: columns, rows: mg)
                try gemm(gathered, col, gradWeight, descriptor: GemmDescriptor(
                    transposeB: true, m: mg, n: k, k: columns, beta: first == 0 ? 0 : 1,
                    offsetB: g * k * columns, offsetC: g * mg * k))
            }
        }
    }

    /// `conv_backward_weight_rows` over chunks of output rows, then `conv_sum_chunks` (when there is more
    /// than one chunk).
    private func implicitRowsBackwardWeight(_ x: OpenCLBuffer, _ dy: OpenCLBuffer, _ dw: OpenCLBuffer,
                                            _ d: Conv2DDescriptor) throws {
        let (chunks, rowsPerChunk) = backwardWeightChunks(d)
        let tiles = parameters.conv
        let depthBlocks = (d.inputChannelsPerGroup * d.kernelHeight * d.kernelWidth + tiles.weightDepthsPerItem - 1)
            / tiles.weightDepthsPerItem
        let channelBlocks = (d.outputChannelsPerGroup + tiles.weightChannelsPerItem - 1) / tiles.weightChannelsPerItem
        let scratch = chunks > 1 ? try allocate(count: chunks * d.weightCount) : nil
        let partial = try scratch.map { try own($0, "conv2DBackwardWeight", elements: 0) } ?? dw
        try enqueue(.convBackwardWeightRows, [
            .buffer(x.buffer), .buffer(dy.buffer), .buffer(partial.buffer), .int(d.batch), .int(d.outputChannels),
            .int(d.groups), .int(rowsPerChunk),
        ] + geometry(d), global: { local in [roundUp(depthBlocks, to: local), channelBlocks, chunks * d.groups] },
        local: { limit in [largestPowerOfTwo(atMost: min(tiles.workGroupSize, limit)), 1, 1] })
        if chunks > 1 {
            try launch(.convSumChunks, [.buffer(partial.buffer), .buffer(dw.buffer), .int(chunks), .int(d.weightCount)],
                       count: d.weightCount)
        }
        withExtendedLifetime(scratch) {}
    }

    /// How `conv_backward_weight_rows` splits the batch·outputHeight output rows: chunks of rows whose dy
    /// block (CONV_BWM channels × rows × outputWidth) holds about 64 Ki floats (256 KiB), so that the
    /// work-items that share it find it in the core's L2 cache, with at most 16 Mi floats of partial sums.
    /// (K2 on PoCL, 2 AVX-512 cores: blocks of 4 Ki, 16 Ki, 64 Ki and 256 Ki floats took 166/140/134/144 ms
    /// for 3×3 and 137/117/113/158 ms for 7×7 s2.)
    func backwardWeightChunks(_ d: Conv2DDescriptor) -> (chunks: Int, rowsPerChunk: Int) {
        let rows = d.batch * d.outputHeight
        let cached = max(1, (64 << 10) / max(1, parameters.conv.weightChannelsPerItem * d.outputWidth))
        let most = max(1, (16 << 20) / max(1, d.weightCount))
        let chunks = min(max(1, (rows + cached - 1) / cached), most)
        let rowsPerChunk = (rows + chunks - 1) / chunks
        return ((rows + rowsPerChunk - 1) / rowsPerChunk, rowsPerChunk)
    }

    // MARK: Helpers

    private func checkConvolution(_ d: Conv2DDescriptor, op: String) throws {
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: "\(d): \(problem)") }
        let largest = Int(Int32.max)
        guard d.inputCount < largest, d.outputCount < largest, d.weightCount < largest,
              d.inputChannels * d.kernelHeight * d.kernelWidth * d.outputHeight * d.outputWidth < largest else {
            throw TensorError.invalidArgument(op: op, reason: "\(d): a tensor exceeds the 2³¹-element range of the kernels")
        }
    }

    /// Batch elements per im2col chunk: as many as fit the column budget (at least one).
    private func columnChunk(_ d: Conv2DDescriptor) -> Int {
        let perElement = d.inputChannels * d.kernelHeight * d.kernelWidth * d.outputHeight * d.outputWidth
        return max(1, min(d.batch, convolutionColumnBudget / max(perElement, 1)))
    }

    /// The geometry arguments (CONV_GEOMETRY in conv.cl), in order.
    private func geometry(_ d: Conv2DDescriptor) -> [KernelArgument] {
        [d.inputChannels, d.inputHeight, d.inputWidth, d.kernelHeight, d.kernelWidth, d.strideHeight, d.strideWidth,
         d.paddingHeight, d.paddingWidth, d.dilationHeight, d.dilationWidth, d.outputHeight, d.outputWidth]
            .map { .int($0) }
    }

    private func im2col(_ x: OpenCLBuffer, _ col: OpenCLBuffer, _ d: Conv2DDescriptor, first: Int, count: Int) throws {
        try launch2D(.convIm2col, [.buffer(x.buffer), .buffer(col.buffer), .int(first), .int(count)] + geometry(d),
                     columns: count * d.outputHeight * d.outputWidth,
                     rows: d.inputChannels * d.kernelHeight * d.kernelWidth)
    }

    /// 2-D launch over [columns, rows]: work-groups of a power-of-two row segment, one row high.
    private func launch2D(_ kernel: OpenCLKernel, _ arguments: [KernelArgument], columns: Int, rows: Int) throws {
        let preferred = min(parameters.workGroupSize, smallestPowerOfTwo(atLeast: columns))
        try enqueue(kernel, arguments, global: { local in [roundUp(columns, to: local), rows] },
                    local: { limit in [largestPowerOfTwo(atMost: min(preferred, limit)), 1] })
    }
}
