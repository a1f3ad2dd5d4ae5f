// reduce.cl — sum / max / argmax over the middle axis of x viewed as [outer, size, inner] (fp32, OpenCL C 1.2).
//
// Contract (CPU reference: Sources/OpalCPU):
//   reduce_rows     inner == 1: y[o] = reduce_s x[o, s]           op 0 = sum, 1 = max
//   reduce_columns  inner  > 1: y[o, i] = reduce_s x[o, s, i]
//   argmax_rows     inner == 1: y[o] = first s with x[o, s] maximal (int)
//   argmax_columns  inner  > 1: y[o, i] = first s with x[o, s, i] maximal (int)
//   size == 0 gives 0 for sum, −∞ for max and 0 for argmax.
//
// Launch geometry:
//   *_rows:    one work-group per row: global = outer · L, local = L, L a power of two ≤ WGS
//              (the host picks L from `size`); local-memory tree reduction.
//   *_columns: one work-item per (o, i): global = (inner rounded up to L, outer), local = (L, 1);
//              each work-item loops over s (coalesced along i). Two dimensions, so no index
//              division (whose div/rem pairs LLVM rewrites with `freeze`, which oclgrind cannot check).
//              CPU devices also reduce many rows this way (inner = 1, global = (1, outer rounded up to L),
//              local = (1, L)): a work-item per row instead of the rows kernels' barrier tree.

#ifndef WGS
#define WGS 256
#endif

inline float opal_reduce_identity(int op) { return op == 0 ? 0.0f : -INFINITY; }
inline float opal_reduce_combine(int op, float a, float b) { return op == 0 ? a + b : fmax(a, b); }

// x: [outer, size], y: [outer].
__kernel void reduce_rows(const __global float* x, __global float* y, const int outer, const int size,
                          const int op) {
    __local float scratch[WGS];
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int lsize = get_local_size(0);
    if (row >= outer) return;  // uniform across the work-group
    const __global float* xr = x + (long)row * size;
    float acc = opal_reduce_identity(op);
    for (int s = lid; s < size; s += lsize) acc = opal_reduce_combine(op, acc, xr[s]);
    scratch[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = lsize / 2; span > 0; span >>= 1) {
        if (lid < span) scratch[lid] = opal_reduce_combine(op, scratch[lid], scratch[lid + span]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) y[row] = scratch[0];
}

// x: [outer, size, inner], y: [outer, inner].
__kernel void reduce_columns(const __global float* x, __global float* y, const int outer, const int size,
                             const int inner, const int op) {
    const int i = get_global_id(0), o = get_global_id(1);
    if (i >= inner || o >= outer) return;
    const __global float* xo = x + (long)o * size * inner + i;
    float acc = opal_reduce_identity(op);
    for (int s = 0; s < size; ++s) acc = opal_reduce_combine(op, acc, xo[(long)s * inner]);
    y[(long)o * inner + i] = acc;
}

// Is (value a, index ia) a better argmax candidate than (b, ib)? Larger value wins; ties go to the lower
// index; an index of −1 marks "no candidate yet".
inline bool opal_argmax_better(float a, int ia, float b, int ib) {
    if (ia < 0) return false;
    if (ib < 0) return true;
    return a > b || (a == b && ia < ib);
}

// x: [outer, size], y: [outer] (int).
__kernel void argmax_rows(const __global float* x, __global int* y, const int outer, const int size) {
    __local float values[WGS];
    __local int indices[WGS];
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int lsize = get_local_size(0);
    if (row >= outer) return;
    const __global float* xr = x + (long)row * size;
    float best = -INFINITY;
    int bestIndex = -1;
    for (int s = lid; s < size; s += lsize) {
        const float v = xr[s];
        if (opal_argmax_better(v, s, best, bestIndex)) { best = v; bestIndex = s; }
    }
    values[lid] = best;
    indices[lid] = bestIndex;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = lsize / 2; span > 0; span >>= 1) {
        if (lid < span && opal_argmax_better(values[lid + span], indices[lid + span], values[lid], indices[lid])) {
            values[lid] = values[lid + span];
            indices[lid] = indices[lid + span];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) y[row] = indices[0] < 0 ? 0 : indices[0];
}

// x: [outer, size, inner], y: [outer, inner] (int).
__kernel void argmax_columns(const __global float* x, __global int* y, const int outer, const int size,
                             const int inner) {
    const int i = get_global_id(0), o = get_global_id(1);
    if (i >= inner || o >= outer) return;
    const __global float* xo = x + (long)o * size * inner + i;
    float best = -INFINITY;
    int bestIndex = -1;
    for (int s = 0; s < size; ++s) {
        const float v = xo[(long)s * inner];
        if (opal_argmax_better(v, s, best, bestIndex)) { best = v; bestIndex = s; }
    }
    y[(long)o * inner + i] = bestIndex < 0 ? 0 : bestIndex;
}
