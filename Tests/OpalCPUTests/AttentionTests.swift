import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

// Double references for Sources/OpalCPU/Attention.swift: the attention of every (batch, head) problem
// evaluated row by row from its definition (every score, a plain softmax, P·V), and the backward from the
// analytic formulas of `AttentionBackend.attentionBackward`. `testReferenceBackwardMatchesFiniteDifferences`
// checks those formulas against central differences of the Double forward, so the reference shares no
// algebra with the kernel it checks.

/// The result of `referenceAttention`: output [B, H, Nq, D], log-sum-exp [B, H, Nq] (+∞ for a row with no
/// visible key) and, when a gradient dO was given, dQ, dK, dV.
struct AttentionReference {
    var output: [Double], logSumExp: [Double]
    var gradQuery: [Double] = [], gradKey: [Double] = [], gradValue: [Double] = []
}

func referenceAttention(_ q: [Double], _ k: [Double], _ v: [Double], mask: [Int32]?, gradOutput: [Double]?,
                        _ d: AttentionDescriptor) -> AttentionReference {
    let (nq, nk, dim) = (d.queryLength, d.keyLength, d.headDimension)
    var result = AttentionReference(output: [Double](repeating: 0, count: d.queryCount),
                                    logSumExp: [Double](repeating: .infinity, count: d.rowCount))
    if gradOutput != nil {
        result.gradQuery = [Double](repeating: 0, count: d.queryCount)
        result.gradKey = [Double](repeating: 0, count: d.keyCount)
        result.gradValue = [Double](repeating: 0, count: d.keyCount)
    }
    let scale = Double(d.scale)
    for p in 0..<d.problems {
        let b = p / d.heads
        let (qBase, kBase) = (p * nq * dim, p * nk * dim)
        for i in 0..<nq {
            let visible = (0..<nk).filter { j in
                d.causallyVisible(query: i, key: j) && (mask.map { $0[b * nk + j] != 0 } ?? true)
            }
            guard !visible.isEmpty else { continue }
            let scores = visible.map { j in
                scale * (0..<dim).reduce(0.0) { $0 + q[qBase + i * dim + $1] * k[kBase + j * dim + $1] }
            }
            let maximum = scores.max()!
            let total = scores.reduce(0.0) { $0 + Foundation.exp($1 - maximum) }
            let logSumExp = maximum + Foundation.log(total)
            result.logSumExp[p * nq + i] = logSumExp
            let probabilities = scores.map { Foundation.exp($0 - logSumExp) }
            for (n, j) in visible.enumerated() {
                for c in 0..<dim { result.output[qBase + i * dim + c] += probabilities[n] * v[kBase + j * dim + c] }
            }
            guard let dO = gradOutput else { continue }
            // dP_ij = dO_i·v_j, Δ_i = dO_i·O_i, dS = P(dP − Δ); dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = Pᵀ·dO.
            let delta = (0..<dim).reduce(0.0) { $0 + dO[qBase + i * dim + $1] * result.output[qBase + i * dim + $1] }
            for (n, j) in visible.enumerated() {
                let gradProbability = (0..<dim).reduce(0.0) { $0 + dO[qBase + i * dim + $1] * v[kBase + j * dim + $1] }
                let gradScore = probabilities[n] * (gradProbability - delta)
                for c in 0..<dim {
                    result.gradQuery[qBase + i * dim + c] += scale * gradScore * k[kBase + j * dim + c]
                    result.gradKey[kBase + j * dim + c] += scale * gradScore * q[qBase + i * dim + c]
                    result.gradValue[kBase + j * dim + c] += probabilities[n] * dO[qBase + i * dim + c]
                }
            }
        }
    }
    return result
}

final class AttentionTests: CPUTestCase {
    /// One geometry and its key mask: `maskedRows` lists batch rows whose keys are all padding.
    struct Case {
        var descriptor: AttentionDescriptor
        var masked = false
        var maskedRows: [Int] = []
    }

    /// N ∈ {1, 17, 64, 257, 1000}, D ∈ {16, 32, 64, 80, 128}, Nq ≠ Nk (one query against 40 keys: a decoder
    /// step against its cache), causal or not, B·H > 1, and shapes that take each work split (items spread
    /// over the cores, or one problem with threaded OpenBLAS and split rows).
    let cases: [Case] = [
        Case(descriptor: AttentionDescriptor(batch: 1, heads: 1, queryLength: 1, keyLength: 1, headDimension: 16, causal: false)),
        Case(descriptor: AttentionDescriptor(batch: 2, heads: 3, queryLength: 17, keyLength: 17, headDimension: 32, causal: true)),
        Case(descriptor: AttentionDescriptor(batch: 1, heads: 2, queryLength: 64, keyLength: 64, headDimension: 64, causal: false),
             masked: true),
        Case(descriptor: AttentionDescriptor(batch: 1, heads: 1, queryLength: 257, keyLength: 257, headDimension: 80, causal: true)),
        Case(descriptor: AttentionDescriptor(batch: 1, heads: 1, queryLength: 1000, keyLength: 1000, headDimension: 16, causal: true)),
        Case(descriptor: AttentionDescriptor(batch: 2, heads: 2, queryLength: 1, keyLength: 40, headDimension: 128, causal: true),
             masked: true),
        Case(descriptor: AttentionDescriptor(batch: 3, heads: 2, queryLength: 17, keyLength: 45, headDimension: 64, causal: false),
             masked: true, maskedRows: [1]),
        Case(descriptor: AttentionDescriptor(batch: 2, heads: 1, queryLength: 70, keyLength: 300, headDimension: 32, causal: true,
                                             scale: 0.3),
             masked: true, maskedRows: [0]),
    ]

    /// A random key mask [B, Nk] (about a quarter of the keys padding), with the listed batch rows all padding.
    private func keyMask(_ c: Case) -> [Int32]? {
        guard c.masked else { return nil }
        let d = c.descriptor
        return (0..<(d.batch * d.keyLength)).map { index in
            c.maskedRows.contains(index / d.keyLength) ? 0 : (Int.random(in: 0..<4, using: &random) == 0 ? 0 : 1)
        }
    }

    func testForwardAndBackwardMatchReference() throws {
        for c in cases {
            let d = c.descriptor
            let what = "\(d)\(c.masked ? " masked \(c.maskedRows)" : "")"
            let q = uniform(d.queryCount), k = uniform(d.keyCount), v = uniform(d.keyCount), dO = uniform(d.queryCount)
            let mask = keyMask(c)
            let (qBuffer, kBuffer, vBuffer) = (try buffer(q), try buffer(k), try buffer(v))
            let maskBuffer = try mask.map(intBuffer)
            let output = try poisoned(d.queryCount), logSumExp = try poisoned(d.rowCount)
            try backend.attentionForward(query: qBuffer, key: kBuffer, value: vBuffer, keyMask: maskBuffer,
                                         output: output, logSumExp: logSumExp, descriptor: d)
            let gradQuery = try poisoned(d.queryCount), gradKey = try poisoned(d.keyCount), gradValue = try poisoned(d.keyCount)
            try backend.attentionBackward(query: qBuffer, key: kBuffer, value: vBuffer, keyMask: maskBuffer, output: output,
                                          logSumExp: logSumExp, gradOutput: buffer(dO), gradQuery: gradQuery,
                                          gradKey: gradKey, gradValue: gradValue, descriptor: d)
            let expected = referenceAttention(q.map(Double.init), k.map(Double.init), v.map(Double.init), mask: mask,
                                              gradOutput: dO.map(Double.init), d)
            assertClose(try read(output), expected.output, relative: 1e-4, absolute: 1e-5, magnitude: 1, "output \(what)")
            assertClose(try read(logSumExp), expected.logSumExp, relative: 1e-5, absolute: 1e-5, magnitude: 1,
                        "log-sum-exp \(what)")
            assertClose(try read(gradQuery), expected.gradQuery, relative: 1e-3, absolute: 1e-4, magnitude: 1, "dQ \(what)")
            assertClose(try read(gradKey), expected.gradKey, relative: 1e-3, absolute: 1e-4, magnitude: 1, "dK \(what)")
            assertClose(try read(gradValue), expected.gradValue, relative: 1e-3, absolute: 1e-4, magnitude: 1, "dV \(what)")
        }
    }

    /// A batch row whose keys are all padding: output 0, log-sum-exp +∞, and zero gradients.
    func testFullyMaskedRowGivesZerosAndInfiniteLogSumExp() throws {
        let d = AttentionDescriptor(batch: 2, heads: 1, queryLength: 3, keyLength: 5, headDimension: 4, causal: false)
        let mask: [Int32] = [0, 0, 0, 0, 0, 1, 0, 1, 1, 0]
        let q = try buffer(uniform(d.queryCount)), k = try buffer(uniform(d.keyCount)), v = try buffer(uniform(d.keyCount))
        let maskBuffer = try intBuffer(mask)
        let output = try poisoned(d.queryCount), logSumExp = try poisoned(d.rowCount)
        try backend.attentionForward(query: q, key: k, value: v, keyMask: maskBuffer, output: output,
                                     logSumExp: logSumExp, descriptor: d)
        let gradQuery = try poisoned(d.queryCount), gradKey = try poisoned(d.keyCount), gradValue = try poisoned(d.keyCount)
        try backend.attentionBackward(query: q, key: k, value: v, keyMask: maskBuffer, output: output, logSumExp: logSumExp,
                                      gradOutput: buffer(uniform(d.queryCount)), gradQuery: gradQuery, gradKey: gradKey,
                                      gradValue: gradValue, descriptor: d)
        let rows = d.queryLength * d.headDimension, keys = d.keyLength * d.headDimension
        XCTAssertEqual(Array(try read(output)[0..<rows]), [Float](repeating: 0, count: rows), context("output"))
        XCTAssertEqual(Array(try read(logSumExp)[0..<d.queryLength]), [Float](repeating: .infinity, count: d.queryLength),
                       context("log-sum-exp"))
        XCTAssertEqual(Array(try read(gradQuery)[0..<rows]), [Float](repeating: 0, count: rows), context("dQ"))
        XCTAssertEqual(Array(try read(gradKey)[0..<keys]), [Float](repeating: 0, count: keys), context("dK"))
        XCTAssertEqual(Array(try read(gradValue)[0..<keys]), [Float](repeating: 0, count: keys), context("dV"))
        // Masked keys of the other batch row get no gradient either.
        let gradKeys = try read(gradKey)
        for j in [5, 6, 9] where mask[j] == 0 {
            let row = Array(gradKeys[(j * d.headDimension)..<((j + 1) * d.headDimension)])
            XCTAssertEqual(row, [Float](repeating: 0, count: d.headDimension), context("dK of masked key \(j)"))
        }
    }

    /// Hand-computed 1 query × 2 keys, D = 1, scale 1: scores (0, log 3) → P = (¼, ¾), O = ¼·v₀ + ¾·v₁, L = log 4.
    func testHandComputed() throws {
        let d = AttentionDescriptor(batch: 1, heads: 1, queryLength: 1, keyLength: 2, headDimension: 1, causal: false, scale: 1)
        let output = try poisoned(1), logSumExp = try poisoned(1)
        try backend.attentionForward(query: buffer([1]), key: buffer([0, Float(Foundation.log(3.0))]), value: buffer([2, 6]),
                                     keyMask: nil, output: output, logSumExp: logSumExp, descriptor: d)
        assertClose(try read(output), [5.0], "hand-computed output")
        assertClose(try read(logSumExp), [Foundation.log(4.0)], "hand-computed log-sum-exp")
    }

    /// The backward sums dK and dV in a fixed order: two runs agree bit for bit.
    func testBackwardIsDeterministic() throws {
        let d = AttentionDescriptor(batch: 2, heads: 3, queryLength: 150, keyLength: 150, headDimension: 32, causal: true)
        let q = try buffer(uniform(d.queryCount)), k = try buffer(uniform(d.keyCount)), v = try buffer(uniform(d.keyCount))
        let output = try poisoned(d.queryCount), logSumExp = try poisoned(d.rowCount), dO = try buffer(uniform(d.queryCount))
        try backend.attentionForward(query: q, key: k, value: v, keyMask: nil, output: output, logSumExp: logSumExp, descriptor: d)
        var runs: [[Float]] = []
        for _ in 0..<2 {
            let gradQuery = try poisoned(d.queryCount), gradKey = try poisoned(d.keyCount), gradValue = try poisoned(d.keyCount)
            try backend.attentionBackward(query: q, key: k, value: v, keyMask: nil, output: output, logSumExp: logSumExp,
                                          gradOutput: dO, gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue,
                                          descriptor: d)
            runs.append(try read(gradQuery) + read(gradKey) + read(gradValue))
        }
        XCTAssertEqual(runs[0].map(\.bitPattern), runs[1].map(\.bitPattern), context("two backward runs differ"))
    }

    /// The reference's analytic backward against central differences of its own Double forward.
    func testReferenceBackwardMatchesFiniteDifferences() {
        let d = AttentionDescriptor(batch: 2, heads: 1, queryLength: 3, keyLength: 5, headDimension: 4, causal: true)
        let mask: [Int32] = [1, 0, 1, 1, 1, 1, 1, 1, 0, 1]
        let q = uniform(d.queryCount).map(Double.init), k = uniform(d.keyCount).map(Double.init)
        let v = uniform(d.keyCount).map(Double.init), dO = uniform(d.queryCount).map(Double.init)
        let analytic = referenceAttention(q, k, v, mask: mask, gradOutput: dO, d)
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
            zip(referenceAttention(q, k, v, mask: mask, gradOutput: nil, d).output, dO).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let operands = [q, k, v]
        for (index, expected) in [analytic.gradQuery, analytic.gradKey, analytic.gradValue].enumerated() {
            let numeric = centralDifferences(operands[index]) { x in
                var arguments = operands
                arguments[index] = x
                return loss(arguments[0], arguments[1], arguments[2])
            }
            assertClose(numeric.map { Float($0) }, expected, relative: 1e-4, absolute: 1e-5, magnitude: 1,
                        "finite differences of operand \(index)")
        }
    }

    func testInvalidGeometryThrows() throws {
        let small = try poisoned(4)
        let tooWide = AttentionDescriptor(batch: 1, heads: 1, queryLength: 1, keyLength: 1, headDimension: 129, causal: false)
        let moreQueries = AttentionDescriptor(batch: 1, heads: 1, queryLength: 3, keyLength: 2, headDimension: 1, causal: true)
        let tooBig = AttentionDescriptor(batch: 1, heads: 1, queryLength: 2, keyLength: 3, headDimension: 2, causal: false)
        for d in [tooWide, moreQueries, tooBig] {
            XCTAssertThrowsError(try backend.attentionForward(query: small, key: small, value: small, keyMask: nil,
                                                              output: small, logSumExp: small, descriptor: d), "\(d)")
            XCTAssertThrowsError(try backend.attentionBackward(query: small, key: small, value: small, keyMask: nil,
                                                               output: small, logSumExp: small, gradOutput: small,
                                                               gradQuery: small, gradKey: small, gradValue: small,
                                                               descriptor: d), "\(d)")
        }
        let one = AttentionDescriptor(batch: 1, heads: 1, queryLength: 1, keyLength: 1, headDimension: 1, causal: false)
        XCTAssertThrowsError(try backend.attentionForward(query: ForeignBuffer(), key: small, value: small, keyMask: nil,
                                                          output: small, logSumExp: small, descriptor: one))
        // A key mask too small for [B, Nk].
        let twoKeys = AttentionDescriptor(batch: 2, heads: 1, queryLength: 1, keyLength: 1, headDimension: 1, causal: false)
        XCTAssertThrowsError(try backend.attentionForward(query: small, key: small, value: small, keyMask: intBuffer([1]),
                                                          output: small, logSumExp: small, descriptor: twoKeys))
    }
}
