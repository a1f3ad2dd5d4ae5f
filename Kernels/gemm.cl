// gemm.cl — batched row-major SGEMM with a fused epilogue (fp32, OpenCL C 1.2).
//
// Contract (GemmDescriptor in Sources/OpalCore/Backend.swift, GemmEpilogue in Backend+Images.swift;
// CPU reference: OpenBLAS in OpalCPU):
//   for b < batch:  C_b = act(alpha · op(A_b) · op(B_b) + beta · C_b + bias + residual_b)
//   op(A_b): [m, k], op(B_b): [k, n], C_b: [m, n]
//   A_b[i, p] of op(A_b) = transposeA ? A[offsetA + b·strideA + p·lda + i] : A[offsetA + b·strideA + i·lda + p]
//   B_b[p, j] of op(B_b) = transposeB ? B[offsetB + b·strideB + j·ldb + p] : B[offsetB + b·strideB + p·ldb + j]
//   C_b[i, j] = C[offsetC + b·strideC + i·ldc + j]; beta == 0 never reads C (so NaN garbage is overwritten).
//   Epilogue (gemm_fast, gemm_epilogue): biasMode 0 none, 1 bias[j] (per column), 2 bias[i] (per row), shared by
//   every batch element; residual (hasResidual ≠ 0) has C's layout, residual_b[i, j] = R[offsetC + b·strideC +
//   i·ldc + j]; act = the `unary` op code of elementwise.cl (activation, with parameters activationA/B; 0 = none).
//
// Kernels:
//   gemm_tiled     the simple reference kernel (no epilogue). global = [n ↑ TILE, m ↑ TILE, batch],
//                  local = [TILE, TILE, 1]; work-item (j, i) computes C_b[i, j] from TILE×TILE tiles of A and B
//                  staged in local memory; edges zero-padded, so m, n, k need not be multiples of TILE.
//   gemm_fast      the fast kernel (the epilogue fused). Each work-item computes a GEMM_WPTM × GEMM_WPTN block of
//                  C_b with GEMM_VW-wide vector accumulators (register blocking); a work-group covers a
//                  GEMM_MWG × GEMM_NWG tile. Launch geometry:
//                    local  = [GEMM_NWG / GEMM_WPTN, GEMM_MWG / GEMM_WPTM, 1]
//                    global = [⌈n / GEMM_NWG⌉ · local[0], ⌈m / GEMM_MWG⌉ · local[1], batch]
//                  GEMM_LOCAL 1: A and B are staged through local memory GEMM_KWG deep (GPUs: shared reuse,
//                  coalesced loads, both transposes, zero-padded edges).
//                  GEMM_LOCAL 0: direct global reads (CPU devices, where local memory is plain cache and
//                  barriers cost): B must not be transposed (the host packs op(B) first), every vector load
//                  stays inside the matrix (rows past m are clamped, columns past n use scalar loads).
//   gemm_epilogue  C_b = act(alpha' · C_b + bias + residual_b) in place, after CLBlast (alpha' = 1 there).
//                  1-D over batch·m·n (global rounded up to WGS, local WGS); beta, A and B unused.
//
// Parameters (-D, from the per-device table in Sources/OpalOpenCL/KernelParameters.swift):
//   GEMM_MWG, GEMM_NWG, GEMM_KWG  work-group tile; GEMM_WPTM, GEMM_WPTN work per item (GEMM_WPTN a multiple of
//   GEMM_VW, GEMM_MWG of GEMM_WPTM, GEMM_NWG of GEMM_WPTN); GEMM_VW ∈ {2, 4, 8, 16}; GEMM_LOCAL ∈ {0, 1}.

#ifndef TILE
#define TILE 16
#endif
#ifndef WGS
#define WGS 256
#endif
#ifndef GEMM_MWG
#define GEMM_MWG 64
#endif
#ifndef GEMM_NWG
#define GEMM_NWG 64
#endif
#ifndef GEMM_KWG
#define GEMM_KWG 16
#endif
#ifndef GEMM_WPTM
#define GEMM_WPTM 4
#endif
#ifndef GEMM_WPTN
#define GEMM_WPTN 4
#endif
#ifndef GEMM_VW
#define GEMM_VW 4
#endif
#ifndef GEMM_LOCAL
#define GEMM_LOCAL 1
#endif

#define GEMM_CONCAT2(a, b) a##b
#define GEMM_CONCAT(a, b) GEMM_CONCAT2(a, b)
#define floatV GEMM_CONCAT(float, GEMM_VW)
#define vloadV GEMM_CONCAT(vload, GEMM_VW)
#define vstoreV GEMM_CONCAT(vstore, GEMM_VW)
#define GEMM_NV (GEMM_WPTN / GEMM_VW)

#define GELU_C 0.7978845608028654f   // √(2/π)
#define GELU_K 0.044715f

// The `unary` op of elementwise.cl (same codes and parameters; kept identical to it: the epilogue tests compare
// every activation against the CPU backend's unary).
inline float opal_unary(int op, float x, float a, float b) {
    switch (op) {
    case 0: return x;
    case 1: return -x;
    case 2: return fabs(x);
    case 3: return exp(x);
    case 4: return log(x);
    case 5: return sqrt(x);
    case 6: return 1.0f / x;
    case 7: return x * x;
    case 8: return x > 0.0f ? x : 0.0f;
    case 9: return x > 0.0f ? x : a * x;
    case 10: return 1.0f / (1.0f + exp(-x));
    case 11: return tanh(x);
    case 12: {
        float u = GELU_C * (x + GELU_K * x * x * x);
        return 0.5f * x * (1.0f + tanh(u));
    }
    case 13: return fmax(x, 0.0f) + log1p(exp(-fabs(x)));
    case 14: return pow(x, a);
    case 15: return a * x + b;
    case 16: return x > 0.0f ? 1.0f : 0.0f;
    case 17: return x > 0.0f ? 1.0f : a;
    case 18: {
        float u = GELU_C * (x + GELU_K * x * x * x);
        float t = tanh(u);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_K * x * x);
    }
    default: return NAN;
    }
}

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

// The epilogue of one element: act(alpha · sum + beta · C + bias + residual), as the contract says.
inline float gemm_finish(float sum, const float alpha, const float beta, const __global float* cij,
                         const __global float* bias, const int biasMode, const int i, const int j,
                         const __global float* rij, const int activation, const float activationA,
                         const float activationB) {
    float v = alpha * sum;
    if (beta != 0.0f) v += beta * *cij;
    if (biasMode == 1) v += bias[j];
    else if (biasMode == 2) v += bias[i];
    if (rij) v += *rij;
    return activation == 0 ? v : opal_unary(activation, v, activationA, activationB);
}

__kernel void gemm_fast(const int transposeA, const int transposeB, const int m, const int n, const int k,
                        const float alpha, const float beta,
                        const __global float* a, const int offsetA, const int lda, const int strideA,
                        const __global float* b, const int offsetB, const int ldb, const int strideB,
                        __global float* c, const int offsetC, const int ldc, const int strideC,
                        const __global float* bias, const int biasMode,
                        const __global float* residual, const int hasResidual,
                        const int activation, const float activationA, const float activationB) {
    const int batch = get_global_id(2);
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int row0 = get_group_id(1) * GEMM_MWG, column0 = get_group_id(0) * GEMM_NWG;
    const int i0 = row0 + ty * GEMM_WPTM, j0 = column0 + tx * GEMM_WPTN;
    const __global float* ab = a + offsetA + (long)batch * strideA;
    const __global float* bb = b + offsetB + (long)batch * strideB;
    // op(A)[i, p] = ab[i·rowStrideA + p·depthStrideA].
    const int rowStrideA = transposeA ? 1 : lda, depthStrideA = transposeA ? lda : 1;

    floatV acc[GEMM_WPTM][GEMM_NV];
#pragma unroll
    for (int r = 0; r < GEMM_WPTM; ++r)
#pragma unroll
        for (int v = 0; v < GEMM_NV; ++v) acc[r][v] = (floatV)(0.0f);

#if GEMM_LOCAL
    __local float tileA[GEMM_KWG][GEMM_MWG];   // [depth p, row i] of op(A) from row0, p0
    __local float tileB[GEMM_KWG][GEMM_NWG];   // [depth p, column j] of op(B) from p0, column0
    const int threads = get_local_size(0) * get_local_size(1);
    const int self = ty * get_local_size(0) + tx;
    for (int p0 = 0; p0 < k; p0 += GEMM_KWG) {
        // Cooperative staging; consecutive work-items read consecutive addresses of the stored matrix.
        for (int index = self; index < GEMM_KWG * GEMM_MWG; index += threads) {
            // (No `%` beside the `/`: LLVM would pair them with a `freeze`, which oclgrind cannot check.)
            int i, p;
            if (transposeA) { p = index / GEMM_MWG; i = index - p * GEMM_MWG; }
            else { i = index / GEMM_KWG; p = index - i * GEMM_KWG; }
            const int gi = row0 + i, gp = p0 + p;
            tileA[p][i] = gi < m && gp < k ? ab[(long)gi * rowStrideA + (long)gp * depthStrideA] : 0.0f;
        }
        for (int index = self; index < GEMM_KWG * GEMM_NWG; index += threads) {
            int j, p;
            if (transposeB) { j = index / GEMM_KWG; p = index - j * GEMM_KWG; }
            else { p = index / GEMM_NWG; j = index - p * GEMM_NWG; }
            const int gj = column0 + j, gp = p0 + p;
            tileB[p][j] = gj < n && gp < k ? (transposeB ? bb[(long)gj * ldb + gp] : bb[(long)gp * ldb + gj]) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int p = 0; p < GEMM_KWG; ++p) {
            floatV bv[GEMM_NV];
#pragma unroll
            for (int v = 0; v < GEMM_NV; ++v) bv[v] = vloadV(0, &tileB[p][tx * GEMM_WPTN + v * GEMM_VW]);
#pragma unroll
            for (int r = 0; r < GEMM_WPTM; ++r) {
                const float av = tileA[p][ty * GEMM_WPTM + r];
#pragma unroll
                for (int v = 0; v < GEMM_NV; ++v) acc[r][v] = mad((floatV)(av), bv[v], acc[r][v]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#else
    // Direct reads; op(B) is B as stored (transposeB == 0, checked by the host). Rows past m read row m − 1.
    const __global float* rowA[GEMM_WPTM];
#pragma unroll
    for (int r = 0; r < GEMM_WPTM; ++r) rowA[r] = ab + (long)min(i0 + r, m - 1) * rowStrideA;
    if (j0 + GEMM_WPTN <= n) {
        const __global float* columnB = bb + j0;
        for (int p = 0; p < k; ++p) {
            floatV bv[GEMM_NV];
#pragma unroll
            for (int v = 0; v < GEMM_NV; ++v) bv[v] = vloadV(0, columnB + v * GEMM_VW);
            columnB += ldb;
#pragma unroll
            for (int r = 0; r < GEMM_WPTM; ++r) {
                const float av = rowA[r][(long)p * depthStrideA];
#pragma unroll
                for (int v = 0; v < GEMM_NV; ++v) acc[r][v] = mad((floatV)(av), bv[v], acc[r][v]);
            }
        }
    } else if (j0 < n) {
        // The right edge: scalar loads of B (columns past n read column n − 1), the same arithmetic.
        for (int p = 0; p < k; ++p) {
            float bs[GEMM_WPTN];
#pragma unroll
            for (int e = 0; e < GEMM_WPTN; ++e) bs[e] = bb[(long)p * ldb + min(j0 + e, n - 1)];
            floatV bv[GEMM_NV];
#pragma unroll
            for (int v = 0; v < GEMM_NV; ++v) bv[v] = vloadV(v, bs);
#pragma unroll
            for (int r = 0; r < GEMM_WPTM; ++r) {
                const float av = rowA[r][(long)p * depthStrideA];
#pragma unroll
                for (int v = 0; v < GEMM_NV; ++v) acc[r][v] = mad((floatV)(av), bv[v], acc[r][v]);
            }
        }
    }
#endif

    // Epilogue and bounds-checked stores.
    __global float* cb = c + offsetC + (long)batch * strideC;
    const __global float* rb = hasResidual ? residual + offsetC + (long)batch * strideC : 0;
#pragma unroll
    for (int r = 0; r < GEMM_WPTM; ++r) {
        const int i = i0 + r;
        if (i >= m) break;
        float sums[GEMM_WPTN];
#pragma unroll
        for (int v = 0; v < GEMM_NV; ++v) vstoreV(acc[r][v], v, sums);
        for (int e = 0; e < GEMM_WPTN; ++e) {
            const int j = j0 + e;
            if (j >= n) break;
            const long index = (long)i * ldc + j;
            cb[index] = gemm_finish(sums[e], alpha, beta, cb + index, bias, biasMode, i, j, rb ? rb + index : 0,
                                    activation, activationA, activationB);
        }
    }
}

__kernel void gemm_epilogue(const int m, const int n, const int batchCount, const float alpha,
                            __global float* c, const int offsetC, const int ldc, const int strideC,
                            const __global float* bias, const int biasMode,
                            const __global float* residual, const int hasResidual,
                            const int activation, const float activationA, const float activationB) {
    const int flat = get_global_id(0);
    if (flat >= batchCount * m * n) return;
    const int rowIndex = flat / n, j = flat - rowIndex * n;   // (no `%`: see the staging loops of gemm_fast)
    const int batch = rowIndex / m, i = rowIndex - batch * m;
    const long index = offsetC + (long)batch * strideC + (long)i * ldc + j;
    c[index] = gemm_finish(c[index], alpha, 0.0f, c + index, bias, biasMode, i, j,
                           hasResidual ? residual + index : 0, activation, activationA, activationB);
}
