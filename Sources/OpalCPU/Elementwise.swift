import Foundation
import CVectorMath
import OpalCore

// Elementwise ops of the CPU backend (mirrors Kernels/elementwise.cl):
//   unary        y[i] = f(x[i])
//   binary       out[idx] = a[Σ idx·stridesA] ⊕ b[Σ idx·stridesB]   (broadcasting)
//   copy         dst[dstOffset + Σ idx·dstStrides] = src[srcOffset + Σ idx·srcStrides]
//   dropoutMask  out[i] = uniform(seed, i) ≥ p ? 1/(1−p) : 0
//
// Each function is a small struct whose `callAsFunction` is inlined into one generic loop; the
// generic loops are specialised per function, so every hot loop is a plain pointer loop with no
// per-element dispatch. The simple references are the formulas in the structs themselves and the
// Double versions in Tests/OpalCPUTests/ElementwiseTests.swift.

// MARK: - Unary

protocol UnaryFunction {
    func callAsFunction(_ x: Float) -> Float
    /// Transcendental functions parallelise at a smaller size than cheap ones.
    static var isExpensive: Bool { get }
}

extension UnaryFunction { static var isExpensive: Bool { false } }

/// A transcendental function with an 8-lane form built on the vector `exponential` (below),
/// because the scalar libm calls (`expf`) keep the loop from vectorising.
protocol VectorUnaryFunction: UnaryFunction {
    func callAsFunction(_ x: SIMD8<Float>) -> SIMD8<Float>
}

private let sqrtTwoOverPi: Float = 0.797_884_560_802_865_4
private let geluCubic: Float = 0.044_715

struct Identity: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x } }
struct Negate: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { -x } }
struct Absolute: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x.magnitude } }
struct Logarithm: UnaryFunction {
    static var isExpensive: Bool { true }
    @inline(__always) func callAsFunction(_ x: Float) -> Float { Foundation.log(x) }
}
struct SquareRoot: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x.squareRoot() } }
struct Reciprocal: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { 1 / x } }
struct Square: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x * x } }
/// max(x, 0); NaN stays NaN.
struct ReLU: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x < 0 ? 0 : x } }
struct LeakyReLU: UnaryFunction {
    let slope: Float
    @inline(__always) func callAsFunction(_ x: Float) -> Float { x > 0 ? x : slope * x }
}
/// d/dx of GELU (the transcendental forward functions are CVectorMath's): with t = tanh u, 0.5(1 + t) + 0.5·x·(1 − t²)·√(2/π)(1 + 3·0.044715x²),
/// evaluated with s = σ(2u) = 0.5(1 + t) and 1 − t² = 4s(1 − s): s + 2x·s(1 − s)·√(2/π)(1 + 0.134145x²).
struct GELUDerivative: VectorUnaryFunction {
    static var isExpensive: Bool { true }
    @inline(__always) func callAsFunction(_ x: Float) -> Float {
        let u = sqrtTwoOverPi * (x + geluCubic * x * x * x)
        let s = 1 / (1 + Foundation.exp(-2 * u))
        return s + 2 * x * s * (1 - s) * sqrtTwoOverPi * (1 + 3 * geluCubic * x * x)
    }
    @inline(__always) func callAsFunction(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let u = sqrtTwoOverPi * (x + geluCubic * x * x * x)
        let s = 1 / (1 + exponential(-2 * u))
        return s + 2 * x * s * (1 - s) * sqrtTwoOverPi * (1 + 3 * geluCubic * x * x)
    }
}
/// log(1 + eˣ) = max(x, 0) + log1p(e^{−|x|})
struct Softplus: UnaryFunction {
    static var isExpensive: Bool { true }
    @inline(__always) func callAsFunction(_ x: Float) -> Float {
        Swift.max(x, 0) + Foundation.log1p(Foundation.exp(-x.magnitude))
    }
}
struct Power: UnaryFunction {
    static var isExpensive: Bool { true }
    let exponent: Float
    @inline(__always) func callAsFunction(_ x: Float) -> Float { Foundation.pow(x, exponent) }
}
struct Affine: UnaryFunction {
    let scale: Float, shift: Float
    @inline(__always) func callAsFunction(_ x: Float) -> Float { scale * x + shift }
}
struct Step: UnaryFunction { @inline(__always) func callAsFunction(_ x: Float) -> Float { x > 0 ? 1 : 0 } }
struct LeakyReLUDerivative: UnaryFunction {
    let slope: Float
    @inline(__always) func callAsFunction(_ x: Float) -> Float { x > 0 ? 1 : slope }
}

extension CPUBackend {
    public func unary(_ op: UnaryOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, count: Int) throws {
        let x = try cpuBuffer(x, op: "unary", elements: count).floats
        let y = try cpuBuffer(y, op: "unary", elements: count).floats
        switch op {
        case .identity: if x != y { y.update(from: x, count: count) }
        case .negate: map(Negate(), x, y, count)
        case .abs: map(Absolute(), x, y, count)
        case .exp: mapVectorMath(opal_exp, x, y, count)
        case .log: map(Logarithm(), x, y, count)
        case .sqrt: map(SquareRoot(), x, y, count)
        case .reciprocal: map(Reciprocal(), x, y, count)
        case .square: map(Square(), x, y, count)
        case .relu: map(ReLU(), x, y, count)
        case let .leakyRelu(slope): map(LeakyReLU(slope: slope), x, y, count)
        case .sigmoid: mapVectorMath(opal_sigmoid, x, y, count)
        case .tanh: mapVectorMath(opal_tanh, x, y, count)
        case .gelu: mapVectorMath(opal_gelu, x, y, count)
        case .softplus: map(Softplus(), x, y, count)
        case let .power(exponent):
            switch exponent {
            case 1: if x != y { y.update(from: x, count: count) }
            case 2: map(Square(), x, y, count)
            case 0.5: map(SquareRoot(), x, y, count)
            case -1: map(Reciprocal(), x, y, count)
            default: map(Power(exponent: exponent), x, y, count)
            }
        case let .affine(scale, shift): map(Affine(scale: scale, shift: shift), x, y, count)
        case .step: map(Step(), x, y, count)
        case let .leakyReluDerivative(slope): map(LeakyReLUDerivative(slope: slope), x, y, count)
        case .geluDerivative: mapVectors(GELUDerivative(), x, y, count)
        }
    }

    /// `y[i] = f(x[i])` for i < count; `y` may equal `x`.
    @inline(__always)
    private func map<F: UnaryFunction>(_ f: F, _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                       _ count: Int) {
        parallelRanges(count: count, minimumChunk: F.isExpensive ? ParallelGrain.expensive : ParallelGrain.cheap) {
            start, end in
            mapKernel(f, x + start, y + start, end - start)
        }
    }
}

extension CPUBackend {
    /// `y[i] = f(x[i])` with one of CVectorMath's loops (AVX2 + FMA where the processor has them), in
    /// parallel chunks. The Swift functions above (`Sigmoid`, `GELU`, …) remain the reference in tests.
    private func mapVectorMath(_ f: (UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int) -> Void,
                               _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        parallelRanges(count: count, minimumChunk: ParallelGrain.expensive) { start, end in
            f(x + start, y + start, end - start)
        }
    }

    public func unaryGradient(_ op: UnaryOp, input x: any DeviceBuffer, output y: any DeviceBuffer,
                              gradOutput dy: any DeviceBuffer, gradInput dx: any DeviceBuffer, count: Int) throws {
        let input = try cpuBuffer(x, op: "\(op) gradient", elements: count).floats
        let output = try cpuBuffer(y, op: "\(op) gradient", elements: count).floats
        let gradOutput = try cpuBuffer(dy, op: "\(op) gradient", elements: count).floats
        let gradInput = try cpuBuffer(dx, op: "\(op) gradient", elements: count).floats
        let vectorMath: ((UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int) -> Void,
                         UnsafeMutablePointer<Float>)?
        switch op {
        case .gelu: vectorMath = (opal_gelu_gradient, input)
        case .sigmoid: vectorMath = (opal_sigmoid_gradient, output)
        case .tanh: vectorMath = (opal_tanh_gradient, output)
        case .relu: vectorMath = nil
            parallelRanges(count: count, minimumChunk: ParallelGrain.cheap) { start, end in
                gradientKernel(input + start, gradOutput + start, gradInput + start, end - start) { $0 > 0 ? 1 : 0 }
            }
        case let .leakyRelu(slope): vectorMath = nil
            parallelRanges(count: count, minimumChunk: ParallelGrain.cheap) { start, end in
                gradientKernel(input + start, gradOutput + start, gradInput + start, end - start) { $0 > 0 ? 1 : slope }
            }
        default:
            throw TensorError.invalidArgument(op: "unaryGradient", reason: "\(op) has no fused gradient")
        }
        if let (f, values) = vectorMath {
            parallelRanges(count: count, minimumChunk: ParallelGrain.expensive) { start, end in
                f(values + start, gradOutput + start, gradInput + start, end - start)
            }
        }
    }

    /// `y[i] = f(x[i])` eight lanes at a time (the last `count mod 8` elements with the scalar form).
    @inline(__always)
    private func mapVectors<F: VectorUnaryFunction>(_ f: F, _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                                    _ count: Int) {
        parallelRanges(count: count, minimumChunk: ParallelGrain.expensive) { start, end in
            vectorMapKernel(f, x + start, y + start, end - start)
        }
    }
}

@inline(__always)
private func vectorMapKernel<F: VectorUnaryFunction>(_ f: F, _ x: UnsafeMutablePointer<Float>,
                                                     _ y: UnsafeMutablePointer<Float>, _ count: Int) {
    let vectors = count / 8
    let source = UnsafeRawPointer(x), destination = UnsafeMutableRawPointer(y)
    for index in 0..<vectors {   // the buffers need not be 32-byte aligned
        let lanes = source.loadUnaligned(fromByteOffset: index * 32, as: SIMD8<Float>.self)
        destination.storeBytes(of: f(lanes), toByteOffset: index * 32, as: SIMD8<Float>.self)
    }
    for index in (vectors * 8)..<count { y[index] = f(x[index]) }
}

/// `dx[i] = dy[i] · derivative(v[i])` (dx may be dy).
@inline(__always)
private func gradientKernel(_ v: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                            _ dx: UnsafeMutablePointer<Float>, _ count: Int, _ derivative: (Float) -> Float) {
    for index in 0..<count { dx[index] = dy[index] * derivative(v[index]) }
}

/// The loop takes everything as parameters: inside a closure the captured pointers would be reloaded
/// after every store (they might alias the store), which stops the vectoriser.
@inline(__always)
private func mapKernel<F: UnaryFunction>(_ f: F, _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                         _ count: Int) {
    if x == y {   // in place: the same pointer lets the vectoriser see the exact aliasing
        for index in 0..<count { x[index] = f(x[index]) }
    } else {
        for index in 0..<count { y[index] = f(x[index]) }
    }
}

// MARK: - Binary

protocol BinaryFunction {
    static func apply(_ a: Float, _ b: Float) -> Float
}

enum Add: BinaryFunction { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
enum Subtract: BinaryFunction { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a - b } }
enum Multiply: BinaryFunction { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a * b } }
enum Divide: BinaryFunction { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a / b } }
enum RaiseToPower: BinaryFunction {
    @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { Foundation.pow(a, b) }
}
/// The larger of a and b; NaN if either is NaN.
enum Maximum: BinaryFunction {
    @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a.isNaN || a > b ? a : b }
}
/// The smaller of a and b; NaN if either is NaN.
enum Minimum: BinaryFunction {
    @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a.isNaN || a < b ? a : b }
}

/// A strided index space with size-1 axes dropped and mergeable neighbours merged, so that the
/// innermost axis is as long as possible. `strides[k]` holds one stride per axis for operand k.
struct CollapsedLayout {
    var shape: [Int]
    var strides: [[Int]]

    init(shape: [Int], strides operands: [[Int]]) {
        var shape2: [Int] = []
        var strides2: [[Int]] = operands.map { _ in [] }
        for axis in 0..<shape.count where shape[axis] != 1 {
            if let last = shape2.indices.last,
               operands.indices.allSatisfy({ strides2[$0][last] == operands[$0][axis] * shape[axis] }) {
                // The previous axis steps exactly over this one in every operand: merge them.
                shape2[last] *= shape[axis]
                for k in operands.indices { strides2[k][last] = operands[k][axis] }
            } else {
                shape2.append(shape[axis])
                for k in operands.indices { strides2[k].append(operands[k][axis]) }
            }
        }
        if shape2.isEmpty {   // a single element
            shape2 = [1]
            strides2 = operands.map { _ in [0] }
        }
        self.shape = shape2
        self.strides = strides2
    }

    /// Calls `body(offsets, innerIndex)` once per inner row (the last axis) with each operand's
    /// offset of the row start, odometer style (no allocation per row).
    @inline(__always)
    func forEachRow(_ body: (_ offsets: UnsafeMutableBufferPointer<Int>, _ row: Int) -> Void) {
        let rank = shape.count
        let operands = strides.count
        let rows = shape.dropLast().reduce(1, *)
        withUnsafeTemporaryAllocation(of: Int.self, capacity: rank + operands) { scratch in
            let counter = UnsafeMutableBufferPointer(rebasing: scratch[0..<rank])
            let offsets = UnsafeMutableBufferPointer(rebasing: scratch[rank..<(rank + operands)])
            counter.initialize(repeating: 0)
            offsets.initialize(repeating: 0)
            for row in 0..<rows {
                body(offsets, row)
                // Advance the odometer over the outer axes.
                var axis = rank - 2
                while axis >= 0 {
                    counter[axis] += 1
                    for k in 0..<operands { offsets[k] += strides[k][axis] }
                    if counter[axis] < shape[axis] { break }
                    for k in 0..<operands { offsets[k] -= strides[k][axis] * shape[axis] }
                    counter[axis] = 0
                    axis -= 1
                }
            }
        }
    }
}

/// The lowest and highest element offsets reached by `offset + Σ idx·strides` over `shape`
/// (shape has no zero extent).
func offsetRange(shape: [Int], strides: [Int], offset: Int) -> (low: Int, high: Int) {
    var low = offset, high = offset
    for (extent, stride) in zip(shape, strides) {
        let reach = (extent - 1) * stride
        if reach < 0 { low += reach } else { high += reach }
    }
    return (low, high)
}

extension CPUBackend {
    public func binary(_ op: BinaryOp, _ a: any DeviceBuffer, _ b: any DeviceBuffer, _ out: any DeviceBuffer,
                       layout: BroadcastLayout) throws {
        let rank = layout.shape.count
        guard layout.stridesA.count == rank, layout.stridesB.count == rank else {
            throw TensorError.invalidArgument(
                op: "binary", reason: "layout of rank \(rank) has strides \(layout.stridesA) and \(layout.stridesB)")
        }
        let count = layout.count
        guard count > 0 else { return }
        let reachA = offsetRange(shape: layout.shape, strides: layout.stridesA, offset: 0)
        let reachB = offsetRange(shape: layout.shape, strides: layout.stridesB, offset: 0)
        guard reachA.low >= 0, reachB.low >= 0 else {
            throw TensorError.invalidArgument(op: "binary", reason: "negative strides are not supported")
        }
        let a = try cpuBuffer(a, op: "binary", elements: reachA.high + 1).floats
        let b = try cpuBuffer(b, op: "binary", elements: reachB.high + 1).floats
        let out = try cpuBuffer(out, op: "binary", elements: count).floats
        let contiguous = Shape(layout.shape).strides
        let collapsed = CollapsedLayout(shape: layout.shape, strides: [layout.stridesA, layout.stridesB, contiguous])
        switch op {
        case .add: broadcast(Add.self, a, b, out, collapsed)
        case .subtract: broadcast(Subtract.self, a, b, out, collapsed)
        case .multiply: broadcast(Multiply.self, a, b, out, collapsed)
        case .divide: broadcast(Divide.self, a, b, out, collapsed)
        case .power: broadcast(RaiseToPower.self, a, b, out, collapsed)
        case .maximum: broadcast(Maximum.self, a, b, out, collapsed)
        case .minimum: broadcast(Minimum.self, a, b, out, collapsed)
        }
    }

    /// Runs one specialised inner loop per row of the collapsed layout (operands: a, b, out).
    @inline(__always)
    private func broadcast<F: BinaryFunction>(_: F.Type, _ a: UnsafeMutablePointer<Float>,
                                              _ b: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                                              _ layout: CollapsedLayout) {
        let n = layout.shape[layout.shape.count - 1]
        let strideA = layout.strides[0].last!, strideB = layout.strides[1].last!
        if layout.shape.count == 1 {
            // One flat range: same-shape, scalar-broadcast, or strided; split across threads when large.
            parallelRanges(count: n, minimumChunk: ParallelGrain.cheap) { start, end in
                binaryRow(F.self, a + start * strideA, strideA, b + start * strideB, strideB, out + start, end - start)
            }
            return
        }
        layout.forEachRow { offsets, _ in
            binaryRow(F.self, a + offsets[0], strideA, b + offsets[1], strideB, out + offsets[2], n)
        }
    }
}

/// `out[j] = F(a[j·strideA], b[j·strideB])` for j < n, with the common stride pairs specialised
/// so that the compiler vectorises them.
/// In-place calls (`out` is `a` or `b`) pass the same pointer twice, so that the vectoriser sees the
/// exact aliasing instead of failing its runtime overlap check and falling back to scalar code.
@inline(__always)
private func binaryRow<F: BinaryFunction>(_: F.Type, _ a: UnsafeMutablePointer<Float>, _ strideA: Int,
                                          _ b: UnsafeMutablePointer<Float>, _ strideB: Int,
                                          _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    if out == a {
        binaryRowKernel(F.self, a, strideA, b, strideB, a, n)
    } else if out == b {
        binaryRowKernel(F.self, a, strideA, b, strideB, b, n)
    } else {
        binaryRowKernel(F.self, a, strideA, b, strideB, out, n)
    }
}

@inline(__always)
private func binaryRowKernel<F: BinaryFunction>(_: F.Type, _ a: UnsafeMutablePointer<Float>, _ strideA: Int,
                                                _ b: UnsafeMutablePointer<Float>, _ strideB: Int,
                                                _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    switch (strideA, strideB) {
    case (1, 1):
        for j in 0..<n { out[j] = F.apply(a[j], b[j]) }
    case (1, 0):
        let scalar = b[0]
        for j in 0..<n { out[j] = F.apply(a[j], scalar) }
    case (0, 1):
        let scalar = a[0]
        for j in 0..<n { out[j] = F.apply(scalar, b[j]) }
    default:
        for j in 0..<n { out[j] = F.apply(a[j * strideA], b[j * strideB]) }
    }
}

// MARK: - Strided copy

extension CPUBackend {
    public func copy(_ src: any DeviceBuffer, _ dst: any DeviceBuffer, layout: StridedCopy) throws {
        let rank = layout.shape.count
        guard layout.srcStrides.count == rank, layout.dstStrides.count == rank else {
            throw TensorError.invalidArgument(
                op: "copy", reason: "layout of rank \(rank) has strides \(layout.srcStrides) and \(layout.dstStrides)")
        }
        guard layout.count > 0 else { return }
        let reachSource = offsetRange(shape: layout.shape, strides: layout.srcStrides, offset: layout.srcOffset)
        let reachDestination = offsetRange(shape: layout.shape, strides: layout.dstStrides, offset: layout.dstOffset)
        guard reachSource.low >= 0, reachDestination.low >= 0 else {
            throw TensorError.invalidArgument(op: "copy", reason: "the layout reaches before the start of a buffer")
        }
        let source = try cpuBuffer(src, op: "copy", elements: reachSource.high + 1).words + layout.srcOffset
        let destination = try cpuBuffer(dst, op: "copy", elements: reachDestination.high + 1).words + layout.dstOffset
        let collapsed = CollapsedLayout(shape: layout.shape, strides: [layout.srcStrides, layout.dstStrides])
        let n = collapsed.shape[collapsed.shape.count - 1]
        let strideSource = collapsed.strides[0].last!, strideDestination = collapsed.strides[1].last!
        collapsed.forEachRow { offsets, _ in
            let from = source + offsets[0], to = destination + offsets[1]
            switch (strideSource, strideDestination) {
            case (1, 1): to.update(from: from, count: n)   // memmove
            case (0, 1): to.update(repeating: from[0], count: n)
            default: for j in 0..<n { to[j * strideDestination] = from[j * strideSource] }
            }
        }
    }
}

// MARK: - Dropout mask

extension CPUBackend {
    public func dropoutMask(_ out: any DeviceBuffer, count: Int, probability: Float, seed: UInt32) throws {
        guard probability >= 0, probability <= 1 else {
            throw TensorError.invalidArgument(op: "dropoutMask", reason: "probability \(probability) is not in [0, 1]")
        }
        let out = try cpuBuffer(out, op: "dropoutMask", elements: count).floats
        let keep: Float = probability < 1 ? 1 / (1 - probability) : 0
        parallelRanges(count: count, minimumChunk: ParallelGrain.expensive) { start, end in
            dropoutKernel(out, start, end, probability: probability, keep: keep, seed: seed)
        }
    }
}

private func dropoutKernel(_ out: UnsafeMutablePointer<Float>, _ start: Int, _ end: Int, probability: Float,
                           keep: Float, seed: UInt32) {
    for index in start..<end {
        out[index] = OpalRandom.uniform(seed: seed, index: UInt32(truncatingIfNeeded: index)) >= probability ? keep : 0
    }
}

/// e^x for 8 lanes (Cephes `expf`: x = n·ln 2 + r with |r| ≤ ½ ln 2, a degree-6 polynomial for e^r,
/// 2ⁿ built in the exponent bits; about 1 ulp). Arguments below −87 (including −∞) give exactly 0;
/// arguments are clamped to ≤ 80 (GELU's derivative only exponentiates −2u). CVectorMath's `exp_approx` is
/// the same algorithm in C, for the loops that run most.
/// Rounding uses the 1.5·2²³ trick (adding it leaves n in the low mantissa bits), so every step is a
/// plain vector instruction: Swift's generic SIMD float → integer conversions are not vectorised.
@inline(__always)
func exponential(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let lowest: Float = -87
    // (Lane selects rather than pointwiseMin/Max, which the optimiser leaves as calls.)
    var clamped = x
    clamped.replace(with: lowest, where: x .< lowest)
    clamped.replace(with: 80, where: x .> 80)
    let magic = SIMD8<Float>(repeating: 12_582_912)   // 1.5·2²³
    let shifted = clamped * 1.44269504088896341 + magic
    let n = shifted - magic                             // round(x·log₂e), exactly
    // r = x − n·ln 2, with ln 2 split in two so that n·ln2High is exact.
    var r = clamped - n * 0.693359375
    r = r + n * 2.12194440e-4
    let r2 = r * r
    var y = SIMD8<Float>(repeating: 1.9875691500e-4)
    y = y * r + 1.3981999507e-3
    y = y * r + 8.3334519073e-3
    y = y * r + 4.1665795894e-2
    y = y * r + 1.6666665459e-1
    y = y * r + 5.0000001201e-1
    y = y * r2 + r + 1
    // The low bits of `shifted` hold n + 0x400000; 2ⁿ has the exponent field n + 127.
    let exponent = (unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    var result = y * unsafeBitCast(exponent, to: SIMD8<Float>.self)
    result.replace(with: 0, where: x .< lowest)
    return result
}
