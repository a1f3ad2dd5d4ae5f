import OpalCore

// GEMM with a fused epilogue on the CPU backend (mirrors `gemm_fast` in Kernels/gemm.cl):
//   C_b = activation(alpha · op(A_b) · op(B_b) + beta · C_b + bias + residual_b)
// bias: [n] (one per column) or, with biasPerRow, [m] (one per row), shared by every batch element;
// residual: C's layout (offsetC, ldc, strideC). OpenBLAS computes the product, then one pass per row
// adds bias and residual, and the activation runs through the backend's own `unary` (in place over C
// when C is one contiguous block, over a packed copy otherwise).

extension CPUBackend {
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer, descriptor d: GemmDescriptor,
                     epilogue: GemmEpilogue) throws {
        let extents = try GemmExtents(d)
        let bias = try epilogue.bias.map {
            try cpuBuffer($0, op: "gemm bias", elements: epilogue.biasPerRow ? d.m : d.n).floats
        }
        let residual = try epilogue.residual.map { try cpuBuffer($0, op: "gemm residual", elements: extents.c).floats }
        if let bias, !epilogue.biasPerRow, residual == nil, d.beta == 0, d.batch == 1, d.m > 0, d.n > 0, d.k > 0 {
            // The Linear case: C's rows start as the bias and the product accumulates onto them (β = 1), so
            // the bias costs the pass that would otherwise zero C, not a pass of its own.
            let output = try cpuBuffer(c, op: "gemm", elements: extents.c).floats + d.offsetC
            parallelRanges(count: d.m, minimumChunk: max(1, ParallelGrain.cheap / d.n)) { start, end in
                for row in start..<end { (output + row * d.ldc).update(from: bias, count: d.n) }
            }
            var accumulate = d
            accumulate.beta = 1
            try gemm(a, b, c, descriptor: accumulate)
            if let activation = epilogue.activation { try applyActivation(activation, c, descriptor: d) }
            return
        }
        try gemm(a, b, c, descriptor: d)
        guard !epilogue.isEmpty, d.batch > 0, d.m > 0, d.n > 0 else { return }
        let output = try cpuBuffer(c, op: "gemm", elements: extents.c)
        let cBase = output.floats

        if bias != nil || residual != nil {
            let rows = d.batch * d.m
            parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.cheap / max(d.n, 1))) { start, end in
                for flat in start..<end {
                    let batch = flat / d.m, row = flat % d.m
                    let offset = d.offsetC + batch * d.strideC + row * d.ldc
                    addRow(cBase + offset, bias: bias, biasPerRow: epilogue.biasPerRow, row: row,
                           residual: residual.map { $0 + offset }, count: d.n)
                }
            }
        }

        guard let activation = epilogue.activation else { return }
        try applyActivation(activation, c, descriptor: d)
    }

    /// The epilogue's activation over every element of C.
    private func applyActivation(_ activation: UnaryOp, _ c: any DeviceBuffer, descriptor d: GemmDescriptor) throws {
        let output = try cpuBuffer(c, op: "gemm", elements: 0)
        let cBase = output.floats
        let contiguous = d.ldc == d.n && (d.batch == 1 || d.strideC == d.m * d.n)
        let count = d.batch * d.m * d.n
        if contiguous && d.offsetC == 0 {
            try unary(activation, output, output, count: count)
            return
        }
        // Rows with gaps or an offset: pack, apply, unpack (unusual layouts only).
        let packed = try cpuBuffer(allocate(count: count), op: "gemm", elements: count)
        forEachRow(d) { index, offset in (packed.floats + index * d.n).update(from: cBase + offset, count: d.n) }
        try unary(activation, packed, packed, count: count)
        forEachRow(d) { index, offset in (cBase + offset).update(from: packed.floats + index * d.n, count: d.n) }
    }

    /// Calls `body(flat row index, element offset of the row in C)` for every row of every batch element.
    private func forEachRow(_ d: GemmDescriptor, _ body: (Int, Int) -> Void) {
        for batch in 0..<d.batch {
            for row in 0..<d.m { body(batch * d.m + row, d.offsetC + batch * d.strideC + row * d.ldc) }
        }
    }
}

/// `c[j] = c[j] + bias[j or row] + residual[j]` (the kernel's order of additions) for j < count (absent terms skipped); a vectorisable loop.
@inline(__always)
private func addRow(_ c: UnsafeMutablePointer<Float>, bias: UnsafeMutablePointer<Float>?, biasPerRow: Bool, row: Int,
                    residual: UnsafeMutablePointer<Float>?, count: Int) {
    switch (bias, residual) {
    case let (bias?, residual?):
        if biasPerRow {
            let value = bias[row]
            for j in 0..<count { c[j] = c[j] + value + residual[j] }
        } else {
            for j in 0..<count { c[j] = c[j] + bias[j] + residual[j] }
        }
    case let (bias?, nil):
        if biasPerRow {
            let value = bias[row]
            for j in 0..<count { c[j] += value }
        } else {
            for j in 0..<count { c[j] += bias[j] }
        }
    case let (nil, residual?):
        for j in 0..<count { c[j] += residual[j] }
    case (nil, nil):
        break
    }
}
