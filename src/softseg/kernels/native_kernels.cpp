// softseg's native CPU kernels: the fused region statistics and their gradient in one pass over the logits each.
//
// Built on first use by softseg/kernels/native.py with the system C++ compiler (-O3 -march=native -fopenmp), loaded
// with ctypes; without a compiler the torch block path runs instead (same values). The formulas are those of
// softseg/kernels/fused.py: for x = act(z), y the target and m the counted-entry weight, summed over the pixels of
// one (image, class),
//
//     tp = sum m min(x, y) (x y for labels and norm 2),  pred = sum m x^p,  ymass = sum m y^p,
//     ce = sum m y (lse - z) (softmax),
//
// and backward dL/dz from A = dL/dfp, B = dL/dtp - dL/dfp - dL/dfn, G = dL/dce per (image, class).
//
// Each call takes parts of the pixels of every image, [bounds[k], bounds[k + 1]), on OpenMP threads (torch's, see
// softseg_openmp) or one after the other, each part into its own slice of the sums. Labels are uint8 or int64,
// read as they are (the label maps of most pipelines are one byte a pixel). Pixels are
// taken 16 at a time in one vector register per class (GCC/clang vector extensions, lowered to AVX-512, AVX2 or
// NEON), so the softmax over the classes and every sum stay in registers: the logits are read once forward and
// once backward, the gradient written once. exp is exp2 of a degree-6 polynomial (within 2 ulp), NaN-preserving.
// Sums are kept per lane in float for up to FLUSH vectors, then added into double per (image, class).
// Excluded entries are selected out (logit and target taken as 0), never multiplied by 0; a NaN or inf at a kept
// entry propagates as in torch.

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int W = 16;       // pixels per vector
constexpr int MAXC = 128;   // classes held per vector step (more: the torch blocks)
constexpr int FLUSH = 64;   // vectors summed per lane in float before adding into double
// Backward works on tiles: a run of pixels of every class row copied into contiguous buffers (logits, target),
// the gradient written into one and copied out row by row. Rows of a power-of-two width fall into one cache
// set, and touching a step's 16 pixels of 2 or 3 C rows at once (reading the logits and target, writing the
// gradient) loses the hardware prefetcher's lines to each other: the dense-target backward took 1.6x as long at
// (16, 21, 256, 256). Forward reads fewer rows and was faster without the copies, so it reads them in place.
constexpr int TILE_FLOATS = 4096;  // floats per tile buffer (16 KiB: three of them fill a 48 KiB L1)
// Forward reads every class row in place, and with many rows in flight the hardware prefetchers fell behind: most
// of the forward's time sat on the loads of the logits and the dense target (perf). Each step prefetches the line
// this many floats ahead in every row (4 lines): W4's forward took 10-20% less, and with the backward's streaming
// stores (Tile::flush_grad) its compiled step read 0.83 against 0.95x compiled cross-entropy (medians of four
// fresh-process runs each). Not for one channel, whose one stream the hardware keeps up with (a software prefetch
// slowed it before).
constexpr int PREFETCH_FLOATS = 64;
constexpr float LOG2E = 1.44269504088896341f;
constexpr float LN2 = 0.693147180559945309f;

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));

inline vf splat(float x) { return (vf){} + x; }
inline vi splati(int32_t x) { return (vi){} + x; }
inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf select(vi mask, vf a, vf b) { return mask ? a : b; }  // lanes of a where mask, else of b
inline vf fmax(vf a, vf b) { return select(a > b, a, b); }  // NaN: the other (the sums carry the NaN)
inline vf fmin(vf a, vf b) { return select(a < b, a, b); }
// NaN-propagating max and min (torch.amax, torch.minimum), for the value checks' range
inline vf vmax(vf a, vf b) { return select((a != a) | (a > b), a, b); }
inline vf vmin(vf a, vf b) { return select((a != a) | (a < b), a, b); }

// 2^x for x <= 0 (NaN stays NaN), 0 below -126: an absent class's probability is exactly 0, as in torch.
inline vf exp2v(vf x_in) {
    vf x = select(x_in < -126.0f, splat(-126.0f), x_in);
    const float magic = 12582912.0f;  // 1.5 * 2^23: x + magic rounds x to an integer
    vf t = x + magic;
    vf n = t - magic;
    vf f = x - n;  // in [-0.5, 0.5]
    vi ni = (vi)t - (vi)splat(magic);
    vf p = splat(1.5353362e-4f);
    p = p * f + 1.3398874e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    return select(x_in < -126.0f, splat(0.0f), p * (vf)((ni + 127) << 23));
}

// 1 / d for d in [1, 2]. AVX-512: the 14-bit estimate and one Newton step in fused multiply-adds (within 1 ulp of
// the quotient, exact at d = 1), about a third of a division's throughput cost, which held up the sigmoid's loop.
inline vf reciprocal(vf d) {
#if defined(__AVX512F__)
    const __m512 dd = (__m512)d, estimate = _mm512_rcp14_ps(dd);
    const __m512 error = _mm512_fnmadd_ps(dd, estimate, _mm512_set1_ps(1.0f));  // 1 - d r, exactly rounded once
    return (vf)_mm512_fmadd_ps(estimate, error, estimate);
#else
    return 1.0f / d;
#endif
}

// sigmoid(z) = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) below: exp of -|z| only, exact 0 and 1 at the ends.
inline vf sigmoidv(vf z) {
    vf abs_z = select(z < 0.0f, -z, z);
    vf e = exp2v(-abs_z * LOG2E);
    vf r = reciprocal(1.0f + e);
    return select(z < 0.0f, e * r, r);
}

// log2 of x >= 1 (a softmax's sum of exponentials): exponent + log2 of the mantissa in [1, 2) by
// log2(m) = 2 atanh(u) / ln 2, u = (m - 1) / (m + 1) in [0, 1/3], odd series to u^13 (error < 1e-7).
inline vf log2v(vf x) {
    vi bits = (vi)x;
    vf exponent = __builtin_convertvector(((bits >> 23) & 0xff) - 127, vf);
    vf m = (vf)((bits & 0x007fffff) | 0x3f800000);
    vf u = (m - 1.0f) / (m + 1.0f);
    vf u2 = u * u;
    vf s = splat(1.0f / 13.0f);
    s = s * u2 + 1.0f / 11.0f;
    s = s * u2 + 1.0f / 9.0f;
    s = s * u2 + 1.0f / 7.0f;
    s = s * u2 + 1.0f / 5.0f;
    s = s * u2 + 1.0f / 3.0f;
    s = s * u2 + 1.0f;
    vf result = exponent + (2.0f / LN2) * u * s;
    return select(x != x, x, result);
}

inline float sum_lanes(vf v) {
    float lanes[W];
    std::memcpy(lanes, &v, sizeof lanes);
    float total = 0;
    for (int i = 0; i < W; ++i) total += lanes[i];
    return total;
}

inline float max_lanes(vf v) {
    float lanes[W];
    std::memcpy(lanes, &v, sizeof lanes);
    float best = lanes[0];
    for (int i = 1; i < W; ++i) best = (lanes[i] != lanes[i] || lanes[i] > best) ? lanes[i] : best;
    return best;
}

// The pixels of one vector step: `count` valid lanes from pixel n (a zero-padded copy at the end).
struct Step {
    int64_t n;
    int count;
    vi valid;
};

inline Step step_at(int64_t n, int64_t n1) {
    Step step{n, static_cast<int>(n1 - n < W ? n1 - n : W), splati(-1)};
    if (step.count < W)
        for (int i = 0; i < W; ++i) step.valid[i] = i < step.count ? -1 : 0;
    return step;
}

inline vf load_row(const float* row, const Step& step) {
    if (step.count == W) return load(row + step.n);
    float padded[W] = {};
    std::memcpy(padded, row + step.n, step.count * sizeof(float));
    return load(padded);
}

inline void store_row(float* row, const Step& step, vf value) {
    if (step.count == W) {
        store(row + step.n, value);
        return;
    }
    float lanes[W];
    std::memcpy(lanes, &value, sizeof lanes);
    std::memcpy(row + step.n, lanes, step.count * sizeof(float));
}

typedef int64_t vl __attribute__((vector_size(128)));
typedef uint8_t vb __attribute__((vector_size(16)));
typedef uint16_t vs __attribute__((vector_size(32)));

// 16 bytes widened to int32 lanes in two steps: GCC 12 turns the direct uint8 -> int32 conversion into scalar code.
inline vi widen(vb bytes) { return __builtin_convertvector(__builtin_convertvector(bytes, vs), vi); }

// The labels of one step as int32 from uint8 (BYTES 1) or int64 (BYTES 8) labels; padded lanes -1. int64 labels are
// saturated into int32's range: one outside it stays outside every class (and the range check), never wraps into one.
template <int BYTES>
inline vi load_labels(const void* labels, int64_t at, const Step& step) {
    const bool full = step.count == W;  // (a fixed-size copy is one vector load)
    if (BYTES == 1) {
        vb bytes = {};
        const uint8_t* row = static_cast<const uint8_t*>(labels) + at;
        if (full) std::memcpy(&bytes, row, sizeof bytes);
        else std::memcpy(&bytes, row, step.count);
        vi wide = widen(bytes);
        return full ? wide : (step.valid ? wide : splati(-1));
    }
    const int64_t* row = static_cast<const int64_t*>(labels) + at;
    int64_t padded[W];
    if (!full) {
        for (int i = 0; i < W; ++i) padded[i] = i < step.count ? row[i] : -1;
        row = padded;
    }
#if defined(__AVX512F__)
    // vpmovsqd (int64 to int32, saturating) straight from the loads: the generic form below goes through the
    // stack, and its store-to-load stall took a third of the sigmoid forward's time
    const __m512i narrow = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtsepi64_epi32(_mm512_loadu_si512(row))),
                                              _mm512_cvtsepi64_epi32(_mm512_loadu_si512(row + 8)), 1);
    return (vi)narrow;
#else
    vl wide;
    std::memcpy(&wide, row, sizeof wide);
    const vl low = (vl){} + INT32_MIN, high = (vl){} + INT32_MAX;
    wide = wide < low ? low : wide;
    wide = wide > high ? high : wide;
    return __builtin_convertvector(wide, vi);
#endif
}

inline vi load_weight(const uint8_t* row, const Step& step) {
    vb bytes = {};
    std::memcpy(&bytes, row + step.n, step.count);
    return (widen(bytes) != 0) & step.valid;
}

struct Problem {
    const float* logits;     // (B, C, N)
    const void* labels;      // (B, N) uint8 or int64, or null
    const float* dense;      // (B, C, N) or null
    const uint8_t* weight;   // (B, 1 or C, N) or null
    int64_t batch, channels, pixels;
};

// Where a step reads the rows of image b: a tile of `width` pixels from `start`, every class row copied
// contiguously (logits, and the dense target if any), or the image itself in place (start 0, width N).
struct Tile {
    int64_t start, width;  // width: the row length of the buffers (the tile's pixels, or N in place)
    const float* logits;
    const float* dense;
    float* grad;  // backward: the gradient's rows, copied out when the tile is done

    static Tile in_place(const Problem& p, int64_t b) {
        const int64_t offset = b * p.channels * p.pixels;
        return Tile{0, p.pixels, p.logits + offset, p.dense ? p.dense + offset : nullptr, nullptr};
    }

    static int64_t width_for(int64_t channels) {
        int64_t t = TILE_FLOATS / channels / W * W;
        return t < W ? W : (t > 256 ? 256 : t);
    }

    void fill(const Problem& p, int64_t b, int64_t tile_start, int64_t length, float* logits_buffer,
              float* dense_buffer) {
        start = tile_start;
        const int64_t C = p.channels, N = p.pixels;
        for (int64_t c = 0; c < C; ++c) {
            std::memcpy(logits_buffer + c * width, p.logits + (b * C + c) * N + start, length * sizeof(float));
            if (p.dense)
                std::memcpy(dense_buffer + c * width, p.dense + (b * C + c) * N + start, length * sizeof(float));
        }
        logits = logits_buffer;
        dense = p.dense ? dense_buffer : nullptr;
    }

    // `stream`: full cache lines with non-temporal stores (AVX-512), which skip reading the line in first. For a
    // gradient on fresh huge pages, which the kernel cleared long before, out of cache; on 4 KiB pages the fault
    // had just cleared the page in cache, and streaming past it was 60% slower.
    void flush_grad(const Problem& p, int64_t b, int64_t length, float* out, bool stream) const {
        const int64_t C = p.channels, N = p.pixels;
        for (int64_t c = 0; c < C; ++c) {
            float* row = out + (b * C + c) * N + start;
            const float* from = grad + c * width;
#if defined(__AVX512F__)
            if (stream) {
                int64_t k = 0;
                for (; k < length && (reinterpret_cast<uintptr_t>(row + k) & 63); ++k) row[k] = from[k];
                for (; k + W <= length; k += W) _mm512_stream_ps(row + k, _mm512_loadu_ps(from + k));
                for (; k < length; ++k) row[k] = from[k];
                continue;
            }
#endif
            std::memcpy(row, from, length * sizeof(float));
        }
    }
};

// One vector step of image b: the sanitised logits of every class, and what reads the target per class.
template <bool SOFTMAX, int INDEX, int WEIGHT, int CH>
struct Pixels {
    const Problem& p;
    const Tile& tile;
    int64_t b;
    Step step;   // n: the pixel in the image
    Step local;  // n: the pixel in the tile
    bool full;      // all W lanes are pixels (only the last step of a range is not)
    vi pixel_keep;  // WEIGHT 0 and 1: the kept lanes of every class
    vi labels;      // INDEX
    vi keep_class[MAXC];  // WEIGHT 2 only

    Pixels(const Problem& problem, const Tile& t, int64_t image, Step s, vf* z)
        : p(problem), tile(t), b(image), step(s), local(s), full(s.count == W) {
        const int64_t C = CH ? CH : p.channels, N = p.pixels;
        local.n = step.n - tile.start;
        pixel_keep = step.valid;
        if (WEIGHT == 1) pixel_keep = load_weight(p.weight + b * N, step);
        if (INDEX) labels = load_labels<INDEX>(p.labels, b * N + step.n, step);
        vi any = splati(0);
        for (int64_t c = 0; c < C; ++c) {
            z[c] = load_row(tile.logits + c * tile.width, local);
            if (WEIGHT == 2) {
                keep_class[c] = load_weight(p.weight + (b * C + c) * N, step);
                any |= keep_class[c];
            }
        }
        // Excluded logits are selected out; softmax couples a pixel's classes: it leaves where none counts.
        if (SOFTMAX && WEIGHT == 2)
            for (int64_t c = 0; c < C; ++c) z[c] = select(any, z[c], splat(0));
        else if (WEIGHT == 2)
            for (int64_t c = 0; c < C; ++c) z[c] = select(keep_class[c], z[c], splat(0));
        else if (WEIGHT == 1)
            for (int64_t c = 0; c < C; ++c) z[c] = select(pixel_keep, z[c], splat(0));
    }

    vi keep(int64_t c) const { return WEIGHT == 2 ? keep_class[c] : pixel_keep; }

    // x where class c counts, else 0 (no mask to apply on a full step without a weight)
    vf kept(int64_t c, vf x) const { return (WEIGHT == 0 && full) ? x : select(keep(c), x, splat(0)); }

    // The dense target as read (excluded entries too: target() selects them out).
    vf raw_target(int64_t c) const { return load_row(tile.dense + c * tile.width, local); }

    // y of class c: the dense target, the label indicator (C > 1) or the 0/1 label (C = 1); 0 where not counted.
    // (Padded lanes read 0 targets and -1 labels, so without a weight nothing needs masking.)
    vf target(int64_t c, vf raw) const {
        if (!INDEX) return WEIGHT == 0 ? raw : select(keep(c), raw, splat(0));
        if (CH == 1 || p.channels == 1)
            return select(WEIGHT == 0 ? labels >= 0 : pixel_keep, __builtin_convertvector(labels, vf), splat(0));
        vi hit = labels == static_cast<int32_t>(c);
        return select(WEIGHT == 0 ? hit : hit & pixel_keep, splat(1.0f), splat(0));
    }
};

// x = act(z) of one step; for softmax also the pixel's max and 1 / sum of exponentials.
template <bool SOFTMAX>
__attribute__((always_inline)) inline void activate(int64_t C, const vf* z, vf* x, vf* shift, vf* inverse) {
    if (SOFTMAX) {
        vf m = z[0];
        for (int64_t c = 1; c < C; ++c) m = fmax(m, z[c]);  // a NaN logit: its exponential is NaN, so is every x
        vf total = splat(0);
        for (int64_t c = 0; c < C; ++c) {
            x[c] = exp2v((z[c] - m) * LOG2E);
            total += x[c];
        }
        vf inv = 1.0f / total;
        for (int64_t c = 0; c < C; ++c) x[c] *= inv;
        *shift = m;
        *inverse = inv;
    } else {
        for (int64_t c = 0; c < C; ++c) x[c] = sigmoidv(z[c]);
    }
}

struct Sums {  // (B, C) each, in double; range: (min, max) of the dense target's values or of the labels
    double *tp, *pred, *ymass, *ce;
    float *ymax, *range;
    float *shift, *inverse;  // (B, N): the softmax's max and 1 / sum of exponentials, for backward
};

template <bool SOFTMAX, int INDEX, bool NORM2, bool CE, int WEIGHT, int CH, bool RANGE>
void forward(const Problem& p, int64_t n0, int64_t n1, Sums out) {
    const int64_t C = CH ? CH : p.channels, N = p.pixels;
    vf z[MAXC], x[MAXC];
    vf acc_tp[MAXC], acc_pred[MAXC], acc_y[MAXC], acc_ce[MAXC], acc_max[MAXC], acc_min[MAXC];
    vf low = splat(INFINITY), high = splat(-INFINITY);
    vi label_low = splati(INT32_MAX), label_high = splati(INT32_MIN);
    // A dense target's range (its counted entries only: excluded ones are never read) is a min beside the max
    // the sums keep anyway, and a NaN shows in the target's sum: no NaN-aware min and max of every value.
    constexpr bool RANGE_FROM_SUMS = RANGE && !INDEX;
    bool target_nan = false;
    auto flush = [&](int64_t b) {
        for (int64_t c = 0; c < C; ++c) {
            out.tp[b * C + c] += sum_lanes(acc_tp[c]);
            out.pred[b * C + c] += sum_lanes(acc_pred[c]);
            out.ymass[b * C + c] += sum_lanes(acc_y[c]);
            if (CE) out.ce[b * C + c] += sum_lanes(acc_ce[c]);
            acc_tp[c] = acc_pred[c] = acc_y[c] = acc_ce[c] = splat(0);
        }
    };
    for (int64_t b = 0; b < p.batch; ++b) {
        for (int64_t c = 0; c < C; ++c) acc_max[c] = acc_tp[c] = acc_pred[c] = acc_y[c] = acc_ce[c] = splat(0);
        if (RANGE_FROM_SUMS)
            for (int64_t c = 0; c < C; ++c) acc_min[c] = splat(INFINITY), acc_max[c] = splat(-INFINITY);
        int steps = 0;
        const Tile tile = Tile::in_place(p, b);
        {
            for (int64_t n = n0; n < n1; n += W) {
                if (CH != 1 && n + PREFETCH_FLOATS < n1)
                    for (int64_t c = 0; c < C; ++c) {
                        __builtin_prefetch(tile.logits + c * N + n + PREFETCH_FLOATS, 0, 3);
                        if (!INDEX) __builtin_prefetch(tile.dense + c * N + n + PREFETCH_FLOATS, 0, 3);
                    }
                Pixels<SOFTMAX, INDEX, WEIGHT, CH> pixels(p, tile, b, step_at(n, n1), z);
                const Step& step = pixels.step;
                vf shift, inverse;
                activate<SOFTMAX>(C, z, x, &shift, &inverse);
                if (RANGE && INDEX) {  // the labels' range, in integers (ignored pixels hold 0, a valid class)
                    vi labels = pixels.labels;
                    vi for_low = pixels.full ? labels : (step.valid ? labels : label_low);
                    vi for_high = pixels.full ? labels : (step.valid ? labels : label_high);
                    label_low = for_low < label_low ? for_low : label_low;
                    label_high = for_high > label_high ? for_high : label_high;
                }
                vf log_total = splat(0);
                if (SOFTMAX) {
                    store_row(out.shift + b * N, step, shift);
                    store_row(out.inverse + b * N, step, inverse);
                    if (CE) log_total = -log2v(inverse) * LN2;
                }
                for (int64_t c = 0; c < C; ++c) {
                    vf raw = INDEX ? splat(0) : pixels.raw_target(c);
                    vf y = pixels.target(c, raw);
                    vf kept_x = pixels.kept(c, x[c]);
                    acc_tp[c] += (INDEX || NORM2) ? kept_x * y : fmin(kept_x, y);
                    acc_pred[c] += NORM2 ? kept_x * kept_x : kept_x;
                    acc_y[c] += (NORM2 && !INDEX) ? y * y : y;
                    if (!INDEX) {  // (for the range, entries not counted and padded lanes are left out)
                        const bool all_counted = WEIGHT == 0 && pixels.full;
                        vi counted = WEIGHT == 0 ? step.valid : pixels.keep(c);
                        acc_max[c] = fmax(acc_max[c], (RANGE_FROM_SUMS && !all_counted)
                                                          ? select(counted, y, splat(-INFINITY)) : y);
                        if (RANGE_FROM_SUMS)
                            acc_min[c] = fmin(acc_min[c], all_counted ? y : select(counted, y, splat(INFINITY)));
                    }
                    if (CE) {  // -y log x = y (lse - z); y is 0 where not counted (a label: select, as a gather)
                        vf term = shift - z[c] + log_total;
                        acc_ce[c] += INDEX ? select(y != 0.0f, term, splat(0)) : y * term;
                    }
                }
                if (++steps == FLUSH) {
                    flush(b);
                    steps = 0;
                }
            }
        }
        flush(b);
        steps = 0;
        if (RANGE_FROM_SUMS)
            for (int64_t c = 0; c < C; ++c) {
                low = fmin(low, acc_min[c]);
                high = fmax(high, acc_max[c]);
                acc_max[c] = fmax(acc_max[c], splat(0));  // target_max: at least 0, as without the range
                if (out.ymass[b * C + c] != out.ymass[b * C + c]) target_nan = true;
            }
        if (!INDEX)
            for (int64_t c = 0; c < C; ++c) {
                float m = max_lanes(acc_max[c]);
                float& target = out.ymax[b * C + c];
                target = (m != m || m > target) ? m : target;
            }
    }
    if (target_nan) low = splat(NAN);
    if (RANGE && INDEX) {
        low = __builtin_convertvector(label_low, vf);
        high = __builtin_convertvector(label_high, vf);
    }
    if (RANGE) {
        float l = -max_lanes(-low), h = max_lanes(high);
        out.range[0] = (l != l || l < out.range[0]) ? l : out.range[0];
        out.range[1] = (h != h || h > out.range[1]) ? h : out.range[1];
    }
}

struct Coefficients {  // (B, C) each: the gradients of tp, fp, fn and ce
    const float *grad_tp, *grad_fp, *grad_fn, *grad_ce;
    const float *shift, *inverse;
};

template <bool SOFTMAX, int INDEX, bool NORM2, bool CE, int WEIGHT, int CH>
void backward(const Problem& p, int64_t n0, int64_t n1, Coefficients k, float* grad, bool stream) {
    const int64_t C = CH ? CH : p.channels, N = p.pixels;
    vf z[MAXC], x[MAXC], g[MAXC], w[MAXC];
    float logits_tile[TILE_FLOATS], dense_tile[TILE_FLOATS], grad_tile[TILE_FLOATS];
    const Tile tiles{0, Tile::width_for(C), nullptr, nullptr, grad_tile};
    for (int64_t b = 0; b < p.batch; ++b) {
        Tile tile = tiles;
        // A = dL/dfp, B = dL/dtp - dL/dfp - dL/dfn, G = dL/dce of image b
        float a[MAXC], bb[MAXC], gg[MAXC];
        for (int64_t c = 0; c < C; ++c) {
            a[c] = k.grad_fp[b * C + c];
            bb[c] = k.grad_tp[b * C + c] - k.grad_fp[b * C + c] - k.grad_fn[b * C + c];
            gg[c] = CE ? k.grad_ce[b * C + c] : 0.0f;
        }
        // One class row has nothing for the copies to keep apart: it is read and written in place.
        const bool in_place = C == 1;
        if (in_place) {
            tile = Tile::in_place(p, b);
            tile.grad = grad + b * N;
        }
        const int64_t span = in_place ? n1 - n0 : tile.width;
        for (int64_t start = n0; start < n1; start += span) {
            const int64_t end = start + span < n1 ? start + span : n1;
            if (!in_place) tile.fill(p, b, start, end - start, logits_tile, dense_tile);
            for (int64_t n = start; n < end; n += W) {
                Pixels<SOFTMAX, INDEX, WEIGHT, CH> pixels(p, tile, b, step_at(n, end), z);
                const Step& step = pixels.step;
                if (SOFTMAX) {  // the forward's probabilities, bit for bit: same max, same 1 / sum
                    vf shift = load_row(k.shift + b * N, step), inverse = load_row(k.inverse + b * N, step);
                    for (int64_t c = 0; c < C; ++c) x[c] = exp2v((z[c] - shift) * LOG2E) * inverse;
                } else {
                    vf unused_shift, unused_inverse;
                    activate<false>(C, z, x, &unused_shift, &unused_inverse);
                }
                vf projection = splat(0), ce_total = splat(0);
                for (int64_t c = 0; c < C; ++c) {  // g = dL/dx = m (A' + B h); w = G m y (the cross-entropy's)
                    vf y = pixels.target(c, INDEX ? splat(0) : pixels.raw_target(c));
                    vf slope;
                    if (INDEX || NORM2) slope = y;
                    else slope = select(y > x[c], splat(1.0f), select(y == x[c], splat(0.5f), splat(0.0f)));
                    vf value = (NORM2 ? 2.0f * a[c] * x[c] : splat(a[c])) + bb[c] * slope;
                    g[c] = WEIGHT == 0 ? value : select(pixels.keep(c), value, splat(0));  // padded lanes: never stored
                    if (SOFTMAX) projection += x[c] * g[c];
                    if (CE) {
                        w[c] = gg[c] * y;
                        ce_total += w[c];
                    }
                }
                for (int64_t c = 0; c < C; ++c) {
                    vf value;
                    if (SOFTMAX) {
                        value = x[c] * (g[c] - projection);
                        if (CE) value += x[c] * ce_total - w[c];
                    } else {
                        value = x[c] * (1.0f - x[c]) * g[c];
                    }
                    store_row(tile.grad + c * tile.width, pixels.local, value);
                }
            }
            if (!in_place) tile.flush_grad(p, b, end - start, grad, stream);
        }
    }
#if defined(__AVX512F__)
    if (stream) _mm_sfence();  // streaming stores are weakly ordered: drained before the range is done
#endif
}

template <bool SOFTMAX, int INDEX, bool NORM2, bool CE, int WEIGHT, int CH>
void dispatch_forward(const Problem& p, int64_t n0, int64_t n1, Sums out, bool range) {
    if (range) forward<SOFTMAX, INDEX, NORM2, CE, WEIGHT, CH, true>(p, n0, n1, out);
    else forward<SOFTMAX, INDEX, NORM2, CE, WEIGHT, CH, false>(p, n0, n1, out);
}

// Runtime flags to a template instance: F(...) is called as F<SOFTMAX, INDEX, NORM2, CE, WEIGHT, CH>(args...), where
// INDEX is the labels' width in bytes (1: uint8, 8: int64) or 0 for a dense target, and CH is 1 for the sigmoid of one
// channel (the classes' loops and arrays then fold into registers: a third faster at W3) or 0 for any number.
#define SOFTSEG_DISPATCH(F, softmax, channels, label_bytes, norm2, ce, weight, ...)                       \
    do {                                                                                                  \
        if (softmax) SOFTSEG_LABELS(F, true, 0, label_bytes, norm2, ce, weight, __VA_ARGS__);             \
        else if ((channels) == 1) SOFTSEG_LABELS(F, false, 1, label_bytes, norm2, false, weight, __VA_ARGS__); \
        else SOFTSEG_LABELS(F, false, 0, label_bytes, norm2, false, weight, __VA_ARGS__);                  \
    } while (0)
#define SOFTSEG_LABELS(F, s, ch, label_bytes, norm2, ce, weight, ...)                                     \
    do {                                                                                                  \
        if ((label_bytes) == 8) SOFTSEG_NORM(F, s, ch, 8, norm2, ce, weight, __VA_ARGS__);                \
        else if ((label_bytes) == 1) SOFTSEG_NORM(F, s, ch, 1, norm2, ce, weight, __VA_ARGS__);           \
        else SOFTSEG_NORM(F, s, ch, 0, norm2, ce, weight, __VA_ARGS__);                                   \
    } while (0)
#define SOFTSEG_NORM(F, s, ch, i, norm2, ce, weight, ...)                                                 \
    do {                                                                                                  \
        if (norm2) SOFTSEG_CE(F, s, ch, i, true, ce, weight, __VA_ARGS__);                                \
        else SOFTSEG_CE(F, s, ch, i, false, ce, weight, __VA_ARGS__);                                     \
    } while (0)
#define SOFTSEG_CE(F, s, ch, i, n, ce, weight, ...)                                                       \
    do {                                                                                                  \
        if (ce) SOFTSEG_WEIGHT(F, s, ch, i, n, true, weight, __VA_ARGS__);                                \
        else SOFTSEG_WEIGHT(F, s, ch, i, n, false, weight, __VA_ARGS__);                                  \
    } while (0)
#define SOFTSEG_WEIGHT(F, s, ch, i, n, ce, weight, ...)                                                   \
    do {                                                                                                  \
        if ((weight) == 0) F<s, i, n, ce, 0, ch>(__VA_ARGS__);                                            \
        else if ((weight) == 1) F<s, i, n, ce, 1, ch>(__VA_ARGS__);                                       \
        else F<s, i, n, ce, 2, ch>(__VA_ARGS__);                                                          \
    } while (0)

}  // namespace

extern "C" {

int softseg_max_channels() { return MAXC; }

// Asks the kernel to back the 2 MiB-aligned interior of [data, data + bytes) with transparent huge pages (Linux,
// MADV_HUGEPAGE). For the gradient: a fresh mapping at every step, faulted in 4 KiB at a time otherwise. 1 if advised.
int softseg_advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = uintptr_t(1) << 21;
    const uintptr_t start = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) & ~(huge - 1);
    return end > start && madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE) == 0;
#else
    (void)data;
    (void)bytes;
    return 0;
#endif
}

// Whether the pixel ranges run on OpenMP threads. Built with -fopenmp the library needs libgomp.so.1, and in a process
// where torch has loaded its own (same soname) the loader gives it that one: the kernels then run on torch's thread
// pool, the threads that the compiled graph's kernels use too, instead of a second set of threads competing with
// them while they spin after each parallel region.
int softseg_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

// The pixel ranges [bounds[k], bounds[k + 1]) of every image, k < parts, on up to `threads` OpenMP threads (one after
// the other without OpenMP). weight_kind: 0 none, 1 (B, 1, N), 2 (B, C, N). Part k adds into its own slices of the
// caller's zero-initialised arrays: sums (parts x 4 x entries doubles: tp, prediction mass, target mass, ce), ymax
// (parts x entries) and ranges (parts x 2); softseg_finish turns the parts into the outputs.
void softseg_forward(const float* logits, const void* labels, int label_bytes, const float* dense,
                     const uint8_t* weight, int64_t batch, int64_t channels, int64_t pixels, int64_t parts,
                     const int64_t* bounds, int threads, int softmax, int norm2, int with_ce, int weight_kind,
                     int with_range, double* sums, float* ymax, float* ranges, float* shift, float* inverse) {
    const Problem p{logits, labels, dense, weight, batch, channels, pixels};
    const int64_t entries = batch * channels;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int64_t k = 0; k < parts; ++k) {
        double* part = sums + k * 4 * entries;
        Sums out{part, part + entries, part + 2 * entries, part + 3 * entries, ymax + k * entries, ranges + 2 * k,
                 shift, inverse};
        SOFTSEG_DISPATCH(dispatch_forward, softmax, channels, labels ? label_bytes : 0, norm2, with_ce, weight_kind, p,
                         bounds[k], bounds[k + 1], out, with_range != 0);
    }
}

// The threads' parts (as softseg_forward writes them) summed in double into the float32 outputs tp, fp = pred - tp,
// fn = ymass - tp, target_max (labels: ymass > 0) and ce, and the range (min, max) when `range` is not null.
void softseg_finish(const double* sums, const float* ymax, const float* ranges, int64_t parts, int64_t entries,
                    int index, float* tp, float* fp, float* fn, float* target_max, float* ce, float* range) {
    for (int64_t e = 0; e < entries; ++e) {
        double t = 0, pred = 0, mass = 0, c = 0;
        float m = 0;
        for (int64_t k = 0; k < parts; ++k) {
            const double* part = sums + k * 4 * entries;
            t += part[e];
            pred += part[entries + e];
            mass += part[2 * entries + e];
            c += part[3 * entries + e];
            float v = ymax[k * entries + e];
            m = (v != v || v > m) ? v : m;
        }
        tp[e] = static_cast<float>(t);
        fp[e] = static_cast<float>(pred - t);
        fn[e] = static_cast<float>(mass - t);
        target_max[e] = index ? (mass > 0 ? 1.0f : 0.0f) : m;
        ce[e] = static_cast<float>(c);
    }
    if (range) {
        float low = INFINITY, high = -INFINITY;
        for (int64_t k = 0; k < parts; ++k) {
            float l = ranges[2 * k], h = ranges[2 * k + 1];
            low = (l != l || l < low) ? l : low;
            high = (h != h || h > high) ? h : high;
        }
        range[0] = low;
        range[1] = high;
    }
}

// dL/dlogits of the pixel ranges [bounds[k], bounds[k + 1]), k < parts, on up to `threads` OpenMP threads.
// `stream`: the gradient lies on fresh huge pages; its tiles are written with streaming stores (Tile::flush_grad).
void softseg_backward(const float* logits, const void* labels, int label_bytes, const float* dense,
                      const uint8_t* weight, int64_t batch, int64_t channels, int64_t pixels, int64_t parts,
                      const int64_t* bounds, int threads, int softmax, int norm2, int with_ce, int weight_kind,
                      const float* grad_tp, const float* grad_fp, const float* grad_fn, const float* grad_ce,
                      const float* shift, const float* inverse, float* grad, int stream) {
    const Problem p{logits, labels, dense, weight, batch, channels, pixels};
    const Coefficients k{grad_tp, grad_fp, grad_fn, grad_ce, shift, inverse};
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int64_t part = 0; part < parts; ++part)
        SOFTSEG_DISPATCH(backward, softmax, channels, labels ? label_bytes : 0, norm2, with_ce, weight_kind, p,
                         bounds[part], bounds[part + 1], k, grad, stream != 0);
}

}  // extern "C"
