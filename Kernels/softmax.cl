// softmax.cl — row-wise softmax / log-softmax and their backward passes (fp32, OpenCL C 1.2).
//
// Contract (CPU reference: Sources/OpalCPU):
//   softmax_rows           x, y: [rows, columns]; m = max_c x, s = Σ_c exp(x − m);
//                          logarithmic == 0: y = exp(x − m) / s;   logarithmic != 0: y = x − m − log(s)
//   softmax_backward_rows  y (forward output), dy, dx: [rows, columns];
//                          logarithmic == 0: dx = y ⊙ (dy − Σ_c dy ⊙ y);   logarithmic != 0: dx = dy − exp(y) · Σ_c dy
//   y may alias x; dx may alias dy.
//
// Launch geometry: one work-group per row: global = rows · L, local = L, L a power of two ≤ WGS chosen by
// the host from `columns`; each work-item strides over the row, then a local-memory tree reduction.

#ifndef WGS
#define WGS 256
#endif

// Tree reduction of scratch[0..<L] (L = local size, a power of two); returns the result to every work-item.
inline float opal_row_max(__local float* scratch, float value) {
    const int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = get_local_size(0) / 2; span > 0; span >>= 1) {
        if (lid < span) scratch[lid] = fmax(scratch[lid], scratch[lid + span]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);  // scratch is reused by the next reduction
    return result;
}

inline float opal_row_sum(__local float* scratch, float value) {
    const int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = get_local_size(0) / 2; span > 0; span >>= 1) {
        if (lid < span) scratch[lid] += scratch[lid + span];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return result;
}

__kernel void softmax_rows(const __global float* x, __global float* y, const int rows, const int columns,
                           const int logarithmic) {
    __local float scratch[WGS];
    const int row = get_group_id(0);
    if (row >= rows) return;  // uniform across the work-group
    const int lid = get_local_id(0), lsize = get_local_size(0);
    const __global float* xr = x + (long)row * columns;
    __global float* yr = y + (long)row * columns;

    float m = -INFINITY;
    for (int c = lid; c < columns; c += lsize) m = fmax(m, xr[c]);
    m = opal_row_max(scratch, m);
    float s = 0.0f;
    for (int c = lid; c < columns; c += lsize) s += exp(xr[c] - m);
    s = opal_row_sum(scratch, s);
    if (logarithmic) {
        const float shift = m + log(s);
        for (int c = lid; c < columns; c += lsize) yr[c] = xr[c] - shift;
    } else {
        const float inverse = 1.0f / s;
        for (int c = lid; c < columns; c += lsize) yr[c] = exp(xr[c] - m) * inverse;
    }
}

__kernel void softmax_backward_rows(const __global float* y, const __global float* dy, __global float* dx,
                                    const int rows, const int columns, const int logarithmic) {
    __local float scratch[WGS];
    const int row = get_group_id(0);
    if (row >= rows) return;
    const int lid = get_local_id(0), lsize = get_local_size(0);
    const __global float* yr = y + (long)row * columns;
    const __global float* dyr = dy + (long)row * columns;
    __global float* dxr = dx + (long)row * columns;

    float s = 0.0f;
    if (logarithmic) {
        for (int c = lid; c < columns; c += lsize) s += dyr[c];
    } else {
        for (int c = lid; c < columns; c += lsize) s += dyr[c] * yr[c];
    }
    s = opal_row_sum(scratch, s);
    if (logarithmic) {
        for (int c = lid; c < columns; c += lsize) dxr[c] = dyr[c] - exp(yr[c]) * s;
    } else {
        for (int c = lid; c < columns; c += lsize) dxr[c] = yr[c] * (dyr[c] - s);
    }
}
