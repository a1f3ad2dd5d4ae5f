import OpalCore

// Fused LSTM / GRU cell steps (Kernels/recurrent.cl) and the embedding gather / scatter-add
// (Kernels/embedding.cl) on OpenCL. The cells run one work-item per hidden unit (b, j); the gather one
// per output element; the scatter one per (column, chunk of tokens) and then one per table element, so no
// two work-items write the same place and no atomics are needed.

extension OpenCLBackend {
    private func validate(_ descriptor: RecurrentCellDescriptor, _ op: String) throws {
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(descriptor))") }
    }

    private func validate(_ descriptor: EmbeddingDescriptor, _ op: String) throws {
        if let problem = descriptor.problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(descriptor))") }
    }

    /// The buffers as kernel arguments, each checked to hold its element count, then B and H.
    private func cellArguments(_ op: String, _ buffers: [(any DeviceBuffer, Int)],
                               _ d: RecurrentCellDescriptor) throws -> [KernelArgument] {
        try buffers.map { .buffer(try own($0.0, op, elements: $0.1 * d.stateCount).buffer) }
            + [.int(d.batch), .int(d.hiddenSize)]
    }

    public func lstmCellForward(_ gates: any DeviceBuffer, _ cell: any DeviceBuffer, hidden: any DeviceBuffer,
                                newCell: any DeviceBuffer, activations: any DeviceBuffer,
                                descriptor d: RecurrentCellDescriptor) throws {
        try validate(d, "lstmCellForward")
        let arguments = try cellArguments("lstmCellForward",
                                          [(gates, 4), (cell, 1), (hidden, 1), (newCell, 1), (activations, 5)], d)
        try launch(.lstmCellForward, arguments, count: d.stateCount)
    }

    public func lstmCellBackward(gradHidden: any DeviceBuffer, gradNewCell: any DeviceBuffer, cell: any DeviceBuffer,
                                 activations: any DeviceBuffer, gradGates: any DeviceBuffer, gradCell: any DeviceBuffer,
                                 descriptor d: RecurrentCellDescriptor) throws {
        try validate(d, "lstmCellBackward")
        let arguments = try cellArguments("lstmCellBackward", [
            (gradHidden, 1), (gradNewCell, 1), (cell, 1), (activations, 5), (gradGates, 4), (gradCell, 1),
        ], d)
        try launch(.lstmCellBackward, arguments, count: d.stateCount)
    }

    public func gruCellForward(_ inputGates: any DeviceBuffer, _ hiddenGates: any DeviceBuffer,
                               _ hidden: any DeviceBuffer, _ output: any DeviceBuffer, activations: any DeviceBuffer,
                               descriptor d: RecurrentCellDescriptor) throws {
        try validate(d, "gruCellForward")
        let arguments = try cellArguments("gruCellForward",
                                          [(inputGates, 3), (hiddenGates, 3), (hidden, 1), (output, 1), (activations, 3)], d)
        try launch(.gruCellForward, arguments, count: d.stateCount)
    }

    public func gruCellBackward(_ gradOutput: any DeviceBuffer, _ hiddenGates: any DeviceBuffer,
                                _ hidden: any DeviceBuffer, activations: any DeviceBuffer,
                                _ gradInputGates: any DeviceBuffer, _ gradHiddenGates: any DeviceBuffer,
                                _ gradHidden: any DeviceBuffer, descriptor d: RecurrentCellDescriptor) throws {
        try validate(d, "gruCellBackward")
        let arguments = try cellArguments("gruCellBackward", [
            (gradOutput, 1), (hiddenGates, 3), (hidden, 1), (activations, 3),
            (gradInputGates, 3), (gradHiddenGates, 3), (gradHidden, 1),
        ], d)
        try launch(.gruCellBackward, arguments, count: d.stateCount)
    }

    public func embeddingGather(_ table: any DeviceBuffer, _ indices: any DeviceBuffer, _ output: any DeviceBuffer,
                                descriptor d: EmbeddingDescriptor) throws {
        let op = "embeddingGather"
        try validate(d, op)
        let w = try own(table, op, elements: d.tableCount)
        let ids = try own(indices, op, elements: d.tokens)
        let y = try own(output, op, elements: d.outputCount)
        guard d.tokens > 0 else { return }
        try launch(.embeddingGather, [.buffer(w.buffer), .buffer(ids.buffer), .buffer(y.buffer),
                                      .int(d.rows), .int(d.columns), .int(d.tokens)], count: d.outputCount)
    }

    /// Two passes (Kernels/embedding.cl): per-chunk partial sums with one writer per element, then the
    /// chunks summed in order. With a single chunk the partial pass writes `gradTable` directly.
    public func embeddingScatter(_ gradOutput: any DeviceBuffer, _ indices: any DeviceBuffer,
                                 _ gradTable: any DeviceBuffer, descriptor d: EmbeddingDescriptor) throws {
        let op = "embeddingScatter"
        try validate(d, op)
        let dy = try own(gradOutput, op, elements: d.outputCount)
        let ids = try own(indices, op, elements: d.tokens)
        let dw = try own(gradTable, op, elements: d.tableCount)
        let chunks = d.scatterChunks
        let chunk = max(1, (d.tokens + chunks - 1) / chunks)
        // Released at once: the queue is in order, so the pool hands it out again only to later work.
        let partial = chunks == 1 ? dw : try own(allocate(count: chunks * d.tableCount), op, elements: chunks * d.tableCount)
        let width = min(parameters.workGroupSize, smallestPowerOfTwo(atLeast: d.columns))
        try enqueue(.embeddingScatterPartial, [.buffer(dy.buffer), .buffer(ids.buffer), .buffer(partial.buffer),
                                               .int(d.rows), .int(d.columns), .int(d.tokens), .int(chunk)],
                    global: { local in [roundUp(d.columns, to: local), chunks] },
                    local: { limit in [largestPowerOfTwo(atMost: min(width, limit)), 1] })
        if chunks > 1 {
            try launch(.embeddingScatterReduce, [.buffer(partial.buffer), .buffer(dw.buffer), .int(d.tableCount),
                                                 .int(chunks)], count: d.tableCount)
        }
    }
}

extension EmbeddingDescriptor {
    /// How many chunks of consecutive tokens the OpenCL scatter sums separately: about N / V, so the
    /// per-chunk [V, D] slabs cost no more than the N·D adds, at most one per 32 tokens, and at most
    /// 16 M slab elements. A function of the geometry only, so every device sums in the same order.
    var scatterChunks: Int {
        let byBalance = tokens / max(rows, 1)
        let byMemory = (16 << 20) / max(tableCount, 1)
        return max(1, min(byBalance, tokens / 32, byMemory))
    }
}
