/// Errors raised by tensor operations: each names the operation and what was wrong.
public enum TensorError: Error, CustomStringConvertible, Equatable {
    case shapeMismatch(op: String, lhs: Shape, rhs: Shape)
    case invalidShape(op: String, shape: Shape, reason: String)
    case invalidAxis(op: String, axis: Int, rank: Int)
    case dtypeMismatch(op: String, expected: DType, actual: DType)
    case deviceMismatch(op: String, lhs: String, rhs: String)
    case invalidArgument(op: String, reason: String)
    case notDifferentiable(op: String)
    case device(String)

    public var description: String {
        switch self {
        case let .shapeMismatch(op, lhs, rhs):
            return "\(op): shapes \(lhs) and \(rhs) are incompatible"
        case let .invalidShape(op, shape, reason):
            return "\(op): invalid shape \(shape): \(reason)"
        case let .invalidAxis(op, axis, rank):
            return "\(op): axis \(axis) is out of range for a tensor of rank \(rank)"
        case let .dtypeMismatch(op, expected, actual):
            return "\(op): expected dtype \(expected), got \(actual)"
        case let .deviceMismatch(op, lhs, rhs):
            return "\(op): tensors live on different devices (\(lhs) and \(rhs)); move one with moved(to:)"
        case let .invalidArgument(op, reason):
            return "\(op): \(reason)"
        case let .notDifferentiable(op):
            return "\(op) is not differentiable"
        case let .device(message):
            return message
        }
    }
}
