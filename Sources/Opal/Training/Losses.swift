/// Loss functions. Each returns a scalar tensor (shape []) averaged over its elements or rows.

/// Mean cross-entropy of `logits` [batch, classes] against int32 class `labels` [batch],
/// fused with the softmax (one kernel forward, one backward).
public func crossEntropy(logits: Tensor, labels: Tensor) throws -> Tensor {
    try Tensor.softmaxCrossEntropy(logits: logits, labels: labels)
}

/// Mean squared error `mean((prediction − target)²)`.
public func meanSquaredError(_ prediction: Tensor, _ target: Tensor) throws -> Tensor {
    guard prediction.shape == target.shape else {
        throw TensorError.shapeMismatch(op: "meanSquaredError", lhs: prediction.shape, rhs: target.shape)
    }
    return try (prediction - target).squared().mean()
}

/// Binary cross-entropy on logits, computed stably as `mean(softplus(x) − x·y)`
/// (equal to −[y·log σ(x) + (1 − y)·log(1 − σ(x))]).
public func binaryCrossEntropyWithLogits(_ logits: Tensor, targets: Tensor) throws -> Tensor {
    guard logits.shape == targets.shape else {
        throw TensorError.shapeMismatch(op: "binaryCrossEntropyWithLogits", lhs: logits.shape, rhs: targets.shape)
    }
    return try (logits.softplus() - logits * targets).mean()
}
