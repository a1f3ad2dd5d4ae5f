import Synchronization

/// A trainable tensor owned by a layer. Its `value` is a leaf of the autodiff graph, so
/// `loss.backward()` accumulates into `gradient`; optimizers update `value` in place on its device.
public final class Parameter: @unchecked Sendable {
    // @unchecked: a parameter belongs to one model, which one training loop drives at a time.
    public private(set) var value: Tensor
    /// Frozen parameters (`isTrainable == false`) take part in the forward pass as constants.
    /// Buffers (running statistics) are never trainable.
    public var isTrainable: Bool {
        didSet {
            if isBuffer { isTrainable = false }
            value = isTrainable ? value.detached().requiringGradient() : value.detached()
        }
    }
    /// State saved with the model but not learned by gradients, e.g. batch norm's running mean
    /// (PyTorch's "buffers").
    public let isBuffer: Bool

    public init(_ value: Tensor, isTrainable: Bool = true) {
        self.value = isTrainable ? value.detached().requiringGradient() : value.detached()
        self.isTrainable = isTrainable
        self.isBuffer = false
    }

    /// A buffer: saved and moved with the model, updated by its layer, never by an optimizer.
    public init(buffer value: Tensor) {
        self.value = value.detached()
        self.isTrainable = false
        self.isBuffer = true
    }

    public var shape: Shape { value.shape }
    public var device: Device { value.device }
    /// The gradient accumulated by the last `backward()`, if any.
    public var gradient: Tensor? { value.gradient }
    public func zeroGradient() { value.zeroGradient() }

    /// Replaces the value (same shape), e.g. when loading a checkpoint.
    public func assign(_ newValue: Tensor) throws {
        guard newValue.shape == value.shape else {
            throw TensorError.shapeMismatch(op: "Parameter.assign", lhs: value.shape, rhs: newValue.shape)
        }
        value = isTrainable ? newValue.detached().requiringGradient() : newValue.detached()
    }

    /// Moves the value to `device` (drops the gradient).
    public func move(to device: Device) throws {
        if device == value.device { return }
        let moved = try value.moved(to: device)
        value = isTrainable ? moved.requiringGradient() : moved
    }
}

/// Seeds for parameter initialisation and dropout: a process-wide sequence that
/// `Random.seed(_:)` restarts, so a run with the same seed builds the same model.
public enum Random {
    private static let counter = Atomic<UInt64>(0x5EED)

    /// Restarts the sequence (like `torch.manual_seed`).
    public static func seed(_ value: UInt64) { counter.store(value &* 0x9E37_79B9_7F4A_7C15, ordering: .relaxed) }

    /// Restarts the sequence at a point that depends only on a run's seed and a training step, so the
    /// dropout masks of step `step` are the same in a straight run and in one resumed before it.
    public static func seed(run: UInt64, step: Int) {
        var generator = SeededGenerator(seed: run, stream: 0x4452_4F50 &+ UInt64(step))   // "DROP"
        seed(generator.next())
    }

    /// The next 32-bit seed of the sequence.
    public static func nextSeed() -> UInt32 {
        var x = counter.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt32(truncatingIfNeeded: x ^ (x >> 31))
    }
}
