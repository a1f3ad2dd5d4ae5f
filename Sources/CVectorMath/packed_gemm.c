// packed_gemm.c — see include/packed_gemm.h.
//
//   for each column tile t (32 columns of B and C):
//       pack:   P[k][0 ..< 32] = B[k, t·32 ..< t·32 + 32]  (zero past n), for every k
//       for each panel p of A (12 rows, packed once per convolution):
//           acc[12][32] = Σ_k Ap[k][0 ..< 12] ⊗ P[k][0 ..< 32]    (24 zmm accumulators)
//           C[p·12 + r, t·32 + c] = acc[r][c] + bias[p·12 + r] (+ C's value), rows < m, columns < n
// The references it is tested against are the Double loops of Conv.swift and PackedGemmTests, and OpenBLAS
// (the same convolutions under `CPUBackend.convolutionEngine = .openBLAS`) (Tests/OpalCPUTests/ConvTests.swift).
#include "packed_gemm.h"

#define ROWS OPAL_PACKED_ROWS
#define COLUMNS OPAL_PACKED_COLUMNS

long opal_packed_a_count(long m, long k) { return (m + ROWS - 1) / ROWS * ROWS * k; }

void opal_pack_a(const float *a, long rowStride, long columnStride, long m, long k, long panelBegin,
                 long panelEnd, float *packed) {
    for (long p = panelBegin; p < panelEnd; p++) {
        float *panel = packed + p * ROWS * k;
        const long rows = m - p * ROWS < ROWS ? m - p * ROWS : ROWS;
        for (long j = 0; j < k; j++) {
            const float *source = a + p * ROWS * rowStride + j * columnStride;
            float *target = panel + j * ROWS;
            long r = 0;
            for (; r < rows; r++) target[r] = source[r * rowStride];
            for (; r < ROWS; r++) target[r] = 0;
        }
    }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

// One contiguous run of a tile's columns inside a blocked matrix's row: `length` columns starting at
// `offset` (relative to the row's start: block · blockStride + column in block), landing at `column` of the tile.
typedef struct { long offset, column, length; } segment;

// Splits the columns first ..< first + count of a blocked matrix into runs that stay inside one block.
static int segments_of(opal_blocked_matrix matrix, long first, long count, segment *runs) {
    int found = 0;
    for (long c = first; c < first + count;) {
        const long block = c / matrix.blockWidth, inside = c % matrix.blockWidth;
        long length = matrix.blockWidth - inside;
        if (length > first + count - c) length = first + count - c;
        runs[found++] = (segment){ block * matrix.blockStride + inside, c - first, length };
        c += length;
    }
    return found;
}

int opal_packed_gemm_available(void) { return opal_gather_level() == 2; }

static inline __attribute__((always_inline)) __mmask16 first_lanes(long count) {
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
}

// acc = Ap (the first `rows` of a 12-row packed panel, × k) · P (k × 32, packed), written to tile[rows][32].
// `rows` is a constant in each caller below, so the loops unroll into registers.
static inline __attribute__((always_inline, target("avx512f"))) void block_rows(const int rows, long k,
                                                                                 const float *a, const float *b,
                                                                                 float *tile) {
    __m512 c[ROWS][2];
    for (int r = 0; r < rows; r++) { c[r][0] = _mm512_setzero_ps(); c[r][1] = _mm512_setzero_ps(); }
    for (long j = 0; j < k; j++) {
        const __m512 b0 = _mm512_loadu_ps(b + j * COLUMNS), b1 = _mm512_loadu_ps(b + j * COLUMNS + 16);
#pragma clang loop unroll(full)
        for (int r = 0; r < rows; r++) {
            const __m512 value = _mm512_set1_ps(a[j * ROWS + r]);
            c[r][0] = _mm512_fmadd_ps(value, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(value, b1, c[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(tile + r * COLUMNS, c[r][0]);
        _mm512_storeu_ps(tile + r * COLUMNS + 16, c[r][1]);
    }
}

__attribute__((target("avx512f"))) static void block_12x32(long k, const float *a, const float *b, float *tile) {
    block_rows(12, k, a, b, tile);
}
__attribute__((target("avx512f"))) static void block_8x32(long k, const float *a, const float *b, float *tile) {
    block_rows(8, k, a, b, tile);
}
__attribute__((target("avx512f"))) static void block_4x32(long k, const float *a, const float *b, float *tile) {
    block_rows(4, k, a, b, tile);
}

// The block for a panel with `rows` rows of A (the last panel of an m that is not a multiple of 12 computes
// only the rows it has, in steps of 4: M = 64 is 5 panels of 12 and one of 4, not 72 rows).
__attribute__((target("avx512f"))) static void panel_block(long rows, long k, const float *a, const float *b, float *tile) {
    if (rows > 8) block_12x32(k, a, b, tile);
    else if (rows > 4) block_8x32(k, a, b, tile);
    else block_4x32(k, a, b, tile);
}

// P[j][0 ..< 32] = B[j, first ..< first + count] with zeros past count: per row, one merge-masked load per
// run and half tile puts the run at its lanes, and two plain stores write the row.
__attribute__((target("avx512f"))) static void pack_b(opal_blocked_matrix b, long k, const segment *runs,
                                                      int runCount, float *panel) {
    unsigned lanes[COLUMNS];
    for (int s = 0; s < runCount; s++) lanes[s] = (unsigned)(((1ull << runs[s].length) - 1) << runs[s].column);
    for (long j = 0; j < k; j++) {
        const float *row = b.base + j * b.rowStride;
        __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
        for (int s = 0; s < runCount; s++) {
            // Addressed from the tile's lane 0: lane column + i reads row[offset + i].
            const float *source = row + runs[s].offset - runs[s].column;
            low = _mm512_mask_loadu_ps(low, (__mmask16)(lanes[s] & 0xFFFF), source);
            high = _mm512_mask_loadu_ps(high, (__mmask16)(lanes[s] >> 16), source + 16);
        }
        _mm512_storeu_ps(panel + j * COLUMNS, low);
        _mm512_storeu_ps(panel + j * COLUMNS + 16, high);
    }
}

// C[row0 + r, columns of runs] = tile[r][…] + bias (+ C), for r < rows.
__attribute__((target("avx512f"))) static void store_c(opal_blocked_matrix c, long row0, long rows,
                                                       const segment *runs, int runCount, const float *tile,
                                                       const float *bias, int accumulate) {
    for (long r = 0; r < rows; r++) {
        float *row = c.base + (row0 + r) * c.rowStride;
        const __m512 offset = _mm512_set1_ps(bias ? bias[row0 + r] : 0.0f);
        for (int s = 0; s < runCount; s++) {
            for (long i = 0; i < runs[s].length; i += 16) {
                const __mmask16 mask = first_lanes(runs[s].length - i);
                float *target = row + runs[s].offset + i;
                __m512 value = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, tile + r * COLUMNS + runs[s].column + i),
                                             offset);
                if (accumulate) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, target));
                _mm512_mask_storeu_ps(target, mask, value);
            }
        }
    }
}

// The loop of the header's algorithm box: B packed from a blocked matrix or from implicit columns, C stored
// through a blocked matrix or (`sums`, the adjoint) each block of it summed into implicit columns' phases.
static int packed_gemm(long m, long n, long k, const float *packedA, const opal_blocked_matrix *b,
                       const opal_conv_columns *columns, opal_blocked_matrix c, const opal_conv_columns *sums,
                       const float *bias, int accumulate, long tileBegin, long tileEnd, float *scratch) {
    if (!opal_packed_gemm_available()) return 0;
    segment bRuns[COLUMNS], cRuns[COLUMNS];
    float tile[ROWS * COLUMNS] __attribute__((aligned(64)));
    opal_conv_tile columnTile;
    const long panels = (m + ROWS - 1) / ROWS;
    for (long t = tileBegin; t < tileEnd; t++) {
        const long first = t * COLUMNS, count = n - first < COLUMNS ? n - first : COLUMNS;
        if (count <= 0) break;
        const int cRunCount = sums ? 0 : segments_of(c, first, count, cRuns);
        if (b) {
            pack_b(*b, k, bRuns, segments_of(*b, first, count, bRuns), scratch);
        } else {
            opal_conv_tile_make(columns, first, count, &columnTile);
            opal_conv_pack_columns(columns, &columnTile, k, scratch);
        }
        if (sums) opal_conv_tile_make(sums, first, count, &columnTile);
        for (long p = 0; p < panels; p++) {
            const long rows = m - p * ROWS < ROWS ? m - p * ROWS : ROWS;
            panel_block(rows, k, packedA + p * ROWS * k, scratch, tile);
            if (sums) opal_conv_add_columns(sums, &columnTile, p * ROWS, rows, tile);
            else store_c(c, p * ROWS, rows, cRuns, cRunCount, tile, bias, accumulate);
        }
    }
    return 1;
}

int opal_packed_gemm(long m, long n, long k, const float *packedA, opal_blocked_matrix b, opal_blocked_matrix c,
                     const float *bias, int accumulate, long tileBegin, long tileEnd, float *scratch) {
    return packed_gemm(m, n, k, packedA, &b, 0, c, 0, bias, accumulate, tileBegin, tileEnd, scratch);
}

int opal_packed_conv_gemm(long m, long n, long k, const float *packedA, const opal_conv_columns *b,
                          opal_blocked_matrix c, const float *bias, int accumulate, long tileBegin, long tileEnd,
                          float *scratch) {
    if (!opal_conv_windows_implicit(b->windows)) return 0;
    return packed_gemm(m, n, k, packedA, 0, b, c, 0, bias, accumulate, tileBegin, tileEnd, scratch);
}

int opal_packed_conv_gemm_adjoint(long m, long n, long k, const float *packedA, opal_blocked_matrix b,
                                  const opal_conv_columns *c, long tileBegin, long tileEnd, float *scratch) {
    if (!opal_conv_windows_implicit(c->windows)) return 0;
    const opal_blocked_matrix unused = { 0, 0, 1, 0 };
    return packed_gemm(m, n, k, packedA, &b, 0, unused, c, 0, 0, tileBegin, tileEnd, scratch);
}

long opal_conv_weight_block(long positions) { return positions < 256 ? 256 / positions : 1; }

int opal_packed_conv_gemm_weight(long m, long n, const float *a, long positions, long elementStride,
                                 const opal_conv_columns *b, long elements, float *c, long ldc, int accumulate,
                                 float *packedA, float *panel) {
    if (!opal_packed_gemm_available() || !opal_conv_windows_implicit(b->windows)) return 0;
    float tile[ROWS * COLUMNS] __attribute__((aligned(64)));
    const long panels = (m + ROWS - 1) / ROWS, block = opal_conv_weight_block(positions);
    const opal_blocked_matrix target = { c, ldc, ldc > 0 ? ldc : 1, 0 };
    for (long e0 = 0; e0 < elements; e0 += block) {
        const long count = elements - e0 < block ? elements - e0 : block, depth = count * positions;
        // packedA[(p · depth + j·P + t) · 12 + r] = A[p·12 + r, j·P + t] (0 past m)
        for (long p = 0; p < panels; p++) {
            float *out = packedA + p * ROWS * depth;
            const long rows = m - p * ROWS < ROWS ? m - p * ROWS : ROWS;
            for (long j = 0; j < count; j++) {
                const float *source = a + (e0 + j) * elementStride + p * ROWS * positions;
                for (long t = 0; t < positions; t++) {
                    float *row = out + (j * positions + t) * ROWS;
                    long r = 0;
                    for (; r < rows; r++) row[r] = source[r * positions + t];
                    for (; r < ROWS; r++) row[r] = 0;
                }
            }
        }
        for (long t = 0; t * COLUMNS < n; t++) {
            const long first = t * COLUMNS, width = n - first < COLUMNS ? n - first : COLUMNS;
            opal_conv_pack_columns_transposed(b, n, first, e0, count, panel);
            const segment run = { first, 0, width };
            for (long p = 0; p < panels; p++) {
                const long rows = m - p * ROWS < ROWS ? m - p * ROWS : ROWS;
                panel_block(rows, depth, packedA + p * ROWS * depth, panel, tile);
                store_c(target, p * ROWS, rows, &run, 1, tile, 0, accumulate || e0 > 0);
            }
        }
    }
    return 1;
}
#else
long opal_conv_weight_block(long positions) { return positions < 256 ? 256 / positions : 1; }
int opal_packed_conv_gemm_weight(long m, long n, const float *a, long positions, long elementStride,
                                 const opal_conv_columns *b, long elements, float *c, long ldc, int accumulate,
                                 float *packedA, float *panel) {
    (void)m; (void)n; (void)a; (void)positions; (void)elementStride; (void)b; (void)elements; (void)c; (void)ldc;
    (void)accumulate; (void)packedA; (void)panel;
    return 0;
}
int opal_packed_gemm_available(void) { return 0; }
int opal_packed_gemm(long m, long n, long k, const float *packedA, opal_blocked_matrix b, opal_blocked_matrix c,
                     const float *bias, int accumulate, long tileBegin, long tileEnd, float *scratch) {
    (void)m; (void)n; (void)k; (void)packedA; (void)b; (void)c; (void)bias; (void)accumulate;
    (void)tileBegin; (void)tileEnd; (void)scratch;
    return 0;
}
int opal_packed_conv_gemm(long m, long n, long k, const float *packedA, const opal_conv_columns *b,
                          opal_blocked_matrix c, const float *bias, int accumulate, long tileBegin, long tileEnd,
                          float *scratch) {
    (void)m; (void)n; (void)k; (void)packedA; (void)b; (void)c; (void)bias; (void)accumulate;
    (void)tileBegin; (void)tileEnd; (void)scratch;
    return 0;
}
int opal_packed_conv_gemm_adjoint(long m, long n, long k, const float *packedA, opal_blocked_matrix b,
                                  const opal_conv_columns *c, long tileBegin, long tileEnd, float *scratch) {
    (void)m; (void)n; (void)k; (void)packedA; (void)b; (void)c; (void)tileBegin; (void)tileEnd; (void)scratch;
    return 0;
}
#endif
