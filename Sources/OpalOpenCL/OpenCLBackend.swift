import Foundation
import OpalCore
import OpenCLKit

/// Device memory of an `OpenCLBackend`: a `CLBuffer` from the backend's `BufferPool`, handed back to the
/// pool when the last reference goes away. The queue is in order, so a recycled buffer is only reused by
/// commands enqueued after every command that used it.
public final class OpenCLBuffer: DeviceBuffer, @unchecked Sendable {
    // @unchecked: every stored property is immutable and `CLBuffer`/`BufferPool` are thread-safe.
    public let buffer: CLBuffer
    /// Capacity in 4-byte elements.
    public let count: Int
    let context: CLContext
    private let pool: BufferPool

    init(buffer: CLBuffer, count: Int, context: CLContext, pool: BufferPool) {
        self.buffer = buffer; self.count = count; self.context = context; self.pool = pool
    }

    deinit { pool.recycle(buffer) }
}

/// The `Backend` op set on one OpenCL device (a GPU, or a CPU through PoCL).
///
/// Every op enqueues its kernel on one in-order queue and returns; only `readFloats`, `readInts` and
/// `synchronize` wait for the device (see `hostWaitCount`). Kernels come from `Kernels/*.cl`, built once
/// per device by the `ProgramCache`; GEMM goes to CLBlast, with Opal's own tiled kernel as the fallback.
public final class OpenCLBackend: Backend, @unchecked Sendable {
    // @unchecked: the OpenCL handles are thread-safe except kernel argument setting, and every mutable
    // property (the kernel table, the GEMM engine) is guarded by `lock`, which is also held from
    // `clSetKernelArg` until the kernel is enqueued.

    /// Which implementation `gemm` uses.
    public enum GemmEngine: String, Sendable {
        /// CLBlast (the default on GPUs, per the parameter table), falling back to `.opal` when CLBlast reports an error.
        case clblast
        /// Opal's own tiled kernel in `Kernels/gemm.cl`.
        case opal
    }

    public let name: String
    public let device: CLDevice
    public let context: CLContext
    public let queue: CLCommandQueue
    public let programs: ProgramCache
    public let pool: BufferPool
    let parameters: OpenCLKernelParameters

    private let lock = NSLock()
    private var kernels: [OpenCLKernel: (kernel: CLKernel, maximumWorkGroupSize: Int)] = [:]
    private let profileLock = NSLock()
    private var _kernelProfile: KernelProfile?

    /// When set, every kernel Opal enqueues itself records its launch event here (CLBlast's GEMMs are not
    /// seen); `KernelProfile.summary()` then gives the device time per kernel. Nil (the default) costs nothing.
    public var kernelProfile: KernelProfile? {
        get { profileLock.withLock { _kernelProfile } }
        set { profileLock.withLock { _kernelProfile = newValue } }
    }
    private var selectedGemmEngine = GemmEngine.clblast
    private var clblastFailed = false

    /// Opens a context and an in-order profiling queue on `device`; `index` names it "opencl:<index>".
    /// - Parameter tuning: tuned kernel parameters to use; nil (the default) reads the device's file in
    ///   `TuningStore` (`opal bench tune`). Pass `TuningRecord(for: device)` for the built-in table only.
    public init(device: CLDevice, index: Int, tuning: TuningRecord? = nil) throws {
        self.device = device
        self.name = "opencl:\(index)"
        self.context = try CLContext(device: device)
        self.queue = try CLCommandQueue(context: context)
        self.programs = ProgramCache(context: context)
        self.pool = BufferPool(context: context)
        self.parameters = OpenCLKernelParameters(device: device, tuning: tuning)
        self.selectedGemmEngine = parameters.gemm.preferredEngine
    }

    public var deviceDescription: String { "\(device.name) (\(device.vendor), \(device.platformName))" }

    public var kind: DeviceKind {
        switch device.type {
        case .gpu: .gpu
        case .cpu: .openCLCPU
        case .accelerator, .other: .accelerator
        }
    }

    /// Blocking reads, `finish` calls and event waits on the queue so far.
    public var hostWaitCount: Int { queue.hostWaitCount }

    /// The GEMM implementation (`.clblast` by default).
    public var gemmEngine: GemmEngine {
        get { lock.withLock { selectedGemmEngine } }
        set { lock.withLock { selectedGemmEngine = newValue } }
    }

    /// True once CLBlast reported an error; `gemm` then always uses Opal's own kernel.
    public var clblastDisabled: Bool { lock.withLock { clblastFailed } }

    /// Records a CLBlast error: the first one is noted on stderr, and `gemm` uses Opal's kernel from then on.
    func noteCLBlastFailure(status: Int32) {
        let first = lock.withLock {
            defer { clblastFailed = true }
            return !clblastFailed
        }
        if first {
            let message = "opal: CLBlast SGEMM failed with status \(status) on \(device.name); "
                + "\(name) uses Opal's own GEMM kernel from now on\n"
            FileHandle.standardError.write(Data(message.utf8))
        }
    }

    // MARK: Memory

    public func allocate(count: Int) throws -> any DeviceBuffer {
        guard count >= 0 else { throw TensorError.invalidArgument(op: "allocate", reason: "negative count \(count)") }
        let buffer = try pool.allocate(byteCount: max(count, 1) * 4)
        return OpenCLBuffer(buffer: buffer, count: count, context: context, pool: pool)
    }

    public func write(_ values: [Float], to buffer: any DeviceBuffer) throws {
        let target = try own(buffer, "write", elements: values.count)
        guard !values.isEmpty else { return }
        try values.withUnsafeBytes { try queue.write(target.buffer, from: $0) }
    }

    public func write(_ values: [Int32], to buffer: any DeviceBuffer) throws {
        let target = try own(buffer, "write", elements: values.count)
        guard !values.isEmpty else { return }
        try values.withUnsafeBytes { try queue.write(target.buffer, from: $0) }
    }

    public func readFloats(_ buffer: any DeviceBuffer, count: Int) throws -> [Float] {
        let source = try own(buffer, "readFloats", elements: count)
        var values = [Float](repeating: 0, count: count)
        guard count > 0 else { return values }
        try values.withUnsafeMutableBytes { try queue.read(source.buffer, into: $0) }
        return values
    }

    public func readInts(_ buffer: any DeviceBuffer, count: Int) throws -> [Int32] {
        let source = try own(buffer, "readInts", elements: count)
        var values = [Int32](repeating: 0, count: count)
        guard count > 0 else { return values }
        try values.withUnsafeMutableBytes { try queue.read(source.buffer, into: $0) }
        return values
    }

    public func fill(_ buffer: any DeviceBuffer, value: Float, count: Int) throws {
        let target = try own(buffer, "fill", elements: count)
        guard count > 0 else { return }
        // A kernel rather than clEnqueueFillBuffer: oclgrind does not track fills as initialising
        // memory, and one kernel launch costs the same.
        try launch(.fill, [.buffer(target.buffer), .int(count), .float(value)], count: count)
    }

    public func synchronize() throws {
        try queue.finish()
    }

    // MARK: Elementwise

    public func unary(_ op: UnaryOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, count: Int) throws {
        let input = try own(x, "unary", elements: count), output = try own(y, "unary", elements: count)
        guard count > 0 else { return }
        let dedicated: OpenCLKernel? = switch op {
        case .exp: .unaryExp
        case .sigmoid: .unarySigmoid
        case .tanh: .unaryTanh
        case .gelu: .unaryGELU
        case .geluDerivative: .unaryGELUDerivative
        case .relu: .unaryReLU
        default: nil
        }
        if case let .leakyRelu(slope) = op {
            try launch(.unaryLeakyReLU, [.buffer(input.buffer), .buffer(output.buffer), .int(count), .float(slope)],
                       count: count)
            return
        }
        if let dedicated {
            try launch(dedicated, [.buffer(input.buffer), .buffer(output.buffer), .int(count)], count: count)
            return
        }
        let code = op.kernelCode
        try launch(.unary, [.buffer(input.buffer), .buffer(output.buffer), .int(count), .int32(code.op),
                            .float(code.a), .float(code.b)], count: count)
    }

    public func unaryGradient(_ op: UnaryOp, input x: any DeviceBuffer, output y: any DeviceBuffer,
                              gradOutput dy: any DeviceBuffer, gradInput dx: any DeviceBuffer, count: Int) throws {
        let name = "\(op) gradient"
        let (kernel, fromOutput, parameter): (OpenCLKernel, Bool, Float) = switch op {
        case .relu: (.unaryGradientReLU, false, 0)
        case let .leakyRelu(slope): (.unaryGradientLeakyReLU, false, slope)
        case .sigmoid: (.unaryGradientSigmoid, true, 0)
        case .tanh: (.unaryGradientTanh, true, 0)
        case .gelu: (.unaryGradientGELU, false, 0)
        default: throw TensorError.invalidArgument(op: "unaryGradient", reason: "\(op) has no fused gradient")
        }
        let values = try own(fromOutput ? y : x, name, elements: count)
        let gradOutput = try own(dy, name, elements: count), gradInput = try own(dx, name, elements: count)
        guard count > 0 else { return }
        try launch(kernel, [.buffer(values.buffer), .buffer(gradOutput.buffer), .buffer(gradInput.buffer), .int(count),
                            .float(parameter)], count: count)
    }

    public func binary(_ op: BinaryOp, _ a: any DeviceBuffer, _ b: any DeviceBuffer, _ out: any DeviceBuffer,
                       layout: BroadcastLayout) throws {
        let count = layout.count
        guard layout.stridesA.count == layout.shape.count, layout.stridesB.count == layout.shape.count else {
            throw TensorError.invalidArgument(op: "binary", reason: "layout \(layout) has strides of the wrong rank")
        }
        let left = try own(a, "binary", elements: try span(layout.shape, layout.stridesA, offset: 0))
        let right = try own(b, "binary", elements: try span(layout.shape, layout.stridesB, offset: 0))
        let output = try own(out, "binary", elements: count)
        guard count > 0 else { return }
        let collapsed = CollapsedLayout(shape: layout.shape, strides: [layout.stridesA, layout.stridesB])
        if collapsed.rank <= 1 {
            let strideA = collapsed.rank == 0 ? 0 : collapsed.strides[0][0]
            let strideB = collapsed.rank == 0 ? 0 : collapsed.strides[1][0]
            if (strideA == 0 || strideA == 1) && (strideB == 0 || strideB == 1) {
                try launch(.binaryFlat, [.buffer(left.buffer), .buffer(right.buffer), .buffer(output.buffer),
                                         .int(count), .int32(op.kernelCode), .int(strideA), .int(strideB)],
                           count: count)
                return
            }
        }
        guard collapsed.rank <= maximumKernelRank else {
            throw TensorError.invalidArgument(
                op: "binary", reason: "layout \(layout) has rank \(collapsed.rank) after collapsing, above \(maximumKernelRank)")
        }
        if let rows = rowsLayout(collapsed, innerStrides: [0, 1]) {
            try launch(.binaryStridedRows, [
                .buffer(left.buffer), .buffer(right.buffer), .buffer(output.buffer), .int(rows.count), .int(rows.inner),
                .int32(op.kernelCode), .int(collapsed.rank - 1),
                .vector(CollapsedLayout.vector(rows.outerShape, padding: 1)),
                .vector(CollapsedLayout.vector(rows.outerStrides[0], padding: 0)),
                .vector(CollapsedLayout.vector(rows.outerStrides[1], padding: 0)),
                .int(rows.innerStrides[0]), .int(rows.innerStrides[1]),
            ], count: rows.count)
            return
        }
        try launch(.binaryStrided, [
            .buffer(left.buffer), .buffer(right.buffer), .buffer(output.buffer), .int(count),
            .int32(op.kernelCode), .int(collapsed.rank),
            .vector(CollapsedLayout.vector(collapsed.shape, padding: 1)),
            .vector(CollapsedLayout.vector(collapsed.strides[0], padding: 0)),
            .vector(CollapsedLayout.vector(collapsed.strides[1], padding: 0)),
        ], count: count)
    }

    public func copy(_ src: any DeviceBuffer, _ dst: any DeviceBuffer, layout: StridedCopy) throws {
        let count = layout.count
        guard layout.srcStrides.count == layout.shape.count, layout.dstStrides.count == layout.shape.count else {
            throw TensorError.invalidArgument(op: "copy", reason: "layout \(layout) has strides of the wrong rank")
        }
        let source = try own(src, "copy", elements: try span(layout.shape, layout.srcStrides, offset: layout.srcOffset))
        let target = try own(dst, "copy", elements: try span(layout.shape, layout.dstStrides, offset: layout.dstOffset))
        guard count > 0 else { return }
        let collapsed = CollapsedLayout(shape: layout.shape, strides: [layout.srcStrides, layout.dstStrides])
        if source.buffer !== target.buffer,
           collapsed.rank == 0 || (collapsed.rank == 1 && collapsed.strides[0][0] == 1 && collapsed.strides[1][0] == 1) {
            try queue.copy(from: source.buffer, to: target.buffer, sourceOffset: layout.srcOffset * 4,
                           destinationOffset: layout.dstOffset * 4, byteCount: count * 4)
            return
        }
        guard collapsed.rank <= maximumKernelRank else {
            throw TensorError.invalidArgument(
                op: "copy", reason: "layout \(layout) has rank \(collapsed.rank) after collapsing, above \(maximumKernelRank)")
        }
        if source.buffer !== target.buffer, let rows = rowsLayout(collapsed, innerStrides: [1]) {
            try launch(.stridedCopyRows, [
                .buffer(source.buffer), .buffer(target.buffer), .int(rows.count), .int(rows.inner), .int(collapsed.rank - 1),
                .vector(CollapsedLayout.vector(rows.outerShape, padding: 1)),
                .vector(CollapsedLayout.vector(rows.outerStrides[0], padding: 0)),
                .vector(CollapsedLayout.vector(rows.outerStrides[1], padding: 0)),
                .int(layout.srcOffset), .int(layout.dstOffset),
            ], count: rows.count)
            return
        }
        try launch(.stridedCopy, [
            .buffer(source.buffer), .buffer(target.buffer), .int(count), .int(collapsed.rank),
            .vector(CollapsedLayout.vector(collapsed.shape, padding: 1)),
            .vector(CollapsedLayout.vector(collapsed.strides[0], padding: 0)),
            .vector(CollapsedLayout.vector(collapsed.strides[1], padding: 0)),
            .int(layout.srcOffset), .int(layout.dstOffset),
        ], count: count)
    }

    /// On CPU-class devices, a layout whose innermost axis is long and has a stride in `innerStrides` in
    /// every stride set (binary: the two operands; copy: source and destination) as rows: the outer axes,
    /// the row length and the operands' strides along the row. Nil where the element-wise kernels fit better
    /// (GPUs, short rows).
    private func rowsLayout(_ collapsed: CollapsedLayout, innerStrides allowed: Set<Int>)
        -> (count: Int, inner: Int, outerShape: [Int], outerStrides: [[Int]], innerStrides: [Int])? {
        guard kind == .openCLCPU, collapsed.rank >= 2, let inner = collapsed.shape.last, inner >= 16,
              collapsed.strides.allSatisfy({ allowed.contains($0.last ?? -1) }) else { return nil }
        let outerShape = Array(collapsed.shape.dropLast())
        return (outerShape.reduce(1, *), inner, outerShape, collapsed.strides.map { Array($0.dropLast()) },
                collapsed.strides.map { $0.last! })
    }

    // MARK: Reductions

    public func reduce(_ op: ReduceOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws {
        try reduction(kernels: (.reduceRows, .reduceColumns), extra: [.int32(op.kernelCode)], x, y, layout: layout,
                      op: "reduce")
    }

    public func argmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws {
        try reduction(kernels: (.argmaxRows, .argmaxColumns), extra: [], x, y, layout: layout, op: "argmax")
    }

    /// Whether rows (inner = 1) reduce one work-item per row rather than one work-group per row: on CPU
    /// devices when there are enough rows to fill the cores (a conv bias gradient's N·C rows). CPU OpenCL
    /// runs each barrier of the work-group tree as a separate loop over the work-items, which costs more
    /// than the sum itself.
    func reducesRowsSerially(rows: Int) -> Bool { device.type == .cpu && rows >= 64 }

    private func reduction(kernels: (rows: OpenCLKernel, columns: OpenCLKernel), extra: [KernelArgument],
                           _ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout, op: String) throws {
        guard layout.outer >= 0, layout.size >= 0, layout.inner >= 0 else {
            throw TensorError.invalidArgument(op: op, reason: "negative extent in \(layout)")
        }
        let input = try own(x, op, elements: layout.outer * layout.size * layout.inner)
        let output = try own(y, op, elements: layout.outer * layout.inner)
        guard layout.outer * layout.inner > 0 else { return }
        if layout.inner == 1 && reducesRowsSerially(rows: layout.outer) {
            // The columns kernel with inner = 1: one work-item per row, walking it in order.
            try enqueue(kernels.columns, [.buffer(input.buffer), .buffer(output.buffer), .int(layout.outer),
                                          .int(layout.size), .int(1)] + extra,
                        global: { local in [1, roundUp(layout.outer, to: local)] },
                        local: { limit in [1, largestPowerOfTwo(atMost: min(64, limit))] })
        } else if layout.inner == 1 {
            try launchRows(kernels.rows, [.buffer(input.buffer), .buffer(output.buffer), .int(layout.outer),
                                          .int(layout.size)] + extra,
                           rows: layout.outer, columns: layout.size)
        } else {
            let preferred = min(parameters.workGroupSize, smallestPowerOfTwo(atLeast: layout.inner))
            try enqueue(kernels.columns, [.buffer(input.buffer), .buffer(output.buffer), .int(layout.outer),
                                          .int(layout.size), .int(layout.inner)] + extra,
                        global: { local in [roundUp(layout.inner, to: local), layout.outer] },
                        local: { limit in [largestPowerOfTwo(atMost: min(preferred, limit)), 1] })
        }
    }

    // MARK: Softmax and loss

    public func softmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, rows: Int, columns: Int, log: Bool) throws {
        let input = try own(x, "softmax", elements: rows * columns)
        let output = try own(y, "softmax", elements: rows * columns)
        guard rows > 0, columns > 0 else { return }
        try launchRows(.softmaxRows, [.buffer(input.buffer), .buffer(output.buffer), .int(rows), .int(columns),
                                      .int32(log ? 1 : 0)], rows: rows, columns: columns)
    }

    public func softmaxBackward(_ y: any DeviceBuffer, _ dy: any DeviceBuffer, _ dx: any DeviceBuffer,
                                rows: Int, columns: Int, log: Bool) throws {
        let forward = try own(y, "softmaxBackward", elements: rows * columns)
        let upstream = try own(dy, "softmaxBackward", elements: rows * columns)
        let output = try own(dx, "softmaxBackward", elements: rows * columns)
        guard rows > 0, columns > 0 else { return }
        try launchRows(.softmaxBackwardRows, [.buffer(forward.buffer), .buffer(upstream.buffer),
                                              .buffer(output.buffer), .int(rows), .int(columns), .int32(log ? 1 : 0)],
                       rows: rows, columns: columns)
    }

    public func crossEntropy(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer, _ losses: any DeviceBuffer,
                             rows: Int, columns: Int) throws {
        let input = try own(logits, "crossEntropy", elements: rows * columns)
        let targets = try own(labels, "crossEntropy", elements: rows)
        let output = try own(losses, "crossEntropy", elements: rows)
        guard rows > 0 else { return }
        try launchRows(.crossEntropyRows, [.buffer(input.buffer), .buffer(targets.buffer), .buffer(output.buffer),
                                           .int(rows), .int(columns)], rows: rows, columns: columns)
    }

    public func crossEntropyBackward(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer,
                                     _ upstream: any DeviceBuffer, _ dx: any DeviceBuffer,
                                     rows: Int, columns: Int, scale: Float) throws {
        let input = try own(logits, "crossEntropyBackward", elements: rows * columns)
        let targets = try own(labels, "crossEntropyBackward", elements: rows)
        let gradient = try own(upstream, "crossEntropyBackward", elements: 1)
        let output = try own(dx, "crossEntropyBackward", elements: rows * columns)
        guard rows > 0, columns > 0 else { return }
        try launchRows(.crossEntropyBackwardRows, [
            .buffer(input.buffer), .buffer(targets.buffer), .buffer(gradient.buffer), .buffer(output.buffer),
            .int(rows), .int(columns), .float(scale),
        ], rows: rows, columns: columns)
    }

    // MARK: Random and optimizers

    public func dropoutMask(_ out: any DeviceBuffer, count: Int, probability: Float, seed: UInt32) throws {
        let output = try own(out, "dropoutMask", elements: count)
        guard count > 0 else { return }
        let scale: Float = 1 / (1 - probability)
        try launch(.dropoutMask, [.buffer(output.buffer), .int(count), .float(probability), .float(scale),
                                  .uint32(seed)], count: count)
    }

    public func adamUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, m: any DeviceBuffer,
                           v: any DeviceBuffer, count: Int, step: AdamStep) throws {
        let buffers = try [parameter, gradient, m, v].map { try own($0, "adamUpdate", elements: count) }
        guard count > 0 else { return }
        try launch(.adamUpdate, buffers.map { .buffer($0.buffer) } + [
            .int(count), .float(step.learningRate), .float(step.beta1), .float(step.beta2), .float(step.epsilon),
            .float(step.weightDecay), .int32(step.decoupled ? 1 : 0),
            .float(step.biasCorrection1), .float(step.biasCorrection2),
        ], count: count)
    }

    public func sgdUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, velocity: any DeviceBuffer,
                          count: Int, step: SGDStep) throws {
        let theta = try own(parameter, "sgdUpdate", elements: count)
        let g = try own(gradient, "sgdUpdate", elements: count)
        let v = try own(velocity, "sgdUpdate", elements: step.momentum == 0 ? 0 : count)
        guard count > 0 else { return }
        try launch(.sgdUpdate, [
            .buffer(theta.buffer), .buffer(g.buffer), .buffer(v.buffer), .int(count),
            .float(step.learningRate), .float(step.momentum), .float(step.weightDecay), .int32(step.nesterov ? 1 : 0),
        ], count: count)
    }

    // MARK: Launching

    /// One kernel argument, set with `clSetKernelArg` in order.
    enum KernelArgument {
        case buffer(CLBuffer)
        /// An Int passed as a 32-bit `int` (checked to fit).
        case int(Int)
        case int32(Int32)
        case uint32(UInt32)
        case float(Float)
        /// An `int8` vector (rank ≤ 8 shapes and strides).
        case vector(SIMD8<Int32>)
    }

    /// Checks that `buffer` belongs to this backend and holds at least `elements` elements.
    func own(_ buffer: any DeviceBuffer, _ op: String, elements: Int) throws -> OpenCLBuffer {
        guard let result = buffer as? OpenCLBuffer, result.context === context else {
            throw TensorError.device("\(op): buffer \(type(of: buffer)) does not belong to \(name)")
        }
        guard elements <= result.count else {
            throw TensorError.invalidArgument(
                op: op, reason: "needs \(elements) elements but the buffer holds \(result.count)")
        }
        return result
    }

    /// Elements a strided view reaches: offset + Σ (extent − 1)·stride + 1 (0 when empty).
    func span(_ shape: [Int], _ strides: [Int], offset: Int) throws -> Int {
        guard !shape.contains(0) else { return 0 }
        guard offset >= 0, strides.allSatisfy({ $0 >= 0 }), shape.allSatisfy({ $0 > 0 }) else {
            throw TensorError.invalidArgument(
                op: "strided", reason: "shape \(shape), strides \(strides), offset \(offset) must not be negative")
        }
        return offset + zip(shape, strides).reduce(0) { $0 + ($1.0 - 1) * $1.1 } + 1
    }

    /// The cached kernel object and its work-group limit; builds the program on first use.
    /// Call with `lock` held.
    private func kernelLocked(_ kernel: OpenCLKernel) throws -> (kernel: CLKernel, maximumWorkGroupSize: Int) {
        if let cached = kernels[kernel] { return cached }
        let source = try KernelSources.source(named: kernel.family)
        let object = try programs.kernel(source: source, options: parameters.buildOptions, name: kernel.rawValue)
        let entry = (kernel: object, maximumWorkGroupSize: try object.maxWorkGroupSize(device: device))
        kernels[kernel] = entry
        return entry
    }

    /// Sets the arguments and enqueues `kernel` with the given geometry, as one step under `lock`.
    /// `local` nil means "the 1-D default": the parameters' work-group size, clamped to the kernel's limit.
    func enqueue(_ kernel: OpenCLKernel, _ arguments: [KernelArgument], global: (Int) -> [Int],
                 local: (Int) throws -> [Int]) throws {
        try lock.withLock {
            let entry = try kernelLocked(kernel)
            try Self.setArguments(arguments, of: entry.kernel, name: kernel.rawValue)
            let localSize = try local(entry.maximumWorkGroupSize)
            try enqueueRecorded(entry.kernel, name: kernel.rawValue, global: global(localSize.reduce(1, *)), local: localSize)
        }
    }

    /// Sets `arguments` on `kernel` in order (call with the kernel's lock held until it is enqueued).
    static func setArguments(_ arguments: [KernelArgument], of kernel: CLKernel, name: String) throws {
        for (index, argument) in arguments.enumerated() {
            switch argument {
            case let .buffer(buffer): try kernel.setArgument(index, buffer)
            case let .int(value):
                guard let narrow = Int32(exactly: value) else {
                    throw TensorError.invalidArgument(op: name, reason: "argument \(index) = \(value) does not fit in 32 bits")
                }
                try kernel.setArgument(index, narrow)
            case let .int32(value): try kernel.setArgument(index, value)
            case let .uint32(value): try kernel.setArgument(index, value)
            case let .float(value): try kernel.setArgument(index, value)
            case let .vector(value): try kernel.setArgument(index, value)
            }
        }
    }

    /// Enqueues `kernel`, recording its event in `kernelProfile` when one is collecting.
    func enqueueRecorded(_ kernel: CLKernel, name: String, global: [Int], local: [Int]) throws {
        let profile = kernelProfile
        let event = try queue.enqueue(kernel, global: global, local: local, wantsEvent: profile != nil)
        if let profile, let event { profile.record(name, event) }
    }

    /// 1-D launch over `count` work-items (rounded up to whole work-groups; the kernels bounds-check).
    func launch(_ kernel: OpenCLKernel, _ arguments: [KernelArgument], count: Int) throws {
        let preferred = parameters.workGroupSize
        try enqueue(kernel, arguments, global: { local in [roundUp(count, to: local)] },
                    local: { limit in [largestPowerOfTwo(atMost: min(preferred, limit))] })
    }

    /// One work-group per row of `columns` elements, of a power-of-two size up to the work-group size.
    func launchRows(_ kernel: OpenCLKernel, _ arguments: [KernelArgument], rows: Int, columns: Int) throws {
        let preferred = min(parameters.workGroupSize, smallestPowerOfTwo(atLeast: max(columns, 1)))
        try enqueue(kernel, arguments, global: { local in [rows * local] },
                    local: { limit in [largestPowerOfTwo(atMost: min(preferred, limit))] })
    }
}

func roundUp(_ value: Int, to multiple: Int) -> Int {
    (value + multiple - 1) / multiple * multiple
}

/// Device time per kernel, from the profiling events of the launches recorded while it was attached to
/// an `OpenCLBackend` (`backend.kernelProfile = KernelProfile()`).
public final class KernelProfile: @unchecked Sendable {
    // @unchecked: `launches` is guarded by `lock`.
    public struct Entry: Sendable {
        public var kernel: String
        public var launches: Int
        public var milliseconds: Double
        public init(kernel: String, launches: Int, milliseconds: Double) {
            self.kernel = kernel; self.launches = launches; self.milliseconds = milliseconds
        }
    }

    private let lock = NSLock()
    private var launches: [(name: String, event: CLEvent)] = []

    public init() {}

    func record(_ name: String, _ event: CLEvent) { lock.withLock { launches.append((name, event)) } }

    /// Waits for the recorded launches and sums their device time per kernel, largest first.
    public func summary() throws -> [Entry] {
        let recorded = lock.withLock { launches }
        var totals: [String: Entry] = [:]
        for (name, event) in recorded {
            let nanoseconds = try event.profilingNanoseconds(.end) - event.profilingNanoseconds(.start)
            totals[name, default: Entry(kernel: name, launches: 0, milliseconds: 0)].launches += 1
            totals[name]!.milliseconds += Double(nanoseconds) / 1e6
        }
        return totals.values.sorted { $0.milliseconds > $1.milliseconds }
    }
}
