import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// GEMM on the OpenCL backend (CLBlast and Opal's own Kernels/gemm.cl) against a Double reference and
/// CPUBackend (OpenBLAS): both transposes, batches, offsets, padded leading dimensions, alpha and beta.
final class GemmKernelTests: KernelTestCase {
    var extents: [(m: Int, n: Int, k: Int)] {
        small ? [(1, 1, 1), (17, 33, 5), (5, 7, 17)]
              : [(1, 1, 1), (17, 33, 65), (65, 17, 33), (33, 65, 1), (1, 17, 33)]
    }

    /// CLBlast compiles its kernels per size class, which oclgrind interprets far too slowly.
    var engines: [OpenCLBackend.GemmEngine] { small ? [.opal] : [.clblast, .opal] }

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

    func check(_ d: GemmDescriptor, engine: OpenCLBackend.GemmEngine) throws {
        let countA = d.offsetA + d.batch * d.strideA, countB = d.offsetB + d.batch * d.strideB
        let countC = d.offsetC + d.batch * d.strideC
        let a = uniform(countA), b = uniform(countB)
        // beta == 0 must ignore C entirely, so C starts as NaN then.
        let c = d.beta == 0 ? [Float](repeating: .nan, count: countC) : uniform(countC)
        let expected = Reference.gemm(a, b, c, d)
        let magnitude = Reference.gemmMagnitude(a, b, c, d)
        let left = try pair(a), right = try pair(b), output = try pair(c)
        try gpu.gemm(left.gpu, right.gpu, output.gpu, descriptor: d, engine: engine)
        try cpu.gemm(left.cpu, right.cpu, output.cpu, descriptor: d)
        let result = try read(output, count: countC)
        for (name, values) in [("\(engine)", result.gpu), ("cpu", result.cpu)] {
            var failures = 0
            for index in 0..<countC {
                let e = expected[index], v = values[index]
                if e.isNaN && v.isNaN { continue }
                if !(abs(v - e) <= 1e-5 * magnitude[index] + 1e-30) {
                    failures += 1
                    if failures <= 3 {
                        XCTFail(context("\(name) gemm \(d): element \(index) is \(v), expected \(e)"))
                    }
                }
            }
        }
    }

    func testAllTransposesBatchesAndOffsets() throws {
        for engine in engines {
            for (m, n, k) in extents {
                for transposeA in [false, true] {
                    for transposeB in [false, true] {
                        for batch in [1, 3] {
                            let beta: Float = batch == 1 ? 0 : 0.5
                            try check(descriptor(m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
                                                 batch: batch, beta: beta), engine: engine)
                        }
                    }
                }
            }
        }
        XCTAssertFalse(gpu.clblastDisabled, "CLBlast failed and gemm fell back to Opal's kernel")
    }

    func testBetaWithoutBatchAndZeroDepth() throws {
        for engine in engines {
            try check(descriptor(m: 7, n: 9, k: 13, transposeA: false, transposeB: false, batch: 1, beta: -0.75),
                      engine: engine)
            try check(descriptor(m: 7, n: 9, k: 0, transposeA: false, transposeB: true, batch: 2, beta: 0.5),
                      engine: engine)
            try check(descriptor(m: 7, n: 9, k: 0, transposeA: true, transposeB: false, batch: 1, beta: 0),
                      engine: engine)
        }
    }

    func testLargeSquareOwnKernelAgreesWithCLBlast() throws {
        let size = small ? 40 : 129
        let d = GemmDescriptor(m: size, n: size, k: size)
        let a = try gpu.allocate(count: size * size), b = try gpu.allocate(count: size * size)
        try gpu.write(uniform(size * size), to: a)
        try gpu.write(uniform(size * size), to: b)
        let c1 = try gpu.allocate(count: size * size), c2 = try gpu.allocate(count: size * size)
        try gpu.fill(c1, value: .nan, count: size * size)
        try gpu.fill(c2, value: .nan, count: size * size)
        try gpu.gemmWithOwnKernel(a, b, c1, descriptor: d)
        try gpu.gemm(a, b, c2, descriptor: d, engine: small ? .opal : .clblast)
        assertClose(try gpu.readFloats(c1, count: size * size), try gpu.readFloats(c2, count: size * size),
                    tolerance: 1e-4, floor: Float(size).squareRoot(), "own kernel vs CLBlast \(size)³")
    }
}
