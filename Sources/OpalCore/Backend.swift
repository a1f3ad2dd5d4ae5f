import Foundation

/// Device memory owned by one backend. Each backend downcasts to its own buffer class.
/// Releasing the last reference returns the memory to the backend's caching allocator.
public protocol DeviceBuffer: AnyObject, Sendable {
    /// Capacity in elements (4-byte elements: Float or Int32).
    var count: Int { get }
}

public enum DeviceKind: String, Sendable {
    case cpu, gpu, accelerator, openCLCPU = "opencl-cpu"
}

/// Elementwise functions of one input: `y[i] = f(x[i])`.
/// The `…Derivative` cases give f'(x) of the named activation, so backward passes compose
/// them with a multiply; they are evaluated at the forward input `x`.
public enum UnaryOp: Hashable, Sendable {
    case identity
    case negate
    case abs
    case exp
    case log
    case sqrt
    case reciprocal
    case square
    case relu
    case leakyRelu(slope: Float)
    case sigmoid
    case tanh
    /// tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    case gelu
    /// log(1 + eˣ), computed stably as max(x, 0) + log1p(e^{−|x|})
    case softplus
    /// x^p for a constant p
    case power(Float)
    /// scale·x + shift
    case affine(scale: Float, shift: Float)
    /// 1 where x > 0, else 0
    case step
    /// 1 where x > 0, else slope
    case leakyReluDerivative(slope: Float)
    case geluDerivative
}

extension Backend {
    /// The composed form of `unaryGradient` (derivative into a scratch buffer, then `dy ·` it), for backends
    /// without a fused kernel; the CPU and OpenCL backends override it with one pass.
    public func unaryGradient(_ op: UnaryOp, input x: any DeviceBuffer, output y: any DeviceBuffer,
                              gradOutput dy: any DeviceBuffer, gradInput dx: any DeviceBuffer, count: Int) throws {
        guard op.hasFusedGradient else {
            throw TensorError.invalidArgument(op: "unaryGradient", reason: "\(op) has no fused gradient")
        }
        guard count > 0 else { return }
        let derivative = try allocate(count: count)
        switch op {
        case .relu: try unary(.step, x, derivative, count: count)
        case let .leakyRelu(slope): try unary(.leakyReluDerivative(slope: slope), x, derivative, count: count)
        case .gelu: try unary(.geluDerivative, x, derivative, count: count)
        case .sigmoid:   // y(1 − y)
            try unary(.affine(scale: -1, shift: 1), y, derivative, count: count)
            try binary(.multiply, derivative, y, derivative,
                       layout: BroadcastLayout(shape: [count], stridesA: [1], stridesB: [1]))
        default:         // tanh: 1 − y²
            try unary(.square, y, derivative, count: count)
            try unary(.affine(scale: -1, shift: 1), derivative, derivative, count: count)
        }
        try binary(.multiply, dy, derivative, dx, layout: BroadcastLayout(shape: [count], stridesA: [1], stridesB: [1]))
    }
}

extension UnaryOp {
    /// Whether `Backend.unaryGradient` computes this op's backward pass.
    public var hasFusedGradient: Bool {
        switch self {
        case .relu, .leakyRelu, .sigmoid, .tanh, .gelu: true
        default: false
        }
    }
}

/// Elementwise functions of two inputs, with broadcasting described by `BroadcastLayout`.
public enum BinaryOp: String, Hashable, Sendable {
    case add, subtract, multiply, divide, power, maximum, minimum
}

public enum ReduceOp: String, Hashable, Sendable {
    case sum, max
}

/// Maximum rank that the strided kernels accept after collapsing contiguous axes.
public let maximumKernelRank = 8

/// Geometry of a broadcasting binary op: `out[idx] = a[Σ idx·stridesA] ⊕ b[Σ idx·stridesB]`
/// over the row-major index space of `shape`. A stride of 0 repeats the element (broadcast).
public struct BroadcastLayout: Hashable, Sendable {
    public var shape: [Int]
    public var stridesA: [Int]
    public var stridesB: [Int]
    public var count: Int { shape.reduce(1, *) }
    public init(shape: [Int], stridesA: [Int], stridesB: [Int]) {
        self.shape = shape; self.stridesA = stridesA; self.stridesB = stridesB
    }
}

/// A strided copy: for every row-major index `idx` of `shape`,
/// `dst[dstOffset + Σ idx·dstStrides] = src[srcOffset + Σ idx·srcStrides]`.
/// It covers permute/transpose, slicing, concatenation (copy into a region) and broadcasting.
public struct StridedCopy: Hashable, Sendable {
    public var shape: [Int]
    public var srcOffset: Int
    public var srcStrides: [Int]
    public var dstOffset: Int
    public var dstStrides: [Int]
    public var count: Int { shape.reduce(1, *) }
    public init(shape: [Int], srcOffset: Int = 0, srcStrides: [Int], dstOffset: Int = 0, dstStrides: [Int]) {
        self.shape = shape; self.srcOffset = srcOffset; self.srcStrides = srcStrides
        self.dstOffset = dstOffset; self.dstStrides = dstStrides
    }
}

/// Reduction geometry: the input is viewed as `[outer, size, inner]` and reduced over the middle
/// axis into `[outer, inner]`.
public struct ReduceLayout: Hashable, Sendable {
    public var outer: Int, size: Int, inner: Int
    public init(outer: Int, size: Int, inner: Int) { self.outer = outer; self.size = size; self.inner = inner }
}

/// Row-major batched GEMM: for each b in 0..<batch,
/// `C_b = alpha · op(A_b) · op(B_b) + beta · C_b`, with op(A_b) of shape [m, k], op(B_b) [k, n], C_b [m, n].
/// A_b starts at `offsetA + b·strideA` and has leading dimension `lda` (row length of A as stored), etc.
public struct GemmDescriptor: Hashable, Sendable {
    public var transposeA: Bool, transposeB: Bool
    public var m: Int, n: Int, k: Int
    public var alpha: Float, beta: Float
    public var lda: Int, ldb: Int, ldc: Int
    public var offsetA: Int, offsetB: Int, offsetC: Int
    public var strideA: Int, strideB: Int, strideC: Int
    public var batch: Int

    public init(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                alpha: Float = 1, beta: Float = 0, lda: Int? = nil, ldb: Int? = nil, ldc: Int? = nil,
                offsetA: Int = 0, offsetB: Int = 0, offsetC: Int = 0,
                strideA: Int? = nil, strideB: Int? = nil, strideC: Int? = nil, batch: Int = 1) {
        self.transposeA = transposeA; self.transposeB = transposeB
        self.m = m; self.n = n; self.k = k; self.alpha = alpha; self.beta = beta
        self.lda = lda ?? (transposeA ? m : k)
        self.ldb = ldb ?? (transposeB ? k : n)
        self.ldc = ldc ?? n
        self.offsetA = offsetA; self.offsetB = offsetB; self.offsetC = offsetC
        self.strideA = strideA ?? m * k
        self.strideB = strideB ?? k * n
        self.strideC = strideC ?? m * n
        self.batch = batch
    }
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) * Double(batch) }
}

/// Hyper-parameters of one Adam/AdamW step. `weightDecay` is decoupled (AdamW) when
/// `decoupled` is true, else it is L2 added to the gradient. The host computes the bias
/// corrections from the step count, so the device never reports back.
public struct AdamStep: Hashable, Sendable {
    public var learningRate: Float, beta1: Float, beta2: Float, epsilon: Float
    public var weightDecay: Float, decoupled: Bool
    /// 1 − β1ᵗ and 1 − β2ᵗ for the current step t (t ≥ 1).
    public var biasCorrection1: Float, biasCorrection2: Float
    public init(learningRate: Float, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float,
                decoupled: Bool, step: Int) {
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        self.weightDecay = weightDecay; self.decoupled = decoupled
        self.biasCorrection1 = 1 - Float(pow(Double(beta1), Double(step)))
        self.biasCorrection2 = 1 - Float(pow(Double(beta2), Double(step)))
    }
}

/// SGD with momentum and L2 weight decay:
/// `g ← grad + weightDecay·θ; v ← momentum·v + g; θ ← θ − learningRate·(nesterov ? g + momentum·v : v)`.
public struct SGDStep: Hashable, Sendable {
    public var learningRate: Float, momentum: Float, weightDecay: Float, nesterov: Bool
    public init(learningRate: Float, momentum: Float, weightDecay: Float, nesterov: Bool) {
        self.learningRate = learningRate; self.momentum = momentum; self.weightDecay = weightDecay
        self.nesterov = nesterov
    }
}

/// The op set every device implements. Kept small: everything else composes from it.
///
/// Contract for all methods:
/// - Buffers are this backend's own; counts are in elements; all inputs are already validated
///   by `Tensor` (shapes, dtypes, devices), so a backend only reports device failures.
/// - Calls are asynchronous on devices with a queue: they enqueue and return. Only the `read…`
///   methods and `synchronize()` wait for the device.
/// - Output buffers may contain garbage (or NaN) beforehand; every method writes every element
///   of its output range.
public protocol Backend: AnyObject, Sendable {
    /// Short stable name, e.g. "cpu" or "opencl:0".
    var name: String { get }
    /// Human description: device name and vendor.
    var deviceDescription: String { get }
    var kind: DeviceKind { get }

    func allocate(count: Int) throws -> any DeviceBuffer
    func write(_ values: [Float], to buffer: any DeviceBuffer) throws
    func write(_ values: [Int32], to buffer: any DeviceBuffer) throws
    func readFloats(_ buffer: any DeviceBuffer, count: Int) throws -> [Float]
    func readInts(_ buffer: any DeviceBuffer, count: Int) throws -> [Int32]
    /// Sets `count` Float elements to `value`.
    func fill(_ buffer: any DeviceBuffer, value: Float, count: Int) throws

    /// `y[i] = op(x[i])` for i < count (y may be x).
    func unary(_ op: UnaryOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, count: Int) throws
    /// The backward pass of an activation in one pass: `dx[i] = dy[i] · op'(x[i])` for i < count, for the
    /// ops where `op.hasFusedGradient`. The derivative is taken from the input `x` (relu, leakyRelu, gelu)
    /// or from the forward output `y = op(x)` (sigmoid: y(1 − y), tanh: 1 − y²); both are passed.
    /// `dx` may be `dy`.
    func unaryGradient(_ op: UnaryOp, input x: any DeviceBuffer, output y: any DeviceBuffer,
                       gradOutput dy: any DeviceBuffer, gradInput dx: any DeviceBuffer, count: Int) throws
    /// Broadcasting `out = a ⊕ b` over `layout`.
    func binary(_ op: BinaryOp, _ a: any DeviceBuffer, _ b: any DeviceBuffer, _ out: any DeviceBuffer,
                layout: BroadcastLayout) throws
    /// Float strided copy (4-byte elements, so it also moves Int32 data).
    func copy(_ src: any DeviceBuffer, _ dst: any DeviceBuffer, layout: StridedCopy) throws
    /// `y[o, i] = reduce_s x[o, s, i]`.
    func reduce(_ op: ReduceOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws
    /// `y[o, i] = argmax_s x[o, s, i]` as Int32 (first index of the maximum).
    func argmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws
    func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer, descriptor: GemmDescriptor) throws
    /// Row-wise softmax (or log-softmax) over `columns` for each of `rows` rows.
    func softmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, rows: Int, columns: Int, log: Bool) throws
    /// Given the forward output y and upstream dy:
    /// softmax: dx = y ⊙ (dy − Σ dy⊙y); log-softmax: dx = dy − eʸ · Σ dy.
    func softmaxBackward(_ y: any DeviceBuffer, _ dy: any DeviceBuffer, _ dx: any DeviceBuffer,
                         rows: Int, columns: Int, log: Bool) throws
    /// Per-row loss `logsumexp(x_r) − x_r[label_r]`; labels are Int32 in [0, columns).
    func crossEntropy(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer, _ losses: any DeviceBuffer,
                      rows: Int, columns: Int) throws
    /// `dx[r, c] = scale · upstream[0] · (softmax(x_r)[c] − [c == label_r])`; `upstream` is a
    /// one-element device buffer (the gradient of the loss), so nothing is read back to the host.
    func crossEntropyBackward(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer, _ upstream: any DeviceBuffer,
                              _ dx: any DeviceBuffer, rows: Int, columns: Int, scale: Float) throws
    /// `out[i] = (uniform(seed, i) >= probability) ? 1 / (1 − probability) : 0` with the counter-based
    /// generator `OpalRandom.uniform(seed:index:)`, so every device draws the same mask.
    func dropoutMask(_ out: any DeviceBuffer, count: Int, probability: Float, seed: UInt32) throws
    /// Fused Adam/AdamW update of `parameter` in place from `gradient`, with moments `m`, `v`.
    func adamUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, m: any DeviceBuffer,
                    v: any DeviceBuffer, count: Int, step: AdamStep) throws
    /// Fused SGD update in place; `velocity` is unused when momentum is 0.
    func sgdUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, velocity: any DeviceBuffer,
                   count: Int, step: SGDStep) throws
    /// Waits until all enqueued work has finished.
    func synchronize() throws
}

/// Counter-based random numbers, identical on every backend: a pure function of (seed, index).
public enum OpalRandom {
    /// Murmur3-style finaliser over `index · 0x9E3779B9 + seed`, 24 high bits mapped to [0, 1).
    /// The OpenCL kernels implement exactly the same arithmetic in 32-bit unsigned integers.
    @inline(__always)
    public static func uniform(seed: UInt32, index: UInt32) -> Float {
        var x = index &* 0x9E37_79B9 &+ seed
        x ^= x >> 16; x = x &* 0x7FEB_352D
        x ^= x >> 15; x = x &* 0x846C_A68B
        x ^= x >> 16
        return Float(x >> 8) * (1.0 / 16_777_216.0)
    }
}
