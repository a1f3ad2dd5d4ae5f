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

    /// `optimizer.velocity.<name>`: the momentum buffers (none without momentum: they stay zero).
    public func stateTensors(names: [(name: String, parameter: Parameter)]) throws -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (name, parameter) in names {
            guard let velocity = velocities[ObjectIdentifier(parameter)] else { continue }
            result[OptimizerState.tensorName(slot: "velocity", parameter: name)] = velocity
        }
        return result
    }

    public var stateMetadata: [String: String] {
        [OptimizerState.kindKey: "SGD", OptimizerState.stepCountKey: String(stepCount)]
    }

    public func loadState(from contents: CheckpointContents, names: [(name: String, parameter: Parameter)],
                          path: String = "checkpoint") throws {
        let count = try OptimizerState.stepCount(in: contents.metadata, kind: "SGD", path: path)
        let loaded = try OptimizerState.load(slots: ["velocity"], from: contents, names: names,
                                             parameters: parameters, path: path)
        velocities = loaded.mapValues { $0[0] }
        stepCount = count
    }
}
