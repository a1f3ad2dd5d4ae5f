/// Updates parameters from their gradients. `step()` enqueues one fused update kernel per
/// parameter on its device and reads nothing back.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    var learningRate: Float { get set }
    /// Number of `step()` calls so far.
    var stepCount: Int { get }
    func step() throws
}

extension Optimizer {
    /// Clears the gradients of all parameters (call before the next `backward()`).
    public func zeroGradients() { for parameter in parameters { parameter.zeroGradient() } }
}
