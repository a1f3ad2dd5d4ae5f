// loss.cl — softmax cross-entropy from logits, forward and backward (fp32, OpenCL C 1.2).
//
// Contract (CPU reference: Sources/OpalCPU):
//   cross_entropy_rows           logits: [rows, columns], labels: [rows] int in [0, columns), losses: [rows];
//                                losses[r] = logsumexp(logits[r]) − logits[r, labels[r]]
//   cross_entropy_backward_rows  upstream: [1] (the loss gradient, read on the device), dx: [rows, columns];
//                                dx[r, c] = scale · upstream[0] · (softmax(logits[r])[c] − (c == labels[r]))
//   A label outside [0, columns) is treated as matching no column (never read out of bounds).
//
// Launch geometry: one work-group per row: global = rows · L, local = L, L a power of two ≤ WGS chosen by
// the host from `columns`; local-memory tree reductions for the row max and the row sum.

#ifndef WGS
#define WGS 256
#endif

inline float opal_loss_max(__local float* scratch, float value) {
    const int lid = get_local_id(0);
    scratch[lid] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = get_local_size(0) / 2; span > 0; span >>= 1) {
        if (lid < span) scratch[lid] = fmax(scratch[lid], scratch[lid + span]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return result;
}

inline float opal_loss_sum(__local float* scratch, float value) {
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

__kernel void cross_entropy_rows(const __global float* logits, const __global int* labels,
                                 __global float* losses, const int rows, const int columns) {
    __local float scratch[WGS];
    const int row = get_group_id(0);
    if (row >= rows) return;  // uniform across the work-group
    const int lid = get_local_id(0), lsize = get_local_size(0);
    const __global float* xr = logits + (long)row * columns;

    float m = -INFINITY;
    for (int c = lid; c < columns; c += lsize) m = fmax(m, xr[c]);
    m = opal_loss_max(scratch, m);
    float s = 0.0f;
    for (int c = lid; c < columns; c += lsize) s += exp(xr[c] - m);
    s = opal_loss_sum(scratch, s);
    if (lid == 0) {
        const int label = labels[row];
        const float target = (label >= 0 && label < columns) ? xr[label] : 0.0f;
        losses[row] = m + log(s) - target;
    }
}

__kernel void cross_entropy_backward_rows(const __global float* logits, const __global int* labels,
                                          const __global float* upstream, __global float* dx,
                                          const int rows, const int columns, const float scale) {
    __local float scratch[WGS];
    const int row = get_group_id(0);
    if (row >= rows) return;
    const int lid = get_local_id(0), lsize = get_local_size(0);
    const __global float* xr = logits + (long)row * columns;
    __global float* dxr = dx + (long)row * columns;

    float m = -INFINITY;
    for (int c = lid; c < columns; c += lsize) m = fmax(m, xr[c]);
    m = opal_loss_max(scratch, m);
    float s = 0.0f;
    for (int c = lid; c < columns; c += lsize) s += exp(xr[c] - m);
    s = opal_loss_sum(scratch, s);
    const float factor = scale * upstream[0];
    const float inverse = 1.0f / s;
    const int label = labels[row];
    for (int c = lid; c < columns; c += lsize) {
        const float p = exp(xr[c] - m) * inverse;
        dxr[c] = factor * (p - (c == label ? 1.0f : 0.0f));
    }
}
