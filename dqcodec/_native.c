/* The prior's integer steps (FORMAT.md, sections 8.2-8.4), for speed only: they compute the same
 * integers as dqcodec.intmath, which stays the reference path (and the fallback where this module
 * was not built). Integer arithmetic is exact, so every instruction set the compiler targets gives
 * the same results. The matrix products are torch's (oneDNN's int8 kernels, exact on 7-bit
 * weights), except with AVX512-VNNI, where gemm and block_tail compute them here: small row counts
 * are faster, and a block's tail then runs without its intermediate arrays.
 *
 * attention(q, kt, v, rows, keys, row_keys, row_index, out, (B, H, R, dh, cap, n_out), exp_mul, exp_shift,
 *           exp_clamp, out_mul, out_shift)
 *   q    (B, H, R, dh) int8       queries
 *   kt   (B, H, dh / 4, cap, 4) int8  keys (-63..63) in quads of channels; cap a multiple of 16
 *   v    (B, H, cap / 2, dh, 2) int16  values (-127..127) in pairs of keys: [.., j / 2, c, j % 2]
 *                                 is channel c of key j; keys past keys[b] must be 0
 *   rows (B,) int32               rows of tile b to compute
 *   keys (B,) int32               keys of tile b that its rows attend to (the first keys[b])
 *   row_keys (B, R) int32 or None  the first row_keys[b, r] <= keys[b] keys instead, row by row
 *                                 (the encoder's pass over every group at once: a prefix per group)
 *   row_index (B, R) int32        the row of out that row r of tile b goes to
 *   out  (n_out, H * dh) int8     the attention outputs, heads side by side
 * norm(h, acc, mul, add, shift, gain, bias, eps, out, (n, d))
 *   h += Linear's output for acc (if acc is not None), clamped to the residual's range; out = Norm(h)
 * project(acc, mul, add, shift, parts, tiles, slots, keys, q, kt, v, (n, d, heads, B, R, cap))
 *   the q, k and v rows of Linear's output (parts: 1 = q only, 2 = k and v, 3 = all), clamped, to
 *   their tile's slot of q (B, H, R, dh) and their tile's key of the cache (kt, v as above)
 * gelu(acc, mul, add, shift, table, out, (n, m)): out = table[clamp(Linear's output, 0, 2047)]
 * frequencies(acc, mul, add, shift, out, (n, k), precision): out = Frequencies(Linear's output)
 * gemm(a, w, offset, out, (m, k, n)): out = a . W (int8 operands, W packed; AVX512-VNNI only)
 * block_tail(h, o, proj, ln2, fc1, gelu, fc2, norm, out, (n, d, m)): a block after its attention,
 *   fused: h += proj(o), h += fc2(gelu(fc1(Norm(h; ln2)))), out = Norm(h; norm) (AVX512-VNNI only)
 * nearest(x, et, out, (n, dim, k)): out (n,) int64 = the nearest of k codes (et (dim, k) float32)
 *   to each vector of x (n, dim) float32: the encoder's VQ search, not the prior's, in float32
 *   rounded the same way on every path (see nearest_generic)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ACT_MAX 127
#define KEY_MAX 63
#define RESID_MAX ((1 << 21) - 1)
#define GELU_SIZE 2048
#define GELU_CHUNK 256
#define RSQRT_LO 1024
#define RSQRT_HI 4096
#define FREQ_EXP_MAX 24
#define FREQ_SHIFT 36
#define MAX_D 4096
#define LOG2_FRAC 10
#define ATTN_SUM_BITS 17
#define ATTN_EXP_MAX 16
#define RECIP_LO 2048
#define MAX_DH 256
#define ROW_BLOCK 4
#define KEY_BLOCK 16
#define ROW_GROUP 16 /* rows whose weights are made before the values are weighed */
#define KEY_CHUNK 128 /* keys weighed at a time (their values: 32 KB) */

/* x86-64: one copy of each loop per instruction-set level, picked when the module loads */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

static int32_t recip[RECIP_LO];
static int64_t rsqrt[RSQRT_HI - RSQRT_LO];

typedef struct {
    int32_t exp_mul, exp_shift, exp_clamp, out_mul, out_shift;
} Consts;

static inline int bit_length(uint32_t v) { return v ? 32 - __builtin_clz(v) : 0; }
static inline int bit_length64(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

static inline int32_t exp2_poly(int32_t r) {
    int32_t h = (-1303 * r) >> LOG2_FRAC;
    h = ((h + 7581) * r) >> LOG2_FRAC;
    h = ((h - 22662) * r) >> LOG2_FRAC;
    return h + 32768;
}

/* Integer weights p[0..n) of scores s[0..n) (overwritten), before the row-total shift; returns their total. */
MULTIVERSION
static int32_t weights(int32_t *restrict s, int n, Consts c) {
    int32_t m = INT32_MIN;
    for (int j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
    int32_t total = 0; /* below 2^15 per key, 2^15 keys at most */
    for (int j = 0; j < n; j++) {
        int32_t d = m - s[j];
        d = d < c.exp_clamp ? d : c.exp_clamp;
        int32_t e = (d * c.exp_mul) >> c.exp_shift;
        int32_t z = e >> LOG2_FRAC;
        int32_t p = exp2_poly(e & ((1 << LOG2_FRAC) - 1));
        p = z >= ATTN_EXP_MAX ? 0 : p >> z;
        s[j] = p;
        total += p;
    }
    return total;
}

/* Keys are stored in quads of channels: kt4[(g * cap + j) * 4 + t] is channel 4g + t of key j,
 * so that one 32-bit lane holds four channels of one key (cap is a multiple of KEY_BLOCK). */

/* vsum[c] = sum over keys [0, 2 * pairs) of channel c, values in int16 pairs of keys. */
MULTIVERSION
static void value_sums(const int16_t *restrict v2, int pairs, int dh, int32_t *restrict vsum) {
    int32_t lanes[2 * MAX_DH] = {0}; /* channel c of even keys at 2c, of odd keys at 2c + 1 */
    for (int p = 0; p < pairs; p++)
        for (int i = 0; i < 2 * dh; i++) lanes[i] += v2[(size_t)p * 2 * dh + i];
    for (int c = 0; c < dh; c++) vsum[c] = lanes[2 * c] + lanes[2 * c + 1];
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define HAVE_X86_KERNELS 1
/* The rows' queries + 128 (u8), four channels to a 32-bit word, for the u8 x s8 products. */
static void offset_quads(const int8_t *q, int dh, uint32_t qq[ROW_BLOCK][MAX_DH / 4]) {
    for (int r = 0; r < ROW_BLOCK; r++)
        for (int g = 0; g < dh / 4; g++) {
            uint32_t w = 0;
            for (int t = 0; t < 4; t++) w |= (uint32_t)(uint8_t)(q[r * dh + 4 * g + t] + 128) << (8 * t);
            qq[r][g] = w;
        }
}

/* ksum[j] = sum over channels of key j (the u8 offset's correction), for keys [0, n), n a multiple of
 * KEY_BLOCK: u8 x s8 dot products of ones with the keys' quads. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void key_sums_vnni(const int8_t *restrict kt4, int dh, int cap, int n, int32_t *restrict ksum) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int j0 = 0; j0 < n; j0 += KEY_BLOCK) {
        __m512i a = _mm512_setzero_si512();
        for (int g = 0; g < dh / 4; g++) a = _mm512_dpbusd_epi32(a, ones, _mm512_loadu_si512(kt4 + ((size_t)g * cap + j0) * 4));
        _mm512_storeu_si512(ksum + j0, a);
    }
}

__attribute__((target("avx2")))
static void key_sums_avx2(const int8_t *restrict kt4, int dh, int cap, int n, int32_t *restrict ksum) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int j0 = 0; j0 < n; j0 += 8) {
        __m256i a = _mm256_setzero_si256();
        for (int g = 0; g < dh / 4; g++) {
            const __m256i k = _mm256_loadu_si256((const __m256i *)(kt4 + ((size_t)g * cap + j0) * 4));
            a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, k), ones16));
        }
        _mm256_storeu_si256((__m256i *)(ksum + j0), a);
    }
}

/* The products of the AVX512-VNNI paths are inline assembly on named accumulators: GCC 12 copies
 * and spills the accumulators of the intrinsics (and of arrays of them), at half the speed or less. */
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define DPBUSD(acc, b, x) __asm__("vpdpbusd %1, %2, %0" : "+v"(acc) : "v"(b), "v"(x))
#define DPWSSD(acc, x, b) __asm__("vpdpwssd %1, %2, %0" : "+v"(acc) : "v"(x), "v"(b))

/* Scores of ROW_BLOCK rows by AVX512-VNNI: (q + 128) . k in u8 x s8 dot products (exact: int32
 * sums without saturation), minus 128 * ksum; 64 keys (four blocks) at a time, then 16. */
#define SCORE_INIT(j) __m512i a0##j = _mm512_setzero_si512(), a1##j = a0##j, a2##j = a0##j, a3##j = a0##j
#define SCORE_STEP(j)                                                                 \
    {                                                                                 \
        const __m512i k = _mm512_loadu_si512(kt + ((size_t)g * cap + 16 * (j)) * 4); \
        DPBUSD(a0##j, k, x0);                                                         \
        DPBUSD(a1##j, k, x1);                                                         \
        DPBUSD(a2##j, k, x2);                                                         \
        DPBUSD(a3##j, k, x3);                                                         \
    }
#define SCORE_STORE(j)                                                                      \
    {                                                                                       \
        const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(ksum + j0 + 16 * (j)), 7); \
        _mm512_storeu_si512(s + j0 + 16 * (j), _mm512_sub_epi32(a0##j, corr));              \
        _mm512_storeu_si512(s + stride + j0 + 16 * (j), _mm512_sub_epi32(a1##j, corr));     \
        _mm512_storeu_si512(s + 2 * stride + j0 + 16 * (j), _mm512_sub_epi32(a2##j, corr)); \
        _mm512_storeu_si512(s + 3 * stride + j0 + 16 * (j), _mm512_sub_epi32(a3##j, corr)); \
    }
#define SCORE_QUERIES                                                                                  \
    const __m512i x0 = _mm512_set1_epi32((int)qq[0][g]), x1 = _mm512_set1_epi32((int)qq[1][g]); \
    const __m512i x2 = _mm512_set1_epi32((int)qq[2][g]), x3 = _mm512_set1_epi32((int)qq[3][g])

VNNI_TARGET
static void scores_vnni(const int8_t *restrict q, int dh, const int8_t *restrict kt4, int cap, int n,
                        const int32_t *restrict ksum, int32_t *restrict s, int stride) {
    uint32_t qq[ROW_BLOCK][MAX_DH / 4];
    offset_quads(q, dh, qq);
    int j0 = 0;
    for (; j0 + 4 * KEY_BLOCK <= n; j0 += 4 * KEY_BLOCK) {
        const int8_t *kt = kt4 + (size_t)j0 * 4;
        SCORE_INIT(0);
        SCORE_INIT(1);
        SCORE_INIT(2);
        SCORE_INIT(3);
        for (int g = 0; g < dh / 4; g++) {
            SCORE_QUERIES;
            SCORE_STEP(0) SCORE_STEP(1) SCORE_STEP(2) SCORE_STEP(3)
        }
        SCORE_STORE(0) SCORE_STORE(1) SCORE_STORE(2) SCORE_STORE(3)
    }
    for (; j0 < n; j0 += KEY_BLOCK) {
        const int8_t *kt = kt4 + (size_t)j0 * 4;
        SCORE_INIT(0);
        for (int g = 0; g < dh / 4; g++) {
            SCORE_QUERIES;
            SCORE_STEP(0)
        }
        SCORE_STORE(0)
    }
}
#endif

/* Scores of ROW_BLOCK rows against keys [0, n) (n rounded up to KEY_BLOCK): s[r * stride + j] = q_r . k_j. */
MULTIVERSION
static void scores_generic(const int8_t *restrict q, int dh, const int8_t *restrict kt4, int cap, int n,
                           int32_t *restrict s, int stride) {
    for (int j0 = 0; j0 < n; j0 += KEY_BLOCK) {
        int32_t a[ROW_BLOCK][KEY_BLOCK] = {{0}};
        for (int g = 0; g < dh / 4; g++) {
            const int8_t *k = kt4 + ((size_t)g * cap + j0) * 4;
            for (int r = 0; r < ROW_BLOCK; r++) {
                const int32_t q0 = q[r * dh + 4 * g], q1 = q[r * dh + 4 * g + 1];
                const int32_t q2 = q[r * dh + 4 * g + 2], q3 = q[r * dh + 4 * g + 3];
                for (int j = 0; j < KEY_BLOCK; j++)
                    a[r][j] += q0 * k[4 * j] + q1 * k[4 * j + 1] + q2 * k[4 * j + 2] + q3 * k[4 * j + 3];
            }
        }
        for (int r = 0; r < ROW_BLOCK; r++) memcpy(s + (size_t)r * stride + j0, a[r], sizeof a[r]);
    }
}

static int use_vnni, use_avx2; /* the instruction sets of the fast paths, checked once */

/* Weights times values in int16 pairs of keys. The weights of ROW_BLOCK rows come as w - 1
 * (-1..32767, int16; row stride `stride`), the values as v2[(p * dh + c) * 2 + t] = channel c of
 * key 2p + t; acc[r][c] += sum over key pairs [p0, p1) of (w_rj - 1) v_jc. The caller adds
 * sum_j v_jc back. Exact: |sum_j w_j v_jc| < 2^17 * 127 and |sum_j v_jc| < 2^15 * 127. */
MULTIVERSION
static void weighted_values(const int16_t *restrict w, int stride, int p0, int p1, const int16_t *restrict v2, int dh,
                            int32_t *restrict acc) {
    for (int p = p0; p < p1; p++) {
        const int16_t *vp = v2 + (size_t)p * dh * 2;
        for (int r = 0; r < ROW_BLOCK; r++) {
            const int32_t wa = w[r * stride + 2 * p], wb = w[r * stride + 2 * p + 1];
            for (int c = 0; c < dh; c++) acc[r * dh + c] += wa * vp[2 * c] + wb * vp[2 * c + 1];
        }
    }
}

static inline int32_t pair_at(const int16_t *w) {
    int32_t x;
    memcpy(&x, w, 4);
    return x;
}

#ifdef HAVE_X86_KERNELS
/* weighted_values for dh = 64 by AVX512-VNNI int16 dot products (vpdpwssd: two keys per
 * instruction), the 16 accumulators in registers. */
#define WV_LOAD(r)                                                                                      \
    __m512i a##r##0 = _mm512_loadu_si512(acc + (r) * 64), a##r##1 = _mm512_loadu_si512(acc + (r) * 64 + 16), \
            a##r##2 = _mm512_loadu_si512(acc + (r) * 64 + 32), a##r##3 = _mm512_loadu_si512(acc + (r) * 64 + 48)
#define WV_STEP(r)                                                                   \
    {                                                                                \
        const __m512i b = _mm512_set1_epi32(pair_at(w + (r) * stride + 2 * p));     \
        DPWSSD(a##r##0, x0, b);                                                      \
        DPWSSD(a##r##1, x1, b);                                                      \
        DPWSSD(a##r##2, x2, b);                                                      \
        DPWSSD(a##r##3, x3, b);                                                      \
    }
#define WV_STORE(r)                                      \
    {                                                    \
        _mm512_storeu_si512(acc + (r) * 64, a##r##0);      \
        _mm512_storeu_si512(acc + (r) * 64 + 16, a##r##1); \
        _mm512_storeu_si512(acc + (r) * 64 + 32, a##r##2); \
        _mm512_storeu_si512(acc + (r) * 64 + 48, a##r##3); \
    }

VNNI_TARGET
static void weighted_values_64_vnni(const int16_t *restrict w, int stride, int p0, int p1, const int16_t *restrict v2,
                                    int32_t *restrict acc) {
    WV_LOAD(0);
    WV_LOAD(1);
    WV_LOAD(2);
    WV_LOAD(3);
    for (int p = p0; p < p1; p++) {
        const int16_t *vp = v2 + (size_t)p * 128;
        const __m512i x0 = _mm512_loadu_si512(vp), x1 = _mm512_loadu_si512(vp + 32);
        const __m512i x2 = _mm512_loadu_si512(vp + 64), x3 = _mm512_loadu_si512(vp + 96);
        WV_STEP(0) WV_STEP(1) WV_STEP(2) WV_STEP(3)
    }
    WV_STORE(0) WV_STORE(1) WV_STORE(2) WV_STORE(3)
}

/* Scores of ROW_BLOCK rows by AVX2: u8 x s8 products added in pairs into int16 (vpmaddubsw; exact,
 * as 2 * 255 * 63 < 2^15 with 7-bit keys), then pairs of those into int32, minus 128 * ksum. */
__attribute__((target("avx2,fma")))
static void scores_avx2(const int8_t *restrict q, int dh, const int8_t *restrict kt4, int cap, int n,
                        const int32_t *restrict ksum, int32_t *restrict s, int stride) {
    uint32_t qq[ROW_BLOCK][MAX_DH / 4];
    offset_quads(q, dh, qq);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int j0 = 0; j0 < n; j0 += 8) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (int g = 0; g < dh / 4; g++) {
            const __m256i k = _mm256_loadu_si256((const __m256i *)(kt4 + ((size_t)g * cap + j0) * 4));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32((int)qq[0][g]), k), ones));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32((int)qq[1][g]), k), ones));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32((int)qq[2][g]), k), ones));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32((int)qq[3][g]), k), ones));
        }
        const __m256i corr = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(ksum + j0)), 7);
        _mm256_storeu_si256((__m256i *)(s + j0), _mm256_sub_epi32(a0, corr));
        _mm256_storeu_si256((__m256i *)(s + stride + j0), _mm256_sub_epi32(a1, corr));
        _mm256_storeu_si256((__m256i *)(s + 2 * stride + j0), _mm256_sub_epi32(a2, corr));
        _mm256_storeu_si256((__m256i *)(s + 3 * stride + j0), _mm256_sub_epi32(a3, corr));
    }
}

/* weighted_values for dh = 64 by AVX2 (vpmaddwd: two keys per instruction): two rows and 32
 * channels per pass over the keys. */
__attribute__((target("avx2")))
static void weighted_values_64_avx2(const int16_t *restrict w, int stride, int p0, int p1, const int16_t *restrict v2,
                                    int32_t *restrict acc) {
    for (int r = 0; r < ROW_BLOCK; r += 2)
        for (int half = 0; half < 64; half += 32) {
            __m256i a[2][4];
            for (int t = 0; t < 4; t++) {
                a[0][t] = _mm256_loadu_si256((const __m256i *)(acc + r * 64 + half + 8 * t));
                a[1][t] = _mm256_loadu_si256((const __m256i *)(acc + (r + 1) * 64 + half + 8 * t));
            }
            const int16_t *w0 = w + (size_t)r * stride, *w1 = w0 + stride;
            for (int p = p0; p < p1; p++) {
                const int16_t *vp = v2 + (size_t)p * 128 + 2 * half;
                const __m256i b0 = _mm256_set1_epi32(pair_at(w0 + 2 * p)), b1 = _mm256_set1_epi32(pair_at(w1 + 2 * p));
                for (int t = 0; t < 4; t++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(vp + 16 * t));
                    a[0][t] = _mm256_add_epi32(a[0][t], _mm256_madd_epi16(x, b0));
                    a[1][t] = _mm256_add_epi32(a[1][t], _mm256_madd_epi16(x, b1));
                }
            }
            for (int t = 0; t < 4; t++) {
                _mm256_storeu_si256((__m256i *)(acc + r * 64 + half + 8 * t), a[0][t]);
                _mm256_storeu_si256((__m256i *)(acc + (r + 1) * 64 + half + 8 * t), a[1][t]);
            }
        }
}
#endif

/* The row's weights p (int32) shifted so that their total is below 2^17, minus 1, as int16 in w
 * (in place: w may be p, as w[j] lies before p[j]), with w = -1 (weight 0) for keys [n, n_even);
 * returns the total. */
MULTIVERSION
static int32_t shifted_weights(const int32_t *p, int n, int n_even, int32_t raw_total, int16_t *w) {
    int shift = bit_length((uint32_t)raw_total) - ATTN_SUM_BITS;
    shift = shift > 0 ? shift : 0;
    int32_t total = 0;
    for (int j = 0; j < n; j++) {
        const int32_t x = p[j] >> shift;
        total += x;
        w[j] = (int16_t)(x - 1);
    }
    for (int j = n; j < n_even; j++) w[j] = -1;
    return total;
}

/* (R, e) = reciprocal(T); out = clamp((a R out_mul + 2^(sh-1)) >> sh, -127, 127), sh = out_shift + e + 13,
 * where a = acc + vsum (the weights' offset of 1 added back). */
static void finish_row(const int32_t *acc, const int32_t *vsum, int32_t total, int dh, Consts c, int8_t *out) {
    const int e = bit_length((uint32_t)total) - 1;
    const int64_t r = recip[(total >> (e - 11)) - RECIP_LO];
    const int sh = c.out_shift + e + 13;
    const int64_t scale = r * c.out_mul;
    for (int k = 0; k < dh; k++) {
        int64_t y;
        if (sh >= 62) {
            y = 0; /* |a R out_mul| < 2^52: the rounded quotient is 0 */
        } else {
            y = ((int64_t)(acc[k] + vsum[k]) * scale + ((int64_t)1 << (sh - 1))) >> sh;
        }
        out[k] = (int8_t)(y < -ACT_MAX ? -ACT_MAX : y > ACT_MAX ? ACT_MAX : y);
    }
}

/* One (tile, head) pair, its output row r to out[row_index[r] * out_stride]: ROW_GROUP rows at a
 * time get their weights, then the values are weighed a chunk of keys at a time (each chunk stays
 * in the caches for all the group's rows). Row r attends to the first n keys, or row_keys[r] if
 * row_keys is not NULL; the group's rows weigh the values of as many keys as the most of them see,
 * with weight 0 (w = -1) past each row's own keys. Values past key n are 0 (the cache's unused slots). */
static int attend_pair(const int8_t *q, int rows, const int8_t *kt4, const int16_t *v2, int n, const int32_t *row_keys,
                       int cap, int dh, Consts c, const int32_t *row_index, int8_t *out, int out_stride, int32_t *s,
                       int32_t *ksum, int32_t *acc) {
    int8_t qb[ROW_BLOCK * MAX_DH];
    int32_t vsum[MAX_DH];
    int vsum_keys = -1; /* the keys vsum covers */
#ifdef HAVE_X86_KERNELS
    const int n16_all = (n + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK;
    if (use_vnni)
        key_sums_vnni(kt4, dh, cap, n16_all, ksum);
    else if (use_avx2)
        key_sums_avx2(kt4, dh, cap, n16_all, ksum);
#endif
    for (int g0 = 0; g0 < rows; g0 += ROW_GROUP) {
        const int ng = rows - g0 < ROW_GROUP ? rows - g0 : ROW_GROUP;
        const int nb = (ng + ROW_BLOCK - 1) / ROW_BLOCK; /* blocks of ROW_BLOCK rows */
        int n_g = n;
        if (row_keys) {
            n_g = 1;
            for (int r = 0; r < ng; r++) n_g = row_keys[g0 + r] > n_g ? row_keys[g0 + r] : n_g;
        }
        const int n16 = (n_g + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK, n_even = n_g + (n_g & 1);
        if (vsum_keys != n_even) {
            value_sums(v2, n_even / 2, dh, vsum);
            vsum_keys = n_even;
        }
        int32_t totals[ROW_GROUP] = {0};
        for (int b = 0; b < nb; b++) {
            const int i0 = g0 + b * ROW_BLOCK, nr = rows - i0 < ROW_BLOCK ? rows - i0 : ROW_BLOCK;
            int32_t *sb = s + (size_t)b * ROW_BLOCK * cap;
            memset(qb, 0, sizeof qb);
            memcpy(qb, q + (size_t)i0 * dh, (size_t)nr * dh);
#ifdef HAVE_X86_KERNELS
            if (use_vnni)
                scores_vnni(qb, dh, kt4, cap, n16, ksum, sb, cap);
            else if (use_avx2)
                scores_avx2(qb, dh, kt4, cap, n16, ksum, sb, cap);
            else
#endif
                scores_generic(qb, dh, kt4, cap, n16, sb, cap);
            for (int r = 0; r < ROW_BLOCK; r++) { /* scores become int16 weights in place (rows past nr: 0) */
                int32_t *p = sb + (size_t)r * cap;
                if (r < nr) {
                    const int n_r = row_keys ? row_keys[i0 + r] : n;
                    const int32_t total = shifted_weights(p, n_r, n_even, weights(p, n_r, c), (int16_t *)p);
                    if (total < RECIP_LO) return -1; /* cannot happen: the largest weight alone is 2^15 >> shift */
                    totals[b * ROW_BLOCK + r] = total;
                } else {
                    memset(p, 0, sizeof(int16_t) * n_even);
                }
            }
        }
        memset(acc, 0, sizeof(int32_t) * nb * ROW_BLOCK * dh);
        for (int j0 = 0; j0 < n_even; j0 += KEY_CHUNK) {
            const int p0 = j0 / 2, p1 = (n_even - j0 < KEY_CHUNK ? n_even : j0 + KEY_CHUNK) / 2;
            for (int b = 0; b < nb; b++) {
                const int16_t *w = (const int16_t *)(s + (size_t)b * ROW_BLOCK * cap);
                int32_t *ab = acc + (size_t)b * ROW_BLOCK * dh;
#ifdef HAVE_X86_KERNELS
                if (use_vnni && dh == 64)
                    weighted_values_64_vnni(w, 2 * cap, p0, p1, v2, ab);
                else if (use_avx2 && dh == 64)
                    weighted_values_64_avx2(w, 2 * cap, p0, p1, v2, ab);
                else
#endif
                    weighted_values(w, 2 * cap, p0, p1, v2, dh, ab);
            }
        }
        for (int r = 0; r < ng; r++)
            finish_row(acc + r * dh, vsum, totals[r], dh, c, out + (size_t)row_index[g0 + r] * out_stride);
    }
    return 0;
}

/* The largest r with r * r <= x, exactly: digit by digit, in integers (no libm). */
static uint64_t isqrt(uint64_t x) {
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > x) bit >>= 2;
    for (; bit; bit >>= 2) {
        if (x >= r + bit) {
            x -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return r;
}

static int buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, Py_ssize_t n, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->itemsize != itemsize || view->len != itemsize * n) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes", name, n, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Buffers of the arguments, each checked for its item size and count (None where allowed). */
typedef struct {
    PyObject *obj;
    Py_ssize_t itemsize, n;
    int writable, optional;
    const char *name;
    Py_buffer view;
    int held;
} Arg;

static void release(Arg *a, int count) {
    for (int i = 0; i < count; i++)
        if (a[i].held) {
            PyBuffer_Release(&a[i].view);
            a[i].held = 0;
        }
}

static int acquire(Arg *a, int count) {
    for (int i = 0; i < count; i++) {
        a[i].held = 0;
        a[i].view.buf = NULL;
    }
    for (int i = 0; i < count; i++) {
        if (a[i].obj == Py_None && a[i].optional) continue;
        if (a[i].n < 0 || buffer(a[i].obj, &a[i].view, a[i].writable, a[i].itemsize, a[i].n, a[i].name) < 0) {
            if (a[i].n < 0) PyErr_Format(PyExc_ValueError, "%s: bad shape", a[i].name);
            release(a, i);
            return -1;
        }
        a[i].held = 1;
    }
    return 0;
}

static PyObject *attention(PyObject *self, PyObject *args) {
    PyObject *oq, *okt, *ov, *orows, *okeys, *orow_keys, *oindex, *oout;
    int B, H, R, dh, cap, n_out;
    Consts c;
    if (!PyArg_ParseTuple(args, "OOOOOOOO(iiiiii)iiiii", &oq, &okt, &ov, &orows, &okeys, &orow_keys, &oindex, &oout, &B, &H, &R, &dh,
                          &cap, &n_out, &c.exp_mul, &c.exp_shift, &c.exp_clamp, &c.out_mul, &c.out_shift))
        return NULL;
    if (B < 0 || H < 1 || R < 0 || n_out < 0 || dh < 4 || dh > MAX_DH || dh % 4 || cap < KEY_BLOCK || cap % KEY_BLOCK) {
        PyErr_SetString(PyExc_ValueError, "attention: bad shape");
        return NULL;
    }
    const Py_ssize_t bh = (Py_ssize_t)B * H;
    Arg a[] = {
        {oq, 1, bh * R * dh, 0, 0, "q"},          {okt, 1, bh * dh * cap, 0, 0, "kt"},
        {ov, 2, bh * cap * dh, 0, 0, "v"},        {orows, 4, B, 0, 0, "rows"},
        {okeys, 4, B, 0, 0, "keys"},              {oindex, 4, (Py_ssize_t)B * R, 0, 0, "row_index"},
        {oout, 1, (Py_ssize_t)n_out * H * dh, 1, 0, "out"}, {orow_keys, 4, (Py_ssize_t)B * R, 0, 1, "row_keys"},
    };
    if (acquire(a, 8) < 0) return NULL;
    const int32_t *rows = a[3].view.buf, *keys = a[4].view.buf, *row_index = a[5].view.buf;
    const int32_t *row_keys = a[7].view.buf; /* NULL: None */
    int status = 0;
    for (int b = 0; b < B && status == 0; b++) {
        if (rows[b] < 0 || rows[b] > R || keys[b] < 1 || keys[b] > cap) status = -3;
        for (int r = 0; r < rows[b] && status == 0; r++) {
            if (row_index[(size_t)b * R + r] < 0 || row_index[(size_t)b * R + r] >= n_out) status = -3;
            if (row_keys && (row_keys[(size_t)b * R + r] < 1 || row_keys[(size_t)b * R + r] > keys[b])) status = -3;
        }
    }
    if (status == 0) {
        int32_t *s = malloc(sizeof(int32_t) * ((size_t)(ROW_GROUP + 1) * cap + ROW_GROUP * MAX_DH));
        if (!s) {
            status = -4;
        } else {
            Py_BEGIN_ALLOW_THREADS;
            for (Py_ssize_t i = 0; i < bh && status == 0; i++) {
                const int b = (int)(i / H), head = (int)(i % H);
                status = attend_pair((const int8_t *)a[0].view.buf + i * R * dh, rows[b],
                                     (const int8_t *)a[1].view.buf + i * dh * cap, (const int16_t *)a[2].view.buf + i * cap * dh,
                                     keys[b], row_keys ? row_keys + (size_t)b * R : NULL, cap, dh, c,
                                     row_index + (size_t)b * R, (int8_t *)a[6].view.buf + head * dh,
                                     H * dh, s, s + (size_t)ROW_GROUP * cap, s + (size_t)(ROW_GROUP + 1) * cap);
            }
            Py_END_ALLOW_THREADS;
            free(s);
        }
    }
    release(a, 8);
    if (status == -3) {
        PyErr_SetString(PyExc_ValueError, "attention: row or key counts or row indices out of range");
        return NULL;
    }
    if (status == -4) return PyErr_NoMemory();
    if (status == -1) {
        PyErr_SetString(PyExc_ArithmeticError, "attention: a row's weights total below 2^11");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ----- the steps between the matrix products ------------------------------------------------- */

/* Linear's output (FORMAT.md 8.3): (acc * mul + add) >> shift, exact in int64 by the bounds of 8.6. */
static inline int64_t requant(int32_t acc, int64_t mul, int64_t add, int shift) {
    return ((int64_t)acc * mul + add) >> shift;
}

static inline int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

/* h += requant(acc) (clamped to the residual's range), for one row. */
MULTIVERSION
static void add_residual(int32_t *restrict h, const int32_t *restrict acc, const int64_t *restrict mul,
                         const int64_t *restrict add, int shift, int d) {
    for (int j = 0; j < d; j++) h[j] = (int32_t)clamp64(h[j] + requant(acc[j], mul[j], add[j], shift), -RESID_MAX, RESID_MAX);
}

/* Norm(x; gain, bias) of one row (FORMAT.md 8.3), d = 2^log2d. */
MULTIVERSION
static void norm_row(const int32_t *restrict x, int d, int log2d, const int64_t *restrict gain,
                     const int64_t *restrict bias, int64_t eps, int8_t *restrict out) {
    int64_t sum = 0;
    for (int j = 0; j < d; j++) sum += x[j];
    const int64_t mu = (sum + (d >> 1)) >> log2d;
    int64_t squares = 0;
    for (int j = 0; j < d; j++) squares += (x[j] - mu) * (x[j] - mu);
    const int64_t v = (squares >> log2d) + eps;
    const int t = (bit_length64((uint64_t)v) - 1) >> 1;
    const int64_t m = 2 * t <= 10 ? v << (10 - 2 * t) : v >> (2 * t - 10);
    const int64_t r = rsqrt[m - RSQRT_LO];
    for (int j = 0; j < d; j++) {
        const int64_t n = ((x[j] - mu) * r) >> (t + 3);
        out[j] = (int8_t)clamp64((n * gain[j] + bias[j]) >> 24, -ACT_MAX, ACT_MAX);
    }
}

static PyObject *norm(PyObject *self, PyObject *args) {
    PyObject *oh, *oacc, *omul, *oadd, *ogain, *obias, *oout;
    int shift, n, d;
    long long eps;
    if (!PyArg_ParseTuple(args, "OOOOiOOLO(ii)", &oh, &oacc, &omul, &oadd, &shift, &ogain, &obias, &eps, &oout, &n, &d))
        return NULL;
    if (n < 0 || d < 1 || d > MAX_D || (d & (d - 1)) || shift < 0 || shift > 62 || eps < 1 || eps >= (1LL << 40)) {
        PyErr_SetString(PyExc_ValueError, "norm: bad shape, shift or eps");
        return NULL;
    }
    const int with_acc = oacc != Py_None;
    Arg a[] = {
        {oh, 4, (Py_ssize_t)n * d, 1, 0, "h"},   {oacc, 4, (Py_ssize_t)n * d, 0, 1, "acc"},
        {omul, 8, with_acc ? d : 0, 0, 1, "mul"}, {oadd, 8, with_acc ? d : 0, 0, 1, "add"},
        {ogain, 8, d, 0, 0, "gain"},              {obias, 8, d, 0, 0, "bias"},
        {oout, 1, (Py_ssize_t)n * d, 1, 0, "out"},
    };
    if (acquire(a, 7) < 0) return NULL;
    if (with_acc && (!a[2].held || !a[3].held)) {
        release(a, 7);
        PyErr_SetString(PyExc_ValueError, "norm: acc needs mul and add");
        return NULL;
    }
    const int log2d = bit_length((uint32_t)d) - 1;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t *h = (int32_t *)a[0].view.buf + i * d;
        if (with_acc) add_residual(h, (const int32_t *)a[1].view.buf + i * d, a[2].view.buf, a[3].view.buf, shift, d);
        norm_row(h, d, log2d, a[4].view.buf, a[5].view.buf, eps, (int8_t *)a[6].view.buf + i * d);
    }
    Py_END_ALLOW_THREADS;
    release(a, 7);
    Py_RETURN_NONE;
}

/* One row of Linear's output, clamped to -limit..limit, to int8. */
MULTIVERSION
static void requant_int8(const int32_t *restrict acc, const int64_t *restrict mul, const int64_t *restrict add, int shift,
                         int n, int64_t limit, int8_t *restrict out) {
    for (int j = 0; j < n; j++) out[j] = (int8_t)clamp64(requant(acc[j], mul[j], add[j], shift), -limit, limit);
}

static PyObject *project(PyObject *self, PyObject *args) {
    PyObject *oacc, *omul, *oadd, *otiles, *oslots, *okeys, *oq, *okt, *ov;
    int shift, parts, n, d, H, B, R, cap;
    if (!PyArg_ParseTuple(args, "OOOiiOOOOOO(iiiiii)", &oacc, &omul, &oadd, &shift, &parts, &otiles, &oslots, &okeys, &oq,
                          &okt, &ov, &n, &d, &H, &B, &R, &cap))
        return NULL;
    if (n < 0 || d < 4 || H < 1 || d % H || (d / H) % 4 || d / H > MAX_DH || B < 0 || R < 0 || cap < 0 ||
        parts < 1 || parts > 3 || shift < 0 || shift > 62) {
        PyErr_SetString(PyExc_ValueError, "project: bad shape, parts or shift");
        return NULL;
    }
    const int with_q = parts & 1, with_kv = parts >> 1, width = (with_q + 2 * with_kv) * d, dh = d / H;
    Arg a[] = {
        {oacc, 4, (Py_ssize_t)n * width, 0, 0, "acc"},
        {omul, 8, width, 0, 0, "mul"},
        {oadd, 8, width, 0, 0, "add"},
        {otiles, 4, n, 0, 0, "tiles"},
        {oslots, 4, with_q ? n : 0, 0, !with_q, "slots"},
        {okeys, 4, with_kv ? n : 0, 0, !with_kv, "keys"},
        {oq, 1, with_q ? (Py_ssize_t)B * R * d : 0, 1, !with_q, "q"},
        {okt, 1, with_kv ? (Py_ssize_t)B * d * cap : 0, 1, !with_kv, "kt"},
        {ov, 2, with_kv ? (Py_ssize_t)B * d * cap : 0, 1, !with_kv, "v"},
    };
    if (acquire(a, 9) < 0) return NULL;
    const int32_t *tiles = a[3].view.buf, *slots = a[4].view.buf, *keys = a[5].view.buf;
    int bad = (with_q && !a[4].held) || (with_kv && !a[5].held);
    for (int i = 0; i < n && !bad; i++)
        bad = tiles[i] < 0 || tiles[i] >= B || (with_q && (slots[i] < 0 || slots[i] >= R)) ||
              (with_kv && (keys[i] < 0 || keys[i] >= cap));
    if (bad) {
        release(a, 9);
        PyErr_SetString(PyExc_ValueError, "project: a tile, slot or key out of range");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    int8_t y[3 * MAX_D];
    for (int i = 0; i < n; i++) {
        const int32_t *acc = (const int32_t *)a[0].view.buf + (size_t)i * width;
        const int64_t *mul = a[1].view.buf, *add = a[2].view.buf;
        const size_t tile = (size_t)tiles[i];
        int col = 0;
        if (with_q) {
            requant_int8(acc, mul, add, shift, d, ACT_MAX, y);
            for (int h = 0; h < H; h++)
                memcpy((int8_t *)a[6].view.buf + ((tile * H + h) * R + slots[i]) * dh, y + h * dh, dh);
            col = d;
        }
        if (with_kv) {
            requant_int8(acc + col, mul + col, add + col, shift, d, KEY_MAX, y);
            requant_int8(acc + col + d, mul + col + d, add + col + d, shift, d, ACT_MAX, y + d);
            const size_t key = (size_t)keys[i];
            for (int h = 0; h < H; h++) {
                int8_t *kt = (int8_t *)a[7].view.buf + (tile * H + h) * dh * cap;
                int16_t *v = (int16_t *)a[8].view.buf + ((tile * H + h) * cap + key / 2 * 2) * dh + key % 2;
                for (int g = 0; g < dh / 4; g++) memcpy(kt + ((size_t)g * cap + key) * 4, y + h * dh + 4 * g, 4);
                for (int c = 0; c < dh; c++) v[2 * c] = y[d + h * dh + c];
            }
        }
    }
    Py_END_ALLOW_THREADS;
    release(a, 9);
    Py_RETURN_NONE;
}

/* The GELU table's index, clamp((acc * mul + add) >> shift, 0, GELU_SIZE - 1), of n entries. The
 * vector paths compute it in float64: acc * mul + add is an integer below 2^53 (FORMAT.md 8.6), so
 * the fused multiply-add is exact, and so are the scaling by 2^-shift and the floor. */
#ifdef HAVE_X86_KERNELS
__attribute__((target("avx512f")))
static int gelu_index_avx512(const int32_t *restrict acc, const double *restrict mul, const double *restrict add,
                             double scale, int n, int32_t *restrict index) {
    const __m512d s = _mm512_set1_pd(scale), lo = _mm512_setzero_pd(), hi = _mm512_set1_pd(GELU_SIZE - 1);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m512d x = _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(acc + j)));
        x = _mm512_mul_pd(_mm512_fmadd_pd(x, _mm512_loadu_pd(mul + j), _mm512_loadu_pd(add + j)), s);
        x = _mm512_min_pd(_mm512_max_pd(_mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), lo), hi);
        _mm256_storeu_si256((__m256i *)(index + j), _mm512_cvttpd_epi32(x));
    }
    return j;
}

__attribute__((target("avx2,fma")))
static int gelu_index_avx2(const int32_t *restrict acc, const double *restrict mul, const double *restrict add,
                           double scale, int n, int32_t *restrict index) {
    const __m256d s = _mm256_set1_pd(scale), lo = _mm256_setzero_pd(), hi = _mm256_set1_pd(GELU_SIZE - 1);
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        __m256d x = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(acc + j)));
        x = _mm256_mul_pd(_mm256_fmadd_pd(x, _mm256_loadu_pd(mul + j), _mm256_loadu_pd(add + j)), s);
        x = _mm256_min_pd(_mm256_max_pd(_mm256_floor_pd(x), lo), hi);
        _mm_storeu_si128((__m128i *)(index + j), _mm256_cvttpd_epi32(x));
    }
    return j;
}
#endif

/* One row of the MLP's first layer through the GELU table: out[j] = table[index_j]. The lookups
 * stay scalar (gathers are slower than loads on some CPUs, e.g. AMD Zen 4). */
__attribute__((optimize("no-tree-vectorize")))
static void gelu_row(const int32_t *restrict acc, const int64_t *restrict mul, const int64_t *restrict add,
                     const double *restrict mul_f, const double *restrict add_f, int shift, int m,
                     const int8_t *restrict table, int8_t *restrict out) {
    int32_t index[GELU_CHUNK];
    const double scale = __builtin_ldexp(1.0, -shift);
    for (int j0 = 0; j0 < m; j0 += GELU_CHUNK) {
        const int n = m - j0 < GELU_CHUNK ? m - j0 : GELU_CHUNK;
        int j = 0;
#ifdef HAVE_X86_KERNELS
        if (use_vnni) /* (AVX-512) */
            j = gelu_index_avx512(acc + j0, mul_f + j0, add_f + j0, scale, n, index);
        else if (use_avx2)
            j = gelu_index_avx2(acc + j0, mul_f + j0, add_f + j0, scale, n, index);
#endif
        for (; j < n; j++) index[j] = (int32_t)clamp64(requant(acc[j0 + j], mul[j0 + j], add[j0 + j], shift), 0, GELU_SIZE - 1);
        for (j = 0; j < n; j++) out[j0 + j] = table[index[j]];
    }
}

/* mul and add (m,) as float64, for gelu_row's vector paths (exact: both are below 2^53). */
static void as_doubles(const int64_t *mul, const int64_t *add, int m, double *mul_f, double *add_f) {
    for (int j = 0; j < m; j++) mul_f[j] = (double)mul[j], add_f[j] = (double)add[j];
}

static PyObject *gelu(PyObject *self, PyObject *args) {
    PyObject *oacc, *omul, *oadd, *otable, *oout;
    int shift, n, m;
    if (!PyArg_ParseTuple(args, "OOOiOO(ii)", &oacc, &omul, &oadd, &shift, &otable, &oout, &n, &m)) return NULL;
    if (n < 0 || m < 0 || shift < 0 || shift > 62) {
        PyErr_SetString(PyExc_ValueError, "gelu: bad shape or shift");
        return NULL;
    }
    Arg a[] = {
        {oacc, 4, (Py_ssize_t)n * m, 0, 0, "acc"}, {omul, 8, m, 0, 0, "mul"}, {oadd, 8, m, 0, 0, "add"},
        {otable, 1, GELU_SIZE, 0, 0, "table"},     {oout, 1, (Py_ssize_t)n * m, 1, 0, "out"},
    };
    if (acquire(a, 5) < 0) return NULL;
    double *mul = malloc(2 * (size_t)(m ? m : 1) * sizeof(double)), *add = mul + m;
    if (!mul) {
        release(a, 5);
        return PyErr_NoMemory();
    }
    as_doubles(a[1].view.buf, a[2].view.buf, m, mul, add);
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++)
        gelu_row((const int32_t *)a[0].view.buf + i * m, a[1].view.buf, a[2].view.buf, mul, add, shift, m, a[3].view.buf,
                 (int8_t *)a[4].view.buf + i * m);
    Py_END_ALLOW_THREADS;
    free(mul);
    release(a, 5);
    Py_RETURN_NONE;
}

/* Frequencies(l; k) of one row of logits (FORMAT.md 8.3); p is scratch of k entries. */
MULTIVERSION
static void frequency_row(const int64_t *restrict logits, int k, int precision, int64_t *restrict p, int64_t *restrict f) {
    int64_t top = logits[0];
    for (int i = 1; i < k; i++) top = logits[i] > top ? logits[i] : top;
    int64_t total = 0;
    for (int i = 0; i < k; i++) {
        int64_t d = top - logits[i];
        d = d < ((int64_t)FREQ_EXP_MAX << LOG2_FRAC) ? d : (int64_t)FREQ_EXP_MAX << LOG2_FRAC;
        const int z = (int)(d >> LOG2_FRAC);
        p[i] = z >= FREQ_EXP_MAX ? 0 : ((int64_t)exp2_poly((int32_t)(d & ((1 << LOG2_FRAC) - 1))) << 8) >> z;
        total += p[i];
    }
    const int e = bit_length64((uint64_t)total) - 1;
    const int64_t r = recip[(total >> (e - 11)) - RECIP_LO];
    const int64_t w = ((((int64_t)1 << precision) - k) * r) >> (e - 23);
    int64_t sum = 0;
    for (int i = 0; i < k; i++) {
        f[i] = 1 + ((p[i] * w) >> FREQ_SHIFT);
        sum += f[i];
    }
    int best = 0;
    for (int i = 1; i < k; i++) best = f[i] > f[best] ? i : best;
    f[best] += ((int64_t)1 << precision) - sum;
}

static PyObject *frequencies(PyObject *self, PyObject *args) {
    PyObject *oacc, *omul, *oadd, *oout;
    int shift, n, k, precision;
    if (!PyArg_ParseTuple(args, "OOOiO(ii)i", &oacc, &omul, &oadd, &shift, &oout, &n, &k, &precision)) return NULL;
    if (n < 0 || k < 1 || k > (1 << 16) || shift < 0 || shift > 62 || precision < 17 || precision > 30 ||
        k >= (1 << precision)) {
        PyErr_SetString(PyExc_ValueError, "frequencies: bad shape, shift or precision");
        return NULL;
    }
    Arg a[] = {
        {oacc, 4, (Py_ssize_t)n * k, 0, 0, "acc"},
        {omul, 8, k, 0, 0, "mul"},
        {oadd, 8, k, 0, 0, "add"},
        {oout, 8, (Py_ssize_t)n * k, 1, 0, "out"},
    };
    if (acquire(a, 4) < 0) return NULL;
    int64_t *scratch = malloc(sizeof(int64_t) * 2 * (size_t)k);
    if (!scratch) {
        release(a, 4);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS;
    const int64_t *mul = a[1].view.buf, *add = a[2].view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const int32_t *acc = (const int32_t *)a[0].view.buf + i * k;
        for (int j = 0; j < k; j++) scratch[k + j] = requant(acc[j], mul[j], add[j], shift);
        frequency_row(scratch + k, k, precision, scratch, (int64_t *)a[3].view.buf + i * k);
    }
    Py_END_ALLOW_THREADS;
    free(scratch);
    release(a, 4);
    Py_RETURN_NONE;
}


/* ----- int8 matrix products ---------------------------------------------------------------- */

#define GEMM_NR 64 /* output columns per block: four vectors of 16 */
#define TAIL_ROWS 48 /* rows of a fused block tail at a time: each block of weights is reused from L1 */
#define GEMM_MAX_K (1 << 16) /* (a + 128) . w stays below 2^31: 255 * 128 * 2^16 < 2^31 */

#ifdef HAVE_X86_KERNELS
/* out (R, 64) = a . w for R rows and one block of 64 columns, from a' = a + 128 (u8, rows lda
 * apart) and w packed as (K / 4, 64, 4) s8: a' . w - corr, corr = 128 * w's column sums. The
 * accumulators are named variables and the products inline assembly, so that they stay in
 * registers (GCC 12 spills arrays of them). */
#define ROW_INIT(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0
#define ROW_STEP(r)                                                                \
    {                                                                              \
        const __m512i x = _mm512_set1_epi32(*(const int32_t *)(a + (size_t)(r) * lda + 4 * k)); \
        DPBUSD(c##r##0, b0, x);                                                    \
        DPBUSD(c##r##1, b1, x);                                                    \
        DPBUSD(c##r##2, b2, x);                                                    \
        DPBUSD(c##r##3, b3, x);                                                    \
    }
#define ROW_STORE(r)                                                                                   \
    {                                                                                                  \
        int32_t *o = out + (size_t)(r) * ldo;                                                          \
        _mm512_storeu_si512(o, _mm512_sub_epi32(c##r##0, _mm512_loadu_si512(corr)));                  \
        _mm512_storeu_si512(o + 16, _mm512_sub_epi32(c##r##1, _mm512_loadu_si512(corr + 16)));        \
        _mm512_storeu_si512(o + 32, _mm512_sub_epi32(c##r##2, _mm512_loadu_si512(corr + 32)));        \
        _mm512_storeu_si512(o + 48, _mm512_sub_epi32(c##r##3, _mm512_loadu_si512(corr + 48)));        \
    }
#define LOAD_W                                                                                             \
    const __m512i b0 = _mm512_loadu_si512(w + (size_t)k * 256), b1 = _mm512_loadu_si512(w + (size_t)k * 256 + 64); \
    const __m512i b2 = _mm512_loadu_si512(w + (size_t)k * 256 + 128), b3 = _mm512_loadu_si512(w + (size_t)k * 256 + 192)

#define GEMM_KERNEL_ARGS                                                                                      \
    const uint8_t *restrict a, int lda, const int8_t *restrict w, int kq, const int32_t *restrict corr, \
        int32_t *restrict out, int ldo

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_6x64(GEMM_KERNEL_ARGS) {
    ROW_INIT(0); ROW_INIT(1); ROW_INIT(2); ROW_INIT(3); ROW_INIT(4); ROW_INIT(5);
    for (int k = 0; k < kq; k++) {
        LOAD_W;
        ROW_STEP(0) ROW_STEP(1) ROW_STEP(2) ROW_STEP(3) ROW_STEP(4) ROW_STEP(5)
    }
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_3x64(GEMM_KERNEL_ARGS) {
    ROW_INIT(0); ROW_INIT(1); ROW_INIT(2);
    for (int k = 0; k < kq; k++) {
        LOAD_W;
        ROW_STEP(0) ROW_STEP(1) ROW_STEP(2)
    }
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2)
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_1x64(GEMM_KERNEL_ARGS) {
    ROW_INIT(0);
    for (int k = 0; k < kq; k++) {
        LOAD_W;
        ROW_STEP(0)
    }
    ROW_STORE(0)
}

/* out (m, 64) for m rows: six at a time, then three, then one. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_block_rows(const uint8_t *restrict a, int k, int m, const int8_t *restrict w,
                            const int32_t *restrict corr, int32_t *restrict out, int ldo) {
    int r = 0;
    for (; r + 6 <= m; r += 6) gemm_6x64(a + (size_t)r * k, k, w, k / 4, corr, out + (size_t)r * ldo, ldo);
    for (; r + 3 <= m; r += 3) gemm_3x64(a + (size_t)r * k, k, w, k / 4, corr, out + (size_t)r * ldo, ldo);
    for (; r < m; r++) gemm_1x64(a + (size_t)r * k, k, w, k / 4, corr, out + (size_t)r * ldo, ldo);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_rows_vnni(const uint8_t *restrict a, int m, int k, const int8_t *restrict w, int n,
                           const int32_t *restrict corr, int32_t *restrict out) {
    for (int c0 = 0; c0 < n; c0 += GEMM_NR) gemm_block_rows(a, k, m, w + (size_t)c0 * k, corr + c0, out + c0, n);
}
#endif

/* A linear layer of the fused steps: W packed as for gemm, and its requantisation. */
typedef struct {
    const int8_t *w;
    const int32_t *offset;
    const int64_t *mul, *add;
    int shift;
} Layer;

/* acc (rows, n) = a (rows, k) . W for int8 a (au: scratch for a + 128). */
static void rows_product(const int8_t *restrict a, int rows, int k, const Layer *l, int n, uint8_t *restrict au,
                         int32_t *restrict acc) {
    for (int i = 0; i < rows * k; i++) au[i] = (uint8_t)(a[i] ^ 0x80);
#ifdef HAVE_X86_KERNELS
    gemm_rows_vnni(au, rows, k, l->w, n, l->offset, acc);
#endif
}

/* gemm(a, w, offset, out, (m, k, n)): out = a . W exactly, a (m, k) int8, W (k, n) int8 packed as
 * (n / 64, k / 4, 64, 4), offset = 128 * W's column sums (n,) int32; k % 4 == 0, n % 64 == 0. By
 * AVX512-VNNI only (u8 x s8 dot products of a + 128 and W; elsewhere torch's product runs). */
static PyObject *gemm(PyObject *self, PyObject *args) {
    PyObject *oa, *ow, *ooffset, *oout;
    int m, k, n;
    if (!PyArg_ParseTuple(args, "OOOO(iii)", &oa, &ow, &ooffset, &oout, &m, &k, &n)) return NULL;
    if (m < 0 || k < 4 || k % 4 || k > GEMM_MAX_K || n < GEMM_NR || n % GEMM_NR || !use_vnni) {
        PyErr_SetString(PyExc_ValueError, "gemm: bad shape, or no AVX512-VNNI");
        return NULL;
    }
    Arg a[] = {
        {oa, 1, (Py_ssize_t)m * k, 0, 0, "a"}, {ow, 1, (Py_ssize_t)k * n, 0, 0, "w"},
        {ooffset, 4, n, 0, 0, "offset"},          {oout, 4, (Py_ssize_t)m * n, 1, 0, "out"},
    };
    if (acquire(a, 4) < 0) return NULL;
    uint8_t *au = malloc((size_t)m * k + 64);
    if (!au) {
        release(a, 4);
        return PyErr_NoMemory();
    }
    const Layer w = {a[1].view.buf, a[2].view.buf, NULL, NULL, 0};
    Py_BEGIN_ALLOW_THREADS;
    rows_product(a[0].view.buf, m, k, &w, n, au, a[3].view.buf);
    Py_END_ALLOW_THREADS;
    free(au);
    release(a, 4);
    Py_RETURN_NONE;
}


/* block_tail(h, o, proj, ln2, fc1, gelu, fc2, norm, out, (n, d, m)): a block after its attention: h += proj(o); g = gelu(fc1(Norm(h; ln2))); h += fc2(g); out = Norm(h; norm).
 * The same integers as the steps one by one (norm, gelu and the products), TAIL_ROWS rows at a time,
 * so that the intermediate arrays stay in the cache. A layer is (w packed as for gemm, offset, mul, add, shift), a norm
 * (gain, bias, eps). By AVX512-VNNI only, like gemm. */
static PyObject *block_tail(PyObject *self, PyObject *args) {
    PyObject *oh, *oo, *oout, *otable, *obj[16];
    Layer l[3];
    long long eps[2];
    int n, d, m;
    if (!PyArg_ParseTuple(args, "OO(OOOOi)(OOL)(OOOOi)O(OOOOi)(OOL)O(iii)", &oh, &oo, &obj[0], &obj[1], &obj[2], &obj[3],
                          &l[0].shift, &obj[4], &obj[5], &eps[0], &obj[6], &obj[7], &obj[8], &obj[9], &l[1].shift, &otable,
                          &obj[10], &obj[11], &obj[12], &obj[13], &l[2].shift, &obj[14], &obj[15], &eps[1], &oout, &n, &d, &m))
        return NULL;
    int bad = n < 0 || d < GEMM_NR || d > MAX_D || (d & (d - 1)) || m < GEMM_NR || m % GEMM_NR || m > 4 * MAX_D || !use_vnni;
    for (int i = 0; i < 3; i++) bad |= l[i].shift < 0 || l[i].shift > 62;
    for (int i = 0; i < 2; i++) bad |= eps[i] < 1 || eps[i] >= (1LL << 40);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "block_tail: bad shape, shift or eps, or no AVX512-VNNI");
        return NULL;
    }
    const Py_ssize_t nd = (Py_ssize_t)n * d, dd = (Py_ssize_t)d * d, dm = (Py_ssize_t)d * m;
    Arg a[] = {
        {oh, 4, nd, 1, 0, "h"},           {oo, 1, nd, 0, 0, "o"},
        {obj[0], 1, dd, 0, 0, "proj"},    {obj[1], 4, d, 0, 0, "proj offset"},
        {obj[2], 8, d, 0, 0, "proj mul"}, {obj[3], 8, d, 0, 0, "proj add"},
        {obj[4], 8, d, 0, 0, "ln2 gain"}, {obj[5], 8, d, 0, 0, "ln2 bias"},
        {obj[6], 1, dm, 0, 0, "fc1"},     {obj[7], 4, m, 0, 0, "fc1 offset"},
        {obj[8], 8, m, 0, 0, "fc1 mul"},  {obj[9], 8, m, 0, 0, "fc1 add"},
        {otable, 1, GELU_SIZE, 0, 0, "gelu"},
        {obj[10], 1, dm, 0, 0, "fc2"},    {obj[11], 4, d, 0, 0, "fc2 offset"},
        {obj[12], 8, d, 0, 0, "fc2 mul"}, {obj[13], 8, d, 0, 0, "fc2 add"},
        {obj[14], 8, d, 0, 0, "norm gain"}, {obj[15], 8, d, 0, 0, "norm bias"},
        {oout, 1, nd, 1, 0, "out"},
    };
    if (acquire(a, 20) < 0) return NULL;
    for (int i = 0; i < 3; i++) {
        const int at = i == 0 ? 2 : i == 1 ? 8 : 13;
        l[i].w = a[at].view.buf, l[i].offset = a[at + 1].view.buf, l[i].mul = a[at + 2].view.buf, l[i].add = a[at + 3].view.buf;
    }
    /* scratch: a + 128, products, ln2's output, gelu's output, fc1's mul and add in float64 */
    const size_t wide = (size_t)TAIL_ROWS * m;
    char *buf = malloc(wide * (1 + 4 + 1) + (size_t)TAIL_ROWS * d + 2 * (size_t)m * sizeof(double));
    if (!buf) {
        release(a, 20);
        return PyErr_NoMemory();
    }
    int32_t *acc = (int32_t *)buf;
    double *mul_f = (double *)(buf + 4 * wide), *add_f = mul_f + m;
    uint8_t *au = (uint8_t *)(add_f + m);
    int8_t *g = (int8_t *)au + wide, *x = g + wide;
    as_doubles(l[1].mul, l[1].add, m, mul_f, add_f);
    const int log2d = bit_length((uint32_t)d) - 1;
    const int64_t *gain2 = a[6].view.buf, *bias2 = a[7].view.buf, *gain = a[17].view.buf, *bias = a[18].view.buf;
    Py_BEGIN_ALLOW_THREADS;
    for (int r0 = 0; r0 < n; r0 += TAIL_ROWS) {
        const int mr = n - r0 < TAIL_ROWS ? n - r0 : TAIL_ROWS;
        int32_t *h = (int32_t *)a[0].view.buf + (size_t)r0 * d;
        rows_product((const int8_t *)a[1].view.buf + (size_t)r0 * d, mr, d, &l[0], d, au, acc);
        for (int i = 0; i < mr; i++) {
            add_residual(h + i * d, acc + i * d, l[0].mul, l[0].add, l[0].shift, d);
            norm_row(h + i * d, d, log2d, gain2, bias2, eps[0], x + i * d);
        }
        rows_product(x, mr, d, &l[1], m, au, acc);
        for (int i = 0; i < mr; i++)
            gelu_row(acc + (size_t)i * m, l[1].mul, l[1].add, mul_f, add_f, l[1].shift, m, a[12].view.buf, g + (size_t)i * m);
        rows_product(g, mr, m, &l[2], d, au, acc);
        for (int i = 0; i < mr; i++) {
            add_residual(h + i * d, acc + i * d, l[2].mul, l[2].add, l[2].shift, d);
            norm_row(h + i * d, d, log2d, gain, bias, eps[1], (int8_t *)a[19].view.buf + (size_t)(r0 + i) * d);
        }
    }
    Py_END_ALLOW_THREADS;
    free(buf);
    release(a, 20);
    Py_RETURN_NONE;
}

/* ----- the encoder's nearest-code search ---------------------------------------------------- */

/* The index of the code nearest x: the least float32 sum over channels i = 0, 1, .. of
 * (e_i - x_i)^2, each subtraction, square and addition rounded in turn (no fused multiply-add:
 * the module is built with -ffp-contract=off), the first code on a tie. Every path below, and
 * dqcodec.quantize's torch loop, computes these same sums, so the encoder picks the same codes on
 * every machine. et (dim, k) is the codebook transposed. */
#define NEAREST_BLOCK 64
MULTIVERSION
static int64_t nearest_generic(const float *restrict x, const float *restrict et, int dim, int k, int j0,
                               float *best, int64_t best_j) {
    float acc[NEAREST_BLOCK];
    for (int j = j0; j < k; j += NEAREST_BLOCK) {
        const int width = k - j < NEAREST_BLOCK ? k - j : NEAREST_BLOCK;
        for (int c = 0; c < width; c++) acc[c] = 0.0f;
        for (int i = 0; i < dim; i++) {
            const float *e = et + (size_t)i * k + j, xi = x[i];
            for (int c = 0; c < width; c++) {
                const float diff = e[c] - xi;
                acc[c] = acc[c] + diff * diff;
            }
        }
        for (int c = 0; c < width; c++)
            if (acc[c] < *best) *best = acc[c], best_j = j + c;
    }
    return best_j;
}

#ifdef HAVE_X86_KERNELS
/* The first least of the vector paths' per-lane sums (lane l: its least sum, at code index[l]). */
static int64_t first_least(const float *sums, const int32_t *index, int lanes, float *best_out) {
    int64_t found = 0;
    *best_out = __builtin_inff();
    for (int l = 0; l < lanes; l++)
        if (sums[l] < *best_out || (sums[l] == *best_out && index[l] < found)) *best_out = sums[l], found = index[l];
    return found;
}

#define NEAREST_BLOCK_512(b) \
    d##b = _mm512_sub_ps(_mm512_loadu_ps(e + 16 * b), xi), a##b = _mm512_add_ps(a##b, _mm512_mul_ps(d##b, d##b))
#define NEAREST_KEEP_512(b)                                                                    \
    {                                                                                          \
        const __mmask16 less = _mm512_cmp_ps_mask(a##b, best, _CMP_LT_OQ);                     \
        best = _mm512_mask_mov_ps(best, less, a##b);                                           \
        best_j = _mm512_mask_mov_epi32(best_j, less, _mm512_add_epi32(lane, _mm512_set1_epi32(j + 16 * b))); \
    }

/* Codes [0, k - k % 64): 64 at a time, each lane keeping its first least sum. */
__attribute__((target("avx512f")))
static int64_t nearest_avx512(const float *restrict x, const float *restrict et, int dim, int k, float *best_out) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 best = _mm512_set1_ps(__builtin_inff());
    __m512i best_j = _mm512_setzero_si512();
    for (int j = 0; j + 64 <= k; j += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, d0, d1, d2, d3;
        for (int i = 0; i < dim; i++) {
            const __m512 xi = _mm512_set1_ps(x[i]);
            const float *e = et + (size_t)i * k + j;
            NEAREST_BLOCK_512(0);
            NEAREST_BLOCK_512(1);
            NEAREST_BLOCK_512(2);
            NEAREST_BLOCK_512(3);
        }
        NEAREST_KEEP_512(0)
        NEAREST_KEEP_512(1)
        NEAREST_KEEP_512(2)
        NEAREST_KEEP_512(3)
    }
    float sums[16];
    int32_t index[16];
    _mm512_storeu_ps(sums, best);
    _mm512_storeu_si512(index, best_j);
    return first_least(sums, index, 16, best_out);
}

#define NEAREST_BLOCK_256(b) \
    d##b = _mm256_sub_ps(_mm256_loadu_ps(e + 8 * b), xi), a##b = _mm256_add_ps(a##b, _mm256_mul_ps(d##b, d##b))
#define NEAREST_KEEP_256(b)                                                                             \
    {                                                                                                   \
        const __m256 less = _mm256_cmp_ps(a##b, best, _CMP_LT_OQ);                                      \
        best = _mm256_blendv_ps(best, a##b, less);                                                      \
        best_j = _mm256_blendv_epi8(best_j, _mm256_add_epi32(lane, _mm256_set1_epi32(j + 8 * b)),        \
                                    _mm256_castps_si256(less));                                         \
    }

/* Codes [0, k - k % 32): 32 at a time. */
__attribute__((target("avx2")))
static int64_t nearest_avx2(const float *restrict x, const float *restrict et, int dim, int k, float *best_out) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 best = _mm256_set1_ps(__builtin_inff());
    __m256i best_j = _mm256_setzero_si256();
    for (int j = 0; j + 32 <= k; j += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, d0, d1, d2, d3;
        for (int i = 0; i < dim; i++) {
            const __m256 xi = _mm256_set1_ps(x[i]);
            const float *e = et + (size_t)i * k + j;
            NEAREST_BLOCK_256(0);
            NEAREST_BLOCK_256(1);
            NEAREST_BLOCK_256(2);
            NEAREST_BLOCK_256(3);
        }
        NEAREST_KEEP_256(0)
        NEAREST_KEEP_256(1)
        NEAREST_KEEP_256(2)
        NEAREST_KEEP_256(3)
    }
    float sums[8];
    int32_t index[8];
    _mm256_storeu_ps(sums, best);
    _mm256_storeu_si256((__m256i *)index, best_j);
    return first_least(sums, index, 8, best_out);
}
#endif

static PyObject *nearest(PyObject *self, PyObject *args) {
    PyObject *ox, *oet, *oout;
    int n, dim, k;
    if (!PyArg_ParseTuple(args, "OOO(iii)", &ox, &oet, &oout, &n, &dim, &k)) return NULL;
    if (n < 0 || dim < 1 || k < 1) {
        PyErr_SetString(PyExc_ValueError, "nearest: bad shape");
        return NULL;
    }
    Arg a[] = {
        {ox, 4, (Py_ssize_t)n * dim, 0, 0, "x"},
        {oet, 4, (Py_ssize_t)dim * k, 0, 0, "codebook"},
        {oout, 8, n, 1, 0, "out"},
    };
    if (acquire(a, 3) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS;
    const float *et = a[1].view.buf;
    for (Py_ssize_t r = 0; r < n; r++) {
        const float *x = (const float *)a[0].view.buf + r * dim;
        float best = __builtin_inff();
        int64_t found = 0;
        int j0 = 0;
#ifdef HAVE_X86_KERNELS
        if (use_vnni) /* (AVX-512) */
            found = nearest_avx512(x, et, dim, k, &best), j0 = k - k % 64;
        else if (use_avx2)
            found = nearest_avx2(x, et, dim, k, &best), j0 = k - k % 32;
#endif
        ((int64_t *)a[2].view.buf)[r] = nearest_generic(x, et, dim, k, j0, &best, found);
    }
    Py_END_ALLOW_THREADS;
    release(a, 3);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"attention", attention, METH_VARARGS, "The prior's integer attention (see dqcodec.intmath.attention)."},
    {"norm", norm, METH_VARARGS, "Residual update by a Linear's output, then Norm (FORMAT.md 8.3)."},
    {"project", project, METH_VARARGS, "A block's q, k, v rows to the queries and the key/value cache."},
    {"gemm", gemm, METH_VARARGS, "An int8 matrix product (AVX512-VNNI)."},
    {"block_tail", block_tail, METH_VARARGS, "A block after its attention, fused (AVX512-VNNI)."},
    {"gelu", gelu, METH_VARARGS, "fc1's output through the GELU table."},
    {"frequencies", frequencies, METH_VARARGS, "A head's output to frequency tables (FORMAT.md 8.3)."},
    {"nearest", nearest, METH_VARARGS, "The nearest code of each vector (the encoder's VQ search)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Fused integer kernels of the prior.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    for (int j = 0; j < RECIP_LO; j++) recip[j] = (1 << 24) / (RECIP_LO + j + 1);
    for (int m = RSQRT_LO; m < RSQRT_HI; m++) rsqrt[m - RSQRT_LO] = (isqrt(((uint64_t)1 << 42) / m) + 1) >> 1;
#ifdef HAVE_X86_KERNELS
    __builtin_cpu_init();
    const char *isa = getenv("DQC_NATIVE_ISA"); /* "avx2" or "generic": a slower path, for tests */
    const int limited = isa && *isa;
    use_vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && !limited;
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(limited && !strcmp(isa, "generic"));
#endif
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddStringConstant(m, "isa", use_vnni ? "avx512-vnni" : use_avx2 ? "avx2" : "generic") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
