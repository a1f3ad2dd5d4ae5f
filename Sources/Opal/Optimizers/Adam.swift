/// Adam (Kingma & Ba) with optional L2 weight decay added to the gradient, as `torch.optim.Adam`.
/// `AdamW` is the same update with decoupled weight decay. One fused kernel per parameter.
public class Adam: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public var beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    public let decoupledWeightDecay: Bool
    public private(set) var stepCount = 0
    /// First and second moments per parameter, on the parameter's device.
    private var moments: [ObjectIdentifier: (m: Tensor, v: Tensor)] = [:]

    public convenience init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9,
                            beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) throws {
        try self.init(parameters: parameters, learningRate: learningRate, beta1: beta1, beta2: beta2,
                      epsilon: epsilon, weightDecay: weightDecay, decoupled: false)
    }

    init(parameters: [Parameter], learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
         weightDecay: Float, decoupled: Bool) throws {
        guard learningRate > 0, (0..<1).contains(beta1), (0..<1).contains(beta2), epsilon > 0, weightDecay >= 0 else {
            throw TensorError.invalidArgument(op: decoupled ? "AdamW" : "Adam",
                                              reason: "needs learning rate > 0, betas in [0, 1), epsilon > 0, weight decay ≥ 0")
        }
        self.parameters = parameters; self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupled
    }

    public func step() throws {
        stepCount += 1
        let rule = AdamStep(learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                            weightDecay: weightDecay, decoupled: decoupledWeightDecay, step: stepCount)
        for parameter in parameters where parameter.isTrainable {
            guard let gradient = parameter.gradient else { continue }
            let key = ObjectIdentifier(parameter)
            let state = try moments[key] ?? (Tensor.zeros(parameter.shape, on: parameter.device),
                                              Tensor.zeros(parameter.shape, on: parameter.device))
            moments[key] = state
            try parameter.device.backend.adamUpdate(parameter: parameter.value.buffer, gradient: gradient.buffer,
                                                    m: state.m.buffer, v: state.v.buffer,
                                                    count: parameter.shape.count, step: rule)
        }
    }
}

extension Adam {
    /// `"Adam"` or `"AdamW"`: the `opal.optimizer` metadata value.
    public var kindName: String { decoupledWeightDecay ? "AdamW" : "Adam" }

    /// `optimizer.m.<name>` and `optimizer.v.<name>`: the first and second moments.
    public func stateTensors(names: [(name: String, parameter: Parameter)]) throws -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (name, parameter) in names {
            guard let state = moments[ObjectIdentifier(parameter)] else { continue }
            result[OptimizerState.tensorName(slot: "m", parameter: name)] = state.m
            result[OptimizerState.tensorName(slot: "v", parameter: name)] = state.v
        }
        return result
    }

    public var stateMetadata: [String: String] {
        [OptimizerState.kindKey: kindName, OptimizerState.stepCountKey: String(stepCount)]
    }

    public func loadState(from contents: CheckpointContents, names: [(name: String, parameter: Parameter)],
                          path: String = "checkpoint") throws {
        let count = try OptimizerState.stepCount(in: contents.metadata, kind: kindName, path: path)
        let loaded = try OptimizerState.load(slots: ["m", "v"], from: contents, names: names,
                                             parameters: parameters, path: path)
        moments = loaded.mapValues { ($0[0], $0[1]) }
        stepCount = count
    }
}

/// Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`.
public final class AdamW: Adam {
    public init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, weightDecay: Float = 0.01) throws {
        try super.init(parameters: parameters, learningRate: learningRate, beta1: beta1, beta2: beta2,
                       epsilon: epsilon, weightDecay: weightDecay, decoupled: true)
    }
}
