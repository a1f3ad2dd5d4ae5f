// gemm.cl — batched row-major SGEMM, the portable fallback beside CLBlast (fp32, OpenCL C 1.2).
//
// Contract (GemmDescriptor in Sources/OpalCore/Backend.swift; CPU reference: OpenBLAS in OpalCPU):
//   for b < batch:  C_b = alpha · op(A_b) · op(B_b) + beta · C_b     op(A_b): [m, k], op(B_b): [k, n], C_b: [m, n]
//   A_b[i, p] of op(A_b) = transposeA ? A[offsetA + b·strideA + p·lda + i] : A[offsetA + b·strideA + i·lda + p]
//   B_b[p, j] of op(B_b) = transposeB ? B[offsetB + b·strideB + j·ldb + p] : B[offsetB + b·strideB + p·ldb + j]
//   C_b[i, j] = C[offsetC + b·strideC + i·ldc + j]; beta == 0 never reads C (so NaN garbage is overwritten).
//
// Entry point: gemm_tiled. Launch geometry: global = [n rounded up to TILE, m rounded up to TILE, batch],
// local = [TILE, TILE, 1]; work-item (j, i) computes C_b[i, j] with TILE×TILE tiles of A and B staged in
// local memory; edges are bounds-checked (zero padding), so m, n, k need not be multiples of TILE.

#ifndef TILE
#define TILE 16
#endif

__kernel void gemm_tiled(const int transposeA, const int transposeB, const int m, const int n, const int k,
                         const float alpha, const float beta,
                         const __global float* a, const int offsetA, const int lda, const int strideA,
                         const __global float* b, const int offsetB, const int ldb, const int strideB,
                         __global float* c, const int offsetC, const int ldc, const int strideC) {
    __local float tileA[TILE][TILE];      // [row i, depth p]
    __local float tileB[TILE][TILE + 1];  // [depth p, column j]
    const int lj = get_local_id(0), li = get_local_id(1);
    const int j = get_global_id(0), i = get_global_id(1), batch = get_global_id(2);
    const __global float* ab = a + offsetA + (long)batch * strideA;
    const __global float* bb = b + offsetB + (long)batch * strideB;

    float acc = 0.0f;
    for (int p0 = 0; p0 < k; p0 += TILE) {
        // Work-item (lj, li) loads A[row base + li, depth p0 + lj] and B[depth p0 + li, column base + lj].
        const int ai = get_group_id(1) * TILE + li, ap = p0 + lj;
        float av = 0.0f;
        if (ai < m && ap < k) av = transposeA ? ab[(long)ap * lda + ai] : ab[(long)ai * lda + ap];
        tileA[li][lj] = av;
        const int bp = p0 + li, bj = get_group_id(0) * TILE + lj;
        float bv = 0.0f;
        if (bp < k && bj < n) bv = transposeB ? bb[(long)bj * ldb + bp] : bb[(long)bp * ldb + bj];
        tileB[li][lj] = bv;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int p = 0; p < TILE; ++p) acc += tileA[li][p] * tileB[p][lj];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (i < m && j < n) {
        __global float* cij = c + offsetC + (long)batch * strideC + (long)i * ldc + j;
        *cij = beta == 0.0f ? alpha * acc : alpha * acc + beta * *cij;
    }
}
