// Matrix products (2-D and batched) through the backend's GEMM (CLBlast / OpenBLAS).

extension Tensor {
    /// `op(a) · op(b)` without recording, where op transposes the last two axes when asked.
    ///
    /// Shapes: `a` [..., m, k] (or [..., k, m] transposed), `b` [..., k, n] (or [..., n, k]).
    /// Batch axes must be equal, or `b` may be 2-D (shared by every batch element).
    package static func product(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) throws -> Tensor {
        try a.requireFloat("matmul"); try b.requireFloat("matmul"); try a.requireSameDevice(b, "matmul")
        guard a.rank >= 2, b.rank >= 2 else { throw TensorError.shapeMismatch(op: "matmul", lhs: a.shape, rhs: b.shape) }
        let aRows = a.shape[a.rank - 2], aCols = a.shape[a.rank - 1]
        let bRows = b.shape[b.rank - 2], bCols = b.shape[b.rank - 1]
        let (m, k) = transposeA ? (aCols, aRows) : (aRows, aCols)
        let (kb, n) = transposeB ? (bCols, bRows) : (bRows, bCols)
        let aBatch = Array(a.shape.dimensions.dropLast(2)), bBatch = Array(b.shape.dimensions.dropLast(2))
        guard k == kb, bBatch.isEmpty || aBatch == bBatch else {
            throw TensorError.shapeMismatch(op: "matmul", lhs: a.shape, rhs: b.shape)
        }
        // A shared 2-D right operand with a plain left operand is one big GEMM over all rows.
        let folds = bBatch.isEmpty && !transposeA
        let batch = folds ? 1 : aBatch.reduce(1, *)
        let rows = folds ? a.count / Swift.max(k, 1) : m
        let result = try Tensor.empty(Shape(aBatch + [m, n]), on: a.device)
        guard result.count > 0 else { return result }
        if k == 0 {
            try a.backend.fill(result.buffer, value: 0, count: result.count)
            return result
        }
        let descriptor = GemmDescriptor(transposeA: transposeA, transposeB: transposeB, m: rows, n: n, k: k,
                                        lda: aCols, ldb: bCols, ldc: n,
                                        strideA: aRows * aCols, strideB: bBatch.isEmpty ? 0 : bRows * bCols,
                                        strideC: rows * n, batch: batch)
        try a.backend.gemm(a.buffer, b.buffer, result.buffer, descriptor: descriptor)
        return result
    }

    /// Matrix product `self · other` (optionally of transposes), differentiable.
    ///
    /// - `self`: [..., m, k], `other`: [..., k, n] → [..., m, n]. Batch axes must match, or
    ///   `other` may be 2-D. Transposes are folded into the GEMM, never materialised.
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) throws -> Tensor {
        let a = self, b = other, tA = transposeSelf, tB = transposeOther
        let y = try Tensor.product(a, b, transposeA: tA, transposeB: tB)
        return Tensor.recorded(y, inputs: [a, b]) { g, needs in
            var ga: Tensor?, gb: Tensor?
            if needs[0] {
                // dop(A) = G·op(B)ᵀ; when A was transposed, dA is its transpose (pullbacks run
                // unrecorded, so `transposed()` here is just one copy kernel).
                let gradientOfOp = try Tensor.product(g, b, transposeB: !tB)
                ga = tA ? try gradientOfOp.transposed() : gradientOfOp
            }
            if needs[1] {
                if b.rank == 2 && a.rank > 2 && tA {
                    // Shared weight, transposed batched A: per-batch products, summed over the batch.
                    let perBatch = tB ? try Tensor.product(g, a, transposeA: true, transposeB: true)
                                      : try Tensor.product(a, g)
                    gb = try perBatch.reducedSum(alongAxes: Array(0..<(a.rank - 2))).reshapedView(b.shape)
                } else if b.rank == 2 && a.rank > 2 {
                    // Shared weight: fold the batch into the rows.
                    let a2 = try a.reshapedView([a.count / a.shape[a.rank - 1], a.shape[a.rank - 1]])
                    let g2 = try g.reshapedView([g.count / g.shape[g.rank - 1], g.shape[g.rank - 1]])
                    gb = tB ? try Tensor.product(g2, a2, transposeA: true) : try Tensor.product(a2, g2, transposeA: true)
                } else {
                    gb = tB ? try Tensor.product(g, a, transposeA: true, transposeB: tA)  // Gᵀ·op(A)
                            : try Tensor.product(a, g, transposeA: !tA)                      // op(A)ᵀ·G
                }
            }
            return [ga, gb]
        }
    }
}

extension Tensor {
    /// The fully connected map `self · weightᵀ + bias`, differentiable: `self` [..., inputSize], `weight`
    /// [outputSize, inputSize] (PyTorch's layout), `bias` [outputSize] → [..., outputSize].
    ///
    /// One GEMM with the bias in its epilogue (where the backend has one; otherwise the product plus a
    /// broadcast add, the composed reference). Backward: dX = G·W, dW = Gᵀ·X, db = Σ_rows G.
    public func linear(weight: Tensor, bias: Tensor?) throws -> Tensor {
        let x = self
        guard rank >= 1, weight.rank == 2, shape[rank - 1] == weight.shape[1] else {
            throw TensorError.shapeMismatch(op: "linear", lhs: shape, rhs: weight.shape)
        }
        let outputSize = weight.shape[0], inputSize = weight.shape[1]
        if let bias {
            guard bias.shape == [outputSize] else { throw TensorError.shapeMismatch(op: "linear bias", lhs: weight.shape, rhs: bias.shape) }
            try requireSameDevice(bias, "linear")
        }
        try requireFloat("linear"); try weight.requireFloat("linear"); try requireSameDevice(weight, "linear")
        let rows = count / Swift.max(inputSize, 1)
        let x2 = try reshapedView([rows, inputSize])
        let y: Tensor
        if let bias, let fused = backend as? any ImageBackend, rows > 0, inputSize > 0 {
            y = try Tensor.empty([rows, outputSize], on: device)
            try fused.gemm(x2.buffer, weight.buffer, y.buffer,
                           descriptor: GemmDescriptor(transposeB: true, m: rows, n: outputSize, k: inputSize),
                           epilogue: GemmEpilogue(bias: bias.buffer))
        } else {
            let product = try Tensor.product(x2, weight, transposeB: true)
            y = try bias.map { try product.elementwise(.add, $0) } ?? product
        }
        let output = try y.reshapedView(Shape(Array(shape.dimensions.dropLast()) + [outputSize]))
        let inputs = bias.map { [x, weight, $0] } ?? [x, weight]
        return Tensor.recorded(output, inputs: inputs) { g, needs in
            let g2 = try g.reshapedView([rows, outputSize])
            let gx = needs[0] ? try Tensor.product(g2, weight).reshapedView(x.shape) : nil
            let gw = needs[1] ? try Tensor.product(g2, x2, transposeA: true) : nil
            var result = [gx, gw]
            if bias != nil { result.append(needs[2] ? try g2.reducedSum(alongAxes: [0]).reshapedView([outputSize]) : nil) }
            return result
        }
    }
}
