// peak.cl — probes of a device's attainable fp32 arithmetic rate and memory bandwidth (as clpeak does),
// so that benchmarks can report each kernel's share of what the device can do at all.
//
// Contract (CPU reference: PeakProbeKernelTests, in Double):
//   peak_fma   out[g] = Σ_{j<8} Σ_lanes x_j after `iterations` rounds of x_j ← x_j·a + b, where the sixteen
//              lanes of chain j start at (16g + lane)·1e-6 + j.  Eight independent float16 chains keep 128
//              multiply-adds in flight per work-item: on CPUs each chain fills one AVX-512 register (8 of
//              them hide the FMA latency), on GPUs they are 128 independent scalar chains. The final sum
//              keeps the compiler from dropping the work.  FLOPs = count · iterations · 8 · 16 · 2.
//   peak_copy  y[i] = x[i] for i < count, as float4 (one read and one write: 32 bytes per element).
//
// Launch geometry: 1-D, one work-item per output element, global size rounded up to whole work-groups
// (both kernels bounds-check against count); peak_fma runs one work-item per group on CPU devices, whose
// OpenCL runtimes execute a group as a loop over its work-items (that would spill the chains to memory).

#define CHAIN(x) x = mad(x, a, b)

__kernel void peak_fma(__global float* out, const int count, const int iterations, const float a, const float b) {
    const int g = get_global_id(0);
    if (g >= count) return;
    const float16 start = ((float16)(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f) + (float)(16 * g)) * 1e-6f;
    float16 x0 = start, x1 = start + 1.0f, x2 = start + 2.0f, x3 = start + 3.0f;
    float16 x4 = start + 4.0f, x5 = start + 5.0f, x6 = start + 6.0f, x7 = start + 7.0f;
    for (int i = 0; i < iterations; ++i) {
        CHAIN(x0); CHAIN(x1); CHAIN(x2); CHAIN(x3); CHAIN(x4); CHAIN(x5); CHAIN(x6); CHAIN(x7);
    }
    // The lanes are summed through private memory rather than by .lo/.hi halves: LLVM turns the halves'
    // last step into a shuffle with an `undef` lane, on which oclgrind 21.10's --uninitialized check crashes.
    float lanes[16];
    vstore16(((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)), 0, lanes);
    vstore8(vload8(0, lanes) + vload8(1, lanes), 0, lanes);
    vstore4(vload4(0, lanes) + vload4(1, lanes), 0, lanes);
    out[g] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

__kernel void peak_copy(const __global float4* x, __global float4* y, const int count) {
    const int i = get_global_id(0);
    if (i < count) y[i] = x[i];
}
