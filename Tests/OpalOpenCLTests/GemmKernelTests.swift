import Foundation
import OpalCore
import OpalCPU
@testable import OpalOpenCL
import OpenCLKit
import XCTest

/// GEMM on the OpenCL backend — CLBlast, Opal's fast kernel (`gemm_fast`, the device's table entry and the
/// local-memory variant GPUs use) and the reference kernel `gemm_tiled` — against a Double reference and
/// CPUBackend (OpenBLAS): awkward extents, both transposes, strided batches with offsets and padded leading
/// dimensions, alpha and beta, poisoned outputs, and every fused-epilogue variant.
final class GemmKernelTests: KernelTestCase {
    /// How a test runs the product on the OpenCL side.
    enum Path: CustomStringConvertible {
        case engine(OpenCLBackend.GemmEngine)
        case reference
        var description: String {
            switch self {
            case let .engine(engine): "\(engine)"
            case .reference: "gemm_tiled"
            }
        }
    }

    /// Extents from {1, 7, 33, 65, 130, 257} (≤ 64 under OPAL_TEST_SMALL), each value in every position.
    var extents: [(m: Int, n: Int, k: Int)] {
        small ? [(1, 1, 1), (7, 33, 5), (33, 7, 64), (64, 17, 33), (1, 64, 7)]
              : [(1, 1, 1), (7, 33, 65), (65, 7, 33), (33, 65, 7), (130, 257, 7), (1, 257, 130), (257, 1, 65)]
    }

    /// CLBlast compiles its kernels per size class, which oclgrind interprets far too slowly.
    var paths: [Path] { small ? [.engine(.opal), .reference] : [.engine(.clblast), .engine(.opal), .reference] }

    func descriptor(m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool, batch: Int, beta: Float)
        -> GemmDescriptor {
        let lda = (transposeA ? m : k) + Int.random(in: 0...3, using: &random)
        let ldb = (transposeB ? k : n) + Int.random(in: 0...3, using: &random)
        let ldc = n + Int.random(in: 0...3, using: &random)
        let strideA = (transposeA ? k : m) * lda + Int.random(in: 0...5, using: &random)
        let strideB = (transposeB ? n : k) * ldb + Int.random(in: 0...5, using: &random)
        let strideC = m * ldc + Int.random(in: 0...5, using: &random)
        return GemmDescriptor(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                              alpha: Bool.random(using: &random) ? 1 : 1.5, beta: beta, lda: lda, ldb: ldb, ldc: ldc,
                              offsetA: Int.random(in: 0...5, using: &random),
                              offsetB: Int.random(in: 0...5, using: &random),
                              offsetC: Int.random(in: 0...5, using: &random),
                              strideA: strideA, strideB: strideB, strideC: strideC, batch: batch)
    }

    func run(_ path: Path, on backend: OpenCLBackend, _ a: any DeviceBuffer, _ b: any DeviceBuffer,
             _ c: any DeviceBuffer, _ d: GemmDescriptor, _ epilogue: GemmEpilogue) throws {
        switch path {
        case let .engine(engine): try backend.gemm(a, b, c, descriptor: d, epilogue: epilogue, engine: engine)
        case .reference: try backend.gemmWithReferenceKernel(a, b, c, descriptor: d)
        }
    }

    /// Runs `d` with `epilogue` (activation as `activation`, bias/residual created here when asked) on `path`
    /// and on the CPU backend; compares both with the Double reference. C is NaN-poisoned when beta == 0,
    /// and so is the gap between C's rows and batch elements (it must come back unchanged).
    func check(_ d: GemmDescriptor, path: Path, on backend: OpenCLBackend? = nil, bias: Bool = false,
               biasPerRow: Bool = false, residual: Bool = false, activation: UnaryOp? = nil) throws {
        let backend = backend ?? gpu!
        let countA = d.offsetA + d.batch * d.strideA, countB = d.offsetB + d.batch * d.strideB
        let countC = d.offsetC + d.batch * d.strideC
        let a = uniform(countA), b = uniform(countB)
        let c = d.beta == 0 ? [Float](repeating: .nan, count: countC) : uniform(countC)
        let biasValues = bias ? uniform(biasPerRow ? d.m : d.n) : []
        let residualValues = residual ? uniform(countC) : []
        var expected = Reference.gemm(a, b, c, d)
        var magnitude = Reference.gemmMagnitude(a, b, c, d)
        for batch in 0..<d.batch {
            for i in 0..<d.m {
                for j in 0..<d.n {
                    let index = d.offsetC + batch * d.strideC + i * d.ldc + j
                    var value = Double(expected[index])
                    if bias { value += Double(biasValues[biasPerRow ? i : j]); magnitude[index] += abs(biasValues[biasPerRow ? i : j]) }
                    if residual { value += Double(residualValues[index]); magnitude[index] += abs(residualValues[index]) }
                    if let activation { value = Reference.activation(activation, value) }
                    expected[index] = Float(value)
                }
            }
        }
        func onCPU(_ values: [Float]) throws -> any DeviceBuffer {
            let buffer = try cpu.allocate(count: values.count)
            try cpu.write(values, to: buffer)
            return buffer
        }
        func onDevice(_ values: [Float]) throws -> any DeviceBuffer {
            let buffer = try backend.allocate(count: values.count)
            try backend.write(values, to: buffer)
            return buffer
        }
        let deviceC = try onDevice(c), cpuC = try onCPU(c)
        try run(path, on: backend, try onDevice(a), try onDevice(b), deviceC, d,
                GemmEpilogue(bias: bias ? try onDevice(biasValues) : nil, biasPerRow: biasPerRow,
                             residual: residual ? try onDevice(residualValues) : nil, activation: activation))
        try cpu.gemm(try onCPU(a), try onCPU(b), cpuC, descriptor: d,
                     epilogue: GemmEpilogue(bias: bias ? try onCPU(biasValues) : nil, biasPerRow: biasPerRow,
                                            residual: residual ? try onCPU(residualValues) : nil,
                                            activation: activation))
        let results = [("\(path)", try backend.readFloats(deviceC, count: countC)),
                       ("cpu", try cpu.readFloats(cpuC, count: countC))]
        let what = "gemm \(d) bias \(bias)\(biasPerRow ? " per row" : "") residual \(residual) activation \(String(describing: activation))"
        for (name, values) in results {
            var failures = 0
            for index in 0..<countC {
                let e = expected[index], v = values[index]
                if e.isNaN && v.isNaN { continue }
                if !(abs(v - e) <= 2e-5 * magnitude[index] + 1e-6 * abs(e) + 1e-6) {
                    failures += 1
                    if failures <= 3 { XCTFail(context("\(name) \(what): element \(index) is \(v), expected \(e)")) }
                }
            }
        }
    }

    func checkAllLayouts(path: Path, on backend: OpenCLBackend? = nil, extentCount: Int? = nil,
                         transposesB: [Bool] = [false, true]) throws {
        for (m, n, k) in extents.prefix(extentCount ?? extents.count) {
            for transposeA in [false, true] {
                for transposeB in transposesB {
                    for batch in [1, 3] {
                        let beta: Float = batch == 1 ? 0 : 0.5
                        try check(descriptor(m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
                                             batch: batch, beta: beta), path: path, on: backend)
                    }
                }
            }
        }
    }

    func testAllTransposesBatchesAndOffsets() throws {
        for path in paths { try checkAllLayouts(path: path) }
        XCTAssertFalse(gpu.clblastDisabled, "CLBlast failed and gemm fell back to Opal's kernel")
    }

    /// The local-memory variant of `gemm_fast` (the GPU entry), and an odd tiling, on this device.
    func testLocalMemoryVariantAndOtherTilings() throws {
        let device = gpu.device
        for specification in ["portable", "32,16,8,4,8,4,1", "16,32,16,8,16,8,0"] {
            setenv(GemmParameters.overrideVariable, specification, 1)
            defer { unsetenv(GemmParameters.overrideVariable) }
            let backend = try OpenCLBackend(device: device, index: 0)
            XCTAssertEqual(backend.gemmParameters, GemmParameters(specification: specification))
            // Under oclgrind --uninitialized (OPAL_TEST_SMALL), the direct-read variant's packed transposed B
            // (a recycled pool buffer written by strided_copy) is reported as uninitialised after many earlier
            // GEMMs in the same process, though the same case alone is clean and the values are right (the
            // shadow-memory problem of oclgrind 21.10 that scripts/test describes): oclgrind checks that
            // variant without transposed B; PoCL runs every case.
            let packs = !(backend.gemmParameters.stagesThroughLocalMemory || !small)
            try checkAllLayouts(path: .engine(.opal), on: backend, extentCount: 5,
                                transposesB: packs ? [false] : [false, true])
            try check(descriptor(m: 33, n: 7, k: 17, transposeA: true, transposeB: !packs, batch: 2, beta: 0),
                      path: .engine(.opal), on: backend, bias: true, residual: true, activation: .gelu)
        }
    }

    func testBetaWithoutBatchAndZeroDepth() throws {
        for path in paths {
            try check(descriptor(m: 7, n: 9, k: 13, transposeA: false, transposeB: false, batch: 1, beta: -0.75),
                      path: path)
            try check(descriptor(m: 7, n: 9, k: 0, transposeA: false, transposeB: true, batch: 2, beta: 0.5), path: path)
            try check(descriptor(m: 7, n: 9, k: 0, transposeA: true, transposeB: false, batch: 1, beta: 0), path: path)
        }
    }

    func testEpilogues() throws {
        let engines: [OpenCLBackend.GemmEngine] = small ? [.opal] : [.clblast, .opal]
        let (m, n, k) = small ? (33, 17, 7) : (33, 65, 7)
        let activations: [UnaryOp?] = [nil, .relu, .gelu, .sigmoid, .leakyRelu(slope: 0.1)]
        for engine in engines {
            for transposeB in [false, true] {
                for (bias, biasPerRow, residual) in [(true, false, false), (true, true, false), (false, false, true),
                                                     (true, false, true), (true, true, true), (false, false, false)] {
                    for activation in activations where !(activation == nil && !bias && !residual) || transposeB {
                        let batch = residual ? 3 : 1
                        try check(descriptor(m: m, n: n, k: k, transposeA: !transposeB, transposeB: transposeB,
                                             batch: batch, beta: batch == 1 ? 0 : 0.25),
                                  path: .engine(engine), bias: bias, biasPerRow: biasPerRow, residual: residual,
                                  activation: activation)
                    }
                }
            }
        }
    }

    func testFastKernelAgreesWithCLBlastOnALargeSquare() throws {
        let size = small ? 40 : 259
        let d = GemmDescriptor(m: size, n: size, k: size)
        let a = try gpu.allocate(count: size * size), b = try gpu.allocate(count: size * size)
        try gpu.write(uniform(size * size), to: a)
        try gpu.write(uniform(size * size), to: b)
        let c1 = try gpu.allocate(count: size * size), c2 = try gpu.allocate(count: size * size)
        try gpu.fill(c1, value: .nan, count: size * size)
        try gpu.fill(c2, value: .nan, count: size * size)
        try gpu.gemmWithOwnKernel(a, b, c1, descriptor: d)
        if small { try gpu.gemmWithReferenceKernel(a, b, c2, descriptor: d) }
        else { try gpu.gemm(a, b, c2, descriptor: d, engine: .clblast) }
        assertClose(try gpu.readFloats(c1, count: size * size), try gpu.readFloats(c2, count: size * size),
                    tolerance: 1e-4, floor: Float(size).squareRoot(), "fast kernel vs CLBlast \(size)³")
    }

    func testParameterTable() {
        XCTAssertEqual(KernelParameterTable.gemm(type: .cpu, vendor: "AuthenticAMD", name: "pthread-skylake-avx512-AMD EPYC"),
                       .cpuAVX512)
        XCTAssertEqual(KernelParameterTable.gemm(type: .cpu, vendor: "GenuineIntel", name: "pthread-haswell"), .cpu)
        XCTAssertEqual(KernelParameterTable.gemm(type: .gpu, vendor: "NVIDIA Corporation", name: "NVIDIA H100"), .portable)
        for entry in KernelParameterTable.entries {
            XCTAssertTrue(entry.gemm.isValid(maximumWorkGroupSize: 256), "\(entry.gemm)")
        }
        XCTAssertTrue(gpu.gemmParameters.isValid(maximumWorkGroupSize: gpu.device.maxWorkGroupSize))
        XCTAssertNil(GemmParameters(specification: "1,2,3"))
        XCTAssertEqual(GemmParameters(specification: "cpu"), .cpu)
    }
}

extension Reference {
    /// The activations the epilogue tests use, in Double (GELU: the tanh approximation, as the kernels).
    static func activation(_ op: UnaryOp, _ x: Double) -> Double {
        switch op {
        case .relu: return max(x, 0)
        case let .leakyRelu(slope): return x > 0 ? x : Double(slope) * x
        case .sigmoid: return 1 / (1 + exp(-x))
        case .gelu: return x / (1 + exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x)))   // = 0.5·x·(1 + tanh u), without its cancellation
        case .tanh: return tanh(x)
        default: fatalError("no Double reference for \(op) in the tests")
        }
    }
}
