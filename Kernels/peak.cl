// peak.cl — probes of a device's attainable fp32 arithmetic rate and memory bandwidth (as clpeak does),
// so that benchmarks can report each kernel's share of what the device can do at all.
//
// Contract (CPU reference: PeakProbeKernelTests, in Double):
//   peak_fma   out[g] = Σ_{j<16} Σ_lanes x_j after `iterations` rounds of x_j ← x_j·a + b, where the four
//              lanes of chain j start at (4g + lane)·1e-6 + j.  Sixteen independent float4 chains keep
//              64 multiply-adds in flight per work-item, enough to hide the FMA latency of wide CPUs and
//              GPUs alike; the final sum keeps the compiler from dropping the work.
//              FLOPs = count · iterations · 16 chains · 4 lanes · 2.
//   peak_copy  y[i] = x[i] for i < count, as float4 (one read and one write: 32 bytes per element).
//
// Launch geometry: 1-D, one work-item per output element, global size rounded up to whole work-groups
// (both kernels bounds-check against count).

#define CHAIN(x) x = mad(x, a, b)

__kernel void peak_fma(__global float* out, const int count, const int iterations, const float a, const float b) {
    const int g = get_global_id(0);
    if (g >= count) return;
    const float4 start = ((float4)(0.0f, 1.0f, 2.0f, 3.0f) + (float)(4 * g)) * 1e-6f;
    float4 x0 = start, x1 = start + 1.0f, x2 = start + 2.0f, x3 = start + 3.0f;
    float4 x4 = start + 4.0f, x5 = start + 5.0f, x6 = start + 6.0f, x7 = start + 7.0f;
    float4 x8 = start + 8.0f, x9 = start + 9.0f, x10 = start + 10.0f, x11 = start + 11.0f;
    float4 x12 = start + 12.0f, x13 = start + 13.0f, x14 = start + 14.0f, x15 = start + 15.0f;
    for (int i = 0; i < iterations; ++i) {
        CHAIN(x0); CHAIN(x1); CHAIN(x2); CHAIN(x3); CHAIN(x4); CHAIN(x5); CHAIN(x6); CHAIN(x7);
        CHAIN(x8); CHAIN(x9); CHAIN(x10); CHAIN(x11); CHAIN(x12); CHAIN(x13); CHAIN(x14); CHAIN(x15);
    }
    const float4 s = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
                   + ((x8 + x9) + (x10 + x11)) + ((x12 + x13) + (x14 + x15));
    out[g] = (s.x + s.y) + (s.z + s.w);
}

__kernel void peak_copy(const __global float4* x, __global float4* y, const int count) {
    const int i = get_global_id(0);
    if (i < count) y[i] = x[i];
}
