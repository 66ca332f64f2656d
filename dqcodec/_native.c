/* The prior's integer attention in one pass per row (FORMAT.md, section 8.4), for speed only:
 * it computes the same integers as dqcodec.intmath.attention, which stays the reference path
 * (and the fallback where this module was not built). Integer arithmetic is exact, so every
 * instruction set the compiler targets gives the same results.
 *
 * attention(q, kt, v, rows, keys, out, cap, exp_mul, exp_shift, exp_clamp, out_mul, out_shift)
 *   q    (B, H, R, dh) int8       queries
 *   kt   (B, H, dh / 4, cap, 4) int8  keys (-63..63) in quads of channels; cap a multiple of 16
 *   v    (B, H, cap, dh) float32  values (int8 values)
 *   rows (B,) int32               rows of tile b to compute (the rest of out is left as it is)
 *   keys (B,) int32               keys of tile b that its rows attend to (the first keys[b])
 *   out  (B, H, R, dh) int8       the attention outputs
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ACT_MAX 127
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

typedef struct {
    int32_t exp_mul, exp_shift, exp_clamp, out_mul, out_shift;
} Consts;

static inline int bit_length(uint32_t v) { return v ? 32 - __builtin_clz(v) : 0; }

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

/* ksum[j] = sum over channels of key j (the u8 offset's correction). */
static void key_sums(const int8_t *restrict kt4, int dh, int cap, int n, int32_t *restrict ksum) {
    memset(ksum, 0, sizeof(int32_t) * n);
    for (int g = 0; g < dh / 4; g++) {
        const int8_t *k = kt4 + (size_t)g * cap * 4;
        for (int j = 0; j < n; j++) ksum[j] += k[4 * j] + k[4 * j + 1] + k[4 * j + 2] + k[4 * j + 3];
    }
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

/* Scores of ROW_BLOCK rows by AVX512-VNNI: (q + 128) . k in u8 x s8 dot products (exact: int32
 * sums without saturation), minus 128 * ksum. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void scores_vnni(const int8_t *restrict q, int dh, const int8_t *restrict kt4, int cap, int n,
                        const int32_t *restrict ksum, int32_t *restrict s, int stride) {
    uint32_t qq[ROW_BLOCK][MAX_DH / 4];
    offset_quads(q, dh, qq);
    for (int j0 = 0; j0 < n; j0 += KEY_BLOCK) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int g = 0; g < dh / 4; g++) {
            const __m512i k = _mm512_loadu_si512(kt4 + ((size_t)g * cap + j0) * 4);
            a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32((int)qq[0][g]), k);
            a1 = _mm512_dpbusd_epi32(a1, _mm512_set1_epi32((int)qq[1][g]), k);
            a2 = _mm512_dpbusd_epi32(a2, _mm512_set1_epi32((int)qq[2][g]), k);
            a3 = _mm512_dpbusd_epi32(a3, _mm512_set1_epi32((int)qq[3][g]), k);
        }
        const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(ksum + j0), 7);
        _mm512_storeu_si512(s + j0, _mm512_sub_epi32(a0, corr));
        _mm512_storeu_si512(s + stride + j0, _mm512_sub_epi32(a1, corr));
        _mm512_storeu_si512(s + 2 * stride + j0, _mm512_sub_epi32(a2, corr));
        _mm512_storeu_si512(s + 3 * stride + j0, _mm512_sub_epi32(a3, corr));
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

/* acc[r][0..dh) += sum_j w[r][j] v[j] over keys [j0, j1), for ROW_BLOCK rows of float32 weights w
 * (row stride `stride`), in float32: exact, as every partial sum is an integer below 2^24. */
MULTIVERSION
static void weighted_values(const float *restrict w, int stride, int j0, int j1, const float *restrict v, int dh,
                            float *restrict acc) {
    for (int j = j0; j < j1; j++) {
        const float w0 = w[j], w1 = w[stride + j], w2 = w[2 * stride + j], w3 = w[3 * stride + j];
        const float *vj = v + (size_t)j * dh;
        for (int c = 0; c < dh; c++) {
            const float x = vj[c];
            acc[c] += w0 * x;
            acc[dh + c] += w1 * x;
            acc[2 * dh + c] += w2 * x;
            acc[3 * dh + c] += w3 * x;
        }
    }
}

#ifdef HAVE_X86_KERNELS
/* weighted_values for dh = 64 with the 16 accumulators in registers, adding keys [j0, j1) to acc. */
__attribute__((target("avx512f")))
static void weighted_values_64(const float *restrict w, int stride, int j0, int j1, const float *restrict v,
                               float *restrict acc) {
    __m512 a[ROW_BLOCK][4];
    for (int r = 0; r < ROW_BLOCK; r++)
        for (int t = 0; t < 4; t++) a[r][t] = _mm512_loadu_ps(acc + r * 64 + 16 * t);
    for (int j = j0; j < j1; j++) {
        const float *vj = v + (size_t)j * 64;
        const __m512 b0 = _mm512_set1_ps(w[j]), b1 = _mm512_set1_ps(w[stride + j]);
        const __m512 b2 = _mm512_set1_ps(w[2 * stride + j]), b3 = _mm512_set1_ps(w[3 * stride + j]);
        for (int t = 0; t < 4; t++) {
            const __m512 x = _mm512_loadu_ps(vj + 16 * t);
            a[0][t] = _mm512_fmadd_ps(b0, x, a[0][t]);
            a[1][t] = _mm512_fmadd_ps(b1, x, a[1][t]);
            a[2][t] = _mm512_fmadd_ps(b2, x, a[2][t]);
            a[3][t] = _mm512_fmadd_ps(b3, x, a[3][t]);
        }
    }
    for (int r = 0; r < ROW_BLOCK; r++)
        for (int t = 0; t < 4; t++) _mm512_storeu_ps(acc + r * 64 + 16 * t, a[r][t]);
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

/* weighted_values for dh = 64 by AVX2 and FMA, adding keys [j0, j1) to acc: two rows and 32
 * channels per pass over the keys. */
__attribute__((target("avx2,fma")))
static void weighted_values_64_avx2(const float *restrict w, int stride, int j0, int j1, const float *restrict v,
                                    float *restrict acc) {
    for (int r = 0; r < ROW_BLOCK; r += 2)
        for (int half = 0; half < 64; half += 32) {
            __m256 a[2][4];
            for (int t = 0; t < 4; t++) {
                a[0][t] = _mm256_loadu_ps(acc + r * 64 + half + 8 * t);
                a[1][t] = _mm256_loadu_ps(acc + (r + 1) * 64 + half + 8 * t);
            }
            const float *w0 = w + (size_t)r * stride, *w1 = w0 + stride;
            for (int j = j0; j < j1; j++) {
                const float *vj = v + (size_t)j * 64 + half;
                const __m256 b0 = _mm256_set1_ps(w0[j]), b1 = _mm256_set1_ps(w1[j]);
                for (int t = 0; t < 4; t++) {
                    const __m256 x = _mm256_loadu_ps(vj + 8 * t);
                    a[0][t] = _mm256_fmadd_ps(b0, x, a[0][t]);
                    a[1][t] = _mm256_fmadd_ps(b1, x, a[1][t]);
                }
            }
            for (int t = 0; t < 4; t++) {
                _mm256_storeu_ps(acc + r * 64 + half + 8 * t, a[0][t]);
                _mm256_storeu_ps(acc + (r + 1) * 64 + half + 8 * t, a[1][t]);
            }
        }
}
#endif

/* The row's weights p (int32) shifted so that their total is below 2^17, as float32 in w; returns the total. */
MULTIVERSION
static int32_t shifted_weights(const int32_t *p, int n, int32_t raw_total, float *w) { /* in place: w may be p */
    int shift = bit_length((uint32_t)raw_total) - ATTN_SUM_BITS;
    shift = shift > 0 ? shift : 0;
    int32_t total = 0;
    for (int j = 0; j < n; j++) {
        const int32_t x = p[j] >> shift;
        total += x;
        w[j] = (float)x;
    }
    return total;
}

static void finish_row(const float *acc, int32_t total, int dh, Consts c, int8_t *out) {
    /* (R, e) = reciprocal(T); out = clamp((acc R out_mul + 2^(sh-1)) >> sh, -127, 127), sh = out_shift + e + 13 */
    const int e = bit_length((uint32_t)total) - 1;
    const int64_t r = recip[(total >> (e - 11)) - RECIP_LO];
    const int sh = c.out_shift + e + 13;
    const int64_t scale = r * c.out_mul;
    for (int k = 0; k < dh; k++) {
        int64_t y;
        if (sh >= 62) {
            y = 0; /* |acc R out_mul| < 2^52: the rounded quotient is 0 */
        } else {
            y = ((int64_t)acc[k] * scale + ((int64_t)1 << (sh - 1))) >> sh;
        }
        out[k] = (int8_t)(y < -ACT_MAX ? -ACT_MAX : y > ACT_MAX ? ACT_MAX : y);
    }
}

/* One (tile, head) pair: ROW_GROUP rows at a time get their weights, then the values are
 * weighed a chunk of keys at a time (each chunk stays in the caches for all the group's rows). */
static int attend_pair(const int8_t *q, int rows, const int8_t *kt4, const float *v, int n, int cap, int dh, Consts c,
                       int8_t *out, int32_t *s, int32_t *ksum, float *acc) {
    int8_t qb[ROW_BLOCK * MAX_DH];
    const int n16 = (n + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK;
    if (use_vnni || use_avx2) key_sums(kt4, dh, cap, n16, ksum);
    for (int g0 = 0; g0 < rows; g0 += ROW_GROUP) {
        const int ng = rows - g0 < ROW_GROUP ? rows - g0 : ROW_GROUP;
        const int nb = (ng + ROW_BLOCK - 1) / ROW_BLOCK; /* blocks of ROW_BLOCK rows */
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
            for (int r = 0; r < ROW_BLOCK; r++) { /* scores become float32 weights in place (rows past nr: 0) */
                int32_t *p = sb + (size_t)r * cap;
                if (r < nr) {
                    const int32_t total = shifted_weights(p, n, weights(p, n, c), (float *)p);
                    if (total < RECIP_LO) return -1; /* cannot happen: the largest weight alone is 2^15 >> shift */
                    totals[b * ROW_BLOCK + r] = total;
                } else {
                    memset(p, 0, sizeof(int32_t) * n);
                }
            }
        }
        memset(acc, 0, sizeof(float) * nb * ROW_BLOCK * dh);
        for (int j0 = 0; j0 < n; j0 += KEY_CHUNK) {
            const int j1 = n - j0 < KEY_CHUNK ? n : j0 + KEY_CHUNK;
            for (int b = 0; b < nb; b++) {
                const float *w = (const float *)(s + (size_t)b * ROW_BLOCK * cap);
                float *ab = acc + (size_t)b * ROW_BLOCK * dh;
#ifdef HAVE_X86_KERNELS
                if (use_vnni && dh == 64)
                    weighted_values_64(w, cap, j0, j1, v, ab);
                else if (use_avx2 && dh == 64)
                    weighted_values_64_avx2(w, cap, j0, j1, v, ab);
                else
#endif
                    weighted_values(w, cap, j0, j1, v, dh, ab);
            }
        }
        for (int r = 0; r < ng; r++) finish_row(acc + r * dh, totals[r], dh, c, out + (size_t)(g0 + r) * dh);
    }
    return 0;
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

static PyObject *attention(PyObject *self, PyObject *args) {
    PyObject *oq, *okt, *ov, *orows, *okeys, *oout;
    int B, H, R, dh, cap;
    Consts c;
    if (!PyArg_ParseTuple(args, "OOOOOO(iiiii)iiiii", &oq, &okt, &ov, &orows, &okeys, &oout, &B, &H, &R, &dh, &cap,
                          &c.exp_mul, &c.exp_shift, &c.exp_clamp, &c.out_mul, &c.out_shift))
        return NULL;
    if (B < 0 || H < 0 || R < 0 || dh < 4 || dh > MAX_DH || dh % 4 || cap < KEY_BLOCK || cap % KEY_BLOCK) {
        PyErr_SetString(PyExc_ValueError, "attention: bad shape");
        return NULL;
    }
    Py_buffer bq, bkt, bv, brows, bkeys, bout;
    const Py_ssize_t bh = (Py_ssize_t)B * H;
    int got = 0;
    if (buffer(oq, &bq, 0, 1, bh * R * dh, "q") == 0 && ++got && buffer(okt, &bkt, 0, 1, bh * dh * cap, "kt") == 0 &&
        ++got && buffer(ov, &bv, 0, 4, bh * cap * dh, "v") == 0 && ++got &&
        buffer(orows, &brows, 0, 4, B, "rows") == 0 && ++got && buffer(okeys, &bkeys, 0, 4, B, "keys") == 0 && ++got &&
        buffer(oout, &bout, 1, 1, bh * R * dh, "out") == 0)
        ++got;
    int status = got == 6 ? 0 : -2;
    const int32_t *rows = got == 6 ? brows.buf : NULL, *keys = got == 6 ? bkeys.buf : NULL;
    if (status == 0) {
        for (int b = 0; b < B; b++) {
            if (rows[b] < 0 || rows[b] > R || keys[b] < 1 || keys[b] > cap) status = -3;
        }
    }
    if (status == 0) {
        int32_t *s = malloc(sizeof(int32_t) * ((size_t)(ROW_GROUP + 1) * cap + ROW_GROUP * MAX_DH));
        if (!s) {
            status = -4;
        } else {
            Py_BEGIN_ALLOW_THREADS;
            for (Py_ssize_t i = 0; i < bh && status == 0; i++) {
                const int b = (int)(i / H);
                status = attend_pair((const int8_t *)bq.buf + i * R * dh, rows[b], (const int8_t *)bkt.buf + i * dh * cap,
                                     (const float *)bv.buf + i * cap * dh, keys[b], cap, dh, c,
                                     (int8_t *)bout.buf + i * R * dh, s, s + (size_t)ROW_GROUP * cap,
                                     (float *)(s + (size_t)(ROW_GROUP + 1) * cap));
            }
            Py_END_ALLOW_THREADS;
            free(s);
        }
    }
    Py_buffer *views[] = {&bq, &bkt, &bv, &brows, &bkeys, &bout};
    for (int i = 0; i < got; i++) PyBuffer_Release(views[i]);
    if (status == -2) return NULL;
    if (status == -3) {
        PyErr_SetString(PyExc_ValueError, "attention: row or key counts out of range");
        return NULL;
    }
    if (status == -4) return PyErr_NoMemory();
    if (status == -1) {
        PyErr_SetString(PyExc_ArithmeticError, "attention: a row's weights total below 2^11");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"attention", attention, METH_VARARGS, "The prior's integer attention (see dqcodec.intmath.attention)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Fused integer kernels of the prior.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    for (int j = 0; j < RECIP_LO; j++) recip[j] = (1 << 24) / (RECIP_LO + j + 1);
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
