import CBLAS
import Dispatch
import Foundation
import CVectorMath
import OpalCore
import Synchronization

// Fused scaled-dot-product attention of the CPU backend (mirrors Kernels/attention.cl), per (batch, head)
// problem p = b·H + h, with every buffer row-major (see `AttentionDescriptor`):
//   Q, O, dO, dQ: [Nq, D] at p·Nq·D      K, V, dK, dV: [Nk, D] at p·Nk·D      L: [Nq] at p·Nq
//   keyMask: int32 [Nk] at b·Nk (0 = padding)
// Query i sees key j when mask[j] ≠ 0 and, if causal, j ≤ i + (Nk − Nq).
//
// The queries are walked in blocks of `AttentionBlocking.rows` (BR) rows. For the block [i0, i0 + R) only the
// key prefix [0, J) can be visible, J = min(Nk, i0 + R + Nk − Nq) when causal, else Nk; the block owns a
// scratch of R·J ≤ BR·Nk floats (memory linear in N: no [Nq, Nk] matrix ever exists):
//   forward    S = scale · Q_blk · K[0..<J]ᵀ                   (sgemm, [R, J])
//              per row: hidden keys → −∞, m = max S, e = exp(S − m), Σ = Σ e,
//              P = e / Σ, L_i = m + log Σ       (a row with no visible key: P = 0, L_i = +∞)
//              O_blk = P · V[0..<J]                             (sgemm)
//   backward   S recomputed as above, P = exp(S − L) (0 where hidden)
//              dP = dO_blk · V[0..<J]ᵀ                          (sgemm)
//              Δ_i = dO_i · O_i,  dS = P ∘ (dP − Δ)
//              dQ_blk = scale · dS · K[0..<J]                   (sgemm)
//              dK[0..<J] += scale · dSᵀ · Q_blk,  dV[0..<J] += Pᵀ · dO_blk   (sgemm, β = 1, blocks in order)
// Each row's softmax is exact (the whole visible row sits in the scratch), so no online rescaling is needed.
//
// Work split (`forEachItem`): the forward's items are (problem, block) pairs, the backward's are problems
// (one problem's dK/dV are summed by one thread, in block order: deterministic). With at least two items per
// core the cores take items from a shared counter and OpenBLAS runs single-threaded; with fewer, items run in
// order on the calling thread, OpenBLAS threaded and the row loops split across the cores.
// The simple references are the Double loops in Tests/OpalCPUTests/AttentionTests.swift and
// `Tensor.scaledDotProductAttentionComposed`.

/// Tunable blocking of the CPU attention.
enum AttentionBlocking {
    /// Query rows per block: the M of every GEMM. 64 keeps the GEMMs efficient and the scratch small.
    static let rows = 64
}

extension CPUBackend {
    public func attentionForward(query: any DeviceBuffer, key: any DeviceBuffer, value: any DeviceBuffer,
                                 keyMask: (any DeviceBuffer)?, output: any DeviceBuffer, logSumExp: any DeviceBuffer,
                                 descriptor d: AttentionDescriptor) throws {
        let op = "attentionForward"
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        let q = try cpuBuffer(query, op: op, elements: d.queryCount).floats
        let k = try cpuBuffer(key, op: op, elements: d.keyCount).floats
        let v = try cpuBuffer(value, op: op, elements: d.keyCount).floats
        let mask = try keyMask.map { try cpuBuffer($0, op: op, elements: d.batch * d.keyLength).ints }
        let o = try cpuBuffer(output, op: op, elements: d.queryCount).floats
        let lse = try cpuBuffer(logSumExp, op: op, elements: d.rowCount).floats

        let (nq, nk, dim, heads) = (d.queryLength, d.keyLength, d.headDimension, d.heads)
        let blockRows = AttentionBlocking.rows
        let blocks = (nq + blockRows - 1) / blockRows
        let items = d.problems * blocks
        let workers = attentionWorkers(items: items)
        let scratchCount = blockRows * nk
        let scratch = cache.buffer(count: workers * scratchCount)
        let (scale, causal, offset) = (d.scale, d.causal, d.causalOffset)
        withExtendedLifetime(scratch) {
            forEachItem(count: items, workers: workers) { item, worker in
                let p = item / blocks, i0 = (item % blocks) * blockRows
                let rows = min(blockRows, nq - i0)
                let width = causal ? min(nk, i0 + rows + offset) : nk
                let s = scratch.floats + worker * scratchCount
                let qBlock = q + (p * nq + i0) * dim, kp = k + p * nk * dim, vp = v + p * nk * dim
                let maskRow = mask.map { UnsafePointer($0 + (p / heads) * nk) }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(rows), blasint(width), blasint(dim),
                            scale, qBlock, blasint(dim), kp, blasint(dim), 0, s, blasint(width))
                let rowL = lse + p * nq + i0
                forEachRow(rows, width: width, split: workers == 1) { r in
                    let visible = causal ? min(width, i0 + r + offset + 1) : width
                    rowL[r] = attentionSoftmaxRow(s + r * width, maskRow, visible: visible, width: width)
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows), blasint(dim), blasint(width),
                            1, s, blasint(width), vp, blasint(dim), 0, o + (p * nq + i0) * dim, blasint(dim))
            }
        }
    }

    public func attentionBackward(query: any DeviceBuffer, key: any DeviceBuffer, value: any DeviceBuffer,
                                  keyMask: (any DeviceBuffer)?, output: any DeviceBuffer, logSumExp: any DeviceBuffer,
                                  gradOutput: any DeviceBuffer, gradQuery: any DeviceBuffer, gradKey: any DeviceBuffer,
                                  gradValue: any DeviceBuffer, descriptor d: AttentionDescriptor) throws {
        let op = "attentionBackward"
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        let q = try cpuBuffer(query, op: op, elements: d.queryCount).floats
        let k = try cpuBuffer(key, op: op, elements: d.keyCount).floats
        let v = try cpuBuffer(value, op: op, elements: d.keyCount).floats
        let mask = try keyMask.map { try cpuBuffer($0, op: op, elements: d.batch * d.keyLength).ints }
        let o = try cpuBuffer(output, op: op, elements: d.queryCount).floats
        let lse = try cpuBuffer(logSumExp, op: op, elements: d.rowCount).floats
        let dO = try cpuBuffer(gradOutput, op: op, elements: d.queryCount).floats
        let dQ = try cpuBuffer(gradQuery, op: op, elements: d.queryCount).floats
        let dK = try cpuBuffer(gradKey, op: op, elements: d.keyCount).floats
        let dV = try cpuBuffer(gradValue, op: op, elements: d.keyCount).floats

        let (nq, nk, dim, heads) = (d.queryLength, d.keyLength, d.headDimension, d.heads)
        let blockRows = AttentionBlocking.rows
        let workers = attentionWorkers(items: d.problems)
        // Per worker: P (scores, then probabilities) and dP (then dS), [BR, Nk] each.
        let scratchCount = 2 * blockRows * nk
        let scratch = cache.buffer(count: workers * scratchCount)
        let (scale, causal, offset) = (d.scale, d.causal, d.causalOffset)
        withExtendedLifetime(scratch) {
            forEachItem(count: d.problems, workers: workers) { p, worker in
                let probabilities = scratch.floats + worker * scratchCount
                let gradients = probabilities + blockRows * nk
                let kp = k + p * nk * dim, vp = v + p * nk * dim
                let dKp = dK + p * nk * dim, dVp = dV + p * nk * dim
                let maskRow = mask.map { UnsafePointer($0 + (p / heads) * nk) }
                dKp.update(repeating: 0, count: nk * dim)
                dVp.update(repeating: 0, count: nk * dim)
                for i0 in stride(from: 0, to: nq, by: blockRows) {
                    let rows = min(blockRows, nq - i0)
                    let width = causal ? min(nk, i0 + rows + offset) : nk
                    let rowStart = (p * nq + i0) * dim
                    let qBlock = q + rowStart, oBlock = o + rowStart, dOBlock = dO + rowStart
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(rows), blasint(width), blasint(dim),
                                scale, qBlock, blasint(dim), kp, blasint(dim), 0, probabilities, blasint(width))
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(rows), blasint(width), blasint(dim),
                                1, dOBlock, blasint(dim), vp, blasint(dim), 0, gradients, blasint(width))
                    let rowL = lse + p * nq + i0
                    forEachRow(rows, width: width, split: workers == 1) { r in
                        let visible = causal ? min(width, i0 + r + offset + 1) : width
                        let delta = dotRow(dOBlock + r * dim, oBlock + r * dim, dim)
                        attentionGradientRow(probabilities + r * width, gradients + r * width, maskRow,
                                             visible: visible, width: width, logSumExp: rowL[r], delta: delta)
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows), blasint(dim), blasint(width),
                                scale, gradients, blasint(width), kp, blasint(dim), 0, dQ + rowStart, blasint(dim))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(width), blasint(dim), blasint(rows),
                                scale, gradients, blasint(width), qBlock, blasint(dim), 1, dKp, blasint(dim))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(width), blasint(dim), blasint(rows),
                                1, probabilities, blasint(width), dOBlock, blasint(dim), 1, dVp, blasint(dim))
                }
            }
        }
    }

    // MARK: Work split

    /// One worker (in-order items, threaded OpenBLAS) unless there are at least two items per core.
    private func attentionWorkers(items: Int) -> Int {
        threadCount > 1 && items >= 2 * threadCount ? threadCount : 1
    }

    /// Runs `body(item, worker)` for every item in `0..<count`. With one worker the items run in order on
    /// the calling thread; with several, the workers take items in order from a shared counter while
    /// OpenBLAS runs single-threaded (the cores are busy with the workers), as in `Conv.swift`.
    private func forEachItem(count: Int, workers: Int, _ body: (Int, Int) -> Void) {
        if workers == 1 {
            for item in 0..<count { body(item, 0) }
            return
        }
        // The thread count is process-wide in OpenBLAS; another thread's GEMM meanwhile runs single-threaded
        // too (still correct, only slower).
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threadCount)) }
        let next = Atomic<Int>(0)
        // Each item writes its own rows (or, backward, its own problem) and each worker slot its own scratch.
        parallelFor(iterations: workers, threads: workers) { worker in
            while true {
                let item = next.add(1, ordering: .relaxed).oldValue
                guard item < count else { return }
                body(item, worker)
            }
        }
    }

    /// Runs `body(row)` for `row < rows`: split across the cores when `split` (the single-worker case) and
    /// the rows hold enough exponentials, else inline.
    @inline(__always)
    private func forEachRow(_ rows: Int, width: Int, split: Bool, _ body: (Int) -> Void) {
        if split {
            parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.expensive / max(1, width))) { start, end in
                for r in start..<end { body(r) }
            }
        } else {
            for r in 0..<rows { body(r) }
        }
    }
}

// MARK: - One row of scores

// The row loops take every pointer as a parameter (see Recurrent.swift: captured pointers stop the vectoriser).

/// Softmax of one row of scores in place, returning its log-sum-exp.
/// - s: [width] scores; on return the probabilities, 0 at every hidden key and at `visible..<width`
/// - mask: the key mask row (nil = every key allowed); `visible`: the causally visible prefix (≤ width)
/// - Returns: `L = m + log Σ_j exp(s_j − m)` over the visible keys, or +∞ (and a zero row) when there is none.
@inline(__always)
func attentionSoftmaxRow(_ s: UnsafeMutablePointer<Float>, _ mask: UnsafePointer<Int32>?,
                         visible: Int, width: Int) -> Float {
    let raw = UnsafeMutableRawPointer(s)
    let hidden = -Float.infinity
    // Pass 1: hidden keys → −∞, row maximum.
    var lanes = SIMD8<Float>(repeating: hidden)
    var j = 0
    if let mask {
        let rawMask = UnsafeRawPointer(mask)
        while j + 8 <= visible {
            var x = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
            let allowed = rawMask.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Int32>.self)
            x.replace(with: hidden, where: allowed .== 0)
            raw.storeBytes(of: x, toByteOffset: j * 4, as: SIMD8<Float>.self)
            lanes.replace(with: x, where: x .> lanes)
            j += 8
        }
        while j < visible {
            if mask[j] == 0 { s[j] = hidden }
            j += 1
        }
    } else {
        while j + 8 <= visible {
            let x = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
            lanes.replace(with: x, where: x .> lanes)
            j += 8
        }
    }
    var maximum = lanes.max()
    for tail in (visible & ~7)..<visible { maximum = max(maximum, s[tail]) }
    guard maximum > hidden else {
        s.update(repeating: 0, count: width)
        return .infinity
    }
    // Pass 2: e = exp(s − m) and Σ e (CVectorMath: AVX2 + FMA where the processor has them).
    let total = opal_exp_shifted_sum(s, visible, maximum)
    // Pass 3: normalise; the causally hidden tail is 0.
    let reciprocal = 1 / total
    for index in 0..<visible { s[index] *= reciprocal }
    if visible < width { (s + visible).update(repeating: 0, count: width - visible) }
    return maximum + Foundation.log(total)
}

/// One row of the backward pass: `p = exp(s − L)` (0 where hidden) and `dS = p·(dP − Δ)`.
/// - s: [width] scores in, probabilities out;  g: [width] dP in, dS out
@inline(__always)
func attentionGradientRow(_ s: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                          _ mask: UnsafePointer<Int32>?, visible: Int, width: Int, logSumExp: Float, delta: Float) {
    guard logSumExp < .infinity else {
        s.update(repeating: 0, count: width)
        g.update(repeating: 0, count: width)
        return
    }
    opal_attention_gradient_row(s, g, mask, visible, logSumExp, delta)
    if visible < width {
        (s + visible).update(repeating: 0, count: width - visible)
        (g + visible).update(repeating: 0, count: width - visible)
    }
}
