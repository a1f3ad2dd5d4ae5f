/// Anything with parameters and sub-modules: layers and whole models.
///
/// Parameter names follow PyTorch's `state_dict` convention (`0.weight`, `encoder.1.bias`), so
/// checkpoints map onto the equivalent PyTorch modules.
public protocol Module: AnyObject {
    /// This module's own parameters, by name (not those of its children).
    var ownParameters: [(name: String, parameter: Parameter)] { get }
    /// Sub-modules, by name.
    var children: [(name: String, module: any Module)] { get }
    /// Training mode (dropout active, batch statistics) versus evaluation mode.
    var isTraining: Bool { get set }
}

/// A module that maps one tensor to one tensor: `layer(input)`.
public protocol Layer: Module {
    func callAsFunction(_ input: Tensor) throws -> Tensor
}

extension Module {
    public var ownParameters: [(name: String, parameter: Parameter)] { [] }
    public var children: [(name: String, module: any Module)] { [] }

    /// Every parameter of this module and its descendants, with dotted names.
    public var namedParameters: [(name: String, parameter: Parameter)] {
        var result = ownParameters
        for (childName, child) in children {
            result += child.namedParameters.map { ("\(childName).\($0.name)", $0.parameter) }
        }
        return result
    }

    public var parameters: [Parameter] { namedParameters.map(\.parameter) }
    public var trainableParameters: [Parameter] { parameters.filter(\.isTrainable) }

    /// Total number of scalar parameters.
    public var parameterCount: Int { parameters.map(\.shape.count).reduce(0, +) }

    /// Moves every parameter to `device`.
    public func move(to device: Device) throws {
        for parameter in parameters { try parameter.move(to: device) }
    }

    /// This module, moved to `device` (for chaining: `Sequential { … }.moved(to: device)`).
    @discardableResult
    public func moved(to device: Device) throws -> Self {
        try move(to: device)
        return self
    }

    /// Switches this module and all descendants to training (true) or evaluation (false) mode.
    public func setTraining(_ training: Bool) {
        isTraining = training
        for (_, child) in children { child.setTraining(training) }
    }

    public func zeroGradients() { for parameter in parameters { parameter.zeroGradient() } }

    /// Freezes (or unfreezes) every parameter: frozen ones get no gradient and no update.
    public func freeze(_ frozen: Bool = true) { for parameter in parameters { parameter.isTrainable = !frozen } }
}
