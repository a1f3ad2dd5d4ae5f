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
