// attention.cl — fused scaled-dot-product attention, forward and backward, FlashAttention style (fp32,
// OpenCL C 1.2). The [Nq, Nk] score matrix is never stored: scores are recomputed tile by tile.
//
// Contract (AttentionBackend in Sources/OpalCore/Backend+Attention.swift; CPU reference in
// Sources/OpalCPU; Double reference in Tests/OpalOpenCLTests/AttentionKernelTests.swift).
//   Q, O, dO, dQ: [B·H, Nq, D];  K, V, dK, dV: [B·H, Nk, D];  L, Δ: [B·H, Nq];  mask: int [B, Nk] (0 = padding).
//   Key j is visible to query i when mask[b, j] ≠ 0 and, if causal, j ≤ i + (Nk − Nq).
//   attention_forward        per row i, over the visible j, tile by tile with an online softmax:
//                              s_j = scale·q_i·k_j;  m' = max(m, max_j s_j);  c = exp(m − m')
//                              ℓ ← c·ℓ + Σ_j exp(s_j − m');  acc ← c·acc + Σ_j exp(s_j − m')·v_j;  m ← m'
//                            O_i = acc / ℓ,  L_i = m + log ℓ;  a row with no visible key: O_i = 0, L_i = +∞.
//   attention_delta          Δ_i = Σ_d dO_id·O_id
//   attention_backward_kv    per key j, over the queries i that see it (P_ij = exp(scale·q_i·k_j − L_i)):
//                              dV_j = Σ_i P_ij·dO_i;  dK_j = scale·Σ_i P_ij·(dO_i·v_j − Δ_i)·q_i
//   attention_backward_q     per query i, over its visible keys:  dQ_i = scale·Σ_j P_ij·(dO_i·v_j − Δ_i)·k_j
//   Every output element has exactly one writer, so the backward pass needs no atomics and is deterministic.
//
// Launch geometry: each work-item owns R = ATTN_ROWS consecutive query rows (attention_forward,
// attention_backward_q) or R = ATTN_KEY_ROWS consecutive key rows (attention_backward_kv); a group of G
// work-items owns G·R rows. global = (⌈rows/(G·R)⌉·G, B·H), local = (G, 1): group (t, p) takes rows t·G·R… of
// problem p = b·H + h. A work-item keeps its R rows' operands and accumulators in private memory (a register
// tile: every value loaded from a tile is used R times) and the group walks the other operand in tiles of
// T = ATTN_KEY_TILE (ATTN_GRAD_KEY_TILE, ATTN_QUERY_TILE) rows staged in local memory. The loop bounds are
// uniform across the group (forward and dQ stop after the last key the group's last row can see under the
// causal mask; dK/dV start at the first query that can see the group's first key); the per-row causal and
// key-mask cut is an arithmetic select inside the tile, never a branch. Scores run along the tile in
// ATTN_VW-wide vectors, from an operand staged transposed ([D][T]); accumulations run along D in ATTN_VW-wide
// vectors, from an operand staged as is, its rows padded with zeros to D' = ⌈D / ATTN_VW⌉·ATTN_VW. CPU devices
// (PoCL) get wide vectors and R > 1, GPUs R = 1 (one row per thread). attention_delta: 1-D, one work-item per
// row of the B·H·Nq rows. Items past the end compute on zeros and store nothing, but reach every barrier.

#ifndef HEAD_DIM
#define HEAD_DIM 64           // D: the host compiles one program per head dimension (1…128)
#endif
#ifndef ATTN_VW
#define ATTN_VW 4             // vector width along tiles and D: 4, 8 or 16
#endif
#ifndef ATTN_ROWS
#define ATTN_ROWS 1           // query rows per work-item in attention_forward and attention_backward_q
#endif
#ifndef ATTN_KEY_ROWS
#define ATTN_KEY_ROWS 1       // key rows per work-item in attention_backward_kv
#endif
#ifndef ATTN_KEY_TILE
#define ATTN_KEY_TILE 32      // keys per local-memory tile in attention_forward (a multiple of ATTN_VW)
#endif
#ifndef ATTN_GRAD_KEY_TILE
#define ATTN_GRAD_KEY_TILE 32 // keys per local-memory tile in attention_backward_q (a multiple of ATTN_VW)
#endif
#ifndef ATTN_QUERY_TILE
#define ATTN_QUERY_TILE 32    // queries per local-memory tile in attention_backward_kv (a multiple of ATTN_VW)
#endif

#define ATTN_CONCAT2(a, b) a##b
#define ATTN_CONCAT(a, b) ATTN_CONCAT2(a, b)
#define floatV ATTN_CONCAT(float, ATTN_VW)
#define intV ATTN_CONCAT(int, ATTN_VW)
#define vloadV ATTN_CONCAT(vload, ATTN_VW)
#define ATTN_DV ((HEAD_DIM + ATTN_VW - 1) / ATTN_VW)   // vectors per padded row
#define ATTN_DP (ATTN_DV * ATTN_VW)                    // D' = the padded row length
#if ATTN_VW == 4
#define ATTN_LANES ((int4)(0, 1, 2, 3))
#elif ATTN_VW == 8
#define ATTN_LANES ((int8)(0, 1, 2, 3, 4, 5, 6, 7))
#elif ATTN_VW == 16
#define ATTN_LANES ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#else
#error "ATTN_VW must be 4, 8 or 16"
#endif

// Horizontal max and sum of a vector, lane by lane (no half-vector shuffles: oclgrind 21.10's
// --uninitialized crashes on the undefined shuffle lanes LLVM makes of those).
inline float opal_attention_hmax(floatV x) {
    const float* lanes = (const float*)&x;
    float result = lanes[0];
    for (int lane = 1; lane < ATTN_VW; ++lane) result = fmax(result, lanes[lane]);
    return result;
}

inline float opal_attention_hsum(floatV x) {
    const float* lanes = (const float*)&x;
    float result = lanes[0];
    for (int lane = 1; lane < ATTN_VW; ++lane) result += lanes[lane];
    return result;
}

// Copies rows [first, first + T) of a [rows, HEAD_DIM] matrix into tile[T·D'], zeros past the end and in the
// padding columns.
inline void opal_attention_load_tile(__local float* tile, const __global float* matrix, const int first,
                                     const int rows, const int T) {
#if ATTN_DP == HEAD_DIM   // no padding: one contiguous run of floats
    const int start = first * HEAD_DIM, end = rows * HEAD_DIM;
    for (int e = get_local_id(0); e < T * HEAD_DIM; e += get_local_size(0)) {
        tile[e] = start + e < end ? matrix[start + e] : 0.0f;
    }
#else
    for (int e = get_local_id(0); e < T * ATTN_DP; e += get_local_size(0)) {
        const int t = e / ATTN_DP, d = e - t * ATTN_DP;
        tile[e] = first + t < rows && d < HEAD_DIM ? matrix[(first + t) * HEAD_DIM + d] : 0.0f;
    }
#endif
}

// The same rows transposed, unpadded: tile[d·T + t] = matrix[first + t, d], zeros past the end.
inline void opal_attention_load_transposed(__local float* tile, const __global float* matrix, const int first,
                                           const int rows, const int T) {
    const int start = first * HEAD_DIM, end = rows * HEAD_DIM;
    for (int e = get_local_id(0); e < T * HEAD_DIM; e += get_local_size(0)) {
        const int t = e / HEAD_DIM, d = e - t * HEAD_DIM;
        tile[d * T + t] = start + e < end ? matrix[start + e] : 0.0f;
    }
}

// The indices of the keys [first, first + T): key[t] = first + t where the key mask lets it be attended,
// INT_MAX where it does not or past the end (so `key ≤ limit` is the whole visibility test).
inline void opal_attention_load_keys(__local int* key_index, const __global int* mask, const int has_mask,
                                     const int first, const int keys, const int T) {
    for (int t = get_local_id(0); t < T; t += get_local_size(0)) {
        const int j = first + t;
        key_index[t] = j < keys && (!has_mask || mask[j] != 0) ? j : INT_MAX;
    }
}

// s[r][·] = Σ_d x[r][d]·tile[d][·] for the R rows of x (private, [R][D']) against a transposed tile [D][T].
#define OPAL_ATTENTION_SCORES(s, x, tile, R, T)                                                 \
    for (int r = 0; r < R; ++r)                                                                 \
        for (int tv = 0; tv < (T) / ATTN_VW; ++tv) s[r][tv] = (floatV)(0.0f);                   \
    for (int d = 0; d < HEAD_DIM; ++d) {                                                        \
        floatV column[(T) / ATTN_VW];                                                           \
        _Pragma("unroll") for (int tv = 0; tv < (T) / ATTN_VW; ++tv)                            \
            column[tv] = vloadV(tv, tile + d * (T));                                            \
        _Pragma("unroll") for (int r = 0; r < R; ++r) {                                         \
            const floatV xd = (floatV)(x[r][d]);                                                \
            _Pragma("unroll") for (int tv = 0; tv < (T) / ATTN_VW; ++tv)                        \
                s[r][tv] = fma(xd, column[tv], s[r][tv]);                                       \
        }                                                                                       \
    }

// acc[r][·] += Σ_t w[r][t]·tile[t][·] for the R rows of weights w (private, [R][T/VW] vectors) and a tile
// [T][D'] as is.
#define OPAL_ATTENTION_ACCUMULATE(acc, w, tile, R, T)                                           \
    for (int c = 0; c < ATTN_DV; ++c) {                                                         \
        floatV sum[R];                                                                          \
        _Pragma("unroll") for (int r = 0; r < R; ++r) sum[r] = acc[r][c];                       \
        for (int tv = 0; tv < (T) / ATTN_VW; ++tv)                                              \
            for (int lane = 0; lane < ATTN_VW; ++lane) {                                        \
                const floatV row = vloadV(c, tile + (tv * ATTN_VW + lane) * ATTN_DP);           \
                _Pragma("unroll") for (int r = 0; r < R; ++r)                                   \
                    sum[r] = fma((floatV)(((const float*)&w[r][tv])[lane]), row, sum[r]);       \
            }                                                                                   \
        _Pragma("unroll") for (int r = 0; r < R; ++r) acc[r][c] = sum[r];                       \
    }

__kernel void attention_forward(const __global float* query, const __global float* key,
                                const __global float* value, const __global int* key_mask,
                                __global float* output, __global float* log_sum_exp,
                                const int heads, const int queries, const int keys, const int causal,
                                const int has_mask, const float scale) {
    __local float kt_tile[HEAD_DIM * ATTN_KEY_TILE];    // Kᵀ tile: [D][T]
    __local float v_tile[ATTN_KEY_TILE * ATTN_DP];      // V tile: [T][D']
    __local int key_index[ATTN_KEY_TILE];
    const int problem = get_group_id(1);
    const int group_rows = (int)get_local_size(0) * ATTN_ROWS;
    const int first = get_group_id(0) * group_rows;
    const int i0 = first + get_local_id(0) * ATTN_ROWS;  // this item's rows: i0 … i0 + R − 1
    const int offset = keys - queries;
    const __global float* k = key + (long)problem * keys * HEAD_DIM;
    const __global float* v = value + (long)problem * keys * HEAD_DIM;
    const __global int* mask = key_mask + (long)(problem / heads) * keys;

    float q[ATTN_ROWS][ATTN_DP];
    floatV acc[ATTN_ROWS][ATTN_DV];
    float m[ATTN_ROWS], l[ATTN_ROWS];
    int limit[ATTN_ROWS];                                // the last key row i may see
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int i = i0 + r;
        const __global float* qi = query + ((long)problem * queries + i) * HEAD_DIM;
        for (int d = 0; d < ATTN_DP; ++d) q[r][d] = i < queries && d < HEAD_DIM ? scale * qi[d] : 0.0f;
        for (int dv = 0; dv < ATTN_DV; ++dv) acc[r][dv] = (floatV)(0.0f);
        m[r] = -INFINITY;
        l[r] = 0.0f;
        limit[r] = causal ? min(keys - 1, i + offset) : keys - 1;
    }
    // The keys the whole group needs (uniform).
    const int group_end = causal ? min(keys, first + group_rows + offset) : keys;

    for (int k0 = 0; k0 < group_end; k0 += ATTN_KEY_TILE) {
        opal_attention_load_transposed(kt_tile, k, k0, keys, ATTN_KEY_TILE);
        opal_attention_load_tile(v_tile, v, k0, keys, ATTN_KEY_TILE);
        opal_attention_load_keys(key_index, mask, has_mask, k0, keys, ATTN_KEY_TILE);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 <= limit[ATTN_ROWS - 1]) {   // else the tile is past all that this item's rows can see
            floatV s[ATTN_ROWS][ATTN_KEY_TILE / ATTN_VW];
            OPAL_ATTENTION_SCORES(s, q, kt_tile, ATTN_ROWS, ATTN_KEY_TILE)
            for (int r = 0; r < ATTN_ROWS; ++r) {
                floatV tile_max = (floatV)(-INFINITY);
                for (int tv = 0; tv < ATTN_KEY_TILE / ATTN_VW; ++tv) {
                    const intV seen = vloadV(tv, key_index) <= (intV)(limit[r]);
                    s[r][tv] = select((floatV)(-INFINITY), s[r][tv], seen);
                    tile_max = fmax(tile_max, s[r][tv]);
                }
                const float m_new = fmax(m[r], opal_attention_hmax(tile_max));
                // Still no visible key: m' = −∞, so subtract 0 instead (then P̃ = 0 and c = 0, nothing changes).
                const float base = m_new == -INFINITY ? 0.0f : m_new;
                const float correction = exp(m[r] - base);  // 0 on the first visible tile (m = −∞)
                floatV tile_sum = (floatV)(0.0f);
                for (int tv = 0; tv < ATTN_KEY_TILE / ATTN_VW; ++tv) {
                    s[r][tv] = exp(s[r][tv] - (floatV)(base));   // P̃, 0 where hidden
                    tile_sum += s[r][tv];
                }
                l[r] = fma(l[r], correction, opal_attention_hsum(tile_sum));
                for (int dv = 0; dv < ATTN_DV; ++dv) acc[r][dv] *= correction;
                m[r] = m_new;
            }
            OPAL_ATTENTION_ACCUMULATE(acc, s, v_tile, ATTN_ROWS, ATTN_KEY_TILE)
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int i = i0 + r;
        if (i >= queries) break;
        const long row = (long)problem * queries + i;
        const float inverse = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < HEAD_DIM; ++d) {
            output[row * HEAD_DIM + d] = ((const float*)&acc[r][d / ATTN_VW])[d - d / ATTN_VW * ATTN_VW] * inverse;
        }
        log_sum_exp[row] = l[r] > 0.0f ? m[r] + log(l[r]) : INFINITY;
    }
}

__kernel void attention_delta(const __global float* output, const __global float* grad_output,
                              __global float* delta, const int rows) {
    const int i = get_global_id(0);
    if (i >= rows) return;
    const __global float* o = output + (long)i * HEAD_DIM;
    const __global float* g = grad_output + (long)i * HEAD_DIM;
    float sum = 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d) sum = fma(o[d], g[d], sum);
    delta[i] = sum;
}

__kernel void attention_backward_kv(const __global float* query, const __global float* key,
                                    const __global float* value, const __global int* key_mask,
                                    const __global float* log_sum_exp, const __global float* delta,
                                    const __global float* grad_output, __global float* grad_key,
                                    __global float* grad_value, const int heads, const int queries, const int keys,
                                    const int causal, const int has_mask, const float scale) {
    __local float qt_tile[HEAD_DIM * ATTN_QUERY_TILE];   // Qᵀ tile: [D][T]
    __local float q_tile[ATTN_QUERY_TILE * ATTN_DP];     // Q tile: [T][D']
    __local float gt_tile[HEAD_DIM * ATTN_QUERY_TILE];   // dOᵀ tile
    __local float g_tile[ATTN_QUERY_TILE * ATTN_DP];     // dO tile
    __local float l_tile[ATTN_QUERY_TILE];
    __local float delta_tile[ATTN_QUERY_TILE];
    const int problem = get_group_id(1);
    const int group_rows = (int)get_local_size(0) * ATTN_KEY_ROWS;
    const int first = get_group_id(0) * group_rows;
    const int j0 = first + get_local_id(0) * ATTN_KEY_ROWS;   // this item's keys: j0 … j0 + R − 1
    const int offset = keys - queries;
    const __global float* q = query + (long)problem * queries * HEAD_DIM;
    const __global float* g = grad_output + (long)problem * queries * HEAD_DIM;
    const __global float* lse = log_sum_exp + (long)problem * queries;
    const __global float* dlt = delta + (long)problem * queries;

    float kj[ATTN_KEY_ROWS][ATTN_DP], vj[ATTN_KEY_ROWS][ATTN_DP];
    floatV dk[ATTN_KEY_ROWS][ATTN_DV], dv[ATTN_KEY_ROWS][ATTN_DV];
    int begin[ATTN_KEY_ROWS];   // the first query that sees key j; INT_MAX for a masked key or one past the end
    int item_begin = INT_MAX;   // the first query that sees any of this item's keys
    for (int r = 0; r < ATTN_KEY_ROWS; ++r) {
        const int j = j0 + r;
        const bool active = j < keys && (!has_mask || key_mask[(long)(problem / heads) * keys + j] != 0);
        const __global float* kr = key + ((long)problem * keys + j) * HEAD_DIM;
        const __global float* vr = value + ((long)problem * keys + j) * HEAD_DIM;
        for (int d = 0; d < ATTN_DP; ++d) {
            kj[r][d] = active && d < HEAD_DIM ? scale * kr[d] : 0.0f;
            vj[r][d] = active && d < HEAD_DIM ? vr[d] : 0.0f;
        }
        for (int e = 0; e < ATTN_DV; ++e) { dk[r][e] = (floatV)(0.0f); dv[r][e] = (floatV)(0.0f); }
        begin[r] = !active ? INT_MAX : causal ? j - offset : 0;
        item_begin = min(item_begin, begin[r]);
    }
    // Query i sees key j when i ≥ j − offset: the first query that sees the group's first key (uniform).
    const int group_begin = causal ? max(0, first - offset) : 0;

    for (int q0 = group_begin; q0 < queries; q0 += ATTN_QUERY_TILE) {
        opal_attention_load_transposed(qt_tile, q, q0, queries, ATTN_QUERY_TILE);
        opal_attention_load_tile(q_tile, q, q0, queries, ATTN_QUERY_TILE);
        opal_attention_load_transposed(gt_tile, g, q0, queries, ATTN_QUERY_TILE);
        opal_attention_load_tile(g_tile, g, q0, queries, ATTN_QUERY_TILE);
        for (int t = get_local_id(0); t < ATTN_QUERY_TILE; t += get_local_size(0)) {
            l_tile[t] = q0 + t < queries ? lse[q0 + t] : INFINITY;
            delta_tile[t] = q0 + t < queries ? dlt[q0 + t] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (q0 + ATTN_QUERY_TILE > item_begin) {   // else no query of the tile sees this item's keys
            floatV p[ATTN_KEY_ROWS][ATTN_QUERY_TILE / ATTN_VW], ds[ATTN_KEY_ROWS][ATTN_QUERY_TILE / ATTN_VW];
            OPAL_ATTENTION_SCORES(p, kj, qt_tile, ATTN_KEY_ROWS, ATTN_QUERY_TILE)   // k_j·Qᵀ (kj carries the scale)
            OPAL_ATTENTION_SCORES(ds, vj, gt_tile, ATTN_KEY_ROWS, ATTN_QUERY_TILE)  // v_j·dOᵀ
            for (int r = 0; r < ATTN_KEY_ROWS; ++r) {
                for (int tv = 0; tv < ATTN_QUERY_TILE / ATTN_VW; ++tv) {
                    const intV sees = (intV)(q0 + tv * ATTN_VW) + ATTN_LANES >= (intV)(begin[r]);
                    // L = +∞ past the end and for rows with no visible key: P = 0 there.
                    p[r][tv] = select((floatV)(0.0f), exp(p[r][tv] - vloadV(tv, l_tile)), sees);
                    ds[r][tv] = p[r][tv] * (ds[r][tv] - vloadV(tv, delta_tile));
                }
            }
            OPAL_ATTENTION_ACCUMULATE(dv, p, g_tile, ATTN_KEY_ROWS, ATTN_QUERY_TILE)
            OPAL_ATTENTION_ACCUMULATE(dk, ds, q_tile, ATTN_KEY_ROWS, ATTN_QUERY_TILE)
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int r = 0; r < ATTN_KEY_ROWS; ++r) {
        const int j = j0 + r;
        if (j >= keys) break;
        const long key_row = (long)problem * keys + j;
        for (int d = 0; d < HEAD_DIM; ++d) {
            const int c = d / ATTN_VW, lane = d - c * ATTN_VW;
            grad_key[key_row * HEAD_DIM + d] = scale * ((const float*)&dk[r][c])[lane];
            grad_value[key_row * HEAD_DIM + d] = ((const float*)&dv[r][c])[lane];
        }
    }
}

__kernel void attention_backward_q(const __global float* query, const __global float* key,
                                   const __global float* value, const __global int* key_mask,
                                   const __global float* log_sum_exp, const __global float* delta,
                                   const __global float* grad_output, __global float* grad_query,
                                   const int heads, const int queries, const int keys, const int causal,
                                   const int has_mask, const float scale) {
    __local float kt_tile[HEAD_DIM * ATTN_GRAD_KEY_TILE];   // Kᵀ tile: [D][T]
    __local float k_tile[ATTN_GRAD_KEY_TILE * ATTN_DP];     // K tile: [T][D']
    __local float vt_tile[HEAD_DIM * ATTN_GRAD_KEY_TILE];   // Vᵀ tile
    __local int key_index[ATTN_GRAD_KEY_TILE];
    const int problem = get_group_id(1);
    const int group_rows = (int)get_local_size(0) * ATTN_ROWS;
    const int first = get_group_id(0) * group_rows;
    const int i0 = first + get_local_id(0) * ATTN_ROWS;
    const int offset = keys - queries;
    const __global float* k = key + (long)problem * keys * HEAD_DIM;
    const __global float* v = value + (long)problem * keys * HEAD_DIM;
    const __global int* mask = key_mask + (long)(problem / heads) * keys;

    float q[ATTN_ROWS][ATTN_DP], g[ATTN_ROWS][ATTN_DP];
    floatV dq[ATTN_ROWS][ATTN_DV];
    float lse[ATTN_ROWS], dlt[ATTN_ROWS];
    int limit[ATTN_ROWS];
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int i = i0 + r;
        const long row = (long)problem * queries + i;
        for (int d = 0; d < ATTN_DP; ++d) {
            q[r][d] = i < queries && d < HEAD_DIM ? scale * query[row * HEAD_DIM + d] : 0.0f;
            g[r][d] = i < queries && d < HEAD_DIM ? grad_output[row * HEAD_DIM + d] : 0.0f;
        }
        for (int dv = 0; dv < ATTN_DV; ++dv) dq[r][dv] = (floatV)(0.0f);
        lse[r] = i < queries ? log_sum_exp[row] : INFINITY;
        dlt[r] = i < queries ? delta[row] : 0.0f;
        limit[r] = causal ? min(keys - 1, i + offset) : keys - 1;
    }
    const int group_end = causal ? min(keys, first + group_rows + offset) : keys;

    for (int k0 = 0; k0 < group_end; k0 += ATTN_GRAD_KEY_TILE) {
        opal_attention_load_transposed(kt_tile, k, k0, keys, ATTN_GRAD_KEY_TILE);
        opal_attention_load_tile(k_tile, k, k0, keys, ATTN_GRAD_KEY_TILE);
        opal_attention_load_transposed(vt_tile, v, k0, keys, ATTN_GRAD_KEY_TILE);
        opal_attention_load_keys(key_index, mask, has_mask, k0, keys, ATTN_GRAD_KEY_TILE);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 <= limit[ATTN_ROWS - 1]) {   // else the tile is past all that this item's rows can see
            floatV p[ATTN_ROWS][ATTN_GRAD_KEY_TILE / ATTN_VW], ds[ATTN_ROWS][ATTN_GRAD_KEY_TILE / ATTN_VW];
            OPAL_ATTENTION_SCORES(p, q, kt_tile, ATTN_ROWS, ATTN_GRAD_KEY_TILE)    // q·Kᵀ (q carries the scale)
            OPAL_ATTENTION_SCORES(ds, g, vt_tile, ATTN_ROWS, ATTN_GRAD_KEY_TILE)   // dO·Vᵀ
            for (int r = 0; r < ATTN_ROWS; ++r) {
                for (int tv = 0; tv < ATTN_GRAD_KEY_TILE / ATTN_VW; ++tv) {
                    const intV seen = vloadV(tv, key_index) <= (intV)(limit[r]);
                    p[r][tv] = select((floatV)(0.0f), exp(p[r][tv] - (floatV)(lse[r])), seen);
                    ds[r][tv] = p[r][tv] * (ds[r][tv] - (floatV)(dlt[r]));
                }
            }
            OPAL_ATTENTION_ACCUMULATE(dq, ds, k_tile, ATTN_ROWS, ATTN_GRAD_KEY_TILE)
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int r = 0; r < ATTN_ROWS; ++r) {
        const int i = i0 + r;
        if (i >= queries) break;
        const long row = (long)problem * queries + i;
        for (int d = 0; d < HEAD_DIM; ++d) {
            grad_query[row * HEAD_DIM + d] = scale * ((const float*)&dq[r][d / ATTN_VW])[d - d / ATTN_VW * ATTN_VW];
        }
    }
}
