import CBLAS
import OpalCore

// Batched row-major GEMM of the CPU backend (mirrors Kernels/gemm.cl):
//   for b < batch:  C_b = alpha · op(A_b) · op(B_b) + beta · C_b
//   op(A_b): [m, k] stored at offsetA + b·strideA with row length lda (A_b as stored is [k, m] when
//   transposed), op(B_b): [k, n] likewise, C_b: [m, n] at offsetC + b·strideC with row length ldc.
// The fast path is OpenBLAS `cblas_sgemm`; `referenceGemm` below is the simple Double loop it is
// tested against (Tests/OpalCPUTests/GemmTests.swift).

extension CPUBackend {
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor d: GemmDescriptor) throws {
        let extents = try GemmExtents(d)
        let a = try cpuBuffer(a, op: "gemm", elements: extents.a).floats
        let b = try cpuBuffer(b, op: "gemm", elements: extents.b).floats
        let c = try cpuBuffer(c, op: "gemm", elements: extents.c).floats
        guard d.batch > 0, d.m > 0, d.n > 0 else { return }
        for index in 0..<d.batch {
            let cBatch = c + d.offsetC + index * d.strideC
            if d.k == 0 {
                // Nothing to multiply: C = beta · C (never reading C when beta is 0).
                for row in 0..<d.m {
                    let cRow = cBatch + row * d.ldc
                    for column in 0..<d.n { cRow[column] = d.beta == 0 ? 0 : d.beta * cRow[column] }
                }
                continue
            }
            splitGemm(d, a: a + d.offsetA + index * d.strideA, b: b + d.offsetB + index * d.strideB, c: cBatch)
        }
    }

    /// One GEMM of `d`'s batch: on several cores, the longer of C's two extents is split into one block per
    /// core, each an OpenBLAS GEMM run single-threaded on CParallel's pool (OpenBLAS's own threads stay
    /// asleep, so they never compete with the pool's spinning workers); one call where the product is small.
    private func splitGemm(_ d: GemmDescriptor, a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>,
                           c: UnsafeMutablePointer<Float>) {
        let work = d.m * d.n * d.k
        let parts = threadCount > 1 && work >= ParallelGrain.gemm ? min(threadCount, max(d.m, d.n) / 16) : 1
        func run(_ rows: Range<Int>, _ columns: Range<Int>) {
            // A's rows i: a + i·lda (or a + i with A transposed); B's columns j: b + j (or b + j·ldb).
            let aStart = a + (d.transposeA ? rows.lowerBound : rows.lowerBound * d.lda)
            let bStart = b + (d.transposeB ? columns.lowerBound * d.ldb : columns.lowerBound)
            cblas_sgemm(CblasRowMajor,
                        d.transposeA ? CblasTrans : CblasNoTrans, d.transposeB ? CblasTrans : CblasNoTrans,
                        blasint(rows.count), blasint(columns.count), blasint(d.k), d.alpha,
                        aStart, blasint(d.lda), bStart, blasint(d.ldb),
                        d.beta, c + rows.lowerBound * d.ldc + columns.lowerBound, blasint(d.ldc))
        }
        guard parts > 1 else {
            // OpenBLAS splits products from 2¹⁸ multiply-adds over its own threads, which then spin in
            // sched_yield for a while and compete with the pool's workers for the cores: below the pool's
            // grain, run single-threaded.
            if work < ParallelGrain.gemm && threadCount > 1 {
                openblas_set_num_threads(1)
                defer { openblas_set_num_threads(Int32(threadCount)) }
                run(0..<d.m, 0..<d.n)
            } else {
                run(0..<d.m, 0..<d.n)
            }
            return
        }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threadCount)) }
        let splitsRows = d.m >= d.n
        let extent = splitsRows ? d.m : d.n
        parallelFor(iterations: parts, threads: parts) { part in
            let range = (part * extent / parts)..<((part + 1) * extent / parts)
            if splitsRows { run(range, 0..<d.n) } else { run(0..<d.m, range) }
        }
    }

    /// The simple reference for `gemm`: a triple loop accumulating in Double. With beta = 0 it never
    /// reads C (so NaN in C does not propagate), as BLAS specifies.
    public static func referenceGemm(_ a: [Float], _ b: [Float], _ c: inout [Float], descriptor d: GemmDescriptor) {
        for batch in 0..<d.batch {
            let baseA = d.offsetA + batch * d.strideA
            let baseB = d.offsetB + batch * d.strideB
            let baseC = d.offsetC + batch * d.strideC
            for i in 0..<d.m {
                for j in 0..<d.n {
                    var total = 0.0
                    for p in 0..<d.k {
                        let valueA = d.transposeA ? a[baseA + p * d.lda + i] : a[baseA + i * d.lda + p]
                        let valueB = d.transposeB ? b[baseB + j * d.ldb + p] : b[baseB + p * d.ldb + j]
                        total += Double(valueA) * Double(valueB)
                    }
                    let index = baseC + i * d.ldc + j
                    let previous = d.beta == 0 ? 0 : Double(d.beta) * Double(c[index])
                    c[index] = Float(Double(d.alpha) * total + previous)
                }
            }
        }
    }
}

/// Elements each operand of a GEMM must hold, after checking the descriptor is well formed.
struct GemmExtents {
    var a: Int, b: Int, c: Int

    init(_ d: GemmDescriptor) throws {
        func fail(_ reason: String) -> TensorError { .invalidArgument(op: "gemm", reason: reason) }
        guard d.m >= 0, d.n >= 0, d.k >= 0, d.batch >= 0 else {
            throw fail("negative size m \(d.m), n \(d.n), k \(d.k), batch \(d.batch)")
        }
        guard d.offsetA >= 0, d.offsetB >= 0, d.offsetC >= 0, d.strideA >= 0, d.strideB >= 0, d.strideC >= 0 else {
            throw fail("negative offset or stride")
        }
        let (rowsA, columnsA) = d.transposeA ? (d.k, d.m) : (d.m, d.k)
        let (rowsB, columnsB) = d.transposeB ? (d.n, d.k) : (d.k, d.n)
        // BLAS wants a leading dimension of at least max(1, row length); an empty operand is never read.
        let empty = d.m == 0 || d.n == 0 || d.batch == 0
        guard empty || d.k == 0 || d.lda >= max(1, columnsA) else {
            throw fail("lda \(d.lda) is less than the row length \(columnsA) of A")
        }
        guard empty || d.k == 0 || d.ldb >= max(1, columnsB) else {
            throw fail("ldb \(d.ldb) is less than the row length \(columnsB) of B")
        }
        guard empty || d.ldc >= max(1, d.n) else { throw fail("ldc \(d.ldc) is less than the row length \(d.n) of C") }
        func extent(offset: Int, stride: Int, rows: Int, columns: Int, leading: Int) -> Int {
            guard d.batch > 0, rows > 0, columns > 0 else { return 0 }
            return offset + (d.batch - 1) * stride + (rows - 1) * leading + columns
        }
        a = extent(offset: d.offsetA, stride: d.strideA, rows: rowsA, columns: columnsA, leading: d.lda)
        b = extent(offset: d.offsetB, stride: d.strideB, rows: rowsB, columns: columnsB, leading: d.ldb)
        c = extent(offset: d.offsetC, stride: d.strideC, rows: d.m, columns: d.n, leading: d.ldc)
        guard [d.m, d.n, d.k, d.lda, d.ldb, d.ldc].allSatisfy({ $0 <= Int(Int32.max) }) else {
            throw fail("a size exceeds the 32-bit range of BLAS")
        }
    }
}
