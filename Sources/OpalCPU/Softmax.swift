import CVectorMath
import Foundation
import OpalCore

// Row-wise softmax of the CPU backend (mirrors Kernels/softmax.cl), x, y: [rows, columns].
//   softmax      y = e^{x − max} / Σ e^{x − max}
//   log-softmax  y = x − max − log Σ e^{x − max}
//   backward     softmax: dx = y ⊙ (dy − Σ dy⊙y);  log-softmax: dx = dy − eʸ · Σ dy
// Subtracting the row maximum keeps every exponent ≤ 0, so nothing overflows. The exponentials are
// CVectorMath's (AVX2 + FMA where available).
// The simple references are the Double loops in Tests/OpalCPUTests/SoftmaxTests.swift.

extension CPUBackend {
    public func softmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, rows: Int, columns: Int, log: Bool) throws {
        try checkRows(op: "softmax", rows: rows, columns: columns)
        let x = try cpuBuffer(x, op: "softmax", elements: rows * columns).floats
        let y = try cpuBuffer(y, op: "softmax", elements: rows * columns).floats
        guard columns > 0 else { return }
        parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.expensive / columns)) { start, end in
            for row in start..<end {
                softmaxRow(x + row * columns, y + row * columns, columns, log: log)
            }
        }
    }

    public func softmaxBackward(_ y: any DeviceBuffer, _ dy: any DeviceBuffer, _ dx: any DeviceBuffer,
                                rows: Int, columns: Int, log: Bool) throws {
        try checkRows(op: "softmaxBackward", rows: rows, columns: columns)
        let y = try cpuBuffer(y, op: "softmaxBackward", elements: rows * columns).floats
        let dy = try cpuBuffer(dy, op: "softmaxBackward", elements: rows * columns).floats
        let dx = try cpuBuffer(dx, op: "softmaxBackward", elements: rows * columns).floats
        guard columns > 0 else { return }
        parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.expensive / columns)) { start, end in
            for row in start..<end {
                let yRow = y + row * columns, dyRow = dy + row * columns, dxRow = dx + row * columns
                if log {
                    let total = sumRow(dyRow, columns)
                    for c in 0..<columns { dxRow[c] = dyRow[c] - Foundation.exp(yRow[c]) * total }
                } else {
                    let dot = dotRow(dyRow, yRow, columns)
                    for c in 0..<columns { dxRow[c] = yRow[c] * (dyRow[c] - dot) }
                }
            }
        }
    }

    func checkRows(op: String, rows: Int, columns: Int) throws {
        guard rows >= 0, columns >= 0 else {
            throw TensorError.invalidArgument(op: op, reason: "negative extent rows \(rows), columns \(columns)")
        }
    }
}

/// Softmax (or log-softmax) of one row of n ≥ 1 elements; `y` may equal `x`.
@inline(__always)
func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, log: Bool) {
    let maximum = maxRow(x, n)
    if log {
        let shift = maximum + Foundation.log(opal_exp_shifted_total(x, n, maximum))
        for c in 0..<n { y[c] = x[c] - shift }
    } else {
        if UnsafePointer(y) != x { y.update(from: x, count: n) }
        let scale = 1 / opal_exp_shifted_sum(y, n, maximum)   // y = e^{x − max}, then the sum
        for c in 0..<n { y[c] *= scale }
    }
}

/// log Σ e^{x[c]} of one row of n ≥ 1 elements, computed stably.
@inline(__always)
func logSumExpRow(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let maximum = maxRow(x, n)
    return maximum + Foundation.log(opal_exp_shifted_total(x, n, maximum))
}
