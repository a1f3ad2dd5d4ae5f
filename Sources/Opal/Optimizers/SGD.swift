/// Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay
/// (`SGDStep` gives the rule; as PyTorch's `torch.optim.SGD`).
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public var momentum: Float, weightDecay: Float, nesterov: Bool
    public private(set) var stepCount = 0
    private var velocities: [ObjectIdentifier: Tensor] = [:]

    public init(parameters: [Parameter], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0,
                nesterov: Bool = false) throws {
        guard learningRate > 0, momentum >= 0, weightDecay >= 0 else {
            throw TensorError.invalidArgument(op: "SGD", reason: "learning rate must be > 0, momentum and weight decay ≥ 0")
        }
        self.parameters = parameters; self.learningRate = learningRate
        self.momentum = momentum; self.weightDecay = weightDecay; self.nesterov = nesterov
    }

    public func step() throws {
        stepCount += 1
        let rule = SGDStep(learningRate: learningRate, momentum: momentum, weightDecay: weightDecay, nesterov: nesterov)
        for parameter in parameters where parameter.isTrainable {
            guard let gradient = parameter.gradient else { continue }
            let key = ObjectIdentifier(parameter)
            let velocity = try velocities[key] ?? Tensor.zeros(parameter.shape, on: parameter.device)
            velocities[key] = velocity
            try parameter.device.backend.sgdUpdate(parameter: parameter.value.buffer, gradient: gradient.buffer,
                                                   velocity: velocity.buffer, count: parameter.shape.count, step: rule)
        }
    }
}
