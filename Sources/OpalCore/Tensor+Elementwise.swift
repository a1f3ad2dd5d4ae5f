// Elementwise arithmetic with NumPy broadcasting, unary functions and activations,
// each with its pullback.

extension Tensor {
    // MARK: Checks shared by every op

    package func requireFloat(_ op: String) throws {
        guard dtype == .float32 else { throw TensorError.dtypeMismatch(op: op, expected: .float32, actual: dtype) }
    }

    package func requireSameDevice(_ other: Tensor, _ op: String) throws {
        guard device == other.device else {
            throw TensorError.deviceMismatch(op: op, lhs: device.name, rhs: other.device.name)
        }
    }

    // MARK: Unary

    /// `op` applied to every element, without recording (used by forward passes and pullbacks).
    package func mapped(_ op: UnaryOp) throws -> Tensor {
        try requireFloat("\(op)")
        let result = try Tensor.empty(shape, on: device)
        if count > 0 { try backend.unary(op, buffer, result.buffer, count: count) }
        return result
    }

    /// Applies `op` and records its derivative rule.
    private func unary(_ op: UnaryOp) throws -> Tensor {
        let y = try mapped(op)
        let x = self
        return Tensor.recorded(y, inputs: [x]) { g, _ in
            if op.hasFusedGradient { return [try g.activationGradient(op, input: x, output: y)] }
            let local: Tensor?
            switch op {
            case .identity: return [g]
            case .negate: return [try g.mapped(.negate)]
            case .affine(let scale, _): return [try g.mapped(.affine(scale: scale, shift: 0))]
            case .exp: local = y
            case .log: local = try x.mapped(.reciprocal)
            case .sqrt: local = try y.mapped(.reciprocal).mapped(.affine(scale: 0.5, shift: 0))
            case .reciprocal: local = try y.mapped(.square).mapped(.negate)
            case .square: local = try x.mapped(.affine(scale: 2, shift: 0))
            case .abs: local = try x.mapped(.step).mapped(.affine(scale: 2, shift: -1))
                        .elementwise(.multiply, x.mapped(.abs).mapped(.step))
            case .power(let p): local = try x.mapped(.power(p - 1)).mapped(.affine(scale: p, shift: 0))
            case .relu, .step: local = op == .step ? nil : try x.mapped(.step)
            case .leakyRelu(let slope): local = try x.mapped(.leakyReluDerivative(slope: slope))
            case .sigmoid: local = try y.elementwise(.multiply, y.mapped(.affine(scale: -1, shift: 1)))
            case .tanh: local = try y.mapped(.square).mapped(.affine(scale: -1, shift: 1))
            case .gelu: local = try x.mapped(.geluDerivative)
            case .softplus: local = try x.mapped(.sigmoid)
            case .leakyReluDerivative, .geluDerivative: local = nil
            }
            guard let local else {
                if op == .step { return [try g.mapped(.affine(scale: 0, shift: 0))] }
                throw TensorError.notDifferentiable(op: "\(op)")
            }
            return [try g.elementwise(.multiply, local)]
        }
    }

    /// `self · op'(input)` in one backend pass (`Backend.unaryGradient`), self being the gradient of `output`.
    private func activationGradient(_ op: UnaryOp, input: Tensor, output: Tensor) throws -> Tensor {
        try requireSameDevice(input, "\(op) gradient")
        guard shape == input.shape else {
            throw TensorError.shapeMismatch(op: "\(op) gradient", lhs: shape, rhs: input.shape)
        }
        let result = try Tensor.empty(shape, on: device)
        if count > 0 {
            try backend.unaryGradient(op, input: input.buffer, output: output.buffer, gradOutput: buffer,
                                      gradInput: result.buffer, count: count)
        }
        return result
    }

    public func exp() throws -> Tensor { try unary(.exp) }
    public func log() throws -> Tensor { try unary(.log) }
    public func sqrt() throws -> Tensor { try unary(.sqrt) }
    public func squared() throws -> Tensor { try unary(.square) }
    public func reciprocal() throws -> Tensor { try unary(.reciprocal) }
    public func absolute() throws -> Tensor { try unary(.abs) }
    public func pow(_ exponent: Float) throws -> Tensor { try unary(.power(exponent)) }
    public func relu() throws -> Tensor { try unary(.relu) }
    public func leakyRelu(slope: Float = 0.01) throws -> Tensor { try unary(.leakyRelu(slope: slope)) }
    public func sigmoid() throws -> Tensor { try unary(.sigmoid) }
    public func tanh() throws -> Tensor { try unary(.tanh) }
    /// GELU, tanh approximation (as PyTorch's `approximate="tanh"`).
    public func gelu() throws -> Tensor { try unary(.gelu) }
    public func softplus() throws -> Tensor { try unary(.softplus) }
    /// `scale · self + shift`.
    public func affine(scale: Float, shift: Float) throws -> Tensor { try unary(.affine(scale: scale, shift: shift)) }

    public static prefix func - (x: Tensor) throws -> Tensor { try x.unary(.negate) }
    public static func + (x: Tensor, c: Float) throws -> Tensor { try x.unary(.affine(scale: 1, shift: c)) }
    public static func + (c: Float, x: Tensor) throws -> Tensor { try x.unary(.affine(scale: 1, shift: c)) }
    public static func - (x: Tensor, c: Float) throws -> Tensor { try x.unary(.affine(scale: 1, shift: -c)) }
    public static func - (c: Float, x: Tensor) throws -> Tensor { try x.unary(.affine(scale: -1, shift: c)) }
    public static func * (x: Tensor, c: Float) throws -> Tensor { try x.unary(.affine(scale: c, shift: 0)) }
    public static func * (c: Float, x: Tensor) throws -> Tensor { try x.unary(.affine(scale: c, shift: 0)) }
    public static func / (x: Tensor, c: Float) throws -> Tensor { try x.unary(.affine(scale: 1 / c, shift: 0)) }
    public static func / (c: Float, x: Tensor) throws -> Tensor { try x.unary(.reciprocal) * c }

    // MARK: Binary with broadcasting

    /// `self ⊕ other` with NumPy broadcasting, without recording.
    package func elementwise(_ op: BinaryOp, _ other: Tensor) throws -> Tensor {
        let name = op.rawValue
        try requireFloat(name); try other.requireFloat(name); try requireSameDevice(other, name)
        guard let outShape = Shape.broadcast(shape, other.shape) else {
            throw TensorError.shapeMismatch(op: name, lhs: shape, rhs: other.shape)
        }
        let result = try Tensor.empty(outShape, on: device)
        if outShape.count > 0 {
            let layout = try Tensor.broadcastLayout(outShape, shape, other.shape, op: name)
            try backend.binary(op, buffer, other.buffer, result.buffer, layout: layout)
        }
        return result
    }

    private func binary(_ op: BinaryOp, _ other: Tensor) throws -> Tensor {
        let a = self, b = other
        let y = try a.elementwise(op, b)
        return Tensor.recorded(y, inputs: [a, b]) { g, needs in
            var ga: Tensor?, gb: Tensor?
            switch op {
            case .add:
                ga = needs[0] ? g : nil
                gb = needs[1] ? g : nil
            case .subtract:
                ga = needs[0] ? g : nil
                gb = needs[1] ? try g.mapped(.negate) : nil
            case .multiply:
                ga = needs[0] ? try g.elementwise(.multiply, b) : nil
                gb = needs[1] ? try g.elementwise(.multiply, a) : nil
            case .divide:
                ga = needs[0] ? try g.elementwise(.divide, b) : nil
                gb = needs[1] ? try g.elementwise(.multiply, y).elementwise(.divide, b).mapped(.negate) : nil
            case .power:
                // d(aᵇ)/da = b·aᵇ⁻¹ = b·y/a;  d(aᵇ)/db = y·log a
                ga = needs[0] ? try g.elementwise(.multiply, b).elementwise(.multiply, y).elementwise(.divide, a) : nil
                gb = needs[1] ? try g.elementwise(.multiply, y).elementwise(.multiply, a.mapped(.log)) : nil
            case .maximum, .minimum:
                // The gradient goes to the chosen input; ties go to `a`.
                // maximum: a chosen where a ≥ b ⇔ step(b − a) == 0.
                let difference = op == .maximum ? try b.elementwise(.subtract, a) : try a.elementwise(.subtract, b)
                let chooseB = try difference.mapped(.step)
                ga = needs[0] ? try g.elementwise(.multiply, chooseB.mapped(.affine(scale: -1, shift: 1))) : nil
                gb = needs[1] ? try g.elementwise(.multiply, chooseB) : nil
            }
            return [try ga.map { try $0.summed(toShape: a.shape) }, try gb.map { try $0.summed(toShape: b.shape) }]
        }
    }

    public static func + (a: Tensor, b: Tensor) throws -> Tensor { try a.binary(.add, b) }
    public static func - (a: Tensor, b: Tensor) throws -> Tensor { try a.binary(.subtract, b) }
    public static func * (a: Tensor, b: Tensor) throws -> Tensor { try a.binary(.multiply, b) }
    public static func / (a: Tensor, b: Tensor) throws -> Tensor { try a.binary(.divide, b) }
    public func pow(_ exponent: Tensor) throws -> Tensor { try binary(.power, exponent) }
    public func maximum(_ other: Tensor) throws -> Tensor { try binary(.maximum, other) }
    public func minimum(_ other: Tensor) throws -> Tensor { try binary(.minimum, other) }

    /// Sums a broadcast gradient back down to `target` (the shape of the input that was broadcast).
    package func summed(toShape target: Shape) throws -> Tensor {
        if shape == target { return self }
        let offset = rank - target.rank
        guard offset >= 0 else { throw TensorError.shapeMismatch(op: "sum to shape", lhs: shape, rhs: target) }
        var axes: [Int] = Array(0..<offset)
        for axis in 0..<target.rank where target[axis] == 1 && shape[axis + offset] != 1 {
            axes.append(axis + offset)
        }
        return try reducedSum(alongAxes: axes).reshapedView(target)
    }

    /// Strides of `input` (right-aligned to `output`) with 0 on broadcast axes, collapsed so
    /// neighbouring axes that are contiguous in all three tensors merge into one.
    package static func broadcastLayout(_ output: Shape, _ lhs: Shape, _ rhs: Shape, op: String) throws -> BroadcastLayout {
        func aligned(_ input: Shape) -> [Int] {
            let padded = [Int](repeating: 1, count: output.rank - input.rank) + input.dimensions
            var strides = [Int](repeating: 0, count: output.rank)
            var running = 1
            for axis in stride(from: output.rank - 1, through: 0, by: -1) {
                strides[axis] = padded[axis] == 1 ? 0 : running
                running *= padded[axis]
            }
            return strides
        }
        var shape: [Int] = [], stridesA: [Int] = [], stridesB: [Int] = []
        let a = aligned(lhs), b = aligned(rhs)
        for axis in 0..<output.rank where output[axis] != 1 {
            if let last = shape.indices.last,
               stridesA[last] == a[axis] * output[axis], stridesB[last] == b[axis] * output[axis] {
                shape[last] *= output[axis]; stridesA[last] = a[axis]; stridesB[last] = b[axis]
            } else {
                shape.append(output[axis]); stridesA.append(a[axis]); stridesB.append(b[axis])
            }
        }
        if shape.isEmpty { shape = [1]; stridesA = [0]; stridesB = [0] }
        guard shape.count <= maximumKernelRank else {
            throw TensorError.invalidShape(op: op, shape: output,
                                           reason: "broadcasting needs more than \(maximumKernelRank) distinct axes")
        }
        return BroadcastLayout(shape: shape, stridesA: stridesA, stridesB: stridesB)
    }
}
