/// Multilayer perceptron: Flatten, then Linear + ReLU for each hidden size, then a Linear head.
///
/// The reference net R1 is `makeMLP(inputSize: 784, hiddenSizes: [512, 512], outputSize: 10)`.
/// Parameter names match `nn.Sequential(nn.Flatten(), nn.Linear(…), nn.ReLU(), …)` in PyTorch.
public func makeMLP(inputSize: Int, hiddenSizes: [Int], outputSize: Int, dropout: Float = 0,
                on device: Device = .cpu) throws -> Sequential {
    var layers: [any Layer] = [Flatten()]
    var width = inputSize
    for hidden in hiddenSizes {
        layers.append(try Linear(inputSize: width, outputSize: hidden, on: device))
        layers.append(ReLU())
        if dropout > 0 { layers.append(try Dropout(probability: dropout)) }
        width = hidden
    }
    layers.append(try Linear(inputSize: width, outputSize: outputSize, on: device))
    return Sequential(layers)
}
