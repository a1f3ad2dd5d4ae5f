import OpalCore
import OpalCPU
@testable import OpalOpenCL
import XCTest

/// `transpose_tiled` (Kernels/elementwise.cl), which packs op(B) for the direct-read GEMM: batched
/// transposes at sizes around the 16×16 tile, with offsets, padded rows and batch strides, outputs
/// poisoned first; then transposed-B GEMMs through it against the CPU.
final class TransposeKernelTests: KernelTestCase {
    func testTransposeMatchesReference() throws {
        let shapes = small ? [(1, 1), (5, 17), (17, 33)] : [(1, 1), (5, 17), (17, 33), (16, 16), (63, 40), (130, 7)]
        for (rows, columns) in shapes {
            for batch in [1, 3] {
                let ld = columns + Int.random(in: 0...3, using: &random)
                let offset = Int.random(in: 0...5, using: &random)
                let stride = rows * ld + Int.random(in: 0...4, using: &random)
                let source = uniform(offset + batch * stride)
                let src = try gpu.allocate(count: source.count), dst = try gpu.allocate(count: batch * rows * columns + 3)
                try gpu.write(source, to: src)
                try gpu.write([Float](repeating: .nan, count: batch * rows * columns + 3), to: dst)
                try gpu.transposeMatrices((src as! OpenCLBuffer).buffer, offset: offset, leadingDimension: ld, batchStride: stride,
                                          rows: rows, columns: columns, batch: batch, into: (dst as! OpenCLBuffer).buffer)
                let got = try gpu.readFloats(dst, count: batch * rows * columns + 3)
                for b in 0..<batch {
                    for c in 0..<columns {
                        for r in 0..<rows {
                            XCTAssertEqual(got[b * rows * columns + c * rows + r], source[offset + b * stride + r * ld + c],
                                           context("\(rows)×\(columns) batch \(batch) ld \(ld) at (\(b), \(c), \(r))"))
                        }
                    }
                }
                XCTAssertTrue(got[(batch * rows * columns)...].allSatisfy(\.isNaN), context("nothing written past the end"))
            }
        }
    }

    /// C = A·Bᵀ on the OpenCL device (B packed by the transpose on CPU-class devices) against the CPU.
    func testTransposedRightOperandGemmMatchesCPU() throws {
        for (m, n, k) in [(3, 17, 33), (20, 1, 7), (9, 40, 16)] {
            let d = GemmDescriptor(transposeB: true, m: m, n: n, k: k)
            let a = uniform(m * k), b = uniform(n * k)
            let (ga, ca) = try pair(a), (gb, cb) = try pair(b), (gc, cc) = try poisonedPair(m * n)
            try gpu.gemm(ga, gb, gc, descriptor: d)
            try cpu.gemm(ca, cb, cc, descriptor: d)
            let got = try gpu.readFloats(gc, count: m * n), want = try cpu.readFloats(cc, count: m * n)
            for (x, y) in zip(got, want) { XCTAssertEqual(x, y, accuracy: 1e-4 * max(1, abs(y)), context("\(m)×\(n)×\(k)")) }
        }
    }
}
