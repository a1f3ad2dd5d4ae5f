// vector_math.c — see include/vector_math.h. Each loop body is written once as an inline function of one
// element; OPAL_VERSIONS instantiates the loop for AVX2 + FMA and for the baseline, and a dispatcher picks
// one on the first call (__builtin_cpu_supports). Branch-free bodies, so the compiler vectorises both.
#include "vector_math.h"
#include <string.h>

#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_CUBIC 0.044715f

// e^x: x = n·ln 2 + r with |r| ≤ ½ ln 2; degree-6 polynomial for e^r; 2ⁿ assembled in the exponent bits.
// n is rounded with the 1.5·2²³ trick so every step is a plain vector instruction.
static inline __attribute__((always_inline)) float exp_approx(float x) {
    float clamped = x < -87.0f ? -87.0f : (x > 88.7228f ? 88.7228f : x);
    const float magic = 12582912.0f;   // 1.5·2²³
    float shifted = clamped * 1.44269504088896341f + magic;
    float n = shifted - magic;
    float r = clamped - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int bits;
    memcpy(&bits, &shifted, sizeof bits);
    // The low bits of `shifted` hold n + 0x400000; 2ⁿ has the exponent field n + 127. At n = 128
    // (x near 88.5) split 2ⁿ as 2·2ⁿ⁻¹ so the field stays finite.
    int half = (bits - 0x4B400000 + 126) << 23;
    float scale;
    memcpy(&scale, &half, sizeof scale);
    float result = p * scale * 2.0f;
    result = x < -87.0f ? 0.0f : result;
    return x > 88.7228f ? __builtin_inff() : result;
}

static inline __attribute__((always_inline)) float sigmoid_of(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

static inline __attribute__((always_inline)) float tanh_of(float x) {
    // Cephes tanhf: for |x| < 0.625 the odd polynomial x + x³·P(x²) (1 − 2/(e^{2x} + 1) would cancel there);
    // beyond, 1 − 2/(e^{2x} + 1), which gives exactly ±1 as e^{2x} → ∞ or 0. Both are computed and one
    // selected, so the loop stays branch-free.
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float large = 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f);
    return z < 0.390625f ? small : large;   // 0.625² = 0.390625
}

static inline __attribute__((always_inline)) float gelu_of(float x) {
    float u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    return x / (1.0f + exp_approx(-2.0f * u));
}

static inline __attribute__((always_inline)) float gelu_derivative_of(float x) {
    float u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    float s = 1.0f / (1.0f + exp_approx(-2.0f * u));
    return s + 2.0f * x * s * (1.0f - s) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC * x * x);
}

#define OPAL_UNARY_LOOP(name, body)                                                                      \
    static inline __attribute__((always_inline)) void name##_loop(const float *x, float *y, long count) { \
        for (long i = 0; i < count; i++) y[i] = body(x[i]);                                              \
    }
#define OPAL_GRADIENT_LOOP(name, expression)                                                             \
    static inline __attribute__((always_inline)) void name##_loop(const float *v, const float *dy,       \
                                                                  float *dx, long count) {              \
        for (long i = 0; i < count; i++) { float a = v[i]; dx[i] = dy[i] * (expression); }              \
    }

OPAL_UNARY_LOOP(exp, exp_approx)
OPAL_UNARY_LOOP(sigmoid, sigmoid_of)
OPAL_UNARY_LOOP(tanh, tanh_of)
OPAL_UNARY_LOOP(gelu, gelu_of)
OPAL_GRADIENT_LOOP(gelu_gradient, gelu_derivative_of(a))
OPAL_GRADIENT_LOOP(sigmoid_gradient, a * (1.0f - a))
OPAL_GRADIENT_LOOP(tanh_gradient, 1.0f - a * a)

static inline __attribute__((always_inline)) float exp_shifted_sum_loop(float *s, long count, float shift) {
    // Eight partial sums (a fixed order, so the result does not depend on the instruction set).
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long j = 0;
    for (; j + 8 <= count; j += 8) {
        for (int l = 0; l < 8; l++) { float e = exp_approx(s[j + l] - shift); s[j + l] = e; lanes[l] += e; }
    }
    float sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (; j < count; j++) { float e = exp_approx(s[j] - shift); s[j] = e; sum += e; }
    return sum;
}

static inline __attribute__((always_inline)) float exp_shifted_total_loop(const float *x, long count, float shift) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long j = 0;
    for (; j + 8 <= count; j += 8) {
        for (int l = 0; l < 8; l++) lanes[l] += exp_approx(x[j + l] - shift);
    }
    float sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (; j < count; j++) sum += exp_approx(x[j] - shift);
    return sum;
}

static inline __attribute__((always_inline)) void attention_gradient_row_loop(float *s, float *g, const int *mask,
                                                                             long count, float shift, float delta) {
    if (mask) {
        for (long j = 0; j < count; j++) {
            float p = exp_approx(s[j] - shift);
            p = mask[j] != 0 ? p : 0.0f;
            s[j] = p; g[j] = p * (g[j] - delta);
        }
    } else {
        for (long j = 0; j < count; j++) { float p = exp_approx(s[j] - shift); s[j] = p; g[j] = p * (g[j] - delta); }
    }
}

// Batch normalisation's per-row sums, accumulated in Double over eight lanes in a fixed order (so the result
// does not depend on the instruction set): Σ (x − shift) and Σ (x − shift)², and Σ dy and Σ dy·(x − mean).
static inline __attribute__((always_inline)) void shifted_sums_loop(const float *x, long count, float shift,
                                                                    double *sum, double *squares) {
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0}, square_lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    long j = 0;
    for (; j + 8 <= count; j += 8) {
        for (int l = 0; l < 8; l++) { double v = (double)(x[j + l] - shift); lanes[l] += v; square_lanes[l] += v * v; }
    }
    double total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    double total_squares = ((square_lanes[0] + square_lanes[4]) + (square_lanes[1] + square_lanes[5]))
        + ((square_lanes[2] + square_lanes[6]) + (square_lanes[3] + square_lanes[7]));
    for (; j < count; j++) { double v = (double)(x[j] - shift); total += v; total_squares += v * v; }
    *sum += total;
    *squares += total_squares;
}

static inline __attribute__((always_inline)) void gradient_sums_loop(const float *x, const float *dy, long count,
                                                                     float mean, double *sum, double *products) {
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0}, product_lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const double m = (double)mean;
    long j = 0;
    for (; j + 8 <= count; j += 8) {
        for (int l = 0; l < 8; l++) {
            double g = (double)dy[j + l];
            lanes[l] += g;
            product_lanes[l] += g * ((double)x[j + l] - m);
        }
    }
    double total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    double total_products = ((product_lanes[0] + product_lanes[4]) + (product_lanes[1] + product_lanes[5]))
        + ((product_lanes[2] + product_lanes[6]) + (product_lanes[3] + product_lanes[7]));
    for (; j < count; j++) { double g = (double)dy[j]; total += g; total_products += g * ((double)x[j] - m); }
    *sum += total;
    *products += total_products;
}

// The same sums down the columns of a [rows, width] band (row pitch `stride`) for each column j: batch
// normalisation of features (spatial extent 1), vectorised across the columns.
static inline __attribute__((always_inline)) void column_shifted_sums_loop(
    const float *restrict x, long rows, long width, long stride, const float *restrict shift,
    double *restrict sum, double *restrict squares) {
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * stride;
        for (long j = 0; j < width; j++) { double v = (double)(row[j] - shift[j]); sum[j] += v; squares[j] += v * v; }
    }
}

static inline __attribute__((always_inline)) void column_gradient_sums_loop(
    const float *restrict x, const float *restrict dy, long rows, long width, long stride,
    const float *restrict mean, double *restrict sum, double *restrict products) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * stride, *gr = dy + r * stride;
        for (long j = 0; j < width; j++) {
            double g = (double)gr[j];
            sum[j] += g;
            products[j] += g * ((double)xr[j] - (double)mean[j]);
        }
    }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
static int avx2_state = -1;   // −1 unknown, 0 baseline, 1 AVX2 + FMA (benign race: every writer stores the same)

int opal_vector_math_uses_avx2(void) {
    if (avx2_state < 0) {
        __builtin_cpu_init();
        avx2_state = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return avx2_state;
}

#define OPAL_VERSIONS_UNARY(name)                                                                        \
    __attribute__((target("avx2,fma"))) static void name##_avx2(const float *x, float *y, long count) {  \
        name##_loop(x, y, count);                                                                        \
    }                                                                                                    \
    static void name##_baseline(const float *x, float *y, long count) { name##_loop(x, y, count); }      \
    void opal_##name(const float *x, float *y, long count) {                                             \
        if (opal_vector_math_uses_avx2()) name##_avx2(x, y, count); else name##_baseline(x, y, count);   \
    }
#define OPAL_VERSIONS_GRADIENT(name)                                                                     \
    __attribute__((target("avx2,fma"))) static void name##_avx2(const float *v, const float *dy,         \
                                                                float *dx, long count) {                \
        name##_loop(v, dy, dx, count);                                                                   \
    }                                                                                                    \
    static void name##_baseline(const float *v, const float *dy, float *dx, long count) {                \
        name##_loop(v, dy, dx, count);                                                                   \
    }                                                                                                    \
    void opal_##name(const float *v, const float *dy, float *dx, long count) {                           \
        if (opal_vector_math_uses_avx2()) name##_avx2(v, dy, dx, count);                                 \
        else name##_baseline(v, dy, dx, count);                                                          \
    }
__attribute__((target("avx2,fma"))) static float exp_shifted_sum_avx2(float *s, long count, float shift) {
    return exp_shifted_sum_loop(s, count, shift);
}
static float exp_shifted_sum_baseline(float *s, long count, float shift) { return exp_shifted_sum_loop(s, count, shift); }
float opal_exp_shifted_sum(float *s, long count, float shift) {
    return opal_vector_math_uses_avx2() ? exp_shifted_sum_avx2(s, count, shift) : exp_shifted_sum_baseline(s, count, shift);
}
__attribute__((target("avx2,fma"))) static float exp_shifted_total_avx2(const float *x, long count, float shift) {
    return exp_shifted_total_loop(x, count, shift);
}
static float exp_shifted_total_baseline(const float *x, long count, float shift) {
    return exp_shifted_total_loop(x, count, shift);
}
float opal_exp_shifted_total(const float *x, long count, float shift) {
    return opal_vector_math_uses_avx2() ? exp_shifted_total_avx2(x, count, shift)
                                        : exp_shifted_total_baseline(x, count, shift);
}
__attribute__((target("avx2,fma"))) static void attention_gradient_row_avx2(float *s, float *g, const int *mask,
                                                                           long count, float shift, float delta) {
    attention_gradient_row_loop(s, g, mask, count, shift, delta);
}
static void attention_gradient_row_baseline(float *s, float *g, const int *mask, long count, float shift, float delta) {
    attention_gradient_row_loop(s, g, mask, count, shift, delta);
}
void opal_attention_gradient_row(float *s, float *g, const int *mask, long count, float shift, float delta) {
    if (opal_vector_math_uses_avx2()) attention_gradient_row_avx2(s, g, mask, count, shift, delta);
    else attention_gradient_row_baseline(s, g, mask, count, shift, delta);
}
__attribute__((target("avx2,fma"))) static void shifted_sums_avx2(const float *x, long count, float shift,
                                                                  double *sum, double *squares) {
    shifted_sums_loop(x, count, shift, sum, squares);
}
static void shifted_sums_baseline(const float *x, long count, float shift, double *sum, double *squares) {
    shifted_sums_loop(x, count, shift, sum, squares);
}
void opal_shifted_sums(const float *x, long count, float shift, double *sum, double *squares) {
    if (opal_vector_math_uses_avx2()) shifted_sums_avx2(x, count, shift, sum, squares);
    else shifted_sums_baseline(x, count, shift, sum, squares);
}

__attribute__((target("avx2,fma"))) static void gradient_sums_avx2(const float *x, const float *dy, long count,
                                                                   float mean, double *sum, double *products) {
    gradient_sums_loop(x, dy, count, mean, sum, products);
}
static void gradient_sums_baseline(const float *x, const float *dy, long count, float mean, double *sum,
                                   double *products) {
    gradient_sums_loop(x, dy, count, mean, sum, products);
}
void opal_gradient_sums(const float *x, const float *dy, long count, float mean, double *sum, double *products) {
    if (opal_vector_math_uses_avx2()) gradient_sums_avx2(x, dy, count, mean, sum, products);
    else gradient_sums_baseline(x, dy, count, mean, sum, products);
}

__attribute__((target("avx2,fma"))) static void column_shifted_sums_avx2(const float *x, long rows, long width,
                                                                         long stride, const float *shift,
                                                                         double *sum, double *squares) {
    column_shifted_sums_loop(x, rows, width, stride, shift, sum, squares);
}
static void column_shifted_sums_baseline(const float *x, long rows, long width, long stride, const float *shift,
                                         double *sum, double *squares) {
    column_shifted_sums_loop(x, rows, width, stride, shift, sum, squares);
}
void opal_column_shifted_sums(const float *x, long rows, long width, long stride, const float *shift, double *sum,
                              double *squares) {
    if (opal_vector_math_uses_avx2()) column_shifted_sums_avx2(x, rows, width, stride, shift, sum, squares);
    else column_shifted_sums_baseline(x, rows, width, stride, shift, sum, squares);
}

__attribute__((target("avx2,fma"))) static void column_gradient_sums_avx2(const float *x, const float *dy, long rows,
                                                                          long width, long stride, const float *mean,
                                                                          double *sum, double *products) {
    column_gradient_sums_loop(x, dy, rows, width, stride, mean, sum, products);
}
static void column_gradient_sums_baseline(const float *x, const float *dy, long rows, long width, long stride,
                                          const float *mean, double *sum, double *products) {
    column_gradient_sums_loop(x, dy, rows, width, stride, mean, sum, products);
}
void opal_column_gradient_sums(const float *x, const float *dy, long rows, long width, long stride,
                               const float *mean, double *sum, double *products) {
    if (opal_vector_math_uses_avx2()) column_gradient_sums_avx2(x, dy, rows, width, stride, mean, sum, products);
    else column_gradient_sums_baseline(x, dy, rows, width, stride, mean, sum, products);
}
#else
int opal_vector_math_uses_avx2(void) { return 0; }
float opal_exp_shifted_sum(float *s, long count, float shift) { return exp_shifted_sum_loop(s, count, shift); }
float opal_exp_shifted_total(const float *x, long count, float shift) { return exp_shifted_total_loop(x, count, shift); }
void opal_attention_gradient_row(float *s, float *g, const int *mask, long count, float shift, float delta) {
    attention_gradient_row_loop(s, g, mask, count, shift, delta);
}
void opal_shifted_sums(const float *x, long count, float shift, double *sum, double *squares) {
    shifted_sums_loop(x, count, shift, sum, squares);
}
void opal_column_shifted_sums(const float *x, long rows, long width, long stride, const float *shift, double *sum,
                              double *squares) {
    column_shifted_sums_loop(x, rows, width, stride, shift, sum, squares);
}
void opal_column_gradient_sums(const float *x, const float *dy, long rows, long width, long stride,
                               const float *mean, double *sum, double *products) {
    column_gradient_sums_loop(x, dy, rows, width, stride, mean, sum, products);
}
void opal_gradient_sums(const float *x, const float *dy, long count, float mean, double *sum, double *products) {
    gradient_sums_loop(x, dy, count, mean, sum, products);
}
#define OPAL_VERSIONS_UNARY(name)                                                                        \
    void opal_##name(const float *x, float *y, long count) { name##_loop(x, y, count); }
#define OPAL_VERSIONS_GRADIENT(name)                                                                     \
    void opal_##name(const float *v, const float *dy, float *dx, long count) { name##_loop(v, dy, dx, count); }
#endif

OPAL_VERSIONS_UNARY(exp)
OPAL_VERSIONS_UNARY(sigmoid)
OPAL_VERSIONS_UNARY(tanh)
OPAL_VERSIONS_UNARY(gelu)
OPAL_VERSIONS_GRADIENT(gelu_gradient)
OPAL_VERSIONS_GRADIENT(sigmoid_gradient)
OPAL_VERSIONS_GRADIENT(tanh_gradient)
