// conv.cl — 2-D convolution over NCHW tensors (fp32, OpenCL C 1.2).
//
// Contract (Conv2DDescriptor in Sources/OpalCore/Backend+Images.swift; CPU reference and fast path:
// Sources/OpalCPU/Conv.swift; tests: Tests/OpalOpenCLTests/ConvKernelTests.swift):
//   x: [N, C, H, W]   w: [M, C/G, KH, KW]   y: [N, M, OH, OW]   bias: [M] (optional)   P = OH·OW
//   y[n, co, oh, ow] = bias[co] + Σ_{ci ∈ group(co), kh, kw} x[n, ci, ih, iw] · w[co, ci − g·Cg, kh, kw]
//   ih = oh·SH − PH + kh·DH, iw = ow·SW − PW + kw·DW; positions outside the input read as 0.
// Every kernel bounds-checks its work-items, so no extent needs to be a multiple of a work-group or tile.
// Index arithmetic is in 32-bit int: the host checks that every tensor holds fewer than 2³¹ elements.
//
// Two forward algorithms share this file:
//  (1) im2col → GEMM (CLBlast or gemm.cl) → scatter. The column matrix holds a chunk of `count` batch
//      elements from `first` side by side (the host bounds its size by chunking the batch):
//        col[(ci·KH + kh)·KW + kw, j·P + p] = x[first + j, ci, ih, iw]        (j < count)
//      group g's rows start at g·Cg·KH·KW; the GEMM writes out[Mg, count·P] = W_g · col_g and
//      conv_scatter stores y[first + j, g·Mg + m, p] = out[m, j·P + p] (+ bias). Backward-data runs
//      conv_gather (the inverse of scatter), a GEMM colGrad = W_gᵀ · dyT and conv_col2im, which sums
//      every col entry back into the input position it came from (a gather per dx element, no atomics).
//      Backward-weight runs im2col, gather and dW_g (+)= dyT · col_gᵀ.
//  (2) conv_forward_implicit: the same GEMM, y[Mg, N·P] = W_g · col_g, without ever storing col: each
//      work-group builds CONV_TK×CONV_TN slices of col on the fly in local memory.
//
// Launch geometry:
//   conv_im2col      global [count·P rounded up to the work-group, C·KH·KW], local [WGS', 1]
//   conv_col2im      global [count·C·H·W rounded up], 1-D
//   conv_scatter / conv_gather   global [count·P rounded up, Mg·count], local [WGS', 1]   (one group g per launch)
//   conv_forward_implicit  global [⌈N·P / CONV_TN⌉·CONV_TN/CONV_WPN, ⌈Mg / CONV_TM⌉·CONV_TM/CONV_WPM, G],
//                          local [CONV_TN/CONV_WPN, CONV_TM/CONV_WPM, 1]. Work-item (tx, ty) of a group
//                          accumulates CONV_WPM×CONV_WPN outputs: rows ty·CONV_WPM + i, columns tx + j·RX
//                          (RX = CONV_TN/CONV_WPN), so neighbouring work-items touch neighbouring columns.

#ifndef CONV_TM
#define CONV_TM 64      // output channels per work-group tile
#endif
#ifndef CONV_TN
#define CONV_TN 64      // output positions (over batch·OH·OW) per work-group tile
#endif
#ifndef CONV_TK
#define CONV_TK 16      // depth (Cg·KH·KW) per step
#endif
#ifndef CONV_WPM
#define CONV_WPM 4      // rows per work-item
#endif
#ifndef CONV_WPN
#define CONV_WPN 4      // columns per work-item
#endif

#define CONV_RX (CONV_TN / CONV_WPN)
#define CONV_RY (CONV_TM / CONV_WPM)
#define CONV_THREADS (CONV_RX * CONV_RY)

// a − q·b for q = a / b, written so that the optimiser cannot pair the division with a remainder:
// LLVM rewrites such div/rem pairs with a `freeze` instruction, which oclgrind's --uninitialized check
// cannot interpret. max(b, 1) equals b (every divisor here is ≥ 1), but is opaque to that pairing.
inline int remainder_of(const int a, const int q, const int b) { return a - q * max(b, 1); }

// Geometry arguments shared by the kernels, in this order.
#define CONV_GEOMETRY const int C, const int H, const int W, const int KH, const int KW, \
    const int SH, const int SW, const int PH, const int PW, const int DH, const int DW, const int OH, const int OW

__kernel void conv_im2col(const __global float* x, __global float* col, const int first, const int count,
                          CONV_GEOMETRY) {
    const int P = OH * OW;
    const int column = get_global_id(0);       // j·P + p
    const int row = get_global_id(1);          // (ci·KH + kh)·KW + kw
    if (column >= count * P || row >= C * KH * KW) return;
    const int j = column / P, p = remainder_of(column, j, P);
    const int oh = p / OW, ow = remainder_of(p, oh, OW);
    const int rowKH = row / KW, kw = remainder_of(row, rowKH, KW);
    const int ci = rowKH / KH, kh = remainder_of(rowKH, ci, KH);
    const int ih = oh * SH - PH + kh * DH, iw = ow * SW - PW + kw * DW;
    float value = 0.0f;
    if (ih >= 0 && ih < H && iw >= 0 && iw < W) value = x[(((first + j) * C + ci) * H + ih) * W + iw];
    col[row * (count * P) + column] = value;
}

__kernel void conv_col2im(const __global float* col, __global float* dx, const int first, const int count,
                          CONV_GEOMETRY) {
    const int index = get_global_id(0);        // ((j·C + ci)·H + ih)·W + iw
    if (index >= count * C * H * W) return;
    const int P = OH * OW, columns = count * P;
    const int byRow = index / W, iw = remainder_of(index, byRow, W);
    const int byPlane = byRow / H, ih = remainder_of(byRow, byPlane, H);
    const int j = byPlane / C, ci = remainder_of(byPlane, j, C);
    float sum = 0.0f;
    for (int kh = 0; kh < KH; ++kh) {
        const int th = ih + PH - kh * DH;      // = oh·SH
        if (th < 0) continue;
        const int oh = th / SH;
        if (remainder_of(th, oh, SH) != 0 || oh >= OH) continue;
        for (int kw = 0; kw < KW; ++kw) {
            const int tw = iw + PW - kw * DW;  // = ow·SW
            if (tw < 0) continue;
            const int ow = tw / SW;
            if (remainder_of(tw, ow, SW) != 0 || ow >= OW) continue;
            sum += col[((ci * KH + kh) * KW + kw) * columns + j * P + oh * OW + ow];
        }
    }
    dx[(first * C) * H * W + index] = sum;
}

// y[first + j, g·Mg + m, p] = out[m, j·P + p] + (hasBias ? bias[g·Mg + m] : 0)
__kernel void conv_scatter(const __global float* out, __global float* y, const __global float* bias,
                           const int hasBias, const int first, const int count, const int M, const int Mg,
                           const int g, const int P) {
    const int column = get_global_id(0), m = get_global_id(1);
    if (column >= count * P || m >= Mg) return;
    const int j = column / P, p = remainder_of(column, j, P);
    float value = out[m * (count * P) + column];
    if (hasBias) value += bias[g * Mg + m];
    y[((first + j) * M + g * Mg + m) * P + p] = value;
}

// dyT[m, j·P + p] = dy[first + j, g·Mg + m, p]
__kernel void conv_gather(const __global float* dy, __global float* dyT, const int first, const int count,
                          const int M, const int Mg, const int g, const int P) {
    const int column = get_global_id(0), m = get_global_id(1);
    if (column >= count * P || m >= Mg) return;
    const int j = column / P, p = remainder_of(column, j, P);
    dyT[m * (count * P) + column] = dy[((first + j) * M + g * Mg + m) * P + p];
}

// Implicit-GEMM forward: y_g[Mg, N·P] = W_g[Mg, K] · col_g[K, N·P] (+ bias), K = Cg·KH·KW, with col_g
// never stored: its CONV_TK×CONV_TN tile is read straight from x into local memory at each step.
__kernel __attribute__((reqd_work_group_size(CONV_RX, CONV_RY, 1)))
void conv_forward_implicit(const __global float* x, const __global float* w, const __global float* bias,
                           __global float* y, const int hasBias, const int N, const int M, const int G,
                           CONV_GEOMETRY) {
    __local float tileW[CONV_TK][CONV_TM];       // [depth, output channel]
    __local float tileX[CONV_TK][CONV_TN];       // [depth, output position]
    const int tx = get_local_id(0), ty = get_local_id(1), thread = ty * CONV_RX + tx;
    const int g = get_group_id(2);
    const int Cg = C / G, Mg = M / G, P = OH * OW, columns = N * P, K = Cg * KH * KW, KHW = KH * KW;
    const int m0 = get_group_id(1) * CONV_TM, n0 = get_group_id(0) * CONV_TN;
    const __global float* wg = w + (g * Mg) * K;

    // The tile column this work-item loads is the same at every step: decompose it once.
    // Work-item `thread` loads columns (thread % CONV_TN) of rows thread / CONV_TN + r·(THREADS / TN).
    const int loadColumn = thread % CONV_TN, loadRow = thread / CONV_TN;
    const int column = n0 + loadColumn;
    const bool columnValid = column < columns;
    // Divisions stay unconditional: under a select LLVM would `freeze` them (see remainder_of).
    const int quotient = column / P, remainder = remainder_of(column, quotient, P);
    const int n = min(quotient, N - 1), p = columnValid ? remainder : 0;
    const int oh = p / OW, ow = remainder_of(p, oh, OW);
    const int ihBase = oh * SH - PH, iwBase = ow * SW - PW;
    const __global float* xn = x + ((n * C) + g * Cg) * H * W;
    // W tile: work-item loads depth (thread % TK) of rows thread / TK + r·(THREADS / TK).
    const int wDepth = thread % CONV_TK, wRow = thread / CONV_TK;

    float acc[CONV_WPM][CONV_WPN];
    for (int i = 0; i < CONV_WPM; ++i)
        for (int j = 0; j < CONV_WPN; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += CONV_TK) {
        for (int r = wRow; r < CONV_TM; r += CONV_THREADS / CONV_TK) {
            const int m = m0 + r, k = k0 + wDepth;
            tileW[wDepth][r] = (m < Mg && k < K) ? wg[m * K + k] : 0.0f;
        }
        for (int r = loadRow; r < CONV_TK; r += CONV_THREADS / CONV_TN) {
            const int k = k0 + r;
            const int ci = k / KHW, rest = remainder_of(k, ci, KHW);
            const int kh = rest / KW, kw = remainder_of(rest, kh, KW);
            float value = 0.0f;
            if (columnValid && k < K) {
                const int ih = ihBase + kh * DH, iw = iwBase + kw * DW;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) value = xn[(ci * H + ih) * W + iw];
            }
            tileX[r][loadColumn] = value;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < CONV_TK; ++k) {
            float a[CONV_WPM], b[CONV_WPN];
            for (int i = 0; i < CONV_WPM; ++i) a[i] = tileW[k][ty * CONV_WPM + i];
            for (int j = 0; j < CONV_WPN; ++j) b[j] = tileX[k][tx + j * CONV_RX];
            for (int i = 0; i < CONV_WPM; ++i)
                for (int j = 0; j < CONV_WPN; ++j) acc[i][j] = mad(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (int j = 0; j < CONV_WPN; ++j) {
        const int c = n0 + tx + j * CONV_RX;
        const int nn = c / P, pp = remainder_of(c, nn, P);
        if (c >= columns) continue;
        for (int i = 0; i < CONV_WPM; ++i) {
            const int m = m0 + ty * CONV_WPM + i;
            if (m >= Mg) continue;
            const int co = g * Mg + m;
            y[(nn * M + co) * P + pp] = acc[i][j] + (hasBias ? bias[co] : 0.0f);
        }
    }
}

// Implicit-GEMM forward for CPU-class devices (PoCL): no local memory and no barriers, so nothing has to
// be vectorised across work-items; each work-item holds CONV_VM float16 accumulators in registers
// instead: output channels m0 ..< m0 + CONV_VM of group g times 16 consecutive output columns
// ow0 ..< ow0 + 16 of one output row (n, oh). At each tap (ci, kh, kw) the 16 inputs are one vload16
// (stride 1) or two vload16 halves' even lanes (stride 2) when the whole run lies inside the row, else a
// bounds-checked per-lane gather; rows ih outside the input are skipped (their taps contribute 0).
// Launch: global [N·OH·⌈OW/16⌉ rounded up to the local size, ⌈Mg / CONV_VM⌉, G], local [any, 1, 1].
#ifndef CONV_VM
#define CONV_VM 8
#endif

__kernel void conv_forward_implicit_rows(const __global float* x, const __global float* w,
                                         const __global float* bias, __global float* y, const int hasBias,
                                         const int N, const int M, const int G, CONV_GEOMETRY) {
    const int Cg = C / G, Mg = M / G, K = Cg * KH * KW;
    const int segments = (OW + 15) / 16;
    const int item = get_global_id(0), m0 = get_global_id(1) * CONV_VM, g = get_global_id(2);
    if (item >= N * OH * segments || m0 >= Mg) return;
    const int outputRow = item / segments, segment = remainder_of(item, outputRow, segments);
    const int n = outputRow / OH, oh = remainder_of(outputRow, n, OH);
    const int ow0 = segment * 16, iw0 = ow0 * SW - PW;
    const int rows = min(CONV_VM, Mg - m0);
    const __global float* xg = x + (n * C + g * Cg) * H * W;
    const __global float* wg = w + (g * Mg + m0) * K;
    // Rows past the end of the group reuse the last valid row (always in bounds; their sums are dropped).
    int rowOffset[CONV_VM];
    for (int i = 0; i < CONV_VM; ++i) rowOffset[i] = min(i, rows - 1) * K;

    float16 acc[CONV_VM];
    for (int i = 0; i < CONV_VM; ++i) acc[i] = (float16)(0.0f);
    for (int ci = 0; ci < Cg; ++ci) {
        for (int kh = 0; kh < KH; ++kh) {
            const int ih = oh * SH - PH + kh * DH;
            if (ih < 0 || ih >= H) continue;
            const __global float* line = xg + (ci * H + ih) * W;
            const int kBase = (ci * KH + kh) * KW;
            for (int kw = 0; kw < KW; ++kw) {
                const int start = iw0 + kw * DW;
                float16 v;
                if (SW == 1 && start >= 0 && start + 16 <= W) {
                    v = vload16(0, line + start);
                } else if (SW == 2 && start >= 0 && start + 32 <= W) {
                    const float16 low = vload16(0, line + start), high = vload16(0, line + start + 16);
                    v = (float16)(low.even, high.even);
                } else {
                    float lanes[16];
                    for (int l = 0; l < 16; ++l) {
                        const int iw = start + l * SW;
                        lanes[l] = (iw >= 0 && iw < W) ? line[iw] : 0.0f;
                    }
                    v = vload16(0, lanes);
                }
                const int k = kBase + kw;
                for (int i = 0; i < CONV_VM; ++i) acc[i] = mad((float16)(wg[rowOffset[i] + k]), v, acc[i]);
            }
        }
    }
    const int valid = min(16, OW - ow0);
    for (int i = 0; i < rows; ++i) {
        const int co = g * Mg + m0 + i;
        const float16 out = acc[i] + (float16)(hasBias ? bias[co] : 0.0f);
        __global float* target = y + ((n * M + co) * OH + oh) * OW + ow0;
        if (valid == 16) {
            vstore16(out, 0, target);
        } else {
            float lanes[16];
            vstore16(out, 0, lanes);
            for (int l = 0; l < valid; ++l) target[l] = lanes[l];
        }
    }
}
