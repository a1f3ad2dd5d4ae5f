import Foundation

/// An n-dimensional array of `Float` (or `Int32` labels) on one device.
///
/// `Tensor` is a value over reference-counted device memory. Every tensor is dense and row-major;
/// views that reorder elements (transpose, slice) materialise with one strided-copy kernel.
/// Ops enqueue work on the device and return at once; the host waits only in `scalars()`,
/// `intScalars()` and `item()`.
public struct Tensor: Sendable, CustomStringConvertible {
    public let shape: Shape
    public let dtype: DType
    public let device: Device
    /// Device memory holding at least `shape.count` elements.
    package let buffer: any DeviceBuffer
    /// The autodiff record, present when this tensor depends on a tensor that requires gradients.
    package let node: GradientNode?

    package init(shape: Shape, dtype: DType, device: Device, buffer: any DeviceBuffer, node: GradientNode? = nil) {
        self.shape = shape; self.dtype = dtype; self.device = device; self.buffer = buffer; self.node = node
    }

    package var backend: any Backend { device.backend }
    public var rank: Int { shape.rank }
    public var count: Int { shape.count }

    public var description: String { "Tensor(\(shape), \(dtype), \(device.name))" }

    // MARK: Creation

    /// Uninitialised storage for `shape` (contents undefined until written).
    package static func empty(_ shape: Shape, dtype: DType = .float32, on device: Device) throws -> Tensor {
        try validate(shape, op: "Tensor")
        let buffer = try device.backend.allocate(count: shape.count)
        return Tensor(shape: shape, dtype: dtype, device: device, buffer: buffer)
    }

    /// A float tensor holding `values` in row-major order.
    /// - Throws: `TensorError.invalidShape` when `values.count != shape.count`.
    public init(_ values: [Float], shape: Shape, on device: Device) throws {
        guard values.count == shape.count else {
            throw TensorError.invalidShape(op: "Tensor(_:shape:)", shape: shape,
                                           reason: "\(values.count) values given for \(shape.count) elements")
        }
        let tensor = try Tensor.empty(shape, on: device)
        if !values.isEmpty { try device.backend.write(values, to: tensor.buffer) }
        self = tensor
    }

    /// An int32 tensor (labels, indices) holding `values` in row-major order.
    /// (Disfavoured so that a literal like `[1, 2]` makes a float tensor.)
    @_disfavoredOverload
    public init(_ values: [Int32], shape: Shape, on device: Device) throws {
        guard values.count == shape.count else {
            throw TensorError.invalidShape(op: "Tensor(_:shape:)", shape: shape,
                                           reason: "\(values.count) values given for \(shape.count) elements")
        }
        let tensor = try Tensor.empty(shape, dtype: .int32, on: device)
        if !values.isEmpty { try device.backend.write(values, to: tensor.buffer) }
        self = tensor
    }

    /// A one-dimensional float tensor.
    public init(_ values: [Float], on device: Device) throws {
        try self.init(values, shape: [values.count], on: device)
    }

    public static func full(_ shape: Shape, value: Float, on device: Device) throws -> Tensor {
        let tensor = try empty(shape, on: device)
        if shape.count > 0 { try device.backend.fill(tensor.buffer, value: value, count: shape.count) }
        return tensor
    }

    public static func zeros(_ shape: Shape, on device: Device) throws -> Tensor {
        try full(shape, value: 0, on: device)
    }

    public static func ones(_ shape: Shape, on device: Device) throws -> Tensor {
        try full(shape, value: 1, on: device)
    }

    /// Uniform samples in `range`, a pure function of `seed` and the element index
    /// (`OpalRandom`), so every device gets the same values.
    public static func uniform(_ shape: Shape, in range: ClosedRange<Float> = 0...1, seed: UInt32,
                               on device: Device) throws -> Tensor {
        try validate(shape, op: "uniform")
        let width = range.upperBound - range.lowerBound
        let values = (0..<shape.count).map {
            range.lowerBound + width * OpalRandom.uniform(seed: seed, index: UInt32(truncatingIfNeeded: $0))
        }
        return try Tensor(values, shape: shape, on: device)
    }

    /// Normal samples (Box–Muller over `OpalRandom` pairs), identical on every device.
    public static func normal(_ shape: Shape, mean: Float = 0, standardDeviation: Float = 1, seed: UInt32,
                              on device: Device) throws -> Tensor {
        try validate(shape, op: "normal")
        var values = [Float](repeating: 0, count: shape.count)
        var index = 0
        while index < values.count {
            let pair = UInt32(truncatingIfNeeded: index)
            let u1 = 1 - Double(OpalRandom.uniform(seed: seed, index: pair &* 2))   // (0, 1]
            let u2 = Double(OpalRandom.uniform(seed: seed, index: pair &* 2 &+ 1))
            let radius = (-2 * Foundation.log(u1)).squareRoot()
            values[index] = mean + standardDeviation * Float(radius * Foundation.cos(2 * Double.pi * u2))
            if index + 1 < values.count {
                values[index + 1] = mean + standardDeviation * Float(radius * Foundation.sin(2 * Double.pi * u2))
            }
            index += 2
        }
        return try Tensor(values, shape: shape, on: device)
    }

    // MARK: Read-back (host waits)

    /// The elements in row-major order (waits for the device).
    public func scalars() throws -> [Float] {
        guard dtype == .float32 else { throw TensorError.dtypeMismatch(op: "scalars", expected: .float32, actual: dtype) }
        if count == 0 { return [] }
        return try backend.readFloats(buffer, count: count)
    }

    /// The elements of an int32 tensor in row-major order (waits for the device).
    public func intScalars() throws -> [Int32] {
        guard dtype == .int32 else { throw TensorError.dtypeMismatch(op: "intScalars", expected: .int32, actual: dtype) }
        if count == 0 { return [] }
        return try backend.readInts(buffer, count: count)
    }

    /// The single element of a one-element float tensor.
    public func item() throws -> Float {
        guard count == 1 else {
            throw TensorError.invalidShape(op: "item", shape: shape, reason: "item() needs exactly one element")
        }
        return try scalars()[0]
    }

    /// A copy of this tensor on `device` (a no-op when it is already there). Not differentiable.
    public func moved(to device: Device) throws -> Tensor {
        if device == self.device { return self }
        switch dtype {
        case .float32: return try Tensor(scalars(), shape: shape, on: device)
        case .int32: return try Tensor(intScalars(), shape: shape, on: device)
        }
    }

    /// The same values, cut from the autodiff graph.
    public func detached() -> Tensor {
        Tensor(shape: shape, dtype: dtype, device: device, buffer: buffer)
    }

    static func validate(_ shape: Shape, op: String) throws {
        if let bad = shape.dimensions.first(where: { $0 < 0 }) {
            throw TensorError.invalidShape(op: op, shape: shape, reason: "dimension \(bad) is negative")
        }
    }
}
