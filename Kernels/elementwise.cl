// elementwise.cl — elementwise functions, broadcasting binary ops and strided copies (fp32, OpenCL C 1.2).
//
// Contract (the CPU reference is Sources/OpalCPU, the host side Sources/OpalOpenCL/OpenCLBackend.swift):
//   fill           y[i] = value for i < count.
//   unary          y[i] = f_op(x[i]) for i < count; x and y may alias. op codes and parameters (a, b):
//                    0 identity  1 negate  2 abs  3 exp  4 log  5 sqrt  6 reciprocal  7 square  8 relu
//                    9 leakyRelu(a = slope)  10 sigmoid  11 tanh  12 gelu (tanh approximation)
//                    13 softplus = max(x,0) + log1p(exp(-|x|))  14 power(a = p)  15 affine(a = scale, b = shift)
//                    16 step (x > 0 ? 1 : 0)  17 leakyReluDerivative(a = slope)  18 geluDerivative
//   unary_exp, unary_sigmoid, unary_tanh, unary_gelu, unary_gelu_derivative  unary with the op fixed.
//   unary_gradient_{relu, leaky_relu, sigmoid, tanh, gelu}  dx[i] = dy[i] · f'(i), the activation's backward
//                  in one pass: f' from the input v = x (relu, leaky_relu with a = slope, gelu) or from the
//                  forward output v = y (sigmoid: y(1 − y), tanh: 1 − y²); dx may be dy.
//   binary_flat    out[i] = a[i·strideA] ⊕ b[i·strideB] for i < count; strideA, strideB ∈ {0, 1}
//                  (same-shape contiguous inputs, or a scalar on either side).
//   binary_strided out[idx] = a[Σ idx·stridesA] ⊕ b[Σ idx·stridesB] over the row-major index space of
//                  shape[0..<rank] (rank ≤ 8; shape and strides passed by value as int8; unused lanes ignored).
//                  ⊕ codes: 0 add  1 subtract  2 multiply  3 divide  4 power  5 maximum  6 minimum
//   strided_copy   dst[dstOffset + Σ idx·dstStrides] = src[srcOffset + Σ idx·srcStrides] (rank ≤ 8).
//   strided_copy_rows, binary_strided_rows  the same, one work-item per innermost row (CPU-class devices).
//   transpose_tiled  dst[b·rows·columns + c·rows + r] = src[srcOffset + b·srcStride + r·ld + c] for r < rows,
//                  c < columns, b < batch: each matrix of the batch transposed into a packed [columns, rows].
//
// Launch geometry: 1-D for all kernels but transpose_tiled (the *_rows forms: one work-item per row): global = count rounded up to a multiple of
// WGS, local = WGS; every work-item with get_global_id(0) ≥ count returns at once.
// transpose_tiled: 3-D, local (TT, TT, 1), global (columns and rows rounded up to TT, batch). A group
// reads a TT×TT tile row by row (consecutive work-items, consecutive source columns) into local memory
// and writes it back transposed, again row by row, so both global passes are contiguous.

#ifndef WGS
#define WGS 256
#endif

#ifndef TT
#define TT 16
#endif

#define GELU_C 0.7978845608028654f   // √(2/π)
#define GELU_K 0.044715f

inline float opal_unary(int op, float x, float a, float b) {
    switch (op) {
    case 0: return x;
    case 1: return -x;
    case 2: return fabs(x);
    case 3: return exp(x);
    case 4: return log(x);
    case 5: return sqrt(x);
    case 6: return 1.0f / x;
    case 7: return x * x;
    case 8: return x > 0.0f ? x : 0.0f;
    case 9: return x > 0.0f ? x : a * x;
    case 10: return 1.0f / (1.0f + exp(-x));
    case 11: return tanh(x);
    case 12: {   // 0.5·x·(1 + tanh u) = x·σ(2u): one exp, and no cancellation in the negative tail
        float u = GELU_C * (x + GELU_K * x * x * x);
        return x / (1.0f + exp(-2.0f * u));
    }
    case 13: return fmax(x, 0.0f) + log1p(exp(-fabs(x)));
    case 14: return pow(x, a);
    case 15: return a * x + b;
    case 16: return x > 0.0f ? 1.0f : 0.0f;
    case 17: return x > 0.0f ? 1.0f : a;
    case 18: {   // with s = σ(2u) = (1 + tanh u)/2 and 1 − tanh²u = 4s(1 − s)
        float u = GELU_C * (x + GELU_K * x * x * x);
        float s = 1.0f / (1.0f + exp(-2.0f * u));
        return s + 2.0f * x * s * (1.0f - s) * GELU_C * (1.0f + 3.0f * GELU_K * x * x);
    }
    default: return NAN;
    }
}

inline float opal_binary(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return pow(a, b);
    case 5: return fmax(a, b);
    case 6: return fmin(a, b);
    default: return NAN;
    }
}

// y: [count] ← value.
__kernel void fill(__global float* y, const int count, const float value) {
    const int i = get_global_id(0);
    if (i >= count) return;
    y[i] = value;
}

// x, y: [count]; y may be x.
__kernel void unary(const __global float* x, __global float* y, const int count,
                    const int op, const float a, const float b) {
    const int i = get_global_id(0);
    if (i >= count) return;
    y[i] = opal_unary(op, x[i], a, b);
}

// The transcendental ops that dominate training (and the ReLUs of CNNs and GANs), each as a kernel of its own. A switch on `op` inside the
// element's code (as in `unary`) keeps CPU OpenCL compilers such as PoCL from vectorising across
// work-items; with the code constant the switch folds away (GELU on PoCL: 3–5× faster). One kernel per op:
// PoCL stops vectorising a kernel that branches on the op to more than a couple of such bodies.
#define OPAL_UNARY_KERNEL(name, code)                                                              \
    __kernel void name(const __global float* x, __global float* y, const int count) {             \
        const int i = get_global_id(0);                                                            \
        if (i < count) y[i] = opal_unary(code, x[i], 0.0f, 0.0f);                                  \
    }
OPAL_UNARY_KERNEL(unary_exp, 3)
OPAL_UNARY_KERNEL(unary_sigmoid, 10)
OPAL_UNARY_KERNEL(unary_tanh, 11)
OPAL_UNARY_KERNEL(unary_gelu, 12)
OPAL_UNARY_KERNEL(unary_gelu_derivative, 18)
OPAL_UNARY_KERNEL(unary_relu, 8)

__kernel void unary_leaky_relu(const __global float* x, __global float* y, const int count, const float a) {
    const int i = get_global_id(0);
    if (i < count) y[i] = opal_unary(9, x[i], a, 0.0f);
}

// v, dy, dx: [count]; one kernel per activation for the same reason as the unary ones.
#define OPAL_GRADIENT_KERNEL(name, derivative)                                                      \
    __kernel void name(const __global float* v, const __global float* dy, __global float* dx,       \
                       const int count, const float a) {                                           \
        const int i = get_global_id(0);                                                            \
        if (i >= count) return;                                                                    \
        const float value = v[i];                                                                  \
        dx[i] = dy[i] * (derivative);                                                              \
    }
OPAL_GRADIENT_KERNEL(unary_gradient_relu, value > 0.0f ? 1.0f : 0.0f)
OPAL_GRADIENT_KERNEL(unary_gradient_leaky_relu, value > 0.0f ? 1.0f : a)
OPAL_GRADIENT_KERNEL(unary_gradient_sigmoid, value * (1.0f - value))
OPAL_GRADIENT_KERNEL(unary_gradient_tanh, 1.0f - value * value)
OPAL_GRADIENT_KERNEL(unary_gradient_gelu, opal_unary(18, value, 0.0f, 0.0f))

// a: [count] or [1], b: [count] or [1], out: [count].
__kernel void binary_flat(const __global float* a, const __global float* b, __global float* out,
                          const int count, const int op, const int strideA, const int strideB) {
    const int i = get_global_id(0);
    if (i >= count) return;
    out[i] = opal_binary(op, a[i * strideA], b[i * strideB]);
}

// Turns the row-major linear index i of shape into element offsets along two stride sets.
#define OPAL_OFFSETS(i, rank, shape, stridesA, stridesB, offsetA, offsetB)            \
    {                                                                                  \
        int rest = (i);                                                                \
        for (int axis = (rank) - 1; axis >= 0; --axis) {                               \
            const int extent = (shape)[axis];                                          \
            const int next = rest / extent;                                            \
            const int coordinate = rest - next * extent;                               \
            rest = next;                                                               \
            offsetA += coordinate * (stridesA)[axis];                                  \
            offsetB += coordinate * (stridesB)[axis];                                  \
        }                                                                              \
    }

// out: [count] contiguous, count = Π shape[0..<rank].
__kernel void binary_strided(const __global float* a, const __global float* b, __global float* out,
                             const int count, const int op, const int rank,
                             const int8 shape, const int8 stridesA, const int8 stridesB) {
    const int i = get_global_id(0);
    if (i >= count) return;
    int s[8], sa[8], sb[8];
    vstore8(shape, 0, s);
    vstore8(stridesA, 0, sa);
    vstore8(stridesB, 0, sb);
    int offsetA = 0, offsetB = 0;
    OPAL_OFFSETS(i, rank, s, sa, sb, offsetA, offsetB);
    out[i] = opal_binary(op, a[offsetA], b[offsetB]);
}

// count = Π shape[0..<rank]; src and dst must not overlap.
__kernel void strided_copy(const __global float* src, __global float* dst, const int count, const int rank,
                           const int8 shape, const int8 srcStrides, const int8 dstStrides,
                           const int srcOffset, const int dstOffset) {
    const int i = get_global_id(0);
    if (i >= count) return;
    int s[8], ss[8], ds[8];
    vstore8(shape, 0, s);
    vstore8(srcStrides, 0, ss);
    vstore8(dstStrides, 0, ds);
    int from = srcOffset, to = dstOffset;
    OPAL_OFFSETS(i, rank, s, ss, ds, from, to);
    dst[to] = src[from];
}

// The *_rows forms, for CPU-class devices: one work-item per row of the innermost axis, whose `inner`
// elements are contiguous in dst / out (and in src, a, b, or broadcast there with an inner stride of 0).
// The row's offsets are computed once over the outer axes (shape[0..<rank]), and the loop along the row
// is plain contiguous code the compiler vectorises, instead of rank divisions per element.
// Launch geometry: 1-D over the rows, rounded up to WGS.
__kernel void strided_copy_rows(const __global float* src, __global float* dst, const int rows, const int inner,
                                const int rank, const int8 shape, const int8 srcStrides, const int8 dstStrides,
                                const int srcOffset, const int dstOffset) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    int s[8], ss[8], ds[8];
    vstore8(shape, 0, s);
    vstore8(srcStrides, 0, ss);
    vstore8(dstStrides, 0, ds);
    int from = srcOffset, to = dstOffset;
    OPAL_OFFSETS(r, rank, s, ss, ds, from, to);
    const __global float* in = src + from;
    __global float* out = dst + to;
    for (int k = 0; k < inner; ++k) out[k] = in[k];
}

// out: [rows, inner] contiguous; innerA, innerB ∈ {0, 1}: the operands' strides along the row.
__kernel void binary_strided_rows(const __global float* a, const __global float* b, __global float* out,
                                  const int rows, const int inner, const int op, const int rank, const int8 shape,
                                  const int8 stridesA, const int8 stridesB, const int innerA, const int innerB) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    int s[8], sa[8], sb[8];
    vstore8(shape, 0, s);
    vstore8(stridesA, 0, sa);
    vstore8(stridesB, 0, sb);
    int offsetA = 0, offsetB = 0;
    OPAL_OFFSETS(r, rank, s, sa, sb, offsetA, offsetB);
    const __global float* x = a + offsetA;
    const __global float* y = b + offsetB;
    __global float* z = out + (long)r * inner;
    if (innerA == 1 && innerB == 1) {
        for (int k = 0; k < inner; ++k) z[k] = opal_binary(op, x[k], y[k]);
    } else if (innerA == 1) {
        const float yk = y[0];
        for (int k = 0; k < inner; ++k) z[k] = opal_binary(op, x[k], yk);
    } else if (innerB == 1) {
        const float xk = x[0];
        for (int k = 0; k < inner; ++k) z[k] = opal_binary(op, xk, y[k]);
    } else {
        const float value = opal_binary(op, x[0], y[0]);
        for (int k = 0; k < inner; ++k) z[k] = value;
    }
}

__kernel void transpose_tiled(const __global float* src, const int srcOffset, const int ld, const int srcStride,
                              __global float* dst, const int rows, const int columns) {
    __local float tile[TT][TT + 1];   // +1: rows of the tile fall in different local-memory banks
    const int lx = get_local_id(0), ly = get_local_id(1), batch = get_global_id(2);
    const int c0 = get_group_id(0) * TT, r0 = get_group_id(1) * TT;
    // Read: work-item (lx, ly) takes source row r0 + ly, column c0 + lx.
    if (r0 + ly < rows && c0 + lx < columns) {
        tile[ly][lx] = src[srcOffset + (long)batch * srcStride + (long)(r0 + ly) * ld + c0 + lx];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    // Write: work-item (lx, ly) fills destination row c0 + ly (a source column), column r0 + lx.
    if (c0 + ly < columns && r0 + lx < rows) {
        dst[(long)batch * rows * columns + (long)(c0 + ly) * rows + r0 + lx] = tile[lx][ly];
    }
}
