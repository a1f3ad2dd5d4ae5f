// gather.h — the CPU convolution's column-matrix kernels (Sources/OpalCPU/Conv.swift): im2col and its adjoint
// col2im. Both are fixed maps of each plane, with zero fill (im2col) or sums (col2im); Conv.swift computes
// them once per shape as tables of 32-bit offsets (entries below 0 stand for padding: a zero, or no term),
// which AVX2 gathers apply. With AVX-512, the common "contiguous" shapes skip the tables: whole windows of
// the plane's phase planes are copied (im2col) or added (col2im) under precomputed masks. The version is
// chosen on the first call (`opal_gather_level`); a scalar loop serves processors with neither.
#ifndef OPAL_GATHER_H
#define OPAL_GATHER_H
#ifdef __cplusplus
extern "C" {
#endif

/// The geometry of a 2-D convolution over one plane (Conv2DDescriptor's fields).
typedef struct {
    long height, width, outputHeight, outputWidth, kernelHeight, kernelWidth;
    long strideHeight, strideWidth, paddingHeight, paddingWidth, dilationHeight, dilationWidth;
} opal_conv_geometry;

/// The AVX-512 windows of a "contiguous" shape (see `opal_im2col`): per tap, where it reads in the phase
/// planes and the masks of its valid positions. NULL where the shape is not contiguous, its width stride is
/// above 2, or AVX-512 is not in use (then the offset tables are needed). Build once per convolution; free with `opal_conv_windows_free`.
typedef struct opal_conv_windows opal_conv_windows;
opal_conv_windows *opal_conv_windows_create(const opal_conv_geometry *g);
void opal_conv_windows_free(opal_conv_windows *windows);

/// im2col of the planes begin ..< end of x (plane p = j·channels + c: element j, channel c, H·W floats each):
/// col[(c·kH·kW + kh·kW + kw)·pitch + j·P + oh·oW + ow] = x[p, ih, iw] with ih = oh·sH − pH + kh·dH,
/// iw = ow·sW − pW + kw·dW, or 0 where (ih, iw) lies outside the plane (P = oH·oW, pitch ≥ elements·P).
/// With `windows` (AVX-512, sW ≤ 2, and every phase plane — rows ih ≡ a mod sH, columns iw ≡ b mod sW; the
/// plane itself at stride 1 — as wide as the output: "same" convolutions, DCGAN's 4×4 stride-2 ones), each
/// plane is split into its phases in `scratch` (H·W floats) and each tap is one masked copy of a contiguous
/// window; otherwise `offsets`, the same map as a table, [kH·kW, P] (ih·W + iw, −1 for padding), is applied
/// with AVX2 gathers, or a scalar loop follows the geometry on processors without AVX2.
void opal_im2col(const float *x, const opal_conv_geometry *g, const opal_conv_windows *windows, const int *offsets,
                 long channels, long begin, long end, float *col, long pitch, float *scratch);

/// col2im, the adjoint of `opal_im2col` over the same planes: dx[p, i] = Σ_{s < slots} colₚ[table[s·H·W + i]]
/// over the entries that are not negative, where colₚ = col + c·kH·kW·pitch + j·P and table lists, for each
/// input element i, the column entries (tap·pitch + t) that im2col copied from it. Writes every element of
/// dx's planes (no zeroing beforehand), with gathers where the processor has them; with `windows` as the
/// adjoint of the contiguous im2col instead: masked adds of each tap's rows into phase planes
/// in `scratch` (H·W floats), interleaved into dx after (`table` may then be NULL).
void opal_col2im(const float *col, const opal_conv_windows *windows, const int *table, long slots,
                 const opal_conv_geometry *g, long channels, long begin, long end, float *dx, long pitch,
                 float *scratch);

/// The columns of im2col without the column matrix: the implicit GEMM operands of a contiguous convolution
/// (CVectorMath's packed GEMM). Row c·kH·kW + tap, column j·P + t of a chunk of batch elements is im2col's
/// col entry, read from (or, for the adjoint, summed into) `phases`: plane p = j·channels + c's phases at
/// phases + p·H·W (the planes themselves when the windows are not strided), or split lazily into a ring.
typedef struct {
    const opal_conv_windows *windows;
    float *phases;
    long channels;
    /// Lazily split planes (`ring` > 0, strided windows): `phases` then holds `ring` slots of `channels` phase
    /// planes, and element e's planes (`channels` of them at source + e·sourceStride) are split into slot
    /// e mod ring when a tile first reads them, so the phases are still in cache when packed;
    /// resident[slot] is the element a slot holds (−1: none). Set ring to 0 and the rest to NULL otherwise.
    const float *source;
    long sourceStride;
    const opal_conv_geometry *geometry;
    long ring;
    long *resident;
} opal_conv_columns;

/// Where the columns first ..< first + count (at most 32: one tile of the packed GEMM) read: the runs of
/// columns inside one batch element and, per run and tap, the lanes of the tile that read a valid position.
/// Computed once per tile and shared by all its rows.
typedef struct {
    int runs;
    long offset[32];             // [run]: phases offset of the run's lane 0 (element plane 0, position start − lane)
    unsigned valid[32 * 64];     // [run · taps + tap] (the implicit columns serve kernels of at most 64 taps)
} opal_conv_tile;

/// 1 where the implicit columns serve the windows' shape (kernels of at most 64 taps), else 0.
int opal_conv_windows_implicit(const opal_conv_windows *windows);
/// 1 where the windows' shape is strided (its planes must be split into phases first), else 0.
int opal_conv_windows_strided(const opal_conv_windows *windows);
/// The adjoint of splitting planes into phases (as `opal_conv_columns`' ring does): interleaves the phase
/// planes of planes begin ..< end (H·W floats each, at phases + p·H·W) back into x.
void opal_conv_merge_phases(const float *phases, const opal_conv_geometry *g, const opal_conv_windows *windows,
                            long begin, long end, float *x);
/// Fills `tile` for columns first ..< first + count (count ≤ 32).
void opal_conv_tile_make(const opal_conv_columns *columns, long first, long count, opal_conv_tile *tile);
/// panel[r · 32 + i] = column entry (r, first + i) for r < rows, i < count, and 0 for count ≤ i < 32 (the
/// packed GEMM's B panel; AVX-512 only, as the windows are).
void opal_conv_pack_columns(const opal_conv_columns *columns, const opal_conv_tile *tile, long rows, float *panel);
/// The columns transposed, for the backward weight GEMM (B = colᵀ): panel[(j·P + t) · 32 + l] = column entry
/// (row0 + l, (element0 + j)·P + t) for j < elements, t < P, l < 32, and 0 for rows past `rows`. Each
/// 16-position chunk of a plane is loaded row by row under the tap's mask, then transposed 16×16 in registers.
void opal_conv_pack_columns_transposed(const opal_conv_columns *columns, long rows, long row0, long element0,
                                       long elements, float *panel);
/// The adjoint: adds values[r · 32 + i] (r < rows) to the phase element that column entry (row0 + r, first + i)
/// reads, for the tile's valid lanes (col2im of one block of the column matrix, without the matrix).
void opal_conv_add_columns(const opal_conv_columns *columns, const opal_conv_tile *tile, long row0, long rows,
                           const float *values);

/// The version in use: 2 AVX-512 (contiguous windows where the shape allows, AVX2 gathers elsewhere), 1 AVX2
/// gathers, 0 scalar loops.
int opal_gather_level(void);
/// Caps the level (tests run every version on one machine); a level above what the processor has is lowered.
void opal_gather_limit_level(int level);

#ifdef __cplusplus
}
#endif
#endif
