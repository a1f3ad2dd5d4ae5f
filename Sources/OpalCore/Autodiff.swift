import Synchronization

/// One recorded op in the autodiff graph (the "tape").
///
/// A node is created when an op runs on inputs of which at least one requires gradients. It keeps
/// the nodes of those inputs and a pullback that maps the gradient of the op's output to the
/// gradients of its inputs, written with the same backend ops as the forward pass, so backward
/// runs on the forward's device. Nodes are numbered in creation order; an op's inputs always have
/// smaller numbers than the op, so visiting nodes in decreasing number is a topological order.
package final class GradientNode: @unchecked Sendable {
    // @unchecked: a graph is built and walked by one thread (the training loop); `gradient` is
    // only mutated during `backward()` and `zeroGradient()` on that thread.
    package let index: Int
    /// Inputs that require gradients (nil where an input does not).
    let inputs: [GradientNode?]
    /// Nil for leaves (parameters and other tensors created with `requiringGradient()`).
    let pullback: ((Tensor) throws -> [Tensor?])?
    /// Ops with several outputs (see `Tensor.recorded(_:inputs:pullback:)` for arrays) record one joint
    /// node, holding `jointPullback` over all the outputs' gradients, and one node per output, whose
    /// only input is the joint node and whose `outputSlot` is its position among the outputs.
    let jointPullback: (([Tensor?]) throws -> [Tensor?])?
    let outputSlot: Int?
    let outputCount: Int
    /// Accumulated gradient of a leaf after `backward()`.
    package var gradient: Tensor?

    private static let counter = Atomic<Int>(0)

    init(inputs: [GradientNode?], pullback: ((Tensor) throws -> [Tensor?])?,
         jointPullback: (([Tensor?]) throws -> [Tensor?])? = nil, outputSlot: Int? = nil, outputCount: Int = 1) {
        self.index = GradientNode.counter.add(1, ordering: .relaxed).newValue
        self.inputs = inputs
        self.pullback = pullback
        self.jointPullback = jointPullback
        self.outputSlot = outputSlot
        self.outputCount = outputCount
    }

    var isLeaf: Bool { pullback == nil && jointPullback == nil && outputSlot == nil }
}

/// Switches gradient recording on and off for the current task.
public enum GradientRecording {
    @TaskLocal public static var isEnabled = true
}

/// Runs `body` without recording an autodiff graph (evaluation, optimizer updates).
public func withoutGradients<Result>(_ body: () throws -> Result) rethrows -> Result {
    try GradientRecording.$isEnabled.withValue(false, operation: body)
}

extension Tensor {
    /// True when gradients flow back through this tensor.
    public var requiresGradient: Bool { node != nil }

    /// The same values as a leaf of the autodiff graph: `backward()` accumulates into `gradient`.
    public func requiringGradient() -> Tensor {
        Tensor(shape: shape, dtype: dtype, device: device, buffer: buffer,
               node: GradientNode(inputs: [], pullback: nil))
    }

    /// The gradient accumulated into this leaf by `backward()`, or nil.
    public var gradient: Tensor? { node?.gradient }

    /// Forgets the accumulated gradient of this leaf.
    public func zeroGradient() { node?.gradient = nil }

    /// Records `result` as the output of an op on `inputs`. `pullback(upstream, needs)` returns one
    /// gradient per input, in input order; `needs[i]` says whether input `i` wants one (so expensive
    /// unneeded gradients are skipped).
    package static func recorded(_ result: Tensor, inputs: [Tensor],
                                 pullback: @escaping (_ upstream: Tensor, _ needs: [Bool]) throws -> [Tensor?]) -> Tensor {
        guard GradientRecording.isEnabled, inputs.contains(where: { $0.node != nil }) else { return result }
        let needs = inputs.map { $0.node != nil }
        let node = GradientNode(inputs: inputs.map(\.node), pullback: { upstream in try pullback(upstream, needs) })
        return Tensor(shape: result.shape, dtype: result.dtype, device: result.device, buffer: result.buffer, node: node)
    }

    /// Records `results` as the outputs of one op on `inputs` (an op with several outputs, such as the
    /// fused LSTM cell's h and c). `pullback(upstreams, needs)` receives one gradient per output, nil
    /// for an output that received none, and returns one gradient per input as in the one-output form.
    package static func recorded(_ results: [Tensor], inputs: [Tensor],
                                 pullback: @escaping (_ upstreams: [Tensor?], _ needs: [Bool]) throws -> [Tensor?]) -> [Tensor] {
        guard GradientRecording.isEnabled, inputs.contains(where: { $0.node != nil }) else { return results }
        let needs = inputs.map { $0.node != nil }
        let joint = GradientNode(inputs: inputs.map(\.node), pullback: nil,
                                 jointPullback: { upstreams in try pullback(upstreams, needs) }, outputCount: results.count)
        return results.enumerated().map { slot, result in
            Tensor(shape: result.shape, dtype: result.dtype, device: result.device, buffer: result.buffer,
                   node: GradientNode(inputs: [joint], pullback: nil, outputSlot: slot))
        }
    }

    /// Reverse-mode differentiation: propagates `seed` (default: ones, i.e. d self / d self) back
    /// through the recorded graph and accumulates into every leaf's `gradient`.
    ///
    /// All work is enqueued on the device; nothing is read back.
    public func backward(seed: Tensor? = nil) throws {
        guard let root = node else {
            throw TensorError.notDifferentiable(op: "backward (the tensor does not depend on any tensor requiring gradients)")
        }
        let upstream = try seed ?? Tensor.ones(shape, on: device)
        guard upstream.shape == shape else {
            throw TensorError.shapeMismatch(op: "backward seed", lhs: shape, rhs: upstream.shape)
        }
        // Collect the reachable graph, then visit it in reverse creation order.
        var seen = Set<ObjectIdentifier>()
        var stack = [root]
        var nodes: [GradientNode] = []
        while let current = stack.popLast() {
            guard seen.insert(ObjectIdentifier(current)).inserted else { continue }
            nodes.append(current)
            for case let input? in current.inputs { stack.append(input) }
        }
        nodes.sort { $0.index > $1.index }

        var pending: [ObjectIdentifier: Tensor] = [ObjectIdentifier(root): upstream]
        // Gradients of a multi-output op's outputs, gathered for its joint node (created before them,
        // so visited after all of them).
        var pendingOutputs: [ObjectIdentifier: [Tensor?]] = [:]
        try withoutGradients {
            for current in nodes {
                let inputGradients: [Tensor?]
                if let jointPullback = current.jointPullback {
                    guard let upstreams = pendingOutputs.removeValue(forKey: ObjectIdentifier(current)) else { continue }
                    inputGradients = try jointPullback(upstreams)
                } else {
                    guard let gradient = pending.removeValue(forKey: ObjectIdentifier(current)) else { continue }
                    if let slot = current.outputSlot, let joint = current.inputs[0] {
                        let key = ObjectIdentifier(joint)
                        var upstreams = pendingOutputs[key] ?? [Tensor?](repeating: nil, count: joint.outputCount)
                        upstreams[slot] = gradient
                        pendingOutputs[key] = upstreams
                        continue
                    }
                    guard let pullback = current.pullback else {
                        current.gradient = try current.gradient.map { try $0 + gradient } ?? gradient
                        continue
                    }
                    inputGradients = try pullback(gradient)
                }
                for (input, inputGradient) in zip(current.inputs, inputGradients) {
                    guard let input, let inputGradient else { continue }
                    let key = ObjectIdentifier(input)
                    pending[key] = try pending[key].map { try $0 + inputGradient } ?? inputGradient
                }
            }
        }
    }
}
