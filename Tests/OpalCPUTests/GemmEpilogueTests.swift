import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// `CPUBackend.gemm(…, epilogue:)` against a Double reference: bias per column and per row, residual,
/// activations, contiguous and padded (ldc > n, offset, batch gaps) outputs, poisoned C with beta = 0.
final class GemmEpilogueTests: CPUTestCase {
    /// act(α·op(A)·op(B) + β·C + bias + residual) in Double; gaps of C keep their values.
    func reference(_ a: [Float], _ b: [Float], _ c: [Float], _ d: GemmDescriptor, bias: [Float]?, biasPerRow: Bool,
                   residual: [Float]?, activation: UnaryOp?) -> [Double] {
        var result = c.map(Double.init)
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
                    var value = Double(d.alpha) * sum + (d.beta == 0 ? 0 : Double(d.beta) * Double(c[index]))
                    if let bias { value += Double(bias[biasPerRow ? i : j]) }
                    if let residual { value += Double(residual[index]) }
                    switch activation {
                    case nil: break
                    case .relu?: value = max(value, 0)
                    case .sigmoid?: value = 1 / (1 + exp(-value))
                    case .gelu?:
                        // 0.5·x·(1 + tanh u) written as x·σ(2u): in the negative tail 1 + tanh u cancels even
                        // in Double (x ≈ −7 gave a reference 45 % off at 4e-16).
                        let u = 0.7978845608028654 * (value + 0.044715 * value * value * value)
                        value = value / (1 + exp(-2 * u))
                    case let op?: XCTFail("no reference for \(op)")
                    }
                    result[index] = value
                }
            }
        }
        return result
    }

    func check(m: Int, n: Int, k: Int, batch: Int, padded: Bool, transposeA: Bool, transposeB: Bool, beta: Float,
               bias: Bool, biasPerRow: Bool, residual: Bool, activation: UnaryOp?) throws {
        let ldc = n + (padded ? 3 : 0), offsetC = padded ? 2 : 0, strideC = m * ldc + (padded ? 5 : 0)
        let d = GemmDescriptor(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 1.25, beta: beta,
                               ldc: ldc, offsetC: offsetC, strideC: strideC, batch: batch)
        let countC = offsetC + batch * strideC
        let a = uniform(batch * m * k), b = uniform(batch * k * n)
        let c = beta == 0 ? [Float](repeating: .nan, count: countC) : uniform(countC)
        let biasValues = bias ? uniform(biasPerRow ? m : n) : nil
        let residualValues = residual ? uniform(countC) : nil
        let output = try buffer(c)
        try backend.gemm(try buffer(a), try buffer(b), output, descriptor: d,
                         epilogue: GemmEpilogue(bias: try biasValues.map { try buffer($0) }, biasPerRow: biasPerRow,
                                                residual: try residualValues.map { try buffer($0) },
                                                activation: activation))
        let expected = reference(a, b, c, d, bias: biasValues, biasPerRow: biasPerRow, residual: residualValues,
                                 activation: activation)
        assertClose(try read(output), expected, relative: 1e-5, absolute: 1e-5,
                    "gemm \(d) bias \(bias) per row \(biasPerRow) residual \(residual) \(String(describing: activation))")
    }

    func testEveryEpilogueVariant() throws {
        for (m, n, k) in [(1, 1, 1), (7, 33, 65), (130, 7, 33)] {
            for padded in [false, true] {
                for (bias, biasPerRow, residual) in [(true, false, false), (true, true, false), (false, false, true),
                                                     (true, true, true), (false, false, false)] {
                    for activation in [nil, UnaryOp.relu, .gelu, .sigmoid] {
                        let batch = padded ? 3 : 1
                        try check(m: m, n: n, k: k, batch: batch, padded: padded, transposeA: padded,
                                  transposeB: !padded, beta: padded ? 0.5 : 0, bias: bias, biasPerRow: biasPerRow,
                                  residual: residual, activation: activation)
                    }
                }
            }
        }
    }

    func testWrongBiasSizeIsRejected() throws {
        let d = GemmDescriptor(m: 4, n: 5, k: 3)
        XCTAssertThrowsError(try backend.gemm(try buffer(uniform(12)), try buffer(uniform(15)), try poisoned(20),
                                              descriptor: d, epilogue: GemmEpilogue(bias: try buffer(uniform(4)))))
    }
}
