import Foundation
import OpalCore
import OpalCPU
import OpalOpenCL
import OpenCLKit
import XCTest

/// One OpenCL backend for the whole test process (programs are built once), on the first device of
/// the first platform: PoCL in CI, oclgrind when the suite runs under it.
enum SharedOpenCLBackend {
    static let backend: Result<OpenCLBackend, any Error> = Result {
        guard let device = try CLPlatform.all().first?.devices().first else { throw CLError.noDevice }
        return try OpenCLBackend(device: device, index: 0)
    }
}

/// Base class of the OpenCL kernel tests: each op runs on the OpenCL backend and on `CPUBackend`
/// (the project's oracle) with the same fresh random inputs; the seed is printed in every failure
/// message (set OPAL_TEST_SEED to replay one). OPAL_TEST_SMALL=1 (used under oclgrind) keeps every
/// extent ≤ 64.
class KernelTestCase: XCTestCase {
    var gpu: OpenCLBackend!
    let cpu = CPUBackend()
    private(set) var seed: UInt64 = 0
    var random = SeededGenerator(seed: 0)

    /// True under OPAL_TEST_SMALL=1: sizes stay tiny because oclgrind interprets every work-item.
    var small: Bool { ProcessInfo.processInfo.environment["OPAL_TEST_SMALL"] == "1" }

    /// Element counts that are not multiples of any work-group or tile size.
    var awkwardSizes: [Int] { small ? [1, 7, 33] : [1, 7, 33, 1000, 4097] }

    override func setUpWithError() throws {
        try super.setUpWithError()
        switch SharedOpenCLBackend.backend {
        case let .success(backend): gpu = backend
        case let .failure(error): throw XCTSkip("no OpenCL device: \(error)")
        }
        if let text = ProcessInfo.processInfo.environment["OPAL_TEST_SEED"], let value = UInt64(text) {
            seed = value
        } else {
            seed = UInt64.random(in: 0...UInt64.max)
        }
        random = SeededGenerator(seed: seed)
    }

    /// Every buffer made by `buffer(_:)` and `poisoned(_:)`, kept until the test ends: oclgrind 21.10's
    /// `--uninitialized` shadow memory reports values written into a buffer the pool recycled (see
    /// scripts/test), so no such buffer is recycled mid-test.
    var retained: [any DeviceBuffer] = []

    /// `values` in an OpenCL buffer, retained until the test ends.
    func buffer(_ values: [Float]) throws -> any DeviceBuffer {
        let b = try gpu.allocate(count: values.count)
        try gpu.write(values, to: b)
        retained.append(b)
        return b
    }

    /// `count` NaNs in an OpenCL buffer, retained until the test ends.
    func poisoned(_ count: Int) throws -> any DeviceBuffer {
        let b = try gpu.allocate(count: count)
        try gpu.fill(b, value: .nan, count: count)
        retained.append(b)
        return b
    }

    override func tearDown() {
        retained = []
        super.tearDown()
    }

    /// A failure-message context naming the seed.
    func context(_ text: String) -> String { "\(text) (seed \(seed); replay with OPAL_TEST_SEED=\(seed))" }

    func uniform(_ count: Int, in range: ClosedRange<Float> = -2...2) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &random) }
    }

    /// The same values on both backends.
    func pair(_ values: [Float]) throws -> (gpu: any DeviceBuffer, cpu: any DeviceBuffer) {
        let g = try gpu.allocate(count: values.count), c = try cpu.allocate(count: values.count)
        try gpu.write(values, to: g)
        try cpu.write(values, to: c)
        return (g, c)
    }

    func pair(_ values: [Int32]) throws -> (gpu: any DeviceBuffer, cpu: any DeviceBuffer) {
        let g = try gpu.allocate(count: values.count), c = try cpu.allocate(count: values.count)
        try gpu.write(values, to: g)
        try cpu.write(values, to: c)
        return (g, c)
    }

    /// `count` NaNs on both backends, so an element an op forgets to write shows up.
    func poisonedPair(_ count: Int) throws -> (gpu: any DeviceBuffer, cpu: any DeviceBuffer) {
        let g = try gpu.allocate(count: count), c = try cpu.allocate(count: count)
        try gpu.fill(g, value: .nan, count: count)
        try cpu.fill(c, value: .nan, count: count)
        return (g, c)
    }

    /// Reads `count` floats back from both sides of a pair.
    func read(_ buffers: (gpu: any DeviceBuffer, cpu: any DeviceBuffer), count: Int) throws
        -> (gpu: [Float], cpu: [Float]) {
        (try gpu.readFloats(buffers.gpu, count: count), try cpu.readFloats(buffers.cpu, count: count))
    }

    /// Element-wise `|actual − expected| ≤ tolerance · max(|expected|, floor)`; NaN matches only NaN.
    /// `floor` is the magnitude below which the error is judged absolutely (cancellation in sums).
    func assertClose(_ actual: [Float], _ expected: [Float], tolerance: Float, floor: Float = 1,
                     _ what: @autoclosure () -> String, file: StaticString = #filePath, line: UInt = #line) {
        guard actual.count == expected.count else {
            XCTFail(context("\(what()): \(actual.count) values, expected \(expected.count)"), file: file, line: line)
            return
        }
        var failures = 0
        for index in actual.indices {
            let a = actual[index], e = expected[index]
            if e.isNaN && a.isNaN { continue }
            if e.isInfinite && a == e { continue }
            let bound = tolerance * max(abs(e), floor)
            if !(abs(a - e) <= bound) {
                failures += 1
                if failures <= 3 {
                    XCTFail(context("\(what()): element \(index) is \(a), expected \(e) (bound \(bound))"),
                            file: file, line: line)
                }
            }
        }
        if failures > 3 { XCTFail(context("\(what()): \(failures) elements differ in all"), file: file, line: line) }
    }
}

/// Double-precision references where the CPU backend's own float rounding would blur the comparison.
enum Reference {
    /// `C_b = alpha · op(A_b) · op(B_b) + beta · C_b` in Double (beta == 0 ignores C), per `GemmDescriptor`.
    static func gemm(_ a: [Float], _ b: [Float], _ c: [Float], _ d: GemmDescriptor) -> [Float] {
        var result = c
        for batch in 0..<d.batch {
            for i in 0..<d.m {
                for j in 0..<d.n {
                    var sum = 0.0
                    for p in 0..<d.k {
                        let av = d.transposeA ? a[d.offsetA + batch * d.strideA + p * d.lda + i]
                                              : a[d.offsetA + batch * d.strideA + i * d.lda + p]
                        let bv = d.transposeB ? b[d.offsetB + batch * d.strideB + j * d.ldb + p]
                                              : b[d.offsetB + batch * d.strideB + p * d.ldb + j]
                        sum += Double(av) * Double(bv)
                    }
                    let index = d.offsetC + batch * d.strideC + i * d.ldc + j
                    let previous = d.beta == 0 ? 0 : Double(d.beta) * Double(c[index])
                    result[index] = Float(Double(d.alpha) * sum + previous)
                }
            }
        }
        return result
    }

    /// Σ_p |alpha · a_ip · b_pj| + |beta · c_ij| per element: the scale of the rounding error of one GEMM entry.
    static func gemmMagnitude(_ a: [Float], _ b: [Float], _ c: [Float], _ d: GemmDescriptor) -> [Float] {
        let absolute = GemmDescriptor(
            transposeA: d.transposeA, transposeB: d.transposeB, m: d.m, n: d.n, k: d.k,
            alpha: abs(d.alpha), beta: abs(d.beta), lda: d.lda, ldb: d.ldb, ldc: d.ldc,
            offsetA: d.offsetA, offsetB: d.offsetB, offsetC: d.offsetC,
            strideA: d.strideA, strideB: d.strideB, strideC: d.strideC, batch: d.batch)
        return gemm(a.map(abs), b.map(abs), c.map { $0.isNaN ? 0 : abs($0) }, absolute)
    }
}
