// Reductions along axes: sum, mean, max, argmax.

extension Tensor {
    /// Resolves and sorts axes (negative allowed); empty means all axes.
    private func resolvedAxes(_ axes: [Int], op: String) throws -> [Int] {
        if axes.isEmpty { return Array(0..<rank) }
        var resolved: [Int] = []
        for axis in axes {
            guard let a = shape.normalizedAxis(axis), rank > 0 else { throw TensorError.invalidAxis(op: op, axis: axis, rank: rank) }
            resolved.append(a)
        }
        guard Set(resolved).count == resolved.count else {
            throw TensorError.invalidArgument(op: op, reason: "axes \(axes) repeat an axis")
        }
        return resolved.sorted()
    }

    /// Sum over `axes` (kept as size 1), without recording. Runs of adjacent axes reduce in one kernel.
    package func reducedSum(alongAxes axes: [Int], op: ReduceOp = .sum) throws -> Tensor {
        var current = self
        var dims = shape.dimensions
        // Reduce runs of adjacent axes, last run first, so earlier axis numbers stay valid.
        var runs: [Range<Int>] = []
        for axis in axes.sorted() {
            if let last = runs.last, last.upperBound == axis { runs[runs.count - 1] = last.lowerBound..<(axis + 1) }
            else { runs.append(axis..<(axis + 1)) }
        }
        for run in runs.reversed() {
            let outer = dims[..<run.lowerBound].reduce(1, *)
            let size = dims[run].reduce(1, *)
            let inner = dims[run.upperBound...].reduce(1, *)
            for axis in run { dims[axis] = 1 }
            let result = try Tensor.empty(Shape(dims), on: device)
            if result.count > 0 {
                if size == 0 {
                    try backend.fill(result.buffer, value: op == .sum ? 0 : -.infinity, count: result.count)
                } else {
                    try backend.reduce(op, current.buffer, result.buffer,
                                       layout: ReduceLayout(outer: outer, size: size, inner: inner))
                }
            }
            current = result
        }
        return try current.reshapedView(Shape(dims))
    }

    private func keptShape(_ axes: [Int], keepingDimensions: Bool) -> Shape {
        var dims = shape.dimensions
        for axis in axes { dims[axis] = 1 }
        if keepingDimensions { return Shape(dims) }
        return Shape(dims.enumerated().filter { !axes.contains($0.offset) }.map(\.element))
    }

    /// Σ over `axes` (all axes when empty).
    public func sum(alongAxes axes: [Int] = [], keepingDimensions: Bool = false) throws -> Tensor {
        try requireFloat("sum")
        let axes = try resolvedAxes(axes, op: "sum")
        let outShape = keptShape(axes, keepingDimensions: keepingDimensions)
        let y = try reducedSum(alongAxes: axes).reshapedView(outShape)
        let inputShape = shape
        let keptDims = keptShape(axes, keepingDimensions: true)
        return Tensor.recorded(y, inputs: [self]) { g, _ in
            [try g.reshapedView(keptDims).expanded(to: inputShape)]
        }
    }

    public func sum(alongAxis axis: Int, keepingDimensions: Bool = false) throws -> Tensor {
        try sum(alongAxes: [axis], keepingDimensions: keepingDimensions)
    }

    /// Arithmetic mean over `axes` (all axes when empty).
    public func mean(alongAxes axes: [Int] = [], keepingDimensions: Bool = false) throws -> Tensor {
        let resolved = try resolvedAxes(axes, op: "mean")
        let n = resolved.map { shape[$0] }.reduce(1, *)
        guard n > 0 else { throw TensorError.invalidShape(op: "mean", shape: shape, reason: "mean of zero elements") }
        return try sum(alongAxes: resolved, keepingDimensions: keepingDimensions) * (1 / Float(n))
    }

    public func mean(alongAxis axis: Int, keepingDimensions: Bool = false) throws -> Tensor {
        try mean(alongAxes: [axis], keepingDimensions: keepingDimensions)
    }

    /// Maximum along `axis`. The gradient flows to every element equal to the maximum.
    public func max(alongAxis axis: Int, keepingDimensions: Bool = false) throws -> Tensor {
        try requireFloat("max")
        let axes = try resolvedAxes([axis], op: "max")
        guard shape[axes[0]] > 0 else { throw TensorError.invalidShape(op: "max", shape: shape, reason: "max of zero elements") }
        let kept = try reducedSum(alongAxes: axes, op: .max)
        let y = try kept.reshapedView(keptShape(axes, keepingDimensions: keepingDimensions))
        let x = self
        return Tensor.recorded(y, inputs: [x]) { g, _ in
            // mask = 1 where x == max  ⇔  max − x is not > 0
            let mask = try kept.elementwise(.subtract, x).mapped(.step).mapped(.affine(scale: -1, shift: 1))
            return [try mask.elementwise(.multiply, g.reshapedView(kept.shape))]
        }
    }

    /// Index of the maximum along `axis` (the first one on ties), as an int32 tensor.
    public func argmax(alongAxis axis: Int = -1, keepingDimensions: Bool = false) throws -> Tensor {
        try requireFloat("argmax")
        let axes = try resolvedAxes([axis], op: "argmax")
        let a = axes[0]
        guard shape[a] > 0 else { throw TensorError.invalidShape(op: "argmax", shape: shape, reason: "argmax of zero elements") }
        let result = try Tensor.empty(keptShape(axes, keepingDimensions: keepingDimensions), dtype: .int32, on: device)
        if result.count > 0 {
            try backend.argmax(buffer, result.buffer, layout: ReduceLayout(
                outer: shape.dimensions[..<a].reduce(1, *), size: shape[a], inner: shape.dimensions[(a + 1)...].reduce(1, *)))
        }
        return result
    }
}
