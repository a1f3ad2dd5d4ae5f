// Softmax family along the last axis, the fused softmax + cross-entropy, and dropout.

extension Tensor {
    private var rowsAndColumns: (rows: Int, columns: Int) {
        let columns = shape.dimensions.last ?? 1
        return (columns == 0 ? 0 : count / columns, columns)
    }

    private func softmaxFamily(log: Bool) throws -> Tensor {
        let name = log ? "logSoftmax" : "softmax"
        try requireFloat(name)
        guard rank >= 1 else { throw TensorError.invalidShape(op: name, shape: shape, reason: "needs at least one axis") }
        let (rows, columns) = rowsAndColumns
        let y = try Tensor.empty(shape, on: device)
        if count > 0 { try backend.softmax(buffer, y.buffer, rows: rows, columns: columns, log: log) }
        return Tensor.recorded(y, inputs: [self]) { g, _ in
            let dx = try Tensor.empty(y.shape, on: y.device)
            if y.count > 0 {
                try y.backend.softmaxBackward(y.buffer, g.buffer, dx.buffer, rows: rows, columns: columns, log: log)
            }
            return [dx]
        }
    }

    /// `exp(x − max) / Σ exp(x − max)` along the last axis.
    public func softmax() throws -> Tensor { try softmaxFamily(log: false) }
    /// `x − logsumexp(x)` along the last axis.
    public func logSoftmax() throws -> Tensor { try softmaxFamily(log: true) }

    /// Mean cross-entropy of `logits` [rows, classes] against int32 `labels` [rows], fused with the
    /// softmax: one kernel forward (per-row `logsumexp − logit[label]`), one backward
    /// (`(softmax − onehot) · upstream / rows`), with the upstream gradient read on the device.
    ///
    /// Label values must lie in `0..<classes` (the kernels do not check them; `Opal`'s loss
    /// functions validate host-side labels where they enter).
    public static func softmaxCrossEntropy(logits: Tensor, labels: Tensor) throws -> Tensor {
        try logits.requireFloat("crossEntropy")
        guard labels.dtype == .int32 else {
            throw TensorError.dtypeMismatch(op: "crossEntropy labels", expected: .int32, actual: labels.dtype)
        }
        try logits.requireSameDevice(labels, "crossEntropy")
        guard logits.rank == 2, labels.rank == 1, labels.shape[0] == logits.shape[0], logits.shape[0] > 0,
              logits.shape[1] > 0 else {
            throw TensorError.shapeMismatch(op: "crossEntropy (logits [rows, classes], labels [rows])",
                                            lhs: logits.shape, rhs: labels.shape)
        }
        let rows = logits.shape[0], columns = logits.shape[1]
        let losses = try Tensor.empty([rows], on: logits.device)
        try logits.backend.crossEntropy(logits.buffer, labels.buffer, losses.buffer, rows: rows, columns: columns)
        let total = try losses.reducedSum(alongAxes: [0]).reshapedView([]).mapped(.affine(scale: 1 / Float(rows), shift: 0))
        return recorded(total, inputs: [logits]) { g, _ in
            let dx = try Tensor.empty(logits.shape, on: logits.device)
            try logits.backend.crossEntropyBackward(logits.buffer, labels.buffer, g.buffer, dx.buffer,
                                                    rows: rows, columns: columns, scale: 1 / Float(rows))
            return [dx]
        }
    }

    /// Inverted dropout: zeroes each element with `probability` and scales the rest by
    /// `1 / (1 − probability)`. The mask is a pure function of `seed` and the element index, so
    /// every device draws the same one.
    public func dropout(probability: Float, seed: UInt32) throws -> Tensor {
        try requireFloat("dropout")
        guard probability >= 0, probability < 1 else {
            throw TensorError.invalidArgument(op: "dropout", reason: "probability \(probability) is outside [0, 1)")
        }
        if probability == 0 || count == 0 { return self }
        let mask = try Tensor.empty(shape, on: device)
        try backend.dropoutMask(mask.buffer, count: count, probability: probability, seed: seed)
        return try self * mask
    }
}
