// gather.c — see include/gather.h. One scalar loop per operation (the fallback); AVX2 gathers that load 8
// offsets and gather under the mask of those that are not negative (masked-off lanes read nothing and give 0;
// on AVX-512 machines too: 16-lane gathers were slower on the EPYC we measured); and AVX-512 versions for the
// "contiguous" shapes that copy and add whole windows of phase planes under precomputed masks instead.
#include "gather.h"
#include "packed_gemm.h"
#include <stdlib.h>
#include <string.h>

// Planes of at least this many output positions copy each tap's window with one memcpy (see
// im2col_contiguous_avx512); smaller ones in masked 16-float steps, which skip the per-row fix-up.
#define BLOCK_POSITIONS 1024

static inline __attribute__((always_inline)) void im2col_plane_scalar(const float *plane,
                                                                     const opal_conv_geometry *g, float *rows,
                                                                     long pitch) {
    for (long kh = 0; kh < g->kernelHeight; kh++) {
        for (long kw = 0; kw < g->kernelWidth; kw++) {
            float *r = rows + (kh * g->kernelWidth + kw) * pitch;
            for (long oh = 0; oh < g->outputHeight; oh++) {
                long ih = oh * g->strideHeight - g->paddingHeight + kh * g->dilationHeight;
                for (long ow = 0; ow < g->outputWidth; ow++) {
                    long iw = ow * g->strideWidth - g->paddingWidth + kw * g->dilationWidth;
                    int inside = ih >= 0 && ih < g->height && iw >= 0 && iw < g->width;
                    r[oh * g->outputWidth + ow] = inside ? plane[ih * g->width + iw] : 0.0f;
                }
            }
        }
    }
}

static inline __attribute__((always_inline)) void gather_sums_scalar(const float *rows, const int *table,
                                                                     long slots, long count, float *target) {
    for (long i = 0; i < count; i++) {
        float sum = 0;
        for (long s = 0; s < slots; s++) {
            int index = table[s * count + i];
            if (index >= 0) sum += rows[index];
        }
        target[i] = sum;
    }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

static int gather_level = -1;   // −1 unknown (benign race: every writer stores the same)

static int supported_level(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 2 : (__builtin_cpu_supports("avx2") ? 1 : 0);
}

int opal_gather_level(void) {
    if (gather_level < 0) gather_level = supported_level();
    return gather_level;
}

void opal_gather_limit_level(int level) {
    int supported = supported_level();
    gather_level = level < 0 ? 0 : (level < supported ? level : supported);
}

// Along one axis of extent n, stride s: phase a < s holds indices a, a + s, … (⌈(n − a) / s⌉ of them).
static inline long phase_extent(long n, long s, long a) { return n - a > 0 ? (n - a + s - 1) / s : 0; }

// One kernel tap along one axis (offset r = k·dilation − padding): the phase it reads, its shift inside the
// phase, and the outputs [lower, upper) whose source index lies inside the phase (0 ≤ o + shift < extent).
typedef struct { long phase, shift, lower, upper; } tap_axis;
static inline tap_axis tap_along(long r, long s, long n, long outputs) {
    tap_axis t;
    t.phase = ((r % s) + s) % s;
    t.shift = (r - t.phase) / s;
    long extent = phase_extent(n, s, t.phase);
    t.lower = -t.shift > 0 ? (-t.shift < outputs ? -t.shift : outputs) : 0;
    long upper = extent - t.shift < outputs ? extent - t.shift : outputs;
    t.upper = upper > t.lower ? upper : t.lower;
    return t;
}

// The AVX-512 im2col of "contiguous" shapes, where every phase plane is as wide as the output (so a tap's
// valid positions read one contiguous run of its phase plane). Precomputed once per call, for all planes:
//   split  phase(a, b)[i, j] = plane[i·sH + a, j·sW + b], phases stored one after another (none at stride 1).
//          Each input row is read in blocks of `lanes`·sW floats (two masked loads; lanes = min(16, 32 / sW));
//          one permute per phase b picks lanes sW apart from b and a masked store writes them.
//   taps   rows[tap·pitch + t] = phases[source[tap] + t] where bit t mod 16 of masks[tap·chunks + t / 16] is set,
//          else 0: one masked load and one store per 16 positions, the padding rows and columns coming out as
//          the masked-off lanes' zeros.
struct opal_conv_windows {
    long taps, positions, chunks, outputWidth, planeSize;
    long *source;            // [taps]
    long *window;            // [taps · 4]: start, end (the run of positions from the first valid to the last
                             // valid one) and lower, upper (the valid columns of each row)
    unsigned short *masks;   // [taps · chunks]
    int strided;
    long lanes, blocks;      // split: floats per phase store, and blocks per input row
    long *phaseOffset;       // [sH · sW]
    long *phaseWidth;        // [sW]
};
typedef struct opal_conv_windows contiguous_plan;

static void contiguous_plan_free(contiguous_plan *plan) {
    free(plan->source); free(plan->window); free(plan->masks); free(plan->phaseOffset); free(plan->phaseWidth);
}

// Fills `plan`; returns 0 when the shape is not contiguous (or memory ran out), and the caller gathers.
static int contiguous_plan_make(const opal_conv_geometry *g, contiguous_plan *plan) {
    const long sH = g->strideHeight, sW = g->strideWidth, oH = g->outputHeight, oW = g->outputWidth;
    for (long b = 0; b < sW; b++) {
        if (phase_extent(g->width, sW, b) != oW) return 0;
    }
    if (sW > 2) return 0;   // col2im's interleave handles sW ≤ 2; wider strides gather (both directions)
    plan->taps = g->kernelHeight * g->kernelWidth;
    plan->positions = oH * oW;
    plan->planeSize = g->height * g->width;
    plan->chunks = (plan->positions + 15) / 16;
    plan->strided = sH > 1 || sW > 1;
    plan->lanes = 32 / sW < 16 ? 32 / sW : 16;
    plan->blocks = (g->width + plan->lanes * sW - 1) / (plan->lanes * sW);
    plan->outputWidth = oW;
    plan->source = malloc(sizeof(long) * (size_t)plan->taps);
    plan->window = calloc((size_t)(4 * plan->taps), sizeof(long));
    plan->masks = calloc((size_t)(plan->taps * plan->chunks), sizeof(unsigned short));
    plan->phaseOffset = malloc(sizeof(long) * (size_t)(sH * sW));
    plan->phaseWidth = malloc(sizeof(long) * (size_t)sW);
    if (!plan->source || !plan->window || !plan->masks || !plan->phaseOffset || !plan->phaseWidth) {
        contiguous_plan_free(plan);
        return 0;
    }
    long offset = 0;
    for (long a = 0; a < sH; a++) {
        for (long b = 0; b < sW; b++) {
            plan->phaseOffset[a * sW + b] = offset;
            offset += phase_extent(g->height, sH, a) * phase_extent(g->width, sW, b);
        }
    }
    for (long b = 0; b < sW; b++) plan->phaseWidth[b] = phase_extent(g->width, sW, b);
    for (long kh = 0; kh < g->kernelHeight; kh++) {
        const tap_axis y = tap_along(kh * g->dilationHeight - g->paddingHeight, sH, g->height, oH);
        for (long kw = 0; kw < g->kernelWidth; kw++) {
            const tap_axis x = tap_along(kw * g->dilationWidth - g->paddingWidth, sW, g->width, oW);
            const long tap = kh * g->kernelWidth + kw;
            plan->source[tap] = plan->phaseOffset[y.phase * sW + x.phase] + y.shift * oW + x.shift;
            if (y.lower < y.upper && x.lower < x.upper) {
                long *w = plan->window + 4 * tap;
                w[0] = y.lower * oW + x.lower; w[1] = (y.upper - 1) * oW + x.upper; w[2] = x.lower; w[3] = x.upper;
            }
            unsigned short *masks = plan->masks + tap * plan->chunks;
            for (long oh = y.lower; oh < y.upper; oh++) {
                // Bits [oh·oW + x.lower, oh·oW + x.upper), a 16-bit word at a time.
                for (long t = oh * oW + x.lower, end = oh * oW + x.upper; t < end;) {
                    const long word = t / 16, from = t % 16, to = end - word * 16 < 16 ? end - word * 16 : 16;
                    masks[word] |= (unsigned short)(((1u << to) - 1) & ~((1u << from) - 1));
                    t = word * 16 + to;
                }
            }
        }
    }
    return 1;
}

__attribute__((target("avx512f"))) static void split_phases_avx512(const float *plane, const opal_conv_geometry *g,
                                                                    const contiguous_plan *plan, float *phases) {
    const long sH = g->strideHeight, sW = g->strideWidth, W = g->width, lanes = plan->lanes;
    const __m512i picks = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32((int)sW));
    for (long row = 0, a = 0, i = 0; row < g->height; row++, a = a + 1 == sH ? 0 : a + 1, i += a == 0) {
        // (a, i) = (row mod sH, row / sH), stepped without a division per row
        const float *line = plane + row * W;
        for (long q = 0; q < plan->blocks; q++) {
            const long first = q * lanes * sW, available = W - first < 32 ? W - first : 32;
            const unsigned long long bits = (1ull << available) - 1;
            const __m512 low = _mm512_maskz_loadu_ps((__mmask16)(bits & 0xFFFF), line + first);
            const __m512 high = _mm512_maskz_loadu_ps((__mmask16)(bits >> 16), line + first + 16);
            for (long b = 0; b < sW; b++) {
                const long width = plan->phaseWidth[b], n = width - q * lanes < lanes ? width - q * lanes : lanes;
                if (n <= 0) continue;
                float *out = phases + plan->phaseOffset[a * sW + b] + i * width + q * lanes;
                const __m512 value = _mm512_permutex2var_ps(low, _mm512_add_epi32(picks, _mm512_set1_epi32((int)b)), high);
                _mm512_mask_storeu_ps(out, (__mmask16)((1u << n) - 1), value);
            }
        }
    }
}

__attribute__((target("avx512f"))) static void im2col_contiguous_avx512(const float *plane, const opal_conv_geometry *g,
                                                                         const contiguous_plan *plan, float *rows,
                                                                         long pitch, float *scratch) {
    const float *phases = plane;
    if (plan->strided) {
        split_phases_avx512(plane, g, plan, scratch);
        phases = scratch;
    }
    if (plan->positions >= BLOCK_POSITIONS) {
        // Large planes: each tap's valid run is one memcpy (the C library's fastest copy), the rest of the
        // row zeroed, and the padding columns inside the run zeroed after (masked stores).
        const long oW = plan->outputWidth;
        for (long tap = 0; tap < plan->taps; tap++) {
            const long *w = plan->window + 4 * tap, start = w[0], end = w[1], lower = w[2], upper = w[3];
            float *r = rows + tap * pitch;
            memset(r, 0, sizeof(float) * (size_t)start);
            memcpy(r + start, phases + plan->source[tap] + start, sizeof(float) * (size_t)(end - start));
            memset(r + end, 0, sizeof(float) * (size_t)(plan->positions - end));
            if (end > start && (lower > 0 || upper < oW)) {
                for (long t = start - lower; t < end; t += oW) {
                    for (long o = 0; o < lower; o += 16) {
                        const long n = lower - o < 16 ? lower - o : 16;
                        _mm512_mask_storeu_ps(r + t + o, (__mmask16)((1u << n) - 1), _mm512_setzero_ps());
                    }
                    for (long o = upper; o < oW; o += 16) {
                        const long n = oW - o < 16 ? oW - o : 16;
                        _mm512_mask_storeu_ps(r + t + o, (__mmask16)((1u << n) - 1), _mm512_setzero_ps());
                    }
                }
            }
        }
        return;
    }
    const long full = plan->positions / 16;
    const __mmask16 tail = (__mmask16)((1u << (plan->positions % 16)) - 1);
    for (long tap = 0; tap < plan->taps; tap++) {
        const float *source = phases + plan->source[tap];
        const unsigned short *masks = plan->masks + tap * plan->chunks;
        float *r = rows + tap * pitch;
        for (long q = 0; q < full; q++) {
            // All-valid chunks (most of a large plane) load without a mask: a masked load costs more here.
            const __m512 value = masks[q] == 0xFFFF ? _mm512_loadu_ps(source + 16 * q)
                                                    : _mm512_maskz_loadu_ps((__mmask16)masks[q], source + 16 * q);
            _mm512_storeu_ps(r + 16 * q, value);
        }
        if (tail) {
            _mm512_mask_storeu_ps(r + 16 * full, tail, _mm512_maskz_loadu_ps((__mmask16)masks[full], source + 16 * full));
        }
    }
}

int opal_conv_windows_strided(const opal_conv_windows *windows) { return windows && windows->strided; }

int opal_conv_windows_implicit(const opal_conv_windows *windows) { return windows && windows->taps <= 64; }

// Bits t0 ..< t0 + length (length ≤ 32) of a tap's mask words (chunks of them, 16 bits each).
static inline unsigned tap_bits(const unsigned short *masks, long chunks, long t0, long length) {
    const long word = t0 / 16;
    unsigned long long bits = 0;
    for (long i = 0; i < 3 && word + i < chunks; i++) bits |= (unsigned long long)masks[word + i] << (16 * i);
    return (unsigned)((bits >> (t0 % 16)) & ((1ull << length) - 1));
}

// Where element `element`'s phase planes lie in `columns->phases`: the element itself, or (lazy split) its
// ring slot, split there first unless it already holds the element.
__attribute__((target("avx512f"))) static long element_slot(const opal_conv_columns *columns, long element) {
    if (columns->ring <= 0) return element;
    const long slot = element % columns->ring;
    if (columns->resident[slot] != element) {
        const long plane = columns->windows->planeSize;
        for (long c = 0; c < columns->channels; c++) {
            split_phases_avx512(columns->source + element * columns->sourceStride + c * plane, columns->geometry,
                                columns->windows, columns->phases + (slot * columns->channels + c) * plane);
        }
        columns->resident[slot] = element;
    }
    return slot;
}

void opal_conv_tile_make(const opal_conv_columns *columns, long first, long count, opal_conv_tile *tile) {
    const contiguous_plan *plan = columns->windows;
    const long positions = plan->positions, taps = plan->taps;
    tile->runs = 0;
    for (long c = first; c < first + count; tile->runs++) {
        const long element = c / positions, start = c % positions, at = c - first;
        const long length = positions - start < first + count - c ? positions - start : first + count - c;
        // Addressed from the tile's lane 0: lane at + i reads phases[… + start + i].
        tile->offset[tile->runs] = element_slot(columns, element) * columns->channels * plan->planeSize + start - at;
        for (long tap = 0; tap < taps; tap++) {
            tile->valid[tile->runs * taps + tap] = tap_bits(plan->masks + tap * plan->chunks, plan->chunks, start, length) << at;
        }
        c += length;
    }
}

// Per row (channel c, tap): one merge-masked load per run and half tile puts the run's window of its
// element's phases at its lanes of the row (lanes of padding positions stay 0); two plain stores write it.
__attribute__((target("avx512f"))) void opal_conv_pack_columns(const opal_conv_columns *columns,
                                                               const opal_conv_tile *tile, long rows, float *panel) {
    const contiguous_plan *plan = columns->windows;
    const long taps = plan->taps, plane = plan->planeSize;
    for (long r = 0, channel = 0, tap = 0; r < rows; r++, tap = tap + 1 == taps ? 0 : tap + 1, channel += tap == 0) {
        // (channel, tap) = (r / taps, r mod taps), stepped without a division per row
        const float *source = columns->phases + channel * plane + plan->source[tap];
        __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
        for (int s = 0; s < tile->runs; s++) {
            const unsigned lanes = tile->valid[s * taps + tap];
            low = _mm512_mask_loadu_ps(low, (__mmask16)(lanes & 0xFFFF), source + tile->offset[s]);
            high = _mm512_mask_loadu_ps(high, (__mmask16)(lanes >> 16), source + tile->offset[s] + 16);
        }
        _mm512_storeu_ps(panel + r * OPAL_PACKED_COLUMNS, low);
        _mm512_storeu_ps(panel + r * OPAL_PACKED_COLUMNS + 16, high);
    }
}

// v[i][j] ↔ v[j][i] for 16 vectors of 16 floats: 4 rounds of lane interleaves (1, 2, 4 then 8 floats apart).
__attribute__((target("avx512f"))) static inline void transpose_16x16(__m512 v[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        v[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        v[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        v[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        v[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        v[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        v[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        v[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        v[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

__attribute__((target("avx512f"))) void opal_conv_pack_columns_transposed(const opal_conv_columns *columns,
                                                                          long rows, long row0, long element0,
                                                                          long elements, float *panel) {
    const contiguous_plan *plan = columns->windows;
    const long taps = plan->taps, plane = plan->planeSize, positions = plan->positions;
    for (long j = 0; j < elements; j++) {
        const float *phases = columns->phases + element_slot(columns, element0 + j) * columns->channels * plane;
        for (long chunk = 0; chunk * 16 < positions; chunk++) {
            const long t0 = chunk * 16, width = positions - t0 < 16 ? positions - t0 : 16;
            float *out = panel + (j * positions + t0) * OPAL_PACKED_COLUMNS;
            for (int half = 0; half < 2; half++) {
                __m512 v[16];
                long r = row0 + 16 * half, channel = r / taps, tap = r % taps;
                for (int i = 0; i < 16; i++, r++, tap = tap + 1 == taps ? 0 : tap + 1, channel += tap == 0) {
                    if (r >= rows) { v[i] = _mm512_setzero_ps(); continue; }
                    // Bits past the plane's last position are 0 in the tap's masks: the tail lanes load nothing.
                    const __mmask16 valid = (__mmask16)plan->masks[tap * plan->chunks + chunk];
                    v[i] = _mm512_maskz_loadu_ps(valid, phases + channel * plane + plan->source[tap] + t0);
                }
                transpose_16x16(v);
                for (long i = 0; i < width; i++) _mm512_storeu_ps(out + i * OPAL_PACKED_COLUMNS + 16 * half, v[i]);
            }
        }
    }
}

// Per row (channel c, tap) and run: a masked add of the row's lanes into the run's window of the phases.
__attribute__((target("avx512f"))) void opal_conv_add_columns(const opal_conv_columns *columns,
                                                              const opal_conv_tile *tile, long row0, long rows,
                                                              const float *values) {
    const contiguous_plan *plan = columns->windows;
    const long taps = plan->taps, plane = plan->planeSize;
    for (long r = 0, channel = row0 / taps, tap = row0 % taps; r < rows;
         r++, tap = tap + 1 == taps ? 0 : tap + 1, channel += tap == 0) {
        float *target = columns->phases + channel * plane + plan->source[tap];
        const __m512 low = _mm512_loadu_ps(values + r * OPAL_PACKED_COLUMNS);
        const __m512 high = _mm512_loadu_ps(values + r * OPAL_PACKED_COLUMNS + 16);
        for (int s = 0; s < tile->runs; s++) {
            const unsigned lanes = tile->valid[s * taps + tap];
            const __mmask16 lowLanes = (__mmask16)(lanes & 0xFFFF), highLanes = (__mmask16)(lanes >> 16);
            float *at = target + tile->offset[s];
            if (lowLanes) {
                _mm512_mask_storeu_ps(at, lowLanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lowLanes, at), low));
            }
            if (highLanes) {
                _mm512_mask_storeu_ps(at + 16, highLanes,
                                      _mm512_add_ps(_mm512_maskz_loadu_ps(highLanes, at + 16), high));
            }
        }
    }
}

// Interleaves the phase planes back into the plane dx: rows ih ≡ a mod sH from phase row a and, at sW = 2,
// columns from phases b = 0, 1 by two permutes per 32 floats.
__attribute__((target("avx512f"))) static void merge_phases_avx512(const float *phases, const opal_conv_geometry *g,
                                                                    const contiguous_plan *plan, float *dx) {
    const long sH = g->strideHeight, sW = g->strideWidth, W = g->width;
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (long row = 0, a = 0, ia = 0; row < g->height; row++, a = a + 1 == sH ? 0 : a + 1, ia += a == 0) {
        // (a, ia) = (row mod sH, row / sH), stepped without a division per row
        float *line = dx + row * W;
        if (sW == 1) {
            const float *from = phases + plan->phaseOffset[a] + ia * W;
            long j = 0;
            for (; j + 16 <= W; j += 16) _mm512_storeu_ps(line + j, _mm512_loadu_ps(from + j));
            if (j < W) {
                const __mmask16 m = (__mmask16)((1u << (W - j)) - 1);
                _mm512_mask_storeu_ps(line + j, m, _mm512_maskz_loadu_ps(m, from + j));
            }
            continue;
        }
        const long w0 = plan->phaseWidth[0], w1 = plan->phaseWidth[1];
        const float *even = phases + plan->phaseOffset[a * 2] + ia * w0;
        const float *odd = phases + plan->phaseOffset[a * 2 + 1] + ia * w1;
        for (long q = 0; q * 32 < W; q++) {
            const long n0 = w0 - 16 * q < 16 ? w0 - 16 * q : 16, n1 = w1 - 16 * q < 16 ? w1 - 16 * q : 16;
            const __m512 e = _mm512_maskz_loadu_ps((__mmask16)((1u << n0) - 1), even + 16 * q);
            const __m512 o = n1 > 0 ? _mm512_maskz_loadu_ps((__mmask16)((1u << n1) - 1), odd + 16 * q) : _mm512_setzero_ps();
            const long n = W - 32 * q < 32 ? W - 32 * q : 32;
            const unsigned long long bits = (1ull << n) - 1;
            _mm512_mask_storeu_ps(line + 32 * q, (__mmask16)(bits & 0xFFFF), _mm512_permutex2var_ps(e, low, o));
            _mm512_mask_storeu_ps(line + 32 * q + 16, (__mmask16)(bits >> 16), _mm512_permutex2var_ps(e, high, o));
        }
    }
}

void opal_conv_merge_phases(const float *phases, const opal_conv_geometry *g, const opal_conv_windows *windows,
                            long begin, long end, float *x) {
    const long plane = g->height * g->width;
    for (long p = begin; p < end; p++) merge_phases_avx512(phases + p * plane, g, windows, x + p * plane);
}

// The adjoint of im2col_contiguous_avx512 (sW ≤ 2): the phases (scratch, or dx itself at stride 1) zeroed, each
// tap's rows added into its window under its masks, then the phases interleaved into dx, rows ih ≡ a mod sH
// from phase row a and, at sW = 2, columns from phases b = 0, 1 by two permutes per 32 floats.
__attribute__((target("avx512f"))) static void col2im_contiguous_avx512(const float *rows, const opal_conv_geometry *g,
                                                                         const contiguous_plan *plan, long pitch,
                                                                         float *dx, float *scratch) {
    const long plane = g->height * g->width;
    float *phases = plan->strided ? scratch : dx;
    long i = 0;
    for (; i + 16 <= plane; i += 16) _mm512_storeu_ps(phases + i, _mm512_setzero_ps());
    if (i < plane) _mm512_mask_storeu_ps(phases + i, (__mmask16)((1u << (plane - i)) - 1), _mm512_setzero_ps());
    for (long tap = 0; tap < plan->taps; tap++) {
        float *target = phases + plan->source[tap];
        const unsigned short *masks = plan->masks + tap * plan->chunks;
        const float *r = rows + tap * pitch;
        for (long q = 0; q < plan->chunks; q++) {
            const __mmask16 m = (__mmask16)masks[q];
            if (!m) continue;
            if (m == 0xFFFF) {   // most of a large plane: no masks needed
                _mm512_storeu_ps(target + 16 * q, _mm512_add_ps(_mm512_loadu_ps(target + 16 * q), _mm512_loadu_ps(r + 16 * q)));
                continue;
            }
            const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m, target + 16 * q), _mm512_maskz_loadu_ps(m, r + 16 * q));
            _mm512_mask_storeu_ps(target + 16 * q, m, sum);
        }
    }
    if (plan->strided) merge_phases_avx512(phases, g, plan, dx);
}

// AVX2 has no mask registers: a lane mask is a vector whose sign bits select, and the tail is scalar.
__attribute__((target("avx2"))) static void gather_taps_avx2(const float *source, const int *offsets, long taps,
                                                             long positions, float *rows, long pitch) {
    const __m256i negative = _mm256_set1_epi32(-1);
    for (long tap = 0; tap < taps; tap++) {
        const int *o = offsets + tap * positions;
        float *r = rows + tap * pitch;
        long t = 0;
        for (; t + 8 <= positions; t += 8) {
            __m256i index = _mm256_loadu_si256((const __m256i *)(o + t));
            __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(index, negative));
            _mm256_storeu_ps(r + t, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), source, index, valid, 4));
        }
        for (; t < positions; t++) r[t] = o[t] < 0 ? 0.0f : source[o[t]];
    }
}

__attribute__((target("avx2"))) static void gather_sums_avx2(const float *rows, const int *table, long slots,
                                                             long count, float *target) {
    const __m256i negative = _mm256_set1_epi32(-1);
    long i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 sum = _mm256_setzero_ps();
        for (long s = 0; s < slots; s++) {
            __m256i index = _mm256_loadu_si256((const __m256i *)(table + s * count + i));
            __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(index, negative));
            sum = _mm256_add_ps(sum, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), rows, index, valid, 4));
        }
        _mm256_storeu_ps(target + i, sum);
    }
    for (; i < count; i++) {
        float sum = 0;
        for (long s = 0; s < slots; s++) {
            int index = table[s * count + i];
            if (index >= 0) sum += rows[index];
        }
        target[i] = sum;
    }
}

opal_conv_windows *opal_conv_windows_create(const opal_conv_geometry *g) {
    if (opal_gather_level() < 2) return 0;
    contiguous_plan *plan = calloc(1, sizeof(contiguous_plan));
    if (plan && !contiguous_plan_make(g, plan)) { free(plan); plan = 0; }
    return plan;
}

void opal_conv_windows_free(opal_conv_windows *windows) {
    if (!windows) return;
    contiguous_plan_free(windows);
    free(windows);
}

void opal_im2col(const float *x, const opal_conv_geometry *g, const opal_conv_windows *windows, const int *offsets,
                 long channels, long begin, long end, float *col, long pitch, float *scratch) {
    const long plane = g->height * g->width, positions = g->outputHeight * g->outputWidth;
    const long taps = g->kernelHeight * g->kernelWidth;
    const int level = opal_gather_level();
    for (long p = begin; p < end; p++) {
        const long j = p / channels, c = p % channels;
        float *rows = col + c * taps * pitch + j * positions;
        if (windows && level == 2) im2col_contiguous_avx512(x + p * plane, g, windows, rows, pitch, scratch);
        else if (level >= 1) gather_taps_avx2(x + p * plane, offsets, taps, positions, rows, pitch);
        else im2col_plane_scalar(x + p * plane, g, rows, pitch);
    }
}

static void gather_sums(const float *rows, const int *table, long slots, long count, float *target) {
    switch (opal_gather_level()) {
    case 2: case 1: gather_sums_avx2(rows, table, slots, count, target); break;
    default: gather_sums_scalar(rows, table, slots, count, target);
    }
}
#else
int opal_gather_level(void) { return 0; }
int opal_conv_windows_strided(const opal_conv_windows *windows) { (void)windows; return 0; }
int opal_conv_windows_implicit(const opal_conv_windows *windows) { (void)windows; return 0; }
void opal_conv_merge_phases(const float *phases, const opal_conv_geometry *g, const opal_conv_windows *windows,
                            long begin, long end, float *x) {
    (void)phases; (void)g; (void)windows; (void)begin; (void)end; (void)x;
}
void opal_conv_tile_make(const opal_conv_columns *columns, long first, long count, opal_conv_tile *tile) {
    (void)columns; (void)first; (void)count; (void)tile;
}
void opal_conv_add_columns(const opal_conv_columns *columns, const opal_conv_tile *tile, long row0, long rows,
                           const float *values) {
    (void)columns; (void)tile; (void)row0; (void)rows; (void)values;
}
void opal_conv_pack_columns_transposed(const opal_conv_columns *columns, long rows, long row0, long element0,
                                       long elements, float *panel) {
    (void)columns; (void)rows; (void)row0; (void)element0; (void)elements; (void)panel;
}
void opal_conv_pack_columns(const opal_conv_columns *columns, const opal_conv_tile *tile, long rows, float *panel) {
    (void)columns; (void)tile; (void)rows; (void)panel;
}
void opal_gather_limit_level(int level) { (void)level; }
opal_conv_windows *opal_conv_windows_create(const opal_conv_geometry *g) { (void)g; return 0; }
void opal_conv_windows_free(opal_conv_windows *windows) { (void)windows; }
void opal_im2col(const float *x, const opal_conv_geometry *g, const opal_conv_windows *windows, const int *offsets,
                 long channels, long begin, long end, float *col, long pitch, float *scratch) {
    (void)windows; (void)offsets; (void)scratch;
    const long plane = g->height * g->width, positions = g->outputHeight * g->outputWidth;
    const long taps = g->kernelHeight * g->kernelWidth;
    for (long p = begin; p < end; p++) {
        im2col_plane_scalar(x + p * plane, g, col + (p % channels) * taps * pitch + (p / channels) * positions, pitch);
    }
}
static void gather_sums(const float *rows, const int *table, long slots, long count, float *target) {
    gather_sums_scalar(rows, table, slots, count, target);
}
#endif

void opal_col2im(const float *col, const opal_conv_windows *windows, const int *table, long slots,
                 const opal_conv_geometry *g, long channels, long begin, long end, float *dx, long pitch,
                 float *scratch) {
    const long plane = g->height * g->width, positions = g->outputHeight * g->outputWidth;
    const long taps = g->kernelHeight * g->kernelWidth;
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    if (windows && opal_gather_level() == 2) {
        for (long p = begin; p < end; p++) {
            const long j = p / channels, c = p % channels;
            col2im_contiguous_avx512(col + c * taps * pitch + j * positions, g, windows, pitch, dx + p * plane, scratch);
        }
        return;
    }
#else
    (void)windows; (void)scratch;
#endif
    for (long p = begin; p < end; p++) {
        const long j = p / channels, c = p % channels;
        gather_sums(col + c * taps * pitch + j * positions, table, slots, plane, dx + p * plane);
    }
}
