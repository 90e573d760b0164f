/*
 * 2-D convolution: oneDNN's primitives where the build has them (conv_dnnl.cpp), else im2col +
 * GEMM (one image and group at a time), both backward passes through the same column matrix; and
 * max/avg pooling as direct loops. All tensors contiguous NCHW.
 *
 * Columns: col[(ci·kH + kh)·kW + kw, oh·Wo + ow] = x[ci, oh·sh − ph + kh·dh, ow·sw − pw + kw·dw] (0 outside).
 */
#include <math.h>
#include <string.h>

#include <atomic>
#include <vector>

#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_POOL_X86 1
#define KN_AVX512 __attribute__((target("avx512f")))
#endif

using namespace kn;

namespace {

/* The output columns [lo, hi) whose input column ow·sw − pw + kw·dw lies inside the image. */
inline void valid_ow(const kn_conv2d *p, int64_t kw, int64_t *lo, int64_t *hi) {
  const int64_t sw = p->stride[1], base = -p->padding[1] + kw * p->dilation[1];
  int64_t l = base >= 0 ? 0 : (-base + sw - 1) / sw;             /* first ow with iw ≥ 0 */
  int64_t h = p->W - base <= 0 ? 0 : (p->W - base + sw - 1) / sw; /* first ow with iw ≥ W */
  if (h > p->Wo) h = p->Wo;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

void im2col(const kn_conv2d *p, const float *x, int64_t cin, float *col) {
  const int64_t HW = p->Ho * p->Wo;
  for (int64_t c = 0; c < cin; c++)
    for (int64_t kh = 0; kh < p->kH; kh++)
      for (int64_t kw = 0; kw < p->kW; kw++) {
        float *dst = col + ((c * p->kH + kh) * p->kW + kw) * HW;
        for (int64_t oh = 0; oh < p->Ho; oh++) {
          int64_t ih = oh * p->stride[0] - p->padding[0] + kh * p->dilation[0];
          float *d = dst + oh * p->Wo;
          if (ih < 0 || ih >= p->H) { memset(d, 0, sizeof(float) * (size_t)p->Wo); continue; }
          const float *src = x + (c * p->H + ih) * p->W;
          int64_t lo, hi;
          valid_ow(p, kw, &lo, &hi);
          for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0.0f;
          const int64_t sw = p->stride[1], base = -p->padding[1] + kw * p->dilation[1];
          if (sw == 1) memcpy(d + lo, src + lo + base, sizeof(float) * (size_t)(hi - lo));
          else for (int64_t ow = lo; ow < hi; ow++) d[ow] = src[ow * sw + base];
          for (int64_t ow = hi; ow < p->Wo; ow++) d[ow] = 0.0f;
        }
      }
}

/* dx[c, ih, iw] += col[…] for every tap: the adjoint of im2col. */
void col2im(const kn_conv2d *p, const float *col, int64_t cin, float *dx) {
  const int64_t HW = p->Ho * p->Wo;
  for (int64_t c = 0; c < cin; c++)
    for (int64_t kh = 0; kh < p->kH; kh++)
      for (int64_t kw = 0; kw < p->kW; kw++) {
        const float *src = col + ((c * p->kH + kh) * p->kW + kw) * HW;
        for (int64_t oh = 0; oh < p->Ho; oh++) {
          int64_t ih = oh * p->stride[0] - p->padding[0] + kh * p->dilation[0];
          if (ih < 0 || ih >= p->H) continue;
          float *d = dx + (c * p->H + ih) * p->W;
          const float *s = src + oh * p->Wo;
          int64_t lo, hi;
          valid_ow(p, kw, &lo, &hi);
          const int64_t sw = p->stride[1], base = -p->padding[1] + kw * p->dilation[1];
          for (int64_t ow = lo; ow < hi; ow++) d[ow * sw + base] += s[ow];
        }
      }
}

struct Dims {
  int64_t cin_g, cout_g, kk, HW, xplane, oplane;
};

Dims dims(const kn_conv2d *p) {
  Dims d;
  d.cin_g = p->Cin / p->groups;
  d.cout_g = p->Cout / p->groups;
  d.kk = d.cin_g * p->kH * p->kW;
  d.HW = p->Ho * p->Wo;
  d.xplane = p->H * p->W;
  d.oplane = d.HW;
  return d;
}

/* Takes tap v (at index i) over the current best unless the best is NaN already; a NaN tap wins,
   ties keep the earlier tap — the general loop's rules, without branches. */
inline void pool_take(float v, int32_t i, float *best, int32_t *bi) {
  bool take = (v > *best || v != v) && *best == *best;
  *best = take ? v : *best;
  *bi = take ? i : *bi;
}

/* 2×2 max pooling with stride 2 and no padding (every CNN here): every tap is inside the image. */
KN_CLONES
void max_pool_2x2(const float *xp, int64_t W, int64_t Ho, int64_t Wo, float *out, int32_t *idx) {
  for (int64_t oh = 0; oh < Ho; oh++) {
    const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow++) {
      int32_t i0 = (int32_t)(2 * oh * W + 2 * ow);
      float best = r0[2 * ow];
      int32_t bi = i0;
      pool_take(r0[2 * ow + 1], i0 + 1, &best, &bi);
      pool_take(r1[2 * ow], i0 + (int32_t)W, &best, &bi);
      pool_take(r1[2 * ow + 1], i0 + (int32_t)W + 1, &best, &bi);
      out[oh * Wo + ow] = best;
      idx[oh * Wo + ow] = bi;
    }
  }
}

/* The backward of one plane's 2×2 windows, when every argmax lies in its own window (always for a
   2×2 stride-2 pool; checked, so any geometry whose choices happen to qualify takes it): dx is
   written once, window by window, g at the chosen tap and 0 at the other three — no clearing pass
   and no scatter. Rows or columns past 2·Ho or 2·Wo (odd sizes) are in no window and get 0.
   Returns false, with dx partly written, when some argmax lies outside its window. */
KN_CLONES
bool max_pool_2x2_backward(const float *g, const int32_t *idx, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                           float *dx) {
  bool own = true;
  for (int64_t oh = 0; oh < Ho; oh++) {
    float *r0 = dx + 2 * oh * W, *r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow++) {
      const int64_t d = idx[oh * Wo + ow] - (2 * oh * W + 2 * ow);
      const float v = g[oh * Wo + ow];
      own &= d == 0 || d == 1 || d == W || d == W + 1;
      r0[2 * ow] = d == 0 ? v : 0.0f;
      r0[2 * ow + 1] = d == 1 ? v : 0.0f;
      r1[2 * ow] = d == W ? v : 0.0f;
      r1[2 * ow + 1] = d == W + 1 ? v : 0.0f;
    }
    for (int64_t iw = 2 * Wo; iw < W; iw++) r0[iw] = r1[iw] = 0.0f;
  }
  if (H > 2 * Ho) memset(dx + 2 * Ho * W, 0, sizeof(float) * (size_t)((H - 2 * Ho) * W));
  return own;
}

#ifdef KN_POOL_X86
/* The AVX-512 pooling loops below, when the CPU has the instructions (else the AVX2 ones after them). */
const bool pool_avx512 = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f") != 0);

/* Masks for a chunk of n ≤ 16 windows: its n outputs and the 2n input floats of each input row. */
struct ChunkMasks {
  __mmask16 out, in_lo, in_hi;
};
inline ChunkMasks chunk_masks(int64_t n) {
  const uint32_t lanes = 2 * (uint32_t)n;
  return {(__mmask16)((1u << n) - 1), (__mmask16)(lanes >= 16 ? 0xFFFF : (1u << lanes) - 1),
          (__mmask16)(lanes <= 16 ? 0 : (1u << (lanes - 16)) - 1)};
}

/* max_pool_2x2, 16 windows per step (a masked chunk ends each row: CNN planes are 28 or 14 wide):
   the even and odd taps of the two input rows deinterleaved by permutes, then the take rule of
   pool_take (a NaN wins, ties keep the earlier tap) as masks. */
KN_AVX512 void max_pool_2x2_avx512(const float *xp, int64_t W, int64_t Ho, int64_t Wo, float *out, int32_t *idx) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i one = _mm512_set1_epi32(1), w = _mm512_set1_epi32((int32_t)W);
  for (int64_t oh = 0; oh < Ho; oh++) {
    const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow += 16) {
      const ChunkMasks m = chunk_masks(Wo - ow < 16 ? Wo - ow : 16);
      const __m512 a0 = _mm512_maskz_loadu_ps(m.in_lo, r0 + 2 * ow), a1 = _mm512_maskz_loadu_ps(m.in_hi, r0 + 2 * ow + 16);
      const __m512 b0 = _mm512_maskz_loadu_ps(m.in_lo, r1 + 2 * ow), b1 = _mm512_maskz_loadu_ps(m.in_hi, r1 + 2 * ow + 16);
      const __m512 taps[3] = {_mm512_permutex2var_ps(a0, odd, a1), _mm512_permutex2var_ps(b0, even, b1),
                              _mm512_permutex2var_ps(b0, odd, b1)};
      const __m512i i0 = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * oh * W + 2 * ow)), even);
      const __m512i tap_idx[3] = {_mm512_add_epi32(i0, one), _mm512_add_epi32(i0, w),
                                  _mm512_add_epi32(_mm512_add_epi32(i0, w), one)};
      __m512 best = _mm512_permutex2var_ps(a0, even, a1);
      __m512i bi = i0;
      for (int t = 0; t < 3; t++) {
        const __m512 v = taps[t];
        const __mmask16 take = (_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) &
                               _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q);
        best = _mm512_mask_mov_ps(best, take, v);
        bi = _mm512_mask_mov_epi32(bi, take, tap_idx[t]);
      }
      _mm512_mask_storeu_ps(out + oh * Wo + ow, m.out, best);
      _mm512_mask_storeu_epi32(idx + oh * Wo + ow, m.out, bi);
    }
  }
}

/* max_pool_2x2_backward, 16 windows per step: the four taps' values by masks, interleaved back into
   the two input rows by permutes. */
KN_AVX512 bool max_pool_2x2_backward_avx512(const float *g, const int32_t *idx, int64_t H, int64_t W, int64_t Ho,
                                            int64_t Wo, float *dx) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), w = _mm512_set1_epi32((int32_t)W),
                w1 = _mm512_set1_epi32((int32_t)W + 1);
  __mmask16 stray = 0;
  for (int64_t oh = 0; oh < Ho; oh++) {
    float *r0 = dx + 2 * oh * W, *r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow += 16) {
      const ChunkMasks m = chunk_masks(Wo - ow < 16 ? Wo - ow : 16);
      const __m512 v = _mm512_maskz_loadu_ps(m.out, g + oh * Wo + ow);
      const __m512i i0 = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * oh * W + 2 * ow)), even);
      const __m512i d = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m.out, idx + oh * Wo + ow), i0);
      const __mmask16 t0 = _mm512_cmpeq_epi32_mask(d, zero), t1 = _mm512_cmpeq_epi32_mask(d, one),
                      t2 = _mm512_cmpeq_epi32_mask(d, w), t3 = _mm512_cmpeq_epi32_mask(d, w1);
      stray |= m.out & (__mmask16) ~(t0 | t1 | t2 | t3);
      const __m512 v0 = _mm512_maskz_mov_ps(t0, v), v1 = _mm512_maskz_mov_ps(t1, v);
      const __m512 v2 = _mm512_maskz_mov_ps(t2, v), v3 = _mm512_maskz_mov_ps(t3, v);
      _mm512_mask_storeu_ps(r0 + 2 * ow, m.in_lo, _mm512_permutex2var_ps(v0, lo, v1));
      _mm512_mask_storeu_ps(r0 + 2 * ow + 16, m.in_hi, _mm512_permutex2var_ps(v0, hi, v1));
      _mm512_mask_storeu_ps(r1 + 2 * ow, m.in_lo, _mm512_permutex2var_ps(v2, lo, v3));
      _mm512_mask_storeu_ps(r1 + 2 * ow + 16, m.in_hi, _mm512_permutex2var_ps(v2, hi, v3));
    }
    for (int64_t iw = 2 * Wo; iw < W; iw++) r0[iw] = r1[iw] = 0.0f;
  }
  if (H > 2 * Ho) memset(dx + 2 * Ho * W, 0, sizeof(float) * (size_t)((H - 2 * Ho) * W));
  return stray == 0;
}

/* The AVX2 versions (8 windows per step) for CPUs without AVX-512: the same rules. In-lane
   shuffles pick the even and odd taps of 16 input floats, and a permute of 64-bit pairs puts them
   back in order; lanes past a row's end are masked on load and store. */
KN_AVX2 inline __m256 taps_of(__m256 lo, __m256 hi, int odd) {
  const __m256 t = odd ? _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)) : _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

KN_AVX2 void max_pool_2x2_avx2(const float *xp, int64_t W, int64_t Ho, int64_t Wo, float *out, int32_t *idx) {
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i one = _mm256_set1_epi32(1), w = _mm256_set1_epi32((int32_t)W);
  for (int64_t oh = 0; oh < Ho; oh++) {
    const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow += 8) {
      const int64_t n = Wo - ow < 8 ? Wo - ow : 8;
      const __m256i mo = first_lanes(n), ml = first_lanes(2 * n < 8 ? 2 * n : 8), mh = first_lanes(2 * n - 8 > 0 ? 2 * n - 8 : 0);
      const __m256 a0 = _mm256_maskload_ps(r0 + 2 * ow, ml), a1 = _mm256_maskload_ps(r0 + 2 * ow + 8, mh);
      const __m256 b0 = _mm256_maskload_ps(r1 + 2 * ow, ml), b1 = _mm256_maskload_ps(r1 + 2 * ow + 8, mh);
      const __m256 taps[3] = {taps_of(a0, a1, 1), taps_of(b0, b1, 0), taps_of(b0, b1, 1)};
      const __m256i i0 = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(2 * oh * W + 2 * ow)), even);
      const __m256i tap_idx[3] = {_mm256_add_epi32(i0, one), _mm256_add_epi32(i0, w),
                                  _mm256_add_epi32(_mm256_add_epi32(i0, w), one)};
      __m256 best = taps_of(a0, a1, 0);
      __m256 bi = _mm256_castsi256_ps(i0);
      for (int t = 0; t < 3; t++) {
        const __m256 v = taps[t];
        const __m256 take = _mm256_and_ps(_mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)),
                                          _mm256_cmp_ps(best, best, _CMP_ORD_Q));
        best = _mm256_blendv_ps(best, v, take);
        bi = _mm256_blendv_ps(bi, _mm256_castsi256_ps(tap_idx[t]), take);
      }
      _mm256_maskstore_ps(out + oh * Wo + ow, mo, best);
      _mm256_maskstore_epi32(idx + oh * Wo + ow, mo, _mm256_castps_si256(bi));
    }
  }
}

KN_AVX2 bool max_pool_2x2_backward_avx2(const float *g, const int32_t *idx, int64_t H, int64_t W, int64_t Ho,
                                        int64_t Wo, float *dx) {
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1), w = _mm256_set1_epi32((int32_t)W),
                w1 = _mm256_set1_epi32((int32_t)W + 1);
  int stray = 0;
  for (int64_t oh = 0; oh < Ho; oh++) {
    float *r0 = dx + 2 * oh * W, *r1 = r0 + W;
    for (int64_t ow = 0; ow < Wo; ow += 8) {
      const int64_t n = Wo - ow < 8 ? Wo - ow : 8;
      const __m256i mo = first_lanes(n), ml = first_lanes(2 * n < 8 ? 2 * n : 8), mh = first_lanes(2 * n - 8 > 0 ? 2 * n - 8 : 0);
      const __m256 v = _mm256_maskload_ps(g + oh * Wo + ow, mo);
      const __m256i i0 = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(2 * oh * W + 2 * ow)), even);
      const __m256i d = _mm256_sub_epi32(_mm256_maskload_epi32(idx + oh * Wo + ow, mo), i0);
      const __m256i t0 = _mm256_cmpeq_epi32(d, zero), t1 = _mm256_cmpeq_epi32(d, one), t2 = _mm256_cmpeq_epi32(d, w),
                    t3 = _mm256_cmpeq_epi32(d, w1);
      const __m256i any = _mm256_or_si256(_mm256_or_si256(t0, t1), _mm256_or_si256(t2, t3));
      stray |= _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_andnot_si256(any, mo)));
      const __m256 v0 = _mm256_and_ps(v, _mm256_castsi256_ps(t0)), v1 = _mm256_and_ps(v, _mm256_castsi256_ps(t1));
      const __m256 v2 = _mm256_and_ps(v, _mm256_castsi256_ps(t2)), v3 = _mm256_and_ps(v, _mm256_castsi256_ps(t3));
      /* interleave (v0, v1) into row 0 and (v2, v3) into row 1: unpack within lanes, then swap halves */
      const __m256 l01 = _mm256_unpacklo_ps(v0, v1), h01 = _mm256_unpackhi_ps(v0, v1);
      const __m256 l23 = _mm256_unpacklo_ps(v2, v3), h23 = _mm256_unpackhi_ps(v2, v3);
      _mm256_maskstore_ps(r0 + 2 * ow, ml, _mm256_permute2f128_ps(l01, h01, 0x20));
      _mm256_maskstore_ps(r0 + 2 * ow + 8, mh, _mm256_permute2f128_ps(l01, h01, 0x31));
      _mm256_maskstore_ps(r1 + 2 * ow, ml, _mm256_permute2f128_ps(l23, h23, 0x20));
      _mm256_maskstore_ps(r1 + 2 * ow + 8, mh, _mm256_permute2f128_ps(l23, h23, 0x31));
    }
    for (int64_t iw = 2 * Wo; iw < W; iw++) r0[iw] = r1[iw] = 0.0f;
  }
  if (H > 2 * Ho) memset(dx + 2 * Ho * W, 0, sizeof(float) * (size_t)((H - 2 * Ho) * W));
  return stray == 0;
}
#endif

void max_pool_2x2_plane(const float *xp, int64_t W, int64_t Ho, int64_t Wo, float *out, int32_t *idx) {
#ifdef KN_POOL_X86
  if (pool_avx512) return max_pool_2x2_avx512(xp, W, Ho, Wo, out, idx);
  if (have_avx2_fma()) return max_pool_2x2_avx2(xp, W, Ho, Wo, out, idx);
#endif
  max_pool_2x2(xp, W, Ho, Wo, out, idx);
}

bool max_pool_2x2_backward_plane(const float *g, const int32_t *idx, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                 float *dx) {
#ifdef KN_POOL_X86
  if (pool_avx512) return max_pool_2x2_backward_avx512(g, idx, H, W, Ho, Wo, dx);
  if (have_avx2_fma()) return max_pool_2x2_backward_avx2(g, idx, H, W, Ho, Wo, dx);
#endif
  return max_pool_2x2_backward(g, idx, H, W, Ho, Wo, dx);
}

/* Images in parallel (each with its own column buffer and a single-threaded GEMM) when there are
   enough of them; otherwise one image at a time with the GEMM itself split across the pool. */
bool by_image(const kn_conv2d *p) { return p->N >= kn_get_threads() && kn_get_threads() > 1; }

/* kn_sgemm splits across the pool, or runs inline when called from inside a pool job. */
void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
          float beta, float *C, int64_t ldc) {
  kn_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* Plane q of a max pool: the vectorised 2×2 stride-2 path, else the general loop. */
void max_pool_plane(const kn_pool2d *p, int64_t q, const float *x, float *out, int32_t *idx) {
  const int64_t HW = p->H * p->W, O = p->Ho * p->Wo;
  const float *xp = x + q * HW;
  out += q * O;
  idx += q * O;
  if (p->kH == 2 && p->kW == 2 && p->stride[0] == 2 && p->stride[1] == 2 && p->padding[0] == 0 && p->padding[1] == 0)
    return max_pool_2x2_plane(xp, p->W, p->Ho, p->Wo, out, idx);
  for (int64_t oh = 0; oh < p->Ho; oh++)
    for (int64_t ow = 0; ow < p->Wo; ow++) {
      float best = -INFINITY;
      int32_t bi = -1;
      for (int64_t kh = 0; kh < p->kH; kh++) {
        int64_t ih = oh * p->stride[0] - p->padding[0] + kh;
        if (ih < 0 || ih >= p->H) continue;
        for (int64_t kw = 0; kw < p->kW; kw++) {
          int64_t iw = ow * p->stride[1] - p->padding[1] + kw;
          if (iw < 0 || iw >= p->W) continue;
          float v = xp[ih * p->W + iw];
          if (bi < 0) bi = (int32_t)(ih * p->W + iw);  // the first in-image tap, as the js backend
          if (v > best || v != v) {
            best = v;
            bi = (int32_t)(ih * p->W + iw);
            if (v != v) goto done;  // NaN propagates
          }
        }
      }
    done:
      out[oh * p->Wo + ow] = best;
      idx[oh * p->Wo + ow] = bi < 0 ? 0 : bi;
    }
}

/* Plane q of the pool's backward from its gradient gp [Ho·Wo]: the tiled pass when every index is
   in its own window (which proves it inside the plane), else clear and scatter after checking each
   index; an index outside the plane is reported through bad. */
void max_pool_backward_plane(const kn_pool2d *p, int64_t q, const float *gp, const int32_t *idx, float *dx,
                             std::atomic<int64_t> *bad) {
  const int64_t HW = p->H * p->W, O = p->Ho * p->Wo;
  const int32_t *ip = idx + q * O;
  float *dp = dx + q * HW;
  const bool tiles = 2 * p->Ho <= p->H && 2 * p->Wo <= p->W;
  if (tiles && max_pool_2x2_backward_plane(gp, ip, p->H, p->W, p->Ho, p->Wo, dp)) return;
  for (int64_t i = 0; i < O; i++)
    if (ip[i] < 0 || ip[i] >= HW) {
      bad->store(q * O + i);
      return;
    }
  memset(dp, 0, sizeof(float) * (size_t)HW);
  for (int64_t i = 0; i < O; i++) dp[ip[i]] += gp[i];
}

/* y = relu(y + b) in place, the composite's rules: NaN stays NaN. */
KN_CLONES
void bias_relu(float *y, float b, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float v = y[i] + b;
    y[i] = v > 0.0f || v != v ? v : 0.0f;
  }
}

/* m = g where relu's output y > 0 or is NaN, else 0 (relu'(0) = 0; the composite's where, so an
   infinite g stays out where the mask is 0); returns Σ m in double. */
KN_CLONES
double relu_mask(const float *g, const float *y, float *m, int64_t n) {
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // eight chains, not one: the adds' latency hides
  for (int64_t i = 0; i < n; i++) {
    m[i] = y[i] <= 0.0f ? 0.0f : g[i];
    lanes[i & 7] += m[i];
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

}  // namespace

extern "C" {

void kn_conv2d_f32(const kn_conv2d *p, const float *x, const float *w, float *out) {
  Dims d = dims(p);
  if (p->N == 0 || p->Cout == 0 || d.HW == 0) return;
  if (d.kk == 0) { memset(out, 0, sizeof(float) * (size_t)(p->N * p->Cout * d.HW)); return; }
  if (conv2d_dnnl(p, x, w, out)) return;
  bool par = by_image(p);
  auto image = [&](int64_t n, std::vector<float> &col) {
    col.resize((size_t)(d.kk * d.HW));
    for (int64_t g = 0; g < p->groups; g++) {
      im2col(p, x + (n * p->Cin + g * d.cin_g) * d.xplane, d.cin_g, col.data());
      gemm(0, 0, d.cout_g, d.HW, d.kk, w + g * d.cout_g * d.kk, d.kk, col.data(), d.HW, 0.0f,
           out + (n * p->Cout + g * d.cout_g) * d.HW, d.HW);
    }
  };
  if (par) {
    parallel_for(p->N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<float> col;
      for (int64_t n = n0; n < n1; n++) image(n, col);
    });
  } else {
    std::vector<float> col;
    for (int64_t n = 0; n < p->N; n++) image(n, col);
  }
}

void kn_conv2d_backward_input_f32(const kn_conv2d *p, const float *gout, const float *w, float *dx) {
  Dims d = dims(p);
  bool empty = p->N == 0 || d.HW == 0 || d.kk == 0 || p->Cout == 0;
  if (!empty && conv2d_backward_input_dnnl(p, gout, w, dx)) return;
  memset(dx, 0, sizeof(float) * (size_t)(p->N * p->Cin * d.xplane));
  if (empty) return;
  bool par = by_image(p);
  auto image = [&](int64_t n, std::vector<float> &col) {
    col.resize((size_t)(d.kk * d.HW));
    for (int64_t g = 0; g < p->groups; g++) {
      /* col = W_gᵀ [kk, cout_g] · g_n [cout_g, HW] */
      gemm(1, 0, d.kk, d.HW, d.cout_g, w + g * d.cout_g * d.kk, d.kk,
           gout + (n * p->Cout + g * d.cout_g) * d.HW, d.HW, 0.0f, col.data(), d.HW);
      col2im(p, col.data(), d.cin_g, dx + (n * p->Cin + g * d.cin_g) * d.xplane);
    }
  };
  if (par) {
    parallel_for(p->N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<float> col;
      for (int64_t n = n0; n < n1; n++) image(n, col);
    });
  } else {
    std::vector<float> col;
    for (int64_t n = 0; n < p->N; n++) image(n, col);
  }
}

void kn_conv2d_backward_weight_f32(const kn_conv2d *p, const float *gout, const float *x, float *dw) {
  Dims d = dims(p);
  const int64_t wn = p->Cout * d.kk;
  bool empty = p->N == 0 || d.HW == 0 || wn == 0;
  if (!empty && conv2d_backward_weight_dnnl(p, gout, x, dw)) return;
  memset(dw, 0, sizeof(float) * (size_t)wn);
  if (empty) return;
  bool par = by_image(p);
  int64_t parts = par ? kn_get_threads() : 1;
  if (parts > p->N) parts = p->N;
  /* part 0 accumulates straight into dw; the others into private copies summed at the end */
  std::vector<float> priv((size_t)(wn * (parts - 1)), 0.0f);
  parallel_for(parts, 1, [&](int64_t q0, int64_t q1) {
    std::vector<float> col((size_t)(d.kk * d.HW));
    for (int64_t q = q0; q < q1; q++) {
      float *acc = q == 0 ? dw : priv.data() + (q - 1) * wn;
      for (int64_t n = p->N * q / parts; n < p->N * (q + 1) / parts; n++)
        for (int64_t g = 0; g < p->groups; g++) {
          im2col(p, x + (n * p->Cin + g * d.cin_g) * d.xplane, d.cin_g, col.data());
          /* dW_g [cout_g, kk] += g_n [cout_g, HW] · colᵀ [HW, kk] */
          gemm(0, 1, d.cout_g, d.kk, d.HW, gout + (n * p->Cout + g * d.cout_g) * d.HW, d.HW, col.data(), d.HW,
               1.0f, acc + g * d.cout_g * d.kk, d.kk);
        }
    }
  });
  for (int64_t q = 1; q < parts; q++) {
    const float *s = priv.data() + (q - 1) * wn;
    for (int64_t i = 0; i < wn; i++) dw[i] += s[i];
  }
}

void kn_max_pool2d_f32(const kn_pool2d *p, const float *x, float *out, int32_t *idx) {
  const int64_t O = p->Ho * p->Wo;
  parallel_for(p->N * p->C, GRAIN / (O * p->kH * p->kW + 1) + 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) max_pool_plane(p, q, x, out, idx);
  });
}

void kn_max_pool2d_bias_relu_f32(const kn_pool2d *p, const float *x, const float *bias, float *out, int32_t *idx) {
  const int64_t O = p->Ho * p->Wo;
  parallel_for(p->N * p->C, GRAIN / (O * p->kH * p->kW + 1) + 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      max_pool_plane(p, q, x, out, idx);
      bias_relu(out + q * O, bias[q % p->C], O);
    }
  });
}

int64_t kn_max_pool2d_backward_f32(const kn_pool2d *p, const float *g, const int32_t *idx, float *dx) {
  const int64_t O = p->Ho * p->Wo;
  std::atomic<int64_t> bad{-1};
  parallel_for(p->N * p->C, GRAIN / (4 * O + 1) + 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1 && bad.load() < 0; q++) max_pool_backward_plane(p, q, g + q * O, idx, dx, &bad);
  });
  return bad.load();
}

/* Per plane: the ReLU's mask applied to g (into a small per-thread buffer), the plane's sum of it
   in double, then the pool's backward from the masked gradient. db sums the plane sums over the
   batch in image order: the same bits at any thread count. */
int64_t kn_max_pool2d_bias_relu_backward_f32(const kn_pool2d *p, const float *g, const float *out,
                                             const int32_t *idx, float *dx, float *db) {
  const int64_t planes = p->N * p->C, O = p->Ho * p->Wo;
  std::vector<double> plane_sums(db ? (size_t)planes : 0);
  std::atomic<int64_t> bad{-1};
  parallel_for(planes, GRAIN / (4 * O + 1) + 1, [&](int64_t q0, int64_t q1) {
    std::vector<float> masked((size_t)O);
    for (int64_t q = q0; q < q1 && bad.load() < 0; q++) {
      const double sum = relu_mask(g + q * O, out + q * O, masked.data(), O);
      if (db) plane_sums[(size_t)q] = sum;
      max_pool_backward_plane(p, q, masked.data(), idx, dx, &bad);
    }
  });
  for (int64_t c = 0; db && c < p->C; c++) {
    double s = 0.0;
    for (int64_t n = 0; n < p->N; n++) s += plane_sums[(size_t)(n * p->C + c)];
    db[c] = (float)s;
  }
  return bad.load();
}

void kn_avg_pool2d_f32(const kn_pool2d *p, const float *x, float *out) {
  const int64_t planes = p->N * p->C, HW = p->H * p->W, O = p->Ho * p->Wo;
  const float inv = 1.0f / (float)(p->kH * p->kW);
  parallel_for(planes, GRAIN / (O * p->kH * p->kW + 1) + 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      const float *xp = x + q * HW;
      for (int64_t oh = 0; oh < p->Ho; oh++)
        for (int64_t ow = 0; ow < p->Wo; ow++) {
          float s = 0.0f;
          for (int64_t kh = 0; kh < p->kH; kh++) {
            int64_t ih = oh * p->stride[0] - p->padding[0] + kh;
            if (ih < 0 || ih >= p->H) continue;
            for (int64_t kw = 0; kw < p->kW; kw++) {
              int64_t iw = ow * p->stride[1] - p->padding[1] + kw;
              if (iw >= 0 && iw < p->W) s += xp[ih * p->W + iw];
            }
          }
          out[q * O + oh * p->Wo + ow] = s * inv;
        }
    }
  });
}

void kn_avg_pool2d_backward_f32(const kn_pool2d *p, const float *g, float *dx) {
  const int64_t planes = p->N * p->C, HW = p->H * p->W, O = p->Ho * p->Wo;
  const float inv = 1.0f / (float)(p->kH * p->kW);
  memset(dx, 0, sizeof(float) * (size_t)(planes * HW));
  parallel_for(planes, GRAIN / (O * p->kH * p->kW + 1) + 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      float *dp = dx + q * HW;
      for (int64_t oh = 0; oh < p->Ho; oh++)
        for (int64_t ow = 0; ow < p->Wo; ow++) {
          float share = g[q * O + oh * p->Wo + ow] * inv;
          for (int64_t kh = 0; kh < p->kH; kh++) {
            int64_t ih = oh * p->stride[0] - p->padding[0] + kh;
            if (ih < 0 || ih >= p->H) continue;
            for (int64_t kw = 0; kw < p->kW; kw++) {
              int64_t iw = ow * p->stride[1] - p->padding[1] + kw;
              if (iw >= 0 && iw < p->W) dp[ih * p->W + iw] += share;
            }
          }
        }
    }
  });
}

}  // extern "C"
