// Shape manipulation: reshape (shares memory), permute/transpose, slicing, concatenation and
// broadcasting (each one strided-copy kernel), with pullbacks.

extension Tensor {
    /// Same memory, new shape (no copy, no recording).
    package func reshapedView(_ newShape: Shape) throws -> Tensor {
        guard newShape.count == count, !newShape.dimensions.contains(where: { $0 < 0 }) else {
            throw TensorError.invalidShape(op: "reshape", shape: newShape,
                                           reason: "cannot hold the \(count) elements of a \(shape) tensor")
        }
        return Tensor(shape: newShape, dtype: dtype, device: device, buffer: buffer)
    }

    /// The same elements viewed with another shape; one dimension may be −1 (inferred).
    public func reshaped(to newShape: Shape) throws -> Tensor {
        var dimensions = newShape.dimensions
        let inferred = dimensions.indices.filter { dimensions[$0] == -1 }
        if inferred.count > 1 {
            throw TensorError.invalidShape(op: "reshape", shape: newShape, reason: "at most one dimension may be -1")
        }
        if let axis = inferred.first {
            let known = dimensions.enumerated().filter { $0.offset != axis }.map(\.element).reduce(1, *)
            guard known > 0, count % known == 0 else {
                throw TensorError.invalidShape(op: "reshape", shape: newShape,
                                               reason: "cannot hold the \(count) elements of a \(shape) tensor")
            }
            dimensions[axis] = count / known
        }
        let original = shape
        let y = try reshapedView(Shape(dimensions))
        return Tensor.recorded(y, inputs: [self]) { g, _ in [try g.reshapedView(original)] }
    }

    /// `[d0, d1, …]` → `[d0, d1·d2·…]`: keeps the first axis (batch) and flattens the rest.
    public func flattened(fromAxis axis: Int = 1) throws -> Tensor {
        guard let start = shape.normalizedAxis(axis) else {
            throw TensorError.invalidAxis(op: "flattened", axis: axis, rank: rank)
        }
        let kept = Array(shape.dimensions[..<start])
        return try reshaped(to: Shape(kept + [shape.dimensions[start...].reduce(1, *)]))
    }

    /// Axes reordered: result axis i is input axis `axes[i]`.
    public func permuted(_ axes: [Int]) throws -> Tensor {
        guard axes.count == rank, Set(axes) == Set(0..<rank) else {
            throw TensorError.invalidArgument(op: "permute", reason: "\(axes) is not a permutation of the \(rank) axes of \(shape)")
        }
        if axes == Array(0..<rank) { return self }
        let strides = shape.strides
        let outShape = Shape(axes.map { shape[$0] })
        let result = try Tensor.empty(outShape, dtype: dtype, on: device)
        if count > 0 {
            try Tensor.copy(from: self, to: result, shape: outShape,
                            sourceOffset: 0, sourceStrides: axes.map { strides[$0] },
                            destinationOffset: 0, destinationStrides: outShape.strides)
        }
        var inverse = [Int](repeating: 0, count: rank)
        for (i, axis) in axes.enumerated() { inverse[axis] = i }
        return Tensor.recorded(result, inputs: [self]) { g, _ in [try g.permuted(inverse)] }
    }

    /// Swaps two axes (default: the last two, i.e. the matrix transpose).
    public func transposed(_ first: Int = -2, _ second: Int = -1) throws -> Tensor {
        guard let a = shape.normalizedAxis(first), let b = shape.normalizedAxis(second), rank >= 2 else {
            throw TensorError.invalidAxis(op: "transposed", axis: rank < 2 ? first : second, rank: rank)
        }
        var axes = Array(0..<rank)
        axes.swapAt(a, b)
        return try permuted(axes)
    }

    /// Elements `range` along `axis` (the other axes whole).
    public func sliced(along axis: Int, _ range: Range<Int>) throws -> Tensor {
        guard let axis = shape.normalizedAxis(axis), rank > 0 else {
            throw TensorError.invalidAxis(op: "sliced", axis: axis, rank: rank)
        }
        guard range.lowerBound >= 0, range.upperBound <= shape[axis] else {
            throw TensorError.invalidArgument(op: "sliced",
                                              reason: "range \(range) is outside 0..<\(shape[axis]) on axis \(axis) of \(shape)")
        }
        var outShape = shape
        outShape[axis] = range.count
        let result = try Tensor.empty(outShape, dtype: dtype, on: device)
        let strides = shape.strides
        if outShape.count > 0 {
            try Tensor.copy(from: self, to: result, shape: outShape,
                            sourceOffset: range.lowerBound * strides[axis], sourceStrides: strides,
                            destinationOffset: 0, destinationStrides: outShape.strides)
        }
        let inputShape = shape
        return Tensor.recorded(result, inputs: [self]) { g, _ in
            let gradient = try Tensor.zeros(inputShape, on: g.device)
            if g.count > 0 {
                try Tensor.copy(from: g, to: gradient, shape: g.shape, sourceOffset: 0, sourceStrides: g.shape.strides,
                                destinationOffset: range.lowerBound * strides[axis], destinationStrides: strides)
            }
            return [gradient]
        }
    }

    /// Joins tensors along `axis`; all other extents must agree.
    public static func concatenated(_ tensors: [Tensor], along axis: Int) throws -> Tensor {
        guard let first = tensors.first else {
            throw TensorError.invalidArgument(op: "concatenated", reason: "needs at least one tensor")
        }
        guard let axis = first.shape.normalizedAxis(axis), first.rank > 0 else {
            throw TensorError.invalidAxis(op: "concatenated", axis: axis, rank: first.rank)
        }
        for tensor in tensors.dropFirst() {
            try first.requireSameDevice(tensor, "concatenated")
            guard tensor.dtype == first.dtype else {
                throw TensorError.dtypeMismatch(op: "concatenated", expected: first.dtype, actual: tensor.dtype)
            }
            var a = first.shape, b = tensor.shape
            guard a.rank == b.rank else { throw TensorError.shapeMismatch(op: "concatenated", lhs: a, rhs: b) }
            a[axis] = 0; b[axis] = 0
            guard a == b else { throw TensorError.shapeMismatch(op: "concatenated", lhs: first.shape, rhs: tensor.shape) }
        }
        var outShape = first.shape
        outShape[axis] = tensors.map { $0.shape[axis] }.reduce(0, +)
        let result = try Tensor.empty(outShape, dtype: first.dtype, on: first.device)
        let outStrides = outShape.strides
        var starts: [Int] = []
        var start = 0
        for tensor in tensors {
            starts.append(start)
            if tensor.count > 0 {
                try copy(from: tensor, to: result, shape: tensor.shape, sourceOffset: 0, sourceStrides: tensor.shape.strides,
                         destinationOffset: start * outStrides[axis], destinationStrides: outStrides)
            }
            start += tensor.shape[axis]
        }
        let extents = tensors.map { $0.shape[axis] }
        return recorded(result, inputs: tensors) { g, needs in
            try zip(starts, extents).enumerated().map { index, piece in
                needs[index] ? try g.sliced(along: axis, piece.0..<(piece.0 + piece.1)) : nil
            }
        }
    }

    /// Repeats size-1 axes (and prepends axes) to reach `target` (NumPy broadcasting).
    public func expanded(to target: Shape) throws -> Tensor {
        guard Shape.broadcast(shape, target) == target else {
            throw TensorError.shapeMismatch(op: "expanded", lhs: shape, rhs: target)
        }
        if target == shape { return self }
        let layout = try Tensor.broadcastLayout(target, shape, target, op: "expanded")
        let result = try Tensor.empty(target, dtype: dtype, on: device)
        if target.count > 0 {
            let copy = StridedCopy(shape: layout.shape, srcStrides: layout.stridesA,
                                   dstStrides: Shape(layout.shape).strides)
            try backend.copy(buffer, result.buffer, layout: copy)
        }
        let original = shape
        return Tensor.recorded(result, inputs: [self]) { g, _ in [try g.summed(toShape: original)] }
    }

    /// One strided-copy kernel between two tensors' memory (collapses mergeable axes first).
    package static func copy(from source: Tensor, to destination: Tensor, shape: Shape,
                             sourceOffset: Int, sourceStrides: [Int],
                             destinationOffset: Int, destinationStrides: [Int]) throws {
        var dims: [Int] = [], src: [Int] = [], dst: [Int] = []
        for axis in 0..<shape.rank where shape[axis] != 1 {
            if let last = dims.indices.last,
               src[last] == sourceStrides[axis] * shape[axis], dst[last] == destinationStrides[axis] * shape[axis] {
                dims[last] *= shape[axis]; src[last] = sourceStrides[axis]; dst[last] = destinationStrides[axis]
            } else {
                dims.append(shape[axis]); src.append(sourceStrides[axis]); dst.append(destinationStrides[axis])
            }
        }
        if dims.isEmpty { dims = [1]; src = [0]; dst = [0] }
        guard dims.count <= maximumKernelRank else {
            throw TensorError.invalidShape(op: "copy", shape: shape, reason: "more than \(maximumKernelRank) non-mergeable axes")
        }
        try source.backend.copy(source.buffer, destination.buffer,
                                layout: StridedCopy(shape: dims, srcOffset: sourceOffset, srcStrides: src,
                                                    dstOffset: destinationOffset, dstStrides: dst))
    }
}
