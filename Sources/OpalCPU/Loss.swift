import OpalCore

// Softmax cross-entropy of the CPU backend (mirrors Kernels/loss.cl).
//   logits: [rows, columns], labels: [rows] Int32 in [0, columns), losses: [rows]
//   forward   losses[r] = logsumexp(x_r) − x_r[label_r]
//   backward  dx[r, c] = scale · upstream[0] · (softmax(x_r)[c] − [c == label_r])
// The simple references are the Double loops in Tests/OpalCPUTests/LossTests.swift.

extension CPUBackend {
    public func crossEntropy(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer, _ losses: any DeviceBuffer,
                             rows: Int, columns: Int) throws {
        try checkRows(op: "crossEntropy", rows: rows, columns: columns)
        let x = try cpuBuffer(logits, op: "crossEntropy", elements: rows * columns).floats
        let labels = try cpuBuffer(labels, op: "crossEntropy", elements: rows).ints
        let losses = try cpuBuffer(losses, op: "crossEntropy", elements: rows).floats
        try checkLabels(op: "crossEntropy", labels, rows: rows, columns: columns)
        parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.expensive / max(columns, 1))) { start, end in
            for row in start..<end {
                let logitsRow = x + row * columns
                losses[row] = logSumExpRow(logitsRow, columns) - logitsRow[Int(labels[row])]
            }
        }
    }

    public func crossEntropyBackward(_ logits: any DeviceBuffer, _ labels: any DeviceBuffer,
                                     _ upstream: any DeviceBuffer, _ dx: any DeviceBuffer,
                                     rows: Int, columns: Int, scale: Float) throws {
        try checkRows(op: "crossEntropyBackward", rows: rows, columns: columns)
        let x = try cpuBuffer(logits, op: "crossEntropyBackward", elements: rows * columns).floats
        let labels = try cpuBuffer(labels, op: "crossEntropyBackward", elements: rows).ints
        let upstream = try cpuBuffer(upstream, op: "crossEntropyBackward", elements: 1).floats
        let dx = try cpuBuffer(dx, op: "crossEntropyBackward", elements: rows * columns).floats
        try checkLabels(op: "crossEntropyBackward", labels, rows: rows, columns: columns)
        let factor = scale * upstream[0]
        parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.expensive / max(columns, 1))) { start, end in
            for row in start..<end {
                let dxRow = dx + row * columns
                softmaxRow(x + row * columns, dxRow, columns, log: false)
                for c in 0..<columns { dxRow[c] *= factor }
                dxRow[Int(labels[row])] -= factor
            }
        }
    }

    /// Reading a label outside [0, columns) would read outside the row, so it is an error here.
    private func checkLabels(op: String, _ labels: UnsafeMutablePointer<Int32>, rows: Int, columns: Int) throws {
        for row in 0..<rows where labels[row] < 0 || Int(labels[row]) >= columns {
            throw TensorError.invalidArgument(
                op: op, reason: "label \(labels[row]) of row \(row) is not in [0, \(columns))")
        }
    }
}
