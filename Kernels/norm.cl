// norm.cl — training-mode batch normalisation, forward and backward (fp32, OpenCL C 1.2).
//
// Contract (CPU reference: Sources/OpalCPU/Norm.swift):
//   x, y, dy, dx: [batch, channels, spatial];  gamma, beta, mean, inverseStd, dgamma, dbeta: [channels];
//   M = batch·spatial values per channel c.
//   batch_norm_forward   mean_c = Σx/M, var_c = Σ(x − mean_c)²/M (biased, two passes), invstd_c = 1/√(var_c + ε),
//                        y = (x − mean_c)·(γ_c·invstd_c) + β_c; writes mean and inverseStd.
//   batch_norm_backward  dβ_c = Σdy, dγ_c = invstd_c·Σdy·(x − mean_c),
//                        dx = k·dy − k·dβ_c/M − k·dγ_c·invstd_c/M·(x − mean_c) with k = γ_c·invstd_c.
//
//   batch_norm_*_features  the same for spatial == 1 (features of a dense layer: x is [batch, channels]).
//
// Launch geometry: one work-group per channel, 2-D so no index is divided: local = (Ls, Ln), Ls·Ln ≤ WGS a power
//   of two (Ls ≤ spatial rounded up to a power of two, the rest along the batch), global = (Ls, Ln·channels);
//   work-item (s0, n0) visits (n0 + i·Ln, s0 + j·Ls), then local-memory tree reductions.
//   *_features: one work-item per channel walking down the batch, global = channels rounded up to WGS, local
//   WGS; neighbouring work-items read neighbouring addresses, no barriers (the host uses them from 64 channels).

#ifndef WGS
#define WGS 256
#endif

// The flat index of this work-item in its 2-D work-group and the group's size.
inline int opal_norm_local_id(void) { return get_local_id(1) * get_local_size(0) + get_local_id(0); }
inline int opal_norm_local_count(void) { return get_local_size(0) * get_local_size(1); }

// Σ value over the work-group (tree reduction in scratch[0..<L]); the result goes to every work-item.
inline float opal_norm_group_sum(__local float* scratch, const float value) {
    const int lid = opal_norm_local_id();
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = opal_norm_local_count() / 2; span > 0; span >>= 1) {
        if (lid < span) scratch[lid] += scratch[lid + span];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);  // scratch is reused by the next reduction
    return result;
}

__kernel void batch_norm_forward(const __global float* x, const __global float* gamma, const __global float* beta,
                                 __global float* y, __global float* mean, __global float* inverseStd,
                                 const int batch, const int channels, const int spatial, const float epsilon) {
    __local float scratch[WGS];
    const int c = get_group_id(1);
    if (c >= channels) return;  // uniform across the work-group
    const int s0 = get_local_id(0), n0 = get_local_id(1);
    const int ls = get_local_size(0), ln = get_local_size(1);
    const float count = (float)batch * (float)spatial;

    float sum = 0.0f;
    for (int n = n0; n < batch; n += ln) {
        const __global float* xr = x + ((long)n * channels + c) * spatial;
        for (int s = s0; s < spatial; s += ls) sum += xr[s];
    }
    const float m = opal_norm_group_sum(scratch, sum) / count;

    float squares = 0.0f;
    for (int n = n0; n < batch; n += ln) {
        const __global float* xr = x + ((long)n * channels + c) * spatial;
        for (int s = s0; s < spatial; s += ls) {
            const float d = xr[s] - m;
            squares += d * d;
        }
    }
    const float variance = opal_norm_group_sum(scratch, squares) / count;
    const float invstd = 1.0f / sqrt(variance + epsilon);

    const float scale = gamma[c] * invstd, offset = beta[c];
    for (int n = n0; n < batch; n += ln) {
        const long row = ((long)n * channels + c) * spatial;
        for (int s = s0; s < spatial; s += ls) y[row + s] = (x[row + s] - m) * scale + offset;
    }
    if (s0 == 0 && n0 == 0) {
        mean[c] = m;
        inverseStd[c] = invstd;
    }
}

__kernel void batch_norm_backward(const __global float* x, const __global float* dy, const __global float* gamma,
                                  const __global float* mean, const __global float* inverseStd, __global float* dx,
                                  __global float* dgamma, __global float* dbeta,
                                  const int batch, const int channels, const int spatial) {
    __local float scratch[WGS];
    const int c = get_group_id(1);
    if (c >= channels) return;  // uniform across the work-group
    const int s0 = get_local_id(0), n0 = get_local_id(1);
    const int ls = get_local_size(0), ln = get_local_size(1);
    const float count = (float)batch * (float)spatial;
    const float m = mean[c], invstd = inverseStd[c];

    float sumDy = 0.0f, sumDyCentered = 0.0f;
    for (int n = n0; n < batch; n += ln) {
        const long row = ((long)n * channels + c) * spatial;
        for (int s = s0; s < spatial; s += ls) {
            const float g = dy[row + s];
            sumDy += g;
            sumDyCentered += g * (x[row + s] - m);
        }
    }
    const float gradientBeta = opal_norm_group_sum(scratch, sumDy);
    const float gradientGamma = opal_norm_group_sum(scratch, sumDyCentered) * invstd;

    const float k = gamma[c] * invstd;
    const float shift = k * gradientBeta / count;
    const float slope = k * gradientGamma * invstd / count;
    for (int n = n0; n < batch; n += ln) {
        const long row = ((long)n * channels + c) * spatial;
        for (int s = s0; s < spatial; s += ls) dx[row + s] = k * dy[row + s] - shift - slope * (x[row + s] - m);
    }
    if (s0 == 0 && n0 == 0) {
        dgamma[c] = gradientGamma;
        dbeta[c] = gradientBeta;
    }
}

// x, y: [batch, channels] (spatial 1). Two passes, as the work-group kernel: the mean, then Σ(x − mean)².
__kernel void batch_norm_forward_features(const __global float* x, const __global float* gamma,
                                          const __global float* beta, __global float* y, __global float* mean,
                                          __global float* inverseStd, const int batch, const int channels,
                                          const float epsilon) {
    const int c = get_global_id(0);
    if (c >= channels) return;
    float sum = 0.0f;
    for (int n = 0; n < batch; ++n) sum += x[(long)n * channels + c];
    const float m = sum / (float)batch;
    float squares = 0.0f;
    for (int n = 0; n < batch; ++n) {
        const float d = x[(long)n * channels + c] - m;
        squares += d * d;
    }
    const float invstd = 1.0f / sqrt(squares / (float)batch + epsilon);
    const float scale = gamma[c] * invstd, offset = beta[c];
    for (int n = 0; n < batch; ++n) {
        const long i = (long)n * channels + c;
        y[i] = (x[i] - m) * scale + offset;
    }
    mean[c] = m;
    inverseStd[c] = invstd;
}

__kernel void batch_norm_backward_features(const __global float* x, const __global float* dy,
                                           const __global float* gamma, const __global float* mean,
                                           const __global float* inverseStd, __global float* dx,
                                           __global float* dgamma, __global float* dbeta,
                                           const int batch, const int channels) {
    const int c = get_global_id(0);
    if (c >= channels) return;
    const float m = mean[c], invstd = inverseStd[c];
    float sumDy = 0.0f, sumDyCentered = 0.0f;
    for (int n = 0; n < batch; ++n) {
        const long i = (long)n * channels + c;
        sumDy += dy[i];
        sumDyCentered += dy[i] * (x[i] - m);
    }
    const float gradientGamma = sumDyCentered * invstd;
    const float k = gamma[c] * invstd;
    const float shift = k * sumDy / (float)batch;
    const float slope = k * gradientGamma * invstd / (float)batch;
    for (int n = 0; n < batch; ++n) {
        const long i = (long)n * channels + c;
        dx[i] = k * dy[i] - shift - slope * (x[i] - m);
    }
    dgamma[c] = gradientGamma;
    dbeta[c] = sumDy;
}

// ---------------------------------------------------------------------------------------------------------
// Layer normalisation over the last axis (LayerNormDescriptor in Sources/OpalCore/Backend+Attention.swift;
// Double reference in Tests/OpalOpenCLTests/LayerNormKernelTests.swift).
//   x, y, dy, dx: [rows, C];  gamma, beta, dgamma, dbeta: [C];  mean, rstd: [rows].
//   layer_norm_forward       one pass for the statistics, in the frame shifted by the row's first value K (exact
//                            differences near a large mean): work-item w runs Welford over its columns,
//                            d = x − K, n += 1, δ = d − μ_w, μ_w += δ/n, M2_w += δ·(d − μ_w); the (n, μ, M2)
//                            triples are merged pairwise (Chan et al.): δ = μ_b − μ_a, μ = μ_a + δ·n_b/n,
//                            M2 = M2_a + M2_b + δ²·n_a·n_b/n.  σ² = M2/C, rstd = 1/√(σ² + ε),
//                            y = ((x − K) − μ)·rstd·γ + β, mean = K + μ.
//   layer_norm_backward      x̂ = (x − μ)·rstd, ĝ = dy·γ:  dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)).
//   layer_norm_param_partial rows split into chunks of `chunk` consecutive rows; for chunk c and column k, in
//                            row order: partial_gamma[c, k] = Σ_{r ∈ c} dy·x̂,  partial_beta[c, k] = Σ_{r ∈ c} dy
//                            ([chunks, C] each).  With one chunk the host passes dgamma / dbeta directly.
//   layer_norm_param_reduce  dγ_k = Σ_c partial_gamma[c, k],  dβ_k = Σ_c partial_beta[c, k], in chunk order.
//   Every sum has a fixed order that depends on (rows, C) only: deterministic, no atomics.
//
// Launch geometry: forward and backward, one work-group per row, local = L (a power of two ≤ WGS, ≤ C rounded
//   up), global = rows·L; item w visits columns w, w + L, … then local-memory tree reductions. param_partial:
//   2-D, one work-item per (column, chunk), global = (C rounded up to the local width, chunks); consecutive
//   items read consecutive columns. param_reduce: 1-D, one work-item per column.

// The (n, μ, M2) of this work-item's values merged over the work-group by a tree in local memory;
// returns μ and M2 of the whole group to every work-item.
inline float2 opal_layer_norm_group_moments(__local float* counts, __local float* means, __local float* squares,
                                            float n, float mu, float m2) {
    const int lid = get_local_id(0);
    counts[lid] = n; means[lid] = mu; squares[lid] = m2;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = get_local_size(0) / 2; span > 0; span >>= 1) {
        if (lid < span) {
            const float nb = counts[lid + span];
            if (nb > 0.0f) {
                const float na = counts[lid], total = na + nb;
                const float delta = means[lid + span] - means[lid];
                means[lid] += delta * (nb / total);
                squares[lid] += squares[lid + span] + delta * delta * (na * nb / total);
                counts[lid] = total;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float2 result = (float2)(means[0], squares[0]);
    barrier(CLK_LOCAL_MEM_FENCE);
    return result;
}

__kernel void layer_norm_forward(const __global float* x, const __global float* gamma, const __global float* beta,
                                 __global float* y, __global float* mean, __global float* rstd,
                                 const int rows, const int columns, const float epsilon) {
    __local float counts[WGS], means[WGS], squares[WGS];
    const int r = get_group_id(0);
    if (r >= rows) return;  // uniform across the work-group
    const int w = get_local_id(0), L = get_local_size(0);
    const __global float* xr = x + (long)r * columns;

    const float shift = xr[0];   // K, read by every work-item
    float n = 0.0f, mu_w = 0.0f, m2_w = 0.0f;
    for (int c = w; c < columns; c += L) {
        const float d = xr[c] - shift;
        n += 1.0f;
        const float delta = d - mu_w;
        mu_w += delta / n;
        m2_w = fma(delta, d - mu_w, m2_w);
    }
    const float2 moments = opal_layer_norm_group_moments(counts, means, squares, n, mu_w, m2_w);
    const float mu = moments.x;   // shifted by K
    const float inverse = 1.0f / sqrt(moments.y / (float)columns + epsilon);

    __global float* yr = y + (long)r * columns;
    for (int c = w; c < columns; c += L) yr[c] = ((xr[c] - shift) - mu) * inverse * gamma[c] + beta[c];
    if (w == 0) {
        mean[r] = shift + mu;
        rstd[r] = inverse;
    }
}

__kernel void layer_norm_backward(const __global float* dy, const __global float* x, const __global float* gamma,
                                  const __global float* mean, const __global float* rstd, __global float* dx,
                                  const int rows, const int columns) {
    __local float sums[WGS], dots[WGS];
    const int r = get_group_id(0);
    if (r >= rows) return;  // uniform across the work-group
    const int w = get_local_id(0), L = get_local_size(0);
    const long base = (long)r * columns;
    const float mu = mean[r], inverse = rstd[r];

    float sum = 0.0f, dot = 0.0f;
    for (int c = w; c < columns; c += L) {
        const float g = dy[base + c] * gamma[c];
        sum += g;
        dot = fma(g, (x[base + c] - mu) * inverse, dot);
    }
    sums[w] = sum; dots[w] = dot;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = L / 2; span > 0; span >>= 1) {
        if (w < span) {
            sums[w] += sums[w + span];
            dots[w] += dots[w + span];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float mean_g = sums[0] / (float)columns, mean_gx = dots[0] / (float)columns;
    for (int c = w; c < columns; c += L) {
        const float xhat = (x[base + c] - mu) * inverse;
        dx[base + c] = inverse * (dy[base + c] * gamma[c] - mean_g - xhat * mean_gx);
    }
}

__kernel void layer_norm_param_partial(const __global float* dy, const __global float* x, const __global float* mean,
                                       const __global float* rstd, __global float* partial_gamma,
                                       __global float* partial_beta, const int rows, const int columns,
                                       const int chunk) {
    const int c = get_global_id(0), k = get_global_id(1);
    if (c >= columns) return;
    const int begin = k * chunk, end = min(rows, begin + chunk);
    float dg = 0.0f, db = 0.0f;
    for (int r = begin; r < end; ++r) {
        const float g = dy[(long)r * columns + c];
        db += g;
        dg = fma(g, (x[(long)r * columns + c] - mean[r]) * rstd[r], dg);
    }
    partial_gamma[(long)k * columns + c] = dg;
    partial_beta[(long)k * columns + c] = db;
}

__kernel void layer_norm_param_reduce(const __global float* partial_gamma, const __global float* partial_beta,
                                      __global float* dgamma, __global float* dbeta, const int columns,
                                      const int chunks) {
    const int c = get_global_id(0);
    if (c >= columns) return;
    float dg = 0.0f, db = 0.0f;
    for (int k = 0; k < chunks; ++k) {
        dg += partial_gamma[(long)k * columns + c];
        db += partial_beta[(long)k * columns + c];
    }
    dgamma[c] = dg;
    dbeta[c] = db;
}
