import XCTest
@testable import OpalCore
import OpalCPU

/// Shared fixtures: the CPU device and a seeded source of test data.
let cpuDevice = Device(backend: CPUBackend())

/// Test-data helpers over the library's SplitMix64 generator.
typealias TestRandom = SeededGenerator

extension SeededGenerator {
    init(_ seed: UInt64) { self.init(seed: seed) }
    mutating func uniform(_ range: ClosedRange<Float> = -1...1) -> Float {
        Float.random(in: range, using: &self)
    }
    mutating func values(_ count: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in uniform(range) }
    }
}

/// A fresh seed per run, printed so a failure can be replayed.
func freshSeed(_ name: String = #function) -> UInt64 {
    let seed = UInt64.random(in: 0...UInt64(UInt32.max))
    print("\(name): seed \(seed)")
    return seed
}

/// Checks the autodiff gradient of `f` against central finite differences (in Double on the host
/// side of the difference quotient). The scalar under test is `L = Σ f(x) ⊙ w` with random `w`,
/// so every output element contributes with a different weight.
func checkGradients(_ inputs: [(values: [Float], shape: Shape)], seed: UInt64, epsilon: Float = 1e-2,
                    tolerance: Double = 2e-2, maximumProbes: Int = 24,
                    file: StaticString = #filePath, line: UInt = #line,
                    _ f: ([Tensor]) throws -> Tensor) throws {
    var random = TestRandom(seed)
    let leaves = try inputs.map { try Tensor($0.values, shape: $0.shape, on: cpuDevice).requiringGradient() }
    let output = try f(leaves)
    let weights = random.values(output.count)
    let weightTensor = try Tensor(weights, shape: output.shape, on: cpuDevice)
    try (output * weightTensor).sum().backward()

    func objective(_ values: [[Float]]) throws -> Double {
        let tensors = try zip(values, inputs).map { try Tensor($0, shape: $1.shape, on: cpuDevice) }
        let y = try f(tensors).scalars()
        return zip(y, weights).map { Double($0) * Double($1) }.reduce(0, +)
    }

    for (index, input) in inputs.enumerated() {
        guard let analytic = try leaves[index].gradient?.scalars() else {
            XCTFail("input \(index) received no gradient", file: file, line: line); continue
        }
        XCTAssertEqual(analytic.count, input.values.count, file: file, line: line)
        let probes = input.values.count <= maximumProbes ? Array(input.values.indices)
            : (0..<maximumProbes).map { _ in Int(random.next() % UInt64(input.values.count)) }
        let scale = max(1, analytic.map { Double(abs($0)) }.max() ?? 1)
        for element in probes {
            var plus = inputs.map(\.values), minus = inputs.map(\.values)
            plus[index][element] += epsilon
            minus[index][element] -= epsilon
            let numeric = (try objective(plus) - objective(minus)) / (2 * Double(epsilon))
            XCTAssertEqual(Double(analytic[element]), numeric, accuracy: tolerance * scale,
                           "input \(index) element \(element) (seed \(seed))", file: file, line: line)
        }
    }
}
