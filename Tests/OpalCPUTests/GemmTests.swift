import OpalCore
import XCTest
@testable import OpalCPU

final class GemmTests: CPUTestCase {
    /// Runs the OpenBLAS path and `referenceGemm` on the same random operands and compares them.
    func check(_ d: GemmDescriptor, _ name: String) throws {
        let extents = try GemmExtents(d)
        let a = uniform(max(extents.a, 1)), b = uniform(max(extents.b, 1))
        // beta = 0 must not read C: poison it with NaN; otherwise C holds data to accumulate into.
        let c: [Float] = d.beta == 0 ? [Float](repeating: .nan, count: max(extents.c, 1)) : uniform(max(extents.c, 1))
        let cBuffer = try buffer(c)
        try backend.gemm(try buffer(a), try buffer(b), cBuffer, descriptor: d)
        var expected = c
        CPUBackend.referenceGemm(a, b, &expected, descriptor: d)
        // Each output sums k products of size ≤ 4 (|a|, |b| ≤ 2): budget a few ε per term.
        let scale = max(expected.lazy.filter(\.isFinite).map { Swift.abs(Double($0)) }.max() ?? 1, 1e-30)
        assertClose(try read(cBuffer), expected, relative: 1e-5, absolute: 4e-6 * Double(max(d.k, 1)) / scale,
                    "gemm \(name) \(d)")
    }

    func testAllTransposesAwkwardSizes() throws {
        // (65, 129, 300) and (200, 70, 90) pass `ParallelGrain.gemm`: C split into column and row blocks.
        for (m, n, k) in [(1, 1, 1), (7, 33, 5), (33, 7, 1000), (1, 1000, 7), (65, 129, 300), (200, 70, 90)] {
            for transposeA in [false, true] {
                for transposeB in [false, true] {
                    let d = GemmDescriptor(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k)
                    try check(d, "plain")
                }
            }
        }
    }

    func testAlphaBetaLeadingDimensionsOffsetsAndBatches() throws {
        // The larger two are split over the cores (rows of the 150×97 C, columns of the 90×150 one).
        for ((m, n, k), transposeA, transposeB) in [(7, 33, 13), (150, 97, 80), (90, 150, 80)].flatMap({ size in
            [(false, false), (false, true), (true, false), (true, true)].map { (size, $0.0, $0.1) }
        }) {
            do {
                let d = GemmDescriptor(
                    transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                    alpha: 0.7, beta: Bool.random(using: &random) ? 0 : -0.5,
                    lda: (transposeA ? m : k) + 3, ldb: (transposeB ? k : n) + 1, ldc: n + 5,
                    offsetA: 11, offsetB: 2, offsetC: 9,
                    strideA: ((transposeA ? k : m) + 1) * ((transposeA ? m : k) + 3),
                    strideB: ((transposeB ? n : k) + 2) * ((transposeB ? k : n) + 1),
                    strideC: (m + 1) * (n + 5), batch: 3)
                try check(d, "batched")
                // beta 1 accumulates (gradient accumulation into an existing buffer).
                var accumulate = d
                accumulate.beta = 1
                try check(accumulate, "beta 1")
                // A shared operand: stride 0 reuses the same B for every batch.
                var shared = d
                shared.strideB = 0
                try check(shared, "shared B")
            }
        }
    }

    func testDegenerateSizes() throws {
        try check(GemmDescriptor(m: 7, n: 5, k: 0, beta: 0), "k = 0, beta 0")
        try check(GemmDescriptor(m: 7, n: 5, k: 0, beta: 0.5), "k = 0, beta 0.5")
        let c = try poisoned(4)
        try backend.gemm(try poisoned(4), try poisoned(4), c, descriptor: GemmDescriptor(m: 0, n: 4, k: 1))
        XCTAssertTrue(try read(c).allSatisfy(\.isNaN), "m = 0 writes nothing")
    }

    func testHandCase() throws {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
        let c = try poisoned(4)
        try backend.gemm(try buffer([1, 2, 3, 4]), try buffer([5, 6, 7, 8]), c, descriptor: GemmDescriptor(m: 2, n: 2, k: 2))
        XCTAssertEqual(try read(c), [19, 22, 43, 50])
        // Aᵀ · B = [[1, 3], [2, 4]] · [[5, 6], [7, 8]] = [[26, 30], [38, 44]]
        try backend.gemm(try buffer([1, 2, 3, 4]), try buffer([5, 6, 7, 8]), c,
                         descriptor: GemmDescriptor(transposeA: true, m: 2, n: 2, k: 2))
        XCTAssertEqual(try read(c), [26, 30, 38, 44])
    }

    func testRejectsBadDescriptors() throws {
        let small = try poisoned(6)
        XCTAssertThrowsError(try backend.gemm(small, small, small, descriptor: GemmDescriptor(m: 3, n: 3, k: 3)))
        XCTAssertThrowsError(try backend.gemm(small, small, small, descriptor: GemmDescriptor(m: 2, n: 2, k: 2, lda: 1)))
    }
}
