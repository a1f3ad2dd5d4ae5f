import Foundation
import OpalCore
import OpalOpenCL
import XCTest

/// Kernels/attention.cl against a Double reference written out below (scores, mask, softmax, product, and
/// the backward formulas of `AttentionBackend`): lengths that are not multiples of any tile (1, 17, 257),
/// Nq ≠ Nk, head dimensions 16…128 (80 is no power of two), causal or not, with and without a key mask
/// (including a batch row whose keys are all masked), B·H > 1, every output poisoned with NaN first.
final class AttentionKernelTests: KernelTestCase {
    enum MaskKind { case none, random, lastBatchEmpty }

    struct Case: CustomStringConvertible {
        var batch: Int, heads: Int, queries: Int, keys: Int, dimension: Int, causal: Bool, mask: MaskKind
        var descriptor: AttentionDescriptor {
            AttentionDescriptor(batch: batch, heads: heads, queryLength: queries, keyLength: keys,
                                headDimension: dimension, causal: causal)
        }
        var description: String { "\(descriptor) mask \(mask)" }
    }

    /// Under OPAL_TEST_SMALL (oclgrind) every extent stays ≤ 64 and the work small.
    var cases: [Case] {
        if small {
            return [
                Case(batch: 1, heads: 1, queries: 1, keys: 1, dimension: 16, causal: false, mask: .none),
                Case(batch: 2, heads: 2, queries: 5, keys: 9, dimension: 16, causal: true, mask: .lastBatchEmpty),
                Case(batch: 1, heads: 2, queries: 17, keys: 17, dimension: 32, causal: true, mask: .random),
                Case(batch: 1, heads: 1, queries: 3, keys: 40, dimension: 80, causal: false, mask: .random),
                Case(batch: 1, heads: 1, queries: 7, keys: 7, dimension: 128, causal: true, mask: .none),
            ]
        }
        return [
            Case(batch: 1, heads: 1, queries: 1, keys: 1, dimension: 16, causal: false, mask: .none),
            Case(batch: 1, heads: 1, queries: 1, keys: 1, dimension: 32, causal: true, mask: .none),
            Case(batch: 2, heads: 3, queries: 17, keys: 17, dimension: 32, causal: true, mask: .random),
            Case(batch: 1, heads: 2, queries: 17, keys: 40, dimension: 64, causal: false, mask: .random),
            Case(batch: 2, heads: 2, queries: 64, keys: 64, dimension: 16, causal: true, mask: .lastBatchEmpty),
            Case(batch: 3, heads: 1, queries: 17, keys: 64, dimension: 64, causal: false, mask: .lastBatchEmpty),
            Case(batch: 1, heads: 2, queries: 257, keys: 257, dimension: 32, causal: true, mask: .none),
            Case(batch: 1, heads: 1, queries: 257, keys: 100, dimension: 80, causal: false, mask: .random),
            Case(batch: 1, heads: 1, queries: 1, keys: 257, dimension: 64, causal: true, mask: .random),
            Case(batch: 1, heads: 1, queries: 17, keys: 64, dimension: 128, causal: true, mask: .random),
            Case(batch: 2, heads: 1, queries: 64, keys: 17, dimension: 128, causal: false, mask: .none),
        ]
    }

    func testForwardAndBackwardMatchReference() throws {
        for c in cases { try check(c) }
    }

    /// Every register-tile shape of the kernels (rows per work-item, vector width, tile length; see
    /// `AttentionParameters`) on this device, through `OpenCLBackend.attentionParametersOverride`: the GPU
    /// entry, the CPU entry, and odd shapes (3 rows per item, 16-wide vectors; tiles of 4 keys in float4), on
    /// lengths and head dimensions that are multiples of none of them.
    func testEveryTileShapeMatchesReference() throws {
        let shapes: [AttentionParameters] = [
            .portable, .cpu,
            AttentionParameters(rowsPerGroup: 24, maximumTile: 64, localMemoryBytes: 32 << 10, rowsPerItem: 3,
                                keyRowsPerItem: 2, vectorWidth: 16),
            AttentionParameters(rowsPerGroup: 8, maximumTile: 4, localMemoryBytes: 48 << 10, rowsPerItem: 2,
                                keyRowsPerItem: 1, vectorWidth: 4),
        ]
        let shapeCases = small
            ? [Case(batch: 2, heads: 1, queries: 13, keys: 13, dimension: 20, causal: true, mask: .lastBatchEmpty),
               Case(batch: 1, heads: 1, queries: 6, keys: 11, dimension: 3, causal: true, mask: .random)]
            : [Case(batch: 2, heads: 2, queries: 70, keys: 70, dimension: 20, causal: true, mask: .lastBatchEmpty),
               Case(batch: 1, heads: 2, queries: 37, keys: 101, dimension: 64, causal: true, mask: .random),
               Case(batch: 1, heads: 1, queries: 45, keys: 29, dimension: 3, causal: false, mask: .random),
               Case(batch: 1, heads: 1, queries: 33, keys: 33, dimension: 128, causal: true, mask: .none)]
        defer { OpenCLBackend.attentionParametersOverride = nil }
        for shape in shapes {
            OpenCLBackend.attentionParametersOverride = shape
            for c in shapeCases { try check(c, context: "\(shape)") }
        }
    }

    /// The long sequence: N = 1000, D = 64, causal, B1 H1 (too slow for oclgrind: skipped there).
    func testLongCausalSequenceMatchesReference() throws {
        if small { throw XCTSkip("N = 1000 is too slow under oclgrind (OPAL_TEST_SMALL=1)") }
        try check(Case(batch: 1, heads: 1, queries: 1000, keys: 1000, dimension: 64, causal: true, mask: .none))
    }

    /// Two backward runs give identical bits (no atomics, fixed summation order).
    func testBackwardIsDeterministic() throws {
        let c = small ? Case(batch: 1, heads: 2, queries: 9, keys: 33, dimension: 16, causal: false, mask: .random)
                      : Case(batch: 2, heads: 2, queries: 70, keys: 90, dimension: 32, causal: false, mask: .random)
        let first = try check(c), second = try check(c, inputs: first.inputs)
        for (name, a, b) in [("dQ", first.dq, second.dq), ("dK", first.dk, second.dk), ("dV", first.dv, second.dv)] {
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), context("\(name) is not deterministic \(c)"))
        }
    }

    func testInvalidArgumentsThrow() throws {
        let buffer = try gpu.allocate(count: 16)
        let invalid = [
            AttentionDescriptor(batch: 1, heads: 1, queryLength: 1, keyLength: 1, headDimension: 129, causal: false),
            AttentionDescriptor(batch: 1, heads: 1, queryLength: 2, keyLength: 1, headDimension: 8, causal: true),
            AttentionDescriptor(batch: 0, heads: 1, queryLength: 1, keyLength: 1, headDimension: 8, causal: false),
            // Valid geometry, but 2·2·8 = 32 elements do not fit the 16-element buffers.
            AttentionDescriptor(batch: 1, heads: 2, queryLength: 2, keyLength: 2, headDimension: 8, causal: false),
        ]
        for d in invalid {
            XCTAssertThrowsError(try gpu.attentionForward(query: buffer, key: buffer, value: buffer, keyMask: nil,
                                                          output: buffer, logSumExp: buffer, descriptor: d), "\(d)") {
                guard case TensorError.invalidArgument(let op, _) = $0 else { return XCTFail("\($0)") }
                XCTAssertEqual(op, "attentionForward")
            }
            XCTAssertThrowsError(try gpu.attentionBackward(
                query: buffer, key: buffer, value: buffer, keyMask: nil, output: buffer, logSumExp: buffer,
                gradOutput: buffer, gradQuery: buffer, gradKey: buffer, gradValue: buffer, descriptor: d), "\(d)")
        }
    }

    // MARK: - Checking one case

    struct Inputs {
        var q: [Float], k: [Float], v: [Float], dO: [Float], mask: [Int32]?
    }

    struct Results {
        var inputs: Inputs
        var dq: [Float], dk: [Float], dv: [Float]
    }

    /// Runs forward and backward on OpenCL and compares with `reference`; returns the gradients.
    @discardableResult
    func check(_ c: Case, inputs given: Inputs? = nil, context shape: String = "") throws -> Results {
        let d = c.descriptor
        let inputs = given ?? Inputs(
            q: uniform(d.queryCount), k: uniform(d.keyCount), v: uniform(d.keyCount), dO: uniform(d.queryCount),
            mask: makeMask(c))
        let q = try buffer(inputs.q), k = try buffer(inputs.k), v = try buffer(inputs.v), dO = try buffer(inputs.dO)
        var maskBuffer: (any DeviceBuffer)?
        if let mask = inputs.mask {
            let m = try gpu.allocate(count: mask.count)
            try gpu.write(mask, to: m)
            retained.append(m)
            maskBuffer = m
        }
        let o = try poisoned(d.queryCount), l = try poisoned(d.rowCount)
        try gpu.attentionForward(query: q, key: k, value: v, keyMask: maskBuffer, output: o, logSumExp: l, descriptor: d)
        let dq = try poisoned(d.queryCount), dk = try poisoned(d.keyCount), dv = try poisoned(d.keyCount)
        try gpu.attentionBackward(query: q, key: k, value: v, keyMask: maskBuffer, output: o, logSumExp: l,
                                  gradOutput: dO, gradQuery: dq, gradKey: dk, gradValue: dv, descriptor: d)

        let expected = Self.reference(inputs, d)
        let results = Results(inputs: inputs, dq: try gpu.readFloats(dq, count: d.queryCount),
                              dk: try gpu.readFloats(dk, count: d.keyCount), dv: try gpu.readFloats(dv, count: d.keyCount))
        // Tolerances relative to each tensor's largest reference magnitude (sums over up to 1000 terms in float).
        func compare(_ actual: [Float], _ reference: [Double], _ tolerance: Float, _ name: String) {
            let scale = Float(reference.lazy.filter(\.isFinite).map(abs).max() ?? 1)
            assertClose(actual, reference.map(Float.init), tolerance: tolerance, floor: max(scale, 1e-6),
                        "\(name) \(c) \(shape)")
        }
        compare(try gpu.readFloats(o, count: d.queryCount), expected.o, 2e-5, "output")
        assertClose(try gpu.readFloats(l, count: d.rowCount), expected.l.map(Float.init), tolerance: 1e-5,
                    "log-sum-exp \(c) \(shape)")
        compare(results.dq, expected.dq, 1e-4, "dQ")
        compare(results.dk, expected.dk, 1e-4, "dK")
        compare(results.dv, expected.dv, 1e-4, "dV")
        return results
    }

    func makeMask(_ c: Case) -> [Int32]? {
        switch c.mask {
        case .none: return nil
        case .random:
            return (0..<c.batch * c.keys).map { _ in Float.random(in: 0..<1, using: &random) < 0.7 ? 1 : 0 }
        case .lastBatchEmpty:
            return (0..<c.batch * c.keys).map { index in
                index >= (c.batch - 1) * c.keys ? 0 : (Float.random(in: 0..<1, using: &random) < 0.7 ? 3 : 0)
            }
        }
    }

    // MARK: - Double reference

    /// Plain loops in Double: per problem and query row, the scores `scale·q_i·k_j` of the visible keys,
    /// their softmax P, `O = P·V`, `L = log Σ exp`; then `Δ_i = dO_i·O_i`, `dV = Pᵀ·dO`,
    /// `dS = P∘(dO·Vᵀ − Δ)`, `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`. A row with no visible key: O = 0, L = +∞.
    static func reference(_ x: Inputs, _ d: AttentionDescriptor)
        -> (o: [Double], l: [Double], dq: [Double], dk: [Double], dv: [Double]) {
        let nq = d.queryLength, nk = d.keyLength, dim = d.headDimension, scale = Double(d.scale)
        var o = [Double](repeating: 0, count: d.queryCount), l = [Double](repeating: .infinity, count: d.rowCount)
        var dq = [Double](repeating: 0, count: d.queryCount)
        var dk = [Double](repeating: 0, count: d.keyCount), dv = [Double](repeating: 0, count: d.keyCount)
        let q = x.q.map(Double.init), k = x.k.map(Double.init), v = x.v.map(Double.init), g = x.dO.map(Double.init)
        q.withUnsafeBufferPointer { q in k.withUnsafeBufferPointer { k in v.withUnsafeBufferPointer { v in
        g.withUnsafeBufferPointer { g in
            var p = [Double](repeating: 0, count: nk)
            for problem in 0..<d.problems {
                let b = problem / d.heads
                let qBase = problem * nq * dim, kBase = problem * nk * dim
                for i in 0..<nq {
                    let qi = qBase + i * dim
                    var largest = -Double.infinity
                    for j in 0..<nk {
                        let visible = d.causallyVisible(query: i, key: j) && (x.mask.map { $0[b * nk + j] != 0 } ?? true)
                        guard visible else { p[j] = -.infinity; continue }
                        var s = 0.0
                        for e in 0..<dim { s += q[qi + e] * k[kBase + j * dim + e] }
                        p[j] = scale * s
                        largest = max(largest, p[j])
                    }
                    guard largest > -.infinity else {
                        for j in 0..<nk { p[j] = 0 }
                        continue   // O = 0, L = +∞, and the row adds nothing to any gradient
                    }
                    var sum = 0.0
                    for j in 0..<nk where p[j] > -.infinity { p[j] = Foundation.exp(p[j] - largest); sum += p[j] }
                    for j in 0..<nk { p[j] = p[j] > -.infinity ? p[j] / sum : 0 }
                    l[problem * nq + i] = largest + Foundation.log(sum)
                    for j in 0..<nk where p[j] != 0 {
                        for e in 0..<dim { o[qi + e] += p[j] * v[kBase + j * dim + e] }
                    }
                    var delta = 0.0
                    for e in 0..<dim { delta += g[qi + e] * o[qi + e] }
                    for j in 0..<nk where p[j] != 0 {
                        let kj = kBase + j * dim
                        var dp = 0.0
                        for e in 0..<dim { dp += g[qi + e] * v[kj + e] }
                        let ds = p[j] * (dp - delta)
                        for e in 0..<dim {
                            dv[kj + e] += p[j] * g[qi + e]
                            dq[qi + e] += scale * ds * k[kj + e]
                            dk[kj + e] += scale * ds * q[qi + e]
                        }
                    }
                }
            }
        } } } }
        return (o, l, dq, dk, dv)
    }
}
