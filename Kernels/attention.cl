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
// Launch geometry: one work-item per row. attention_forward and attention_backward_q: local = R query rows,
// global = (⌈Nq/R⌉·R, B·H): group (t, p) takes queries t·R… of problem p = b·H + h, keeps q_i (and dO_i, the
// accumulator) in private memory and walks the keys in tiles of T = ATTN_KEY_TILE (ATTN_GRAD_KEY_TILE) staged
// in local memory, stopping after the last key the group's last query can see under the causal mask.
// attention_backward_kv: local = R key rows, global = (⌈Nk/R⌉·R, B·H), keeps k_j, v_j, dK_j, dV_j private and
// walks the queries in tiles of T = ATTN_QUERY_TILE (Q, dO, L, Δ in local memory), starting at the first query
// that can see the group's first key. The operand of the T scores is staged transposed ([D][T]), so each
// work-item forms its T dot products as T independent sums over d (vectorisable on CPUs, broadcast reads on
// GPUs); the operand of the accumulation is staged as is ([T][D]). The host sizes T per head dimension to fit
// local memory. attention_delta: 1-D, one work-item per row of the B·H·Nq rows. Items past the end load and
// compute nothing but still reach every barrier.

#ifndef HEAD_DIM
#define HEAD_DIM 64           // D: the host compiles one program per head dimension (1…128)
#endif
#ifndef ATTN_KEY_TILE
#define ATTN_KEY_TILE 32      // keys per local-memory tile in attention_forward
#endif
#ifndef ATTN_GRAD_KEY_TILE
#define ATTN_GRAD_KEY_TILE 32 // keys per local-memory tile in attention_backward_q
#endif
#ifndef ATTN_QUERY_TILE
#define ATTN_QUERY_TILE 32    // queries per local-memory tile in attention_backward_kv
#endif

// Copies rows [first, first + T) of a [rows, HEAD_DIM] matrix into tile[T·HEAD_DIM], zeros past the end.
// The rows are contiguous, so the work-group copies one contiguous run of floats.
inline void opal_attention_load_tile(__local float* tile, const __global float* matrix, const int first,
                                     const int rows, const int T) {
    const int start = first * HEAD_DIM, end = rows * HEAD_DIM;
    for (int e = get_local_id(0); e < T * HEAD_DIM; e += get_local_size(0)) {
        tile[e] = start + e < end ? matrix[start + e] : 0.0f;
    }
}

// The same rows transposed: tile[d·T + t] = matrix[first + t, d], zeros past the end.
inline void opal_attention_load_transposed(__local float* tile, const __global float* matrix, const int first,
                                           const int rows, const int T) {
    const int start = first * HEAD_DIM, end = rows * HEAD_DIM;
    for (int e = get_local_id(0); e < T * HEAD_DIM; e += get_local_size(0)) {
        const int t = e / HEAD_DIM, d = e - t * HEAD_DIM;
        tile[d * T + t] = start + e < end ? matrix[start + e] : 0.0f;
    }
}

// Whether the keys [first, first + T) may be attended per the key mask (1) or not (0); 0 past the end.
inline void opal_attention_load_mask(__local int* visible, const __global int* mask, const int has_mask,
                                     const int first, const int keys, const int T) {
    for (int t = get_local_id(0); t < T; t += get_local_size(0)) {
        const int j = first + t;
        visible[t] = j < keys && (!has_mask || mask[j] != 0);
    }
}

__kernel void attention_forward(const __global float* query, const __global float* key,
                                const __global float* value, const __global int* key_mask,
                                __global float* output, __global float* log_sum_exp,
                                const int heads, const int queries, const int keys, const int causal,
                                const int has_mask, const float scale) {
    __local float kt_tile[HEAD_DIM * ATTN_KEY_TILE];    // Kᵀ tile: [HEAD_DIM][T]
    __local float v_tile[ATTN_KEY_TILE * HEAD_DIM];     // V tile: [T][HEAD_DIM]
    __local int visible[ATTN_KEY_TILE];
    const int problem = get_group_id(1);
    const int first = get_group_id(0) * get_local_size(0);
    const int i = first + get_local_id(0);
    const bool active = i < queries;
    const int offset = keys - queries;
    const long row = (long)problem * queries + i;
    const __global float* k = key + (long)problem * keys * HEAD_DIM;
    const __global float* v = value + (long)problem * keys * HEAD_DIM;
    const __global int* mask = key_mask + (long)(problem / heads) * keys;

    float q[HEAD_DIM], acc[HEAD_DIM];
    for (int d = 0; d < HEAD_DIM; ++d) {
        q[d] = active ? scale * query[row * HEAD_DIM + d] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    // Keys this row may see under the causal mask, and the keys the whole group needs (uniform).
    const int row_end = causal ? min(keys, i + offset + 1) : keys;
    const int group_end = causal ? min(keys, first + (int)get_local_size(0) + offset) : keys;

    for (int k0 = 0; k0 < group_end; k0 += ATTN_KEY_TILE) {
        opal_attention_load_transposed(kt_tile, k, k0, keys, ATTN_KEY_TILE);
        opal_attention_load_tile(v_tile, v, k0, keys, ATTN_KEY_TILE);
        opal_attention_load_mask(visible, mask, has_mask, k0, keys, ATTN_KEY_TILE);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (active && k0 < row_end) {
            float s[ATTN_KEY_TILE];
            for (int t = 0; t < ATTN_KEY_TILE; ++t) s[t] = 0.0f;
            for (int d = 0; d < HEAD_DIM; ++d) {           // s = q·Kᵀ, T independent sums
                const float qd = q[d];
                const __local float* kd = kt_tile + d * ATTN_KEY_TILE;
                for (int t = 0; t < ATTN_KEY_TILE; ++t) s[t] = fma(qd, kd[t], s[t]);
            }
            float tile_max = -INFINITY;
            for (int t = 0; t < ATTN_KEY_TILE; ++t) {
                s[t] = visible[t] && k0 + t < row_end ? s[t] : -INFINITY;
                tile_max = fmax(tile_max, s[t]);
            }
            if (tile_max > -INFINITY) {            // else no key of this tile is visible: nothing changes
                const float m_new = fmax(m, tile_max);
                const float correction = exp(m - m_new);   // 0 on the first visible tile (m = −∞)
                float tile_sum = 0.0f;
                for (int t = 0; t < ATTN_KEY_TILE; ++t) {
                    s[t] = exp(s[t] - m_new);              // P̃, 0 where hidden
                    tile_sum += s[t];
                }
                l = fma(l, correction, tile_sum);
                for (int d = 0; d < HEAD_DIM; ++d) acc[d] *= correction;
                for (int t = 0; t < ATTN_KEY_TILE; ++t) {
                    const float p = s[t];
                    const __local float* vt = v_tile + t * HEAD_DIM;
                    for (int d = 0; d < HEAD_DIM; ++d) acc[d] = fma(p, vt[d], acc[d]);
                }
                m = m_new;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (!active) return;
    const float inverse = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d) output[row * HEAD_DIM + d] = acc[d] * inverse;
    log_sum_exp[row] = l > 0.0f ? m + log(l) : INFINITY;
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
    __local float qt_tile[HEAD_DIM * ATTN_QUERY_TILE];   // Qᵀ tile: [HEAD_DIM][T]
    __local float q_tile[ATTN_QUERY_TILE * HEAD_DIM];    // Q tile: [T][HEAD_DIM]
    __local float gt_tile[HEAD_DIM * ATTN_QUERY_TILE];   // dOᵀ tile
    __local float g_tile[ATTN_QUERY_TILE * HEAD_DIM];    // dO tile
    __local float l_tile[ATTN_QUERY_TILE];
    __local float delta_tile[ATTN_QUERY_TILE];
    const int problem = get_group_id(1);
    const int first = get_group_id(0) * get_local_size(0);
    const int j = first + get_local_id(0);
    const int offset = keys - queries;
    const long key_row = (long)problem * keys + j;
    const bool active = j < keys && (!has_mask || key_mask[(long)(problem / heads) * keys + j] != 0);
    const __global float* q = query + (long)problem * queries * HEAD_DIM;
    const __global float* g = grad_output + (long)problem * queries * HEAD_DIM;
    const __global float* lse = log_sum_exp + (long)problem * queries;
    const __global float* dlt = delta + (long)problem * queries;

    float kj[HEAD_DIM], vj[HEAD_DIM], dk[HEAD_DIM], dv[HEAD_DIM];
    for (int d = 0; d < HEAD_DIM; ++d) {
        kj[d] = active ? scale * key[key_row * HEAD_DIM + d] : 0.0f;
        vj[d] = active ? value[key_row * HEAD_DIM + d] : 0.0f;
        dk[d] = 0.0f;
        dv[d] = 0.0f;
    }
    // Query i sees key j when i ≥ j − offset: the first query that sees the group's first key (uniform).
    const int row_begin = causal ? max(0, j - offset) : 0;
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
        if (active && q0 + ATTN_QUERY_TILE > row_begin) {
            float p[ATTN_QUERY_TILE], ds[ATTN_QUERY_TILE];
            for (int t = 0; t < ATTN_QUERY_TILE; ++t) { p[t] = 0.0f; ds[t] = 0.0f; }
            for (int d = 0; d < HEAD_DIM; ++d) {     // p = k_j·Qᵀ (kj carries the scale), ds = v_j·dOᵀ
                const float kd = kj[d], vd = vj[d];
                const __local float* qd = qt_tile + d * ATTN_QUERY_TILE;
                const __local float* gd = gt_tile + d * ATTN_QUERY_TILE;
                for (int t = 0; t < ATTN_QUERY_TILE; ++t) {
                    p[t] = fma(kd, qd[t], p[t]);
                    ds[t] = fma(vd, gd[t], ds[t]);
                }
            }
            for (int t = 0; t < ATTN_QUERY_TILE; ++t) {
                p[t] = q0 + t >= row_begin ? exp(p[t] - l_tile[t]) : 0.0f;   // L = +∞ past the end: 0
                ds[t] = p[t] * (ds[t] - delta_tile[t]);
            }
            for (int t = 0; t < ATTN_QUERY_TILE; ++t) {
                const float pt = p[t], dst = ds[t];
                const __local float* qr = q_tile + t * HEAD_DIM;
                const __local float* gr = g_tile + t * HEAD_DIM;
                for (int d = 0; d < HEAD_DIM; ++d) {
                    dv[d] = fma(pt, gr[d], dv[d]);
                    dk[d] = fma(dst, qr[d], dk[d]);
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (j >= keys) return;
    for (int d = 0; d < HEAD_DIM; ++d) {
        grad_key[key_row * HEAD_DIM + d] = scale * dk[d];
        grad_value[key_row * HEAD_DIM + d] = dv[d];
    }
}

__kernel void attention_backward_q(const __global float* query, const __global float* key,
                                   const __global float* value, const __global int* key_mask,
                                   const __global float* log_sum_exp, const __global float* delta,
                                   const __global float* grad_output, __global float* grad_query,
                                   const int heads, const int queries, const int keys, const int causal,
                                   const int has_mask, const float scale) {
    __local float kt_tile[HEAD_DIM * ATTN_GRAD_KEY_TILE];   // Kᵀ tile: [HEAD_DIM][T]
    __local float k_tile[ATTN_GRAD_KEY_TILE * HEAD_DIM];    // K tile: [T][HEAD_DIM]
    __local float vt_tile[HEAD_DIM * ATTN_GRAD_KEY_TILE];   // Vᵀ tile
    __local int visible[ATTN_GRAD_KEY_TILE];
    const int problem = get_group_id(1);
    const int first = get_group_id(0) * get_local_size(0);
    const int i = first + get_local_id(0);
    const bool active = i < queries;
    const int offset = keys - queries;
    const long row = (long)problem * queries + i;
    const __global float* k = key + (long)problem * keys * HEAD_DIM;
    const __global float* v = value + (long)problem * keys * HEAD_DIM;
    const __global int* mask = key_mask + (long)(problem / heads) * keys;

    float q[HEAD_DIM], g[HEAD_DIM], dq[HEAD_DIM];
    for (int d = 0; d < HEAD_DIM; ++d) {
        q[d] = active ? scale * query[row * HEAD_DIM + d] : 0.0f;
        g[d] = active ? grad_output[row * HEAD_DIM + d] : 0.0f;
        dq[d] = 0.0f;
    }
    const float lse = active ? log_sum_exp[row] : INFINITY;
    const float dlt = active ? delta[row] : 0.0f;
    const int row_end = causal ? min(keys, i + offset + 1) : keys;
    const int group_end = causal ? min(keys, first + (int)get_local_size(0) + offset) : keys;

    for (int k0 = 0; k0 < group_end; k0 += ATTN_GRAD_KEY_TILE) {
        opal_attention_load_transposed(kt_tile, k, k0, keys, ATTN_GRAD_KEY_TILE);
        opal_attention_load_tile(k_tile, k, k0, keys, ATTN_GRAD_KEY_TILE);
        opal_attention_load_transposed(vt_tile, v, k0, keys, ATTN_GRAD_KEY_TILE);
        opal_attention_load_mask(visible, mask, has_mask, k0, keys, ATTN_GRAD_KEY_TILE);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (active && k0 < row_end) {
            float p[ATTN_GRAD_KEY_TILE], ds[ATTN_GRAD_KEY_TILE];
            for (int t = 0; t < ATTN_GRAD_KEY_TILE; ++t) { p[t] = 0.0f; ds[t] = 0.0f; }
            for (int d = 0; d < HEAD_DIM; ++d) {     // p = q·Kᵀ (q carries the scale), ds = dO·Vᵀ
                const float qd = q[d], gd = g[d];
                const __local float* kd = kt_tile + d * ATTN_GRAD_KEY_TILE;
                const __local float* vd = vt_tile + d * ATTN_GRAD_KEY_TILE;
                for (int t = 0; t < ATTN_GRAD_KEY_TILE; ++t) {
                    p[t] = fma(qd, kd[t], p[t]);
                    ds[t] = fma(gd, vd[t], ds[t]);
                }
            }
            for (int t = 0; t < ATTN_GRAD_KEY_TILE; ++t) {
                p[t] = visible[t] && k0 + t < row_end ? exp(p[t] - lse) : 0.0f;
                ds[t] = p[t] * (ds[t] - dlt);
            }
            for (int t = 0; t < ATTN_GRAD_KEY_TILE; ++t) {
                const float dst = ds[t];
                const __local float* kr = k_tile + t * HEAD_DIM;
                for (int d = 0; d < HEAD_DIM; ++d) dq[d] = fma(dst, kr[d], dq[d]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (!active) return;
    for (int d = 0; d < HEAD_DIM; ++d) grad_query[row * HEAD_DIM + d] = scale * dq[d];
}
