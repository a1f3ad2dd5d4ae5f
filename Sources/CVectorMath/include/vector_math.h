// vector_math.h — the CPU backend's transcendental elementwise loops and batch norm's row sums, compiled
// twice (AVX2 + FMA and the baseline instruction set) and chosen once per process by what the processor
// supports.
//
// Swift code is compiled for the baseline x86-64 target (SSE2), so its 8-lane SIMD math runs as pairs of
// 4-lane instructions without fused multiply-add; these loops are where that costs most (GELU, sigmoid,
// tanh and exp evaluate ~20 operations per element). Each function is the plain loop over `count` elements
// in the same arithmetic as the Swift reference it replaces (Sources/OpalCPU/Elementwise.swift).
#ifndef OPAL_VECTOR_MATH_H
#define OPAL_VECTOR_MATH_H
#include "gather.h"
#include "packed_gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/// y[i] = e^x[i] (Cephes polynomial, ≈ 1 ulp; 0 below −87, +∞ above 88.7228).
void opal_exp(const float *x, float *y, long count);
/// y[i] = 1 / (1 + e^−x[i]).
void opal_sigmoid(const float *x, float *y, long count);
/// y[i] = tanh x[i], as 1 − 2/(e^{2x} + 1) (exact limits ±1).
void opal_tanh(const float *x, float *y, long count);
/// y[i] = x·σ(2u), u = √(2/π)(x + 0.044715x³) (GELU, tanh form).
void opal_gelu(const float *x, float *y, long count);
/// dx[i] = dy[i] · GELU'(x[i]).
void opal_gelu_gradient(const float *x, const float *dy, float *dx, long count);
/// dx[i] = dy[i] · y[i](1 − y[i]) (y = σ(x)).
void opal_sigmoid_gradient(const float *y, const float *dy, float *dx, long count);
/// dx[i] = dy[i] · (1 − y[i]²) (y = tanh x).
void opal_tanh_gradient(const float *y, const float *dy, float *dx, long count);
/// s[j] = e^(s[j] − shift) for j < count; returns Σ_j s[j] (attention's softmax numerators, CPU backend).
float opal_exp_shifted_sum(float *s, long count, float shift);
/// Σ_j e^(x[j] − shift) for j < count, x unchanged (log-sum-exp rows of softmax and cross-entropy).
float opal_exp_shifted_total(const float *x, long count, float shift);
/// p = e^(s[j] − shift), 0 where mask[j] == 0 (mask may be NULL); then s[j] = p and g[j] = p·(g[j] − delta)
/// for j < count (one row of attention's backward pass).
void opal_attention_gradient_row(float *s, float *g, const int *mask, long count, float shift, float delta);
/// *sum += Σ_j (x[j] − shift), *squares += Σ_j (x[j] − shift)² for j < count, in Double (batch norm statistics).
void opal_shifted_sums(const float *x, long count, float shift, double *sum, double *squares);
/// *sum += Σ_j dy[j], *products += Σ_j dy[j]·(x[j] − mean) for j < count, in Double (batch norm backward).
void opal_gradient_sums(const float *x, const float *dy, long count, float mean, double *sum, double *products);
/// For each column j < width of the [rows, width] band x (row pitch stride): sum[j] += Σ_r (x[r, j] − shift[j]),
/// squares[j] += Σ_r (x[r, j] − shift[j])², in Double (batch norm of features: spatial extent 1).
void opal_column_shifted_sums(const float *x, long rows, long width, long stride, const float *shift, double *sum,
                              double *squares);
/// For each column j: sum[j] += Σ_r dy[r, j], products[j] += Σ_r dy[r, j]·(x[r, j] − mean[j]), in Double.
void opal_column_gradient_sums(const float *x, const float *dy, long rows, long width, long stride,
                               const float *mean, double *sum, double *products);
/// 1 when the AVX2 + FMA versions run on this processor, else 0.
int opal_vector_math_uses_avx2(void);

#ifdef __cplusplus
}
#endif
#endif
