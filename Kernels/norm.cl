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
// Launch geometry: one work-group per channel, 2-D so no index is divided: local = (Ls, Ln), Ls·Ln ≤ WGS a power
//   of two (Ls ≤ spatial rounded up to a power of two, the rest along the batch), global = (Ls, Ln·channels);
//   work-item (s0, n0) visits (n0 + i·Ln, s0 + j·Ls), then local-memory tree reductions.

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
