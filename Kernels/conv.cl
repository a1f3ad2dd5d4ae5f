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
//      work-group builds CONV_TK×CONV_TN slices of col on the fly in local memory. For CPU devices,
//      conv_forward_implicit_rows (forward) and conv_backward_weight_rows + conv_sum_chunks (backward-weight)
//      compute the same sums from x in float16 registers, without local memory (see each kernel).
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
    // (Unsigned: for the power-of-two tiles they compile to a shift and a mask; a signed `/` and `%` pair
    // becomes a `freeze`, see remainder_of.)
    const uint threadBits = (uint)thread;
    const int loadColumn = (int)(threadBits % CONV_TN), loadRow = (int)(threadBits / CONV_TN);
    const int column = n0 + loadColumn;
    const bool columnValid = column < columns;
    // Divisions stay unconditional: under a select LLVM would `freeze` them (see remainder_of).
    const int quotient = column / P, remainder = remainder_of(column, quotient, P);
    const int n = min(quotient, N - 1), p = columnValid ? remainder : 0;
    const int oh = p / OW, ow = remainder_of(p, oh, OW);
    const int ihBase = oh * SH - PH, iwBase = ow * SW - PW;
    const __global float* xn = x + ((n * C) + g * Cg) * H * W;
    // W tile: work-item loads depth (thread % TK) of rows thread / TK + r·(THREADS / TK).
    const int wDepth = (int)(threadBits % CONV_TK), wRow = (int)(threadBits / CONV_TK);

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

// The even lanes of the 32 floats (low, high): one two-source shuffle (a single vpermt2ps on AVX-512).
// Not (float16)(low.even, high.even), which LLVM turns into two narrowing shuffles whose lanes oclgrind
// 21.10's --uninitialized check takes from the wrong operand, reporting loaded values as uninitialised.
inline float16 conv_even_lanes(const float16 low, const float16 high) {
#ifdef __clang__
    return __builtin_shufflevector(low, high, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
#else
    return (float16)(low.even, high.even);
#endif
}

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
                    v = conv_even_lanes(vload16(0, line + start), vload16(0, line + start + 16));
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

// Backward-weight for CPU-class devices (PoCL), with col never stored:
//   dW_g[m, k] = Σ_{n, oh, ow} dy[n, g·Mg + m, oh, ow] · col_g[k, (n, oh, ow)],   k = (ci·KH + kh)·KW + kw < K
// Both operands run along the reduction (the output positions), so the reduction is what is vectorised: each
// work-item holds CONV_BWM × CONV_BWK float16 accumulators (output channels m0 ..< m0 + CONV_BWM times depths
// k0 ..< k0 + CONV_BWK) and at each step adds 16 consecutive positions of one output row (n, oh): one vload16 of
// dy per channel, one x vector per depth (one vload16, or two keeping the even lanes at stride 2; taps of rows
// outside the input contribute 0). Rows wider
// than 16 end with a window shifted back to OW − 16 whose lanes already summed are zeroed in dy; rows narrower
// than 16 load 16 floats of dy from the row's start and zero the lanes past OW (the next row's). A window
// that crosses an input row's ends but stays inside x is loaded whole with its lanes outside the row zeroed;
// only the tensors' very first and last rows fall back to lane-by-lane gathers. The lanes are summed once
// at the end. (The zeroed dy lanes meet finite x values or zeros; a non-finite x there would turn a ±∞ sum
// into NaN.)
// The output rows r = n·OH + oh are split into `chunks` ranges of `rowsPerChunk`; chunk c writes its sums to
// partial[c, g·Mg + m, k] (partial is dW itself when chunks = 1), conv_sum_chunks adds the chunks up.
// Launch: global [⌈K / CONV_BWK⌉ rounded up to the local size, ⌈Mg / CONV_BWM⌉, chunks·G], local [any, 1, 1].
#ifndef CONV_BWM
#define CONV_BWM 8
#endif
#ifndef CONV_BWK
#define CONV_BWK 1
#endif

// The sum of v's 16 lanes, halved through a private array with vstore/vload rather than with .lo/.hi:
// oclgrind 21.10's --uninitialized check takes lanes of such narrowing shuffles from the wrong operand
// (reporting them as uninitialised), and segfaults on the `undef` lane LLVM gives the last step's shuffle.
// (It runs once per accumulator and chunk, next to thousands of multiply-adds.)
inline float conv_lane_sum(const float16 v) {
    float lanes[16];
    vstore16(v, 0, lanes);
    vstore8(vload8(0, lanes) + vload8(1, lanes), 0, lanes);
    vstore4(vload4(0, lanes) + vload4(1, lanes), 0, lanes);
    vstore2(vload2(0, lanes) + vload2(1, lanes), 0, lanes);
    return lanes[0] + lanes[1];
}

__kernel void conv_backward_weight_rows(const __global float* x, const __global float* dy,
                                        __global float* partial, const int N, const int M, const int G,
                                        const int rowsPerChunk, CONV_GEOMETRY) {
    const int Cg = C / G, Mg = M / G, K = Cg * KH * KW, KHW = KH * KW;
    const int k0 = get_global_id(0) * CONV_BWK, m0 = get_global_id(1) * CONV_BWM;
    const int chunkGroup = get_global_id(2), chunk = chunkGroup / G, g = remainder_of(chunkGroup, chunk, G);
    if (k0 >= K || m0 >= Mg) return;
    const int rowBegin = chunk * rowsPerChunk, rowEnd = min(rowBegin + rowsPerChunk, N * OH);
    const int channels = min(CONV_BWM, Mg - m0), depths = min(CONV_BWK, K - k0);
    const int xCount = N * C * H * W, dyCount = N * M * OH * OW;

    // Each depth's tap, decomposed once; depths past K repeat the last one (their sums are dropped).
    int tapChannel[CONV_BWK], tapRow[CONV_BWK], tapColumn[CONV_BWK];
    for (int j = 0; j < CONV_BWK; ++j) {
        const int k = k0 + min(j, depths - 1);
        const int ci = k / KHW, rest = remainder_of(k, ci, KHW);
        const int kh = rest / KW, kw = remainder_of(rest, kh, KW);
        tapChannel[j] = g * Cg + ci;
        tapRow[j] = kh * DH - PH;
        tapColumn[j] = kw * DW - PW;
    }
    // Channels past the end of the group reuse the last valid one (always in bounds; their sums are dropped).
    int channelOffset[CONV_BWM];
    for (int i = 0; i < CONV_BWM; ++i) channelOffset[i] = (g * Mg + m0 + min(i, channels - 1)) * OH * OW;

    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    float16 acc[CONV_BWM][CONV_BWK];
    for (int i = 0; i < CONV_BWM; ++i)
        for (int j = 0; j < CONV_BWK; ++j) acc[i][j] = (float16)(0.0f);

    for (int row = rowBegin; row < rowEnd; ++row) {
        const int n = row / OH, oh = remainder_of(row, n, OH);
        const __global float* dyRow = dy + n * M * OH * OW + oh * OW;
        for (int ow0 = 0; ow0 < OW; ow0 += 16) {
            // The window [start, start + 16) of output columns: lanes below `fresh` were summed already.
            const int start = OW >= 16 ? min(ow0, OW - 16) : 0, fresh = ow0 - start;
            float16 xv[CONV_BWK];
            for (int j = 0; j < CONV_BWK; ++j) {
                const int ih = oh * SH + tapRow[j];
                const int iw0 = start * SW + tapColumn[j];
                // The window's first element in x; a window that crosses the row's ends but stays inside x
                // is loaded whole and its lanes outside the row are zeroed (select, so no NaN leaks in).
                const int first = ((n * C + tapChannel[j]) * H + ih) * W + iw0;
                const bool inside = iw0 >= 0 && iw0 + 16 * SW - (SW - 1) <= W;
                if (ih < 0 || ih >= H) {
                    xv[j] = (float16)(0.0f);
                } else if (SW == 1 && first >= 0 && first + 16 <= xCount) {
                    xv[j] = vload16(0, x + first);
                    if (!inside) {
                        const int16 iw = (int16)(iw0) + lane;
                        xv[j] = select((float16)(0.0f), xv[j], (iw >= (int16)(0)) & (iw < (int16)(W)));
                    }
                } else if (SW == 2 && first >= 0 && first + 32 <= xCount) {
                    xv[j] = conv_even_lanes(vload16(0, x + first), vload16(0, x + first + 16));
                    if (!inside) {
                        const int16 iw = (int16)(iw0) + lane * (int16)(2);
                        xv[j] = select((float16)(0.0f), xv[j], (iw >= (int16)(0)) & (iw < (int16)(W)));
                    }
                } else {
                    const __global float* line = x + ((n * C + tapChannel[j]) * H + ih) * W;
                    float lanes[16];
                    for (int l = 0; l < 16; ++l) {
                        const int iw = iw0 + l * SW;
                        lanes[l] = (iw >= 0 && iw < W) ? line[iw] : 0.0f;
                    }
                    xv[j] = vload16(0, lanes);
                }
            }
            for (int i = 0; i < CONV_BWM; ++i) {
                const __global float* d = dyRow + channelOffset[i] + start;
                float16 v;
                if (OW >= 16) {
                    v = vload16(0, d);
                    if (fresh > 0) v = select((float16)(0.0f), v, lane >= (int16)(fresh));
                } else if (d + 16 <= dy + dyCount) {
                    // A row narrower than the window: its OW lanes, the next row's zeroed.
                    v = select((float16)(0.0f), vload16(0, d), lane < (int16)(OW));
                } else {
                    float lanes[16];
                    for (int l = 0; l < 16; ++l) lanes[l] = l < OW ? d[l] : 0.0f;
                    v = vload16(0, lanes);
                }
                for (int j = 0; j < CONV_BWK; ++j) acc[i][j] = mad(v, xv[j], acc[i][j]);
            }
        }
    }
    __global float* out = partial + (chunk * M + g * Mg + m0) * K + k0;
    for (int i = 0; i < channels; ++i)
        for (int j = 0; j < depths; ++j) out[i * K + j] = conv_lane_sum(acc[i][j]);
}

// dw[i] = Σ_{c < chunks} partial[c·count + i]   (i < count; global [count rounded up], 1-D)
__kernel void conv_sum_chunks(const __global float* partial, __global float* dw, const int chunks, const int count) {
    const int i = get_global_id(0);
    if (i >= count) return;
    float sum = 0.0f;
    for (int c = 0; c < chunks; ++c) sum += partial[c * count + i];
    dw[i] = sum;
}

