// packed_gemm.h — the CPU convolution's own SGEMM (Sources/OpalCPU/Conv.swift), AVX-512 only.
//
//   C[m, n] (+)= bias[m] + Σ_k A[m, k] · B[k, n]
//
// A (the weights) is packed once per convolution into panels of OPAL_PACKED_ROWS rows and reused by every
// batch chunk and worker; OpenBLAS repacked it for every GEMM call. B and C are "blocked" matrices, so that
// one GEMM spans a whole batch chunk of NCHW planes without a gather or scatter pass: column c of a blocked
// matrix lives in block c / blockWidth (one batch element), at offset c % blockWidth inside its row.
// Per tile of OPAL_PACKED_COLUMNS columns, B's rows are copied into a contiguous panel (`scratch`); a 12×32
// register block of C (24 zmm accumulators, one broadcast of A and two loads of B per k) runs over the whole
// depth, then is stored through the blocked layout (adding bias or the existing C). On the EPYC we measured
// (2 cores, AVX-512) it reached 213 GFLOP/s per core at 128×224×1024 where OpenBLAS's SkylakeX SGEMM, which
// also packs A, reached 188–203. A last panel of fewer rows runs a 4- or 8-row block (M = 64: 5 panels of 12
// and one of 4, not 72 rows).
// Three drivers serve the convolution's implicit GEMMs (gather.h's `opal_conv_columns`, no column matrix):
// `opal_packed_conv_gemm` packs B from the phase planes (forward), `opal_packed_conv_gemm_adjoint` sums
// each block of the product into them (backward data: col2im without the matrix), and
// `opal_packed_conv_gemm_weight` packs colᵀ from them (backward weight).
#ifndef OPAL_PACKED_GEMM_H
#define OPAL_PACKED_GEMM_H
#include "gather.h"
#ifdef __cplusplus
extern "C" {
#endif

/// The register block: rows of A per packed panel, columns of B per tile.
#define OPAL_PACKED_ROWS 12
#define OPAL_PACKED_COLUMNS 32

/// A matrix whose element (r, c) is base[(c / blockWidth) · blockStride + r · rowStride + c % blockWidth].
/// A plain row-major matrix has blockWidth = its column count (blockStride is then never used); NCHW planes
/// of several batch elements side by side have blockWidth = H·W, rowStride = H·W, blockStride = C·H·W.
typedef struct {
    float *base;
    long rowStride, blockWidth, blockStride;
} opal_blocked_matrix;

/// 1 where the packed GEMM runs (AVX-512 and `opal_gather_level()` 2, so that tests that cap the gather
/// level run the OpenBLAS path too), else 0.
int opal_packed_gemm_available(void);

/// Floats of an m×k A once packed (m rounded up to whole panels).
long opal_packed_a_count(long m, long k);

/// Packs panels panelBegin ..< panelEnd of A, whose element (i, j) is a[i · rowStride + j · columnStride]
/// (so Aᵀ packs with the strides swapped), into packed (laid out for all panels: panel p starts at
/// p · OPAL_PACKED_ROWS · k): packed[(p · k + j) · OPAL_PACKED_ROWS + r] = A[p · OPAL_PACKED_ROWS + r, j],
/// zero for rows past m.
void opal_pack_a(const float *a, long rowStride, long columnStride, long m, long k, long panelBegin,
                 long panelEnd, float *packed);

/// C (+)= A · B over the column tiles tileBegin ..< tileEnd (tile t covers columns t·32 ..< min(t·32 + 32, n);
/// splitting the tiles between threads splits the work). `packedA` comes from `opal_pack_a` (all panels);
/// `bias` (m floats) is added to each row, or NULL; `accumulate` adds C's current values instead of
/// overwriting them. `scratch` holds k · OPAL_PACKED_COLUMNS floats (one per thread). Returns 0 where the
/// packed GEMM is not available (nothing written), else 1.
int opal_packed_gemm(long m, long n, long k, const float *packedA, opal_blocked_matrix b, opal_blocked_matrix c,
                     const float *bias, int accumulate, long tileBegin, long tileEnd, float *scratch);

/// `opal_packed_gemm` with B the implicit im2col columns of a contiguous convolution (`opal_conv_columns`:
/// k = C·kH·kW rows, n = elements·P columns), packed straight from the phase planes: no column matrix.
int opal_packed_conv_gemm(long m, long n, long k, const float *packedA, const opal_conv_columns *b,
                          opal_blocked_matrix c, const float *bias, int accumulate, long tileBegin, long tileEnd,
                          float *scratch);

/// The adjoint GEMM of a convolution's backward data pass: the product A · B (A = W_gᵀ packed, B blocked: dy)
/// is the column matrix, and each of its blocks is summed into the phase planes of `c` (col2im, without the
/// matrix) instead of being stored. Columns of one batch element must stay with one thread (their sums meet).
int opal_packed_conv_gemm_adjoint(long m, long n, long k, const float *packedA, opal_blocked_matrix b,
                                  const opal_conv_columns *c, long tileBegin, long tileEnd, float *scratch);

/// Batch elements per depth block of `opal_packed_conv_gemm_weight` (about 256 positions: the B panel,
/// depth × 32 floats, stays in L1), and the scratch it needs: `packedA` m rounded up to whole panels × depth,
/// `panel` depth × 32 floats, depth = elements per block × P.
long opal_conv_weight_block(long positions);

/// The backward weight GEMM of a contiguous convolution, for one group over `elements` batch elements:
///   C[m, n] (+)= Σ_{j, t} A[m, j·P + t] · col[n, j·P + t]
/// with A = dy (A[i, j·P + t] = a[j·elementStride + i·P + t]: the group's channels of each element) and
/// col = the implicit columns `b` (n = Cg·kH·kW rows), transposed while packed. C is row-major (row length
/// ldc); `accumulate` adds to it (else the first depth block overwrites it). Depth runs in blocks of whole
/// elements (`opal_conv_weight_block`), each with A packed once and reused by every 32-row tile of col.
int opal_packed_conv_gemm_weight(long m, long n, const float *a, long positions, long elementStride,
                                 const opal_conv_columns *b, long elements, float *c, long ldc, int accumulate,
                                 float *packedA, float *panel);

#ifdef __cplusplus
}
#endif
#endif
