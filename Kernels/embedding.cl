// embedding.cl — embedding lookup (gather) and its backward scatter-add (fp32, OpenCL C 1.2).
//
// Contract (RecurrentBackend in Sources/OpalCore/Backend+Recurrent.swift; CPU reference in
// Sources/OpalCPU/Recurrent.swift). table [V, D], ids [N] int32, out / dout [N, D], dtable [V, D].
//   embedding_gather            out[n, d] = (0 ≤ ids[n] < V) ? table[ids[n], d] : 0
//   embedding_scatter_partial   the tokens split into chunks of `chunk` consecutive tokens; for chunk c:
//                               partial[c, v, d] = Σ_{n ∈ chunk c, ids[n] = v} dout[n, d]   (in token order)
//   embedding_scatter_reduce    dtable[v, d] = Σ_{c = 0, 1, …} partial[c, v, d]              (in chunk order)
//   Together: dtable[v, d] = Σ_{n : ids[n] = v} dout[n, d]; ids outside 0..<V add nothing. With one chunk
//   the host passes dtable as `partial` and skips the reduce.
//
// Launch geometry:
//   gather:  1-D, one work-item per output element (n, d), global = N·D rounded up to the local size;
//            consecutive items copy consecutive d of one row.
//   partial: 2-D, one work-item per (column d, chunk c), global = (D rounded up to the local width, chunks).
//            The item owns column d of chunk c's [V, D] slab: it zeroes it, then walks the chunk's
//            tokens in order adding dout[n, d] into row ids[n]. No two items write the same element, so
//            there are no races and no atomics; neighbouring items touch neighbouring d (coalesced).
//   reduce:  1-D, one work-item per table element, summing the chunks in order.
//   Every sum has a fixed order (tokens within a chunk, then chunks), and the host derives the chunk
//   size from (N, V, D) alone, so the result is deterministic and the same on every device. Cost: N·D
//   adds plus 2·chunks·V·D for the slabs, with chunks ≈ N / V so the two balance. (A work-item per table
//   element walking all N ids costs V·D·N id tests: 36 ms instead of ≈1 ms at V = 65, D = 64, N = 8192 on PoCL.)

#ifndef WGS
#define WGS 256
#endif

__kernel void embedding_gather(const __global float* table, const __global int* ids, __global float* out,
                               const int rows, const int columns, const int tokens) {
    const int element = get_global_id(0);
    if (element >= tokens * columns) return;
    const int n = element / columns, d = element - n * columns;
    const int id = ids[n];
    out[element] = (id >= 0 && id < rows) ? table[id * columns + d] : 0.0f;
}

__kernel void embedding_scatter_partial(const __global float* dout, const __global int* ids, __global float* partial,
                                        const int rows, const int columns, const int tokens, const int chunk) {
    const int d = get_global_id(0), c = get_global_id(1);
    if (d >= columns) return;
    __global float* slab = partial + c * rows * columns;
    for (int v = 0; v < rows; v++) slab[v * columns + d] = 0.0f;
    const int end = min(tokens, (c + 1) * chunk);
    for (int n = c * chunk; n < end; n++) {
        const int id = ids[n];
        if (id >= 0 && id < rows) slab[id * columns + d] += dout[n * columns + d];
    }
}

__kernel void embedding_scatter_reduce(const __global float* partial, __global float* dtable, const int count,
                                       const int chunks) {
    const int element = get_global_id(0);
    if (element >= count) return;
    float sum = 0.0f;
    for (int c = 0; c < chunks; c++) sum += partial[c * count + element];
    dtable[element] = sum;
}
