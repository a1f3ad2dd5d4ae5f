// optim.cl — fused optimizer updates, in place (fp32, OpenCL C 1.2).
//
// Contract (the AdamStep / SGDStep doc comments in Sources/OpalCore/Backend.swift; CPU reference in OpalCPU):
//   adam_update  parameter θ, gradient g, moments m, v: [count];
//                g' = g + (decoupled ? 0 : weightDecay·θ)
//                m = β1·m + (1 − β1)·g';  v = β2·v + (1 − β2)·g'²
//                θ −= learningRate · ((m / bc1) / (sqrt(v / bc2) + ε) + (decoupled ? weightDecay·θ : 0))
//                bc1 = 1 − β1ᵗ, bc2 = 1 − β2ᵗ come from the host.
//   sgd_update   θ, g, velocity: [count];
//                g' = g + weightDecay·θ;  v = momentum·v + g';  θ −= learningRate · (nesterov ? g' + momentum·v : v)
//                When momentum == 0 the velocity buffer is neither read nor written (θ −= learningRate·g').
//
// Launch geometry: 1-D, global = count rounded up to a multiple of WGS, local = WGS; bounds-checked.

#ifndef WGS
#define WGS 256
#endif

__kernel void adam_update(__global float* parameter, const __global float* gradient,
                          __global float* m, __global float* v, const int count,
                          const float learningRate, const float beta1, const float beta2, const float epsilon,
                          const float weightDecay, const int decoupled,
                          const float biasCorrection1, const float biasCorrection2) {
    const int i = get_global_id(0);
    if (i >= count) return;
    const float theta = parameter[i];
    float g = gradient[i];
    if (!decoupled) g += weightDecay * theta;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mHat = mi / biasCorrection1;
    const float vHat = vi / biasCorrection2;
    float update = mHat / (sqrt(vHat) + epsilon);
    if (decoupled) update += weightDecay * theta;
    parameter[i] = theta - learningRate * update;
}

__kernel void sgd_update(__global float* parameter, const __global float* gradient, __global float* velocity,
                         const int count, const float learningRate, const float momentum,
                         const float weightDecay, const int nesterov) {
    const int i = get_global_id(0);
    if (i >= count) return;
    const float theta = parameter[i];
    const float g = gradient[i] + weightDecay * theta;
    float direction = g;
    if (momentum != 0.0f) {
        const float vi = momentum * velocity[i] + g;
        velocity[i] = vi;
        direction = nesterov ? g + momentum * vi : vi;
    }
    parameter[i] = theta - learningRate * direction;
}
