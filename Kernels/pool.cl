// pool.cl — 2-D max / average pooling over NCHW planes and their backward passes (fp32, OpenCL C 1.2).
//
// Contract (CPU reference: Sources/OpalCPU/Pool.swift):
//   x, dx: [planes = batch·channels, inputHeight, inputWidth];  y, dy, indices: [planes, outputHeight, outputWidth]
//   The window of output (oh, ow) covers rows oh·sH − pH … + kH − 1 and columns ow·sW − pW … + kW − 1,
//   clipped to the input (padding ≤ kernel/2, so every window holds at least one input element).
//   max_pool_2d            y = max over the window, indices = ih·inputWidth + iw of the first maximum in
//                          row-major order (a NaN counts as the maximum; the first NaN wins)
//   max_pool_2d_backward   dx[p] = Σ dy[o] over the outputs o whose window contains p and indices[o] == p
//   avg_pool_2d            y = (Σ window) / (kH·kW)  (padding counts as zeros)
//   avg_pool_2d_backward   dx[p] = (Σ dy[o] over the windows containing p) / (kH·kW)
//   The backward passes gather (one work-item per input element, no atomics); every dx element is written.
//   max_pool_2d_2x2[_backward]: the same for 2×2 windows at stride 2 without padding (the usual CNN pooling),
//   straight-line code without window loops, which CPU OpenCL compilers vectorise across work-items.
//
// Launch geometry: one work-item per output (forward) or input (backward) element of a plane:
//   global = (width rounded up to Lx, height rounded up to Ly, planes), local = (Lx, Ly, 1), Lx·Ly ≤ WGS.

#ifndef WGS
#define WGS 256
#endif

__kernel void max_pool_2d(const __global float* x, __global float* y, __global int* indices, const int planes,
                          const int inputHeight, const int inputWidth, const int outputHeight, const int outputWidth,
                          const int kernelHeight, const int kernelWidth, const int strideHeight, const int strideWidth,
                          const int paddingHeight, const int paddingWidth) {
    const int ow = get_global_id(0), oh = get_global_id(1), plane = get_global_id(2);
    if (ow >= outputWidth || oh >= outputHeight || plane >= planes) return;
    const __global float* xp = x + (long)plane * inputHeight * inputWidth;
    const int h0 = oh * strideHeight - paddingHeight, w0 = ow * strideWidth - paddingWidth;
    const int hStart = max(h0, 0), hEnd = min(h0 + kernelHeight, inputHeight);
    const int wStart = max(w0, 0), wEnd = min(w0 + kernelWidth, inputWidth);
    int bestIndex = hStart * inputWidth + wStart;
    float best = xp[bestIndex];
    for (int h = hStart; h < hEnd && !isnan(best); ++h) {
        for (int w = wStart; w < wEnd; ++w) {
            const float value = xp[h * inputWidth + w];
            if (value > best || isnan(value)) {
                best = value;
                bestIndex = h * inputWidth + w;
                if (isnan(value)) break;
            }
        }
    }
    const long o = ((long)plane * outputHeight + oh) * outputWidth + ow;
    y[o] = best;
    indices[o] = bestIndex;
}

// The output rows [*start, *end] whose windows contain padded row hp = ih + padding (empty when start > end).
inline void opal_pool_windows(const int hp, const int kernelSize, const int stride, const int outputSize,
                              int* start, int* end) {
    *start = hp < kernelSize ? 0 : (hp - kernelSize) / stride + 1;
    *end = min(hp / stride, outputSize - 1);
}

__kernel void max_pool_2d_backward(const __global float* dy, const __global int* indices, __global float* dx,
                                   const int planes, const int inputHeight, const int inputWidth,
                                   const int outputHeight, const int outputWidth, const int kernelHeight,
                                   const int kernelWidth, const int strideHeight, const int strideWidth,
                                   const int paddingHeight, const int paddingWidth) {
    const int iw = get_global_id(0), ih = get_global_id(1), plane = get_global_id(2);
    if (iw >= inputWidth || ih >= inputHeight || plane >= planes) return;
    int ohStart, ohEnd, owStart, owEnd;
    opal_pool_windows(ih + paddingHeight, kernelHeight, strideHeight, outputHeight, &ohStart, &ohEnd);
    opal_pool_windows(iw + paddingWidth, kernelWidth, strideWidth, outputWidth, &owStart, &owEnd);
    const long planeOffset = (long)plane * outputHeight * outputWidth;
    const __global float* dyp = dy + planeOffset;
    const __global int* ip = indices + planeOffset;
    const int position = ih * inputWidth + iw;
    float sum = 0.0f;
    for (int oh = ohStart; oh <= ohEnd; ++oh) {
        for (int ow = owStart; ow <= owEnd; ++ow) {
            const int o = oh * outputWidth + ow;
            if (ip[o] == position) sum += dyp[o];
        }
    }
    dx[(long)plane * inputHeight * inputWidth + position] = sum;
}

// The next candidate of a max window in row-major order: taken when larger or NaN, unless a NaN already won.
inline void opal_pool_consider(const __global float* xp, const int index, float* best, int* bestIndex) {
    const float value = xp[index];
    const bool take = !isnan(*best) && (value > *best || isnan(value));
    *best = take ? value : *best;
    *bestIndex = take ? index : *bestIndex;
}

// 2×2 windows, stride 2, no padding: the window of (oh, ow) is rows 2oh, 2oh + 1 and columns 2ow, 2ow + 1,
// always inside the input. The first maximum in row-major order wins, a NaN as soon as it is seen.
__kernel void max_pool_2d_2x2(const __global float* x, __global float* y, __global int* indices, const int planes,
                              const int inputHeight, const int inputWidth, const int outputHeight,
                              const int outputWidth) {
    const int ow = get_global_id(0), oh = get_global_id(1), plane = get_global_id(2);
    if (ow >= outputWidth || oh >= outputHeight || plane >= planes) return;
    const __global float* xp = x + (long)plane * inputHeight * inputWidth;
    const int first = 2 * oh * inputWidth + 2 * ow;
    float best = xp[first];
    int bestIndex = first;
    opal_pool_consider(xp, first + 1, &best, &bestIndex);
    opal_pool_consider(xp, first + inputWidth, &best, &bestIndex);
    opal_pool_consider(xp, first + inputWidth + 1, &best, &bestIndex);
    const long o = ((long)plane * outputHeight + oh) * outputWidth + ow;
    y[o] = best;
    indices[o] = bestIndex;
}

// dx[ih, iw] = dy[ih/2, iw/2] where that window's maximum is (ih, iw), else 0 (also outside every window:
// the last row or column of an odd-sized input).
__kernel void max_pool_2d_2x2_backward(const __global float* dy, const __global int* indices, __global float* dx,
                                       const int planes, const int inputHeight, const int inputWidth,
                                       const int outputHeight, const int outputWidth) {
    const int iw = get_global_id(0), ih = get_global_id(1), plane = get_global_id(2);
    if (iw >= inputWidth || ih >= inputHeight || plane >= planes) return;
    const int oh = min(ih >> 1, outputHeight - 1), ow = min(iw >> 1, outputWidth - 1);
    const long o = ((long)plane * outputHeight + oh) * outputWidth + ow;
    const int position = ih * inputWidth + iw;
    dx[(long)plane * inputHeight * inputWidth + position] = indices[o] == position ? dy[o] : 0.0f;
}

__kernel void avg_pool_2d(const __global float* x, __global float* y, const int planes,
                          const int inputHeight, const int inputWidth, const int outputHeight, const int outputWidth,
                          const int kernelHeight, const int kernelWidth, const int strideHeight, const int strideWidth,
                          const int paddingHeight, const int paddingWidth) {
    const int ow = get_global_id(0), oh = get_global_id(1), plane = get_global_id(2);
    if (ow >= outputWidth || oh >= outputHeight || plane >= planes) return;
    const __global float* xp = x + (long)plane * inputHeight * inputWidth;
    const int h0 = oh * strideHeight - paddingHeight, w0 = ow * strideWidth - paddingWidth;
    const int hStart = max(h0, 0), hEnd = min(h0 + kernelHeight, inputHeight);
    const int wStart = max(w0, 0), wEnd = min(w0 + kernelWidth, inputWidth);
    float sum = 0.0f;
    for (int h = hStart; h < hEnd; ++h) {
        for (int w = wStart; w < wEnd; ++w) sum += xp[h * inputWidth + w];
    }
    y[((long)plane * outputHeight + oh) * outputWidth + ow] = sum * (1.0f / (float)(kernelHeight * kernelWidth));
}

__kernel void avg_pool_2d_backward(const __global float* dy, __global float* dx, const int planes,
                                   const int inputHeight, const int inputWidth, const int outputHeight,
                                   const int outputWidth, const int kernelHeight, const int kernelWidth,
                                   const int strideHeight, const int strideWidth,
                                   const int paddingHeight, const int paddingWidth) {
    const int iw = get_global_id(0), ih = get_global_id(1), plane = get_global_id(2);
    if (iw >= inputWidth || ih >= inputHeight || plane >= planes) return;
    int ohStart, ohEnd, owStart, owEnd;
    opal_pool_windows(ih + paddingHeight, kernelHeight, strideHeight, outputHeight, &ohStart, &ohEnd);
    opal_pool_windows(iw + paddingWidth, kernelWidth, strideWidth, outputWidth, &owStart, &owEnd);
    const __global float* dyp = dy + (long)plane * outputHeight * outputWidth;
    float sum = 0.0f;
    for (int oh = ohStart; oh <= ohEnd; ++oh) {
        for (int ow = owStart; ow <= owEnd; ++ow) sum += dyp[oh * outputWidth + ow];
    }
    dx[((long)plane * inputHeight + ih) * inputWidth + iw] = sum * (1.0f / (float)(kernelHeight * kernelWidth));
}
