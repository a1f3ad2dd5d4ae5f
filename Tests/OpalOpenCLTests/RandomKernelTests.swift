import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/random.cl: the dropout mask is bit-for-bit OpalRandom.uniform and equals CPUBackend's.
final class RandomKernelTests: KernelTestCase {
    func testDropoutMaskMatchesOpalRandomExactly() throws {
        let seeds: [UInt32] = [0, UInt32.max, UInt32.random(in: 0...UInt32.max, using: &random)]
        for seed in seeds {
            for probability: Float in [0, 0.1, 0.5, 0.9] {
                for count in awkwardSizes {
                    let out = try poisonedPair(count)
                    try gpu.dropoutMask(out.gpu, count: count, probability: probability, seed: seed)
                    try cpu.dropoutMask(out.cpu, count: count, probability: probability, seed: seed)
                    let result = try read(out, count: count)
                    let scale: Float = 1 / (1 - probability)
                    let expected = (0..<count).map {
                        OpalRandom.uniform(seed: seed, index: UInt32($0)) >= probability ? scale : 0
                    }
                    let what = "dropout p \(probability) seed \(seed) count \(count)"
                    XCTAssertEqual(result.gpu, expected, context(what + " vs OpalRandom"))
                    XCTAssertEqual(result.gpu, result.cpu, context(what + " vs CPUBackend"))
                }
            }
        }
    }

    func testDropoutKeepsAboutOneMinusProbability() throws {
        let count = small ? 64 : 100_000, probability: Float = 0.3
        let out = try gpu.allocate(count: count)
        try gpu.dropoutMask(out, count: count, probability: probability, seed: UInt32.random(in: 0...UInt32.max, using: &random))
        let kept = try gpu.readFloats(out, count: count).filter { $0 != 0 }.count
        let expected = Double(count) * 0.7, deviation = (Double(count) * 0.21).squareRoot()
        XCTAssertEqual(Double(kept), expected, accuracy: 5 * deviation + 1, context("kept fraction"))
    }
}
