import Foundation
import OpalCore

// Fused LSTM / GRU cell updates and the embedding gather / scatter-add of the CPU backend
// (mirrors Kernels/recurrent.cl and Kernels/embedding.cl). B = batch, H = hidden size:
//   LSTM  gates [B, 4H] (i | f | g | o), cell c_{t−1} [B, H], hidden h_t and newCell c_t [B, H],
//         activations [B, 5H] (σi | σf | tanh g | σo | tanh c_t)
//   GRU   inputGates, hiddenGates [B, 3H] (r | z | n), hidden h_{t−1} [B, H], output h_t [B, H],
//         activations [B, 3H] (r | z | n)
//   Embedding table [V, D], indices [N] int32, output [N, D]
// Each cell op is one pass over the B·H units, split by batch rows across threads when that pays.
// The simple references are the Double loops in Tests/OpalCPUTests/RecurrentTests.swift and the
// composed Tensor ops (`lstmCellComposed`, `gruCellComposed`).

@inline(__always) private func logistic(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

extension CPUBackend {
    private func validate(_ descriptor: RecurrentCellDescriptor, _ op: String) throws {
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(descriptor))") }
    }

    /// Runs `body(row)` for every batch row, splitting rows across threads when there is enough work:
    /// a unit costs about as much as five transcendental elementwise ops.
    private func forEachRow(_ batch: Int, unitsPerRow: Int, _ body: (Int) -> Void) {
        let minimumRows = max(1, ParallelGrain.expensive / max(1, 5 * unitsPerRow))
        parallelRanges(count: batch, minimumChunk: minimumRows) { start, end in
            for row in start..<end { body(row) }
        }
    }

    public func lstmCellForward(_ gates: any DeviceBuffer, _ cell: any DeviceBuffer, hidden: any DeviceBuffer,
                                newCell: any DeviceBuffer, activations: any DeviceBuffer,
                                descriptor d: RecurrentCellDescriptor) throws {
        let op = "lstmCellForward"
        try validate(d, op)
        let h = d.hiddenSize
        let x = try cpuBuffer(gates, op: op, elements: 4 * d.stateCount).floats
        let c = try cpuBuffer(cell, op: op, elements: d.stateCount).floats
        let y = try cpuBuffer(hidden, op: op, elements: d.stateCount).floats
        let cy = try cpuBuffer(newCell, op: op, elements: d.stateCount).floats
        let a = try cpuBuffer(activations, op: op, elements: 5 * d.stateCount).floats
        forEachRow(d.batch, unitsPerRow: h) { b in
            lstmForwardRow(x + b * 4 * h, c + b * h, y + b * h, cy + b * h, a + b * 5 * h, h)
        }
    }

    public func lstmCellBackward(gradHidden: any DeviceBuffer, gradNewCell: any DeviceBuffer, cell: any DeviceBuffer,
                                 activations: any DeviceBuffer, gradGates: any DeviceBuffer, gradCell: any DeviceBuffer,
                                 descriptor d: RecurrentCellDescriptor) throws {
        let op = "lstmCellBackward"
        try validate(d, op)
        let h = d.hiddenSize
        let dy = try cpuBuffer(gradHidden, op: op, elements: d.stateCount).floats
        let dcy = try cpuBuffer(gradNewCell, op: op, elements: d.stateCount).floats
        let c = try cpuBuffer(cell, op: op, elements: d.stateCount).floats
        let a = try cpuBuffer(activations, op: op, elements: 5 * d.stateCount).floats
        let dx = try cpuBuffer(gradGates, op: op, elements: 4 * d.stateCount).floats
        let dc = try cpuBuffer(gradCell, op: op, elements: d.stateCount).floats
        forEachRow(d.batch, unitsPerRow: h) { b in
            lstmBackwardRow(dy + b * h, dcy + b * h, c + b * h, a + b * 5 * h, dx + b * 4 * h, dc + b * h, h)
        }
    }

    public func gruCellForward(_ inputGates: any DeviceBuffer, _ hiddenGates: any DeviceBuffer,
                               _ hidden: any DeviceBuffer, _ output: any DeviceBuffer, activations: any DeviceBuffer,
                               descriptor d: RecurrentCellDescriptor) throws {
        let op = "gruCellForward"
        try validate(d, op)
        let h = d.hiddenSize
        let xi = try cpuBuffer(inputGates, op: op, elements: 3 * d.stateCount).floats
        let xh = try cpuBuffer(hiddenGates, op: op, elements: 3 * d.stateCount).floats
        let hp = try cpuBuffer(hidden, op: op, elements: d.stateCount).floats
        let y = try cpuBuffer(output, op: op, elements: d.stateCount).floats
        let a = try cpuBuffer(activations, op: op, elements: 3 * d.stateCount).floats
        forEachRow(d.batch, unitsPerRow: h) { b in
            gruForwardRow(xi + b * 3 * h, xh + b * 3 * h, hp + b * h, y + b * h, a + b * 3 * h, h)
        }
    }

    public func gruCellBackward(_ gradOutput: any DeviceBuffer, _ hiddenGates: any DeviceBuffer,
                                _ hidden: any DeviceBuffer, activations: any DeviceBuffer,
                                _ gradInputGates: any DeviceBuffer, _ gradHiddenGates: any DeviceBuffer,
                                _ gradHidden: any DeviceBuffer, descriptor d: RecurrentCellDescriptor) throws {
        let op = "gruCellBackward"
        try validate(d, op)
        let h = d.hiddenSize
        let dy = try cpuBuffer(gradOutput, op: op, elements: d.stateCount).floats
        let xh = try cpuBuffer(hiddenGates, op: op, elements: 3 * d.stateCount).floats
        let hp = try cpuBuffer(hidden, op: op, elements: d.stateCount).floats
        let a = try cpuBuffer(activations, op: op, elements: 3 * d.stateCount).floats
        let dxi = try cpuBuffer(gradInputGates, op: op, elements: 3 * d.stateCount).floats
        let dxh = try cpuBuffer(gradHiddenGates, op: op, elements: 3 * d.stateCount).floats
        let dhp = try cpuBuffer(gradHidden, op: op, elements: d.stateCount).floats
        forEachRow(d.batch, unitsPerRow: h) { b in
            gruBackwardRow(dy + b * h, xh + b * 3 * h, hp + b * h, a + b * 3 * h, dxi + b * 3 * h, dxh + b * 3 * h,
                           dhp + b * h, h)
        }
    }

    public func embeddingGather(_ table: any DeviceBuffer, _ indices: any DeviceBuffer, _ output: any DeviceBuffer,
                                descriptor d: EmbeddingDescriptor) throws {
        let op = "embeddingGather"
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        let w = try cpuBuffer(table, op: op, elements: d.tableCount).floats
        let ids = try cpuBuffer(indices, op: op, elements: d.tokens).ints
        let y = try cpuBuffer(output, op: op, elements: d.outputCount).floats
        let columns = d.columns
        parallelRanges(count: d.tokens, minimumChunk: max(1, ParallelGrain.cheap / columns)) { start, end in
            for token in start..<end {
                let id = Int(ids[token])
                let destination = y + token * columns
                if id >= 0 && id < d.rows {
                    destination.update(from: w + id * columns, count: columns)
                } else {
                    destination.update(repeating: 0, count: columns)
                }
            }
        }
    }

    /// Zeroes the table gradient, then adds the tokens' rows in token order on one thread: each
    /// element's sum has a fixed order, so the result is deterministic. (The OpenCL kernels sum the same
    /// terms in chunks of consecutive tokens, so the two agree to rounding, not bit for bit.)
    public func embeddingScatter(_ gradOutput: any DeviceBuffer, _ indices: any DeviceBuffer,
                                 _ gradTable: any DeviceBuffer, descriptor d: EmbeddingDescriptor) throws {
        let op = "embeddingScatter"
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        let dy = try cpuBuffer(gradOutput, op: op, elements: d.outputCount).floats
        let ids = try cpuBuffer(indices, op: op, elements: d.tokens).ints
        let dw = try cpuBuffer(gradTable, op: op, elements: d.tableCount).floats
        let columns = d.columns
        dw.update(repeating: 0, count: d.tableCount)
        for token in 0..<d.tokens {
            let id = Int(ids[token])
            guard id >= 0 && id < d.rows else { continue }
            let source = dy + token * columns, destination = dw + id * columns
            for column in 0..<columns { destination[column] += source[column] }
        }
    }
}

// MARK: - One batch row

// The row loops take every pointer as a parameter and write one output per loop: inside a closure the
// captured pointers would be reloaded after every store (they might alias it), which stops the vectoriser.

/// One row of `lstmCellForward`: x [4H] → a [5H] = (σi | σf | tanh g | σo | tanh c_t), y = h_t, cy = c_t [H].
private func lstmForwardRow(_ x: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                            _ y: UnsafeMutablePointer<Float>, _ cy: UnsafeMutablePointer<Float>,
                            _ a: UnsafeMutablePointer<Float>, _ h: Int) {
    for j in 0..<(2 * h) { a[j] = logistic(x[j]) }
    for j in (2 * h)..<(3 * h) { a[j] = Foundation.tanh(x[j]) }
    for j in (3 * h)..<(4 * h) { a[j] = logistic(x[j]) }
    for j in 0..<h { cy[j] = a[h + j] * c[j] + a[j] * a[2 * h + j] }
    for j in 0..<h { a[4 * h + j] = Foundation.tanh(cy[j]) }
    for j in 0..<h { y[j] = a[3 * h + j] * a[4 * h + j] }
}

/// One row of `lstmCellBackward`; `dc` first holds dc = dc_t + dh_t·σo·(1 − tanh²c_t), finally dc·σf.
private func lstmBackwardRow(_ dy: UnsafeMutablePointer<Float>, _ dcy: UnsafeMutablePointer<Float>,
                             _ c: UnsafeMutablePointer<Float>, _ a: UnsafeMutablePointer<Float>,
                             _ dx: UnsafeMutablePointer<Float>, _ dc: UnsafeMutablePointer<Float>, _ h: Int) {
    let (i, f, g, o, squashed) = (a, a + h, a + 2 * h, a + 3 * h, a + 4 * h)
    for j in 0..<h { dc[j] = dcy[j] + dy[j] * o[j] * (1 - squashed[j] * squashed[j]) }
    for j in 0..<h { dx[j] = dc[j] * g[j] * i[j] * (1 - i[j]) }
    for j in 0..<h { dx[h + j] = dc[j] * c[j] * f[j] * (1 - f[j]) }
    for j in 0..<h { dx[2 * h + j] = dc[j] * i[j] * (1 - g[j] * g[j]) }
    for j in 0..<h { dx[3 * h + j] = dy[j] * squashed[j] * o[j] * (1 - o[j]) }
    for j in 0..<h { dc[j] *= f[j] }
}

/// One row of `gruCellForward`: xi, xh [3H], hp = h_{t−1} [H] → y = h_t [H], a [3H] = (r | z | n).
private func gruForwardRow(_ xi: UnsafeMutablePointer<Float>, _ xh: UnsafeMutablePointer<Float>,
                           _ hp: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                           _ a: UnsafeMutablePointer<Float>, _ h: Int) {
    for j in 0..<(2 * h) { a[j] = logistic(xi[j] + xh[j]) }
    for j in 0..<h { a[2 * h + j] = Foundation.tanh(xi[2 * h + j] + a[j] * xh[2 * h + j]) }
    for j in 0..<h { y[j] = (1 - a[h + j]) * a[2 * h + j] + a[h + j] * hp[j] }
}

/// One row of `gruCellBackward`, with n̂ = dh·(1 − z)(1 − n²), ẑ = dh·(h_{t−1} − n)·z(1 − z), r̂ = n̂·h_n·r(1 − r).
private func gruBackwardRow(_ dy: UnsafeMutablePointer<Float>, _ xh: UnsafeMutablePointer<Float>,
                            _ hp: UnsafeMutablePointer<Float>, _ a: UnsafeMutablePointer<Float>,
                            _ dxi: UnsafeMutablePointer<Float>, _ dxh: UnsafeMutablePointer<Float>,
                            _ dhp: UnsafeMutablePointer<Float>, _ h: Int) {
    let (r, z, n) = (a, a + h, a + 2 * h)
    for j in 0..<h { dxi[2 * h + j] = dy[j] * (1 - z[j]) * (1 - n[j] * n[j]) }
    for j in 0..<h { dxi[h + j] = dy[j] * (hp[j] - n[j]) * z[j] * (1 - z[j]) }
    for j in 0..<h { dxi[j] = dxi[2 * h + j] * xh[2 * h + j] * r[j] * (1 - r[j]) }
    for j in 0..<(2 * h) { dxh[j] = dxi[j] }
    for j in 0..<h { dxh[2 * h + j] = dxi[2 * h + j] * r[j] }
    for j in 0..<h { dhp[j] = dy[j] * z[j] }
}
