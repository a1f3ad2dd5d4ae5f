// random.cl — counter-based random numbers and the dropout mask (OpenCL C 1.2).
//
// Contract: opal_uniform(seed, index) is bit-for-bit OpalRandom.uniform(seed:index:) of
// Sources/OpalCore/Backend.swift (32-bit unsigned wrap-around arithmetic, 24 high bits → [0, 1)), so every
// device draws the same numbers.
//   dropout_mask  out: [count]; out[i] = opal_uniform(seed, i) >= probability ? scale : 0, where the host
//                 passes scale = 1 / (1 − probability) computed in Float (so no device division rounding).
//
// Launch geometry: 1-D, global = count rounded up to a multiple of WGS, local = WGS; bounds-checked.

#ifndef WGS
#define WGS 256
#endif

inline float opal_uniform(uint seed, uint index) {
    uint x = index * 0x9E3779B9u + seed;
    x ^= x >> 16; x *= 0x7FEB352Du;
    x ^= x >> 15; x *= 0x846CA68Bu;
    x ^= x >> 16;
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

__kernel void dropout_mask(__global float* out, const int count, const float probability, const float scale,
                           const uint seed) {
    const int i = get_global_id(0);
    if (i >= count) return;
    out[i] = opal_uniform(seed, (uint)i) >= probability ? scale : 0.0f;
}
