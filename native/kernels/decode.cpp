/*
 * Kernels for one decode step of one sequence (batch 1, one new position): what a Llama layer
 * does per token, in as few calls as the JS side can make (src/models/llama-decode.ts).
 *
 * At batch 1 the step is bandwidth bound: every weight byte is read once per token, so the f32
 * matrix-vector product streams W at memory speed (4 rows at a time share each load of x) and
 * everything else (norms, rotary, attention over the cache, SwiGLU) is a few small passes whose
 * cost is the call, not the arithmetic. Each kernel's result for one row never depends on the
 * thread count: threads split output rows, and each row is summed in the same order whatever
 * rows it is grouped with.
 */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"
#include "mathf.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_DEC_X86 1
#endif

using namespace kn;

namespace {

float dot_row_scalar(const float *w, const float *x, int64_t K) {
  float s = 0;
  for (int64_t k = 0; k < K; k++) s += w[k] * x[k];
  return s;
}

#ifdef KN_DEC_X86
#define KN_AVX512 __attribute__((target("avx512f,fma")))

/* R rows of W (K apart) · x: one load of x feeds R independent accumulators. */
template <int R>
KN_AVX512 void dot_rows_avx512(const float *w, const float *x, int64_t K, float *out) {
  __m512 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 xv = _mm512_loadu_ps(x + k);
    for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w + r * K + k), xv, acc[r]);
  }
  if (k < K) {
    __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
    __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
    for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + r * K + k), xv, acc[r]);
  }
  for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(acc[r]);
}

KN_AVX512 void gemv_rows_avx512(const float *x, const float *W, int64_t K, int64_t n0, int64_t n1, float *y) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) dot_rows_avx512<4>(W + n * K, x, K, y + n);
  for (; n < n1; n++) dot_rows_avx512<1>(W + n * K, x, K, y + n);
}

/*
 * The AVX2 + FMA version with the same bits: lanes 0–7 and 8–15 of the AVX-512 accumulator are two
 * ymm registers fed in the same order, and the final sum is _mm512_reduce_add_ps's tree spelled
 * out (the halves added lane by lane, then the 128-bit halves, then pairs 2 apart, then 1 apart).
 */
KN_AVX2 float reduce16(__m256 lo, __m256 hi) {
  const __m256 t8 = _mm256_add_ps(lo, hi);
  const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
  const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
  return _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
}

template <int R>
KN_AVX2 void dot_rows_avx2(const float *w, const float *x, int64_t K, float *out) {
  __m256 lo[R], hi[R];
  for (int r = 0; r < R; r++) lo[r] = hi[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 xl = _mm256_loadu_ps(x + k), xh = _mm256_loadu_ps(x + k + 8);
    for (int r = 0; r < R; r++) {
      lo[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + r * K + k), xl, lo[r]);
      hi[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + r * K + k + 8), xh, hi[r]);
    }
  }
  if (k < K) {
    const __m256i ml = first_lanes(K - k < 8 ? K - k : 8), mh = first_lanes(K - k > 8 ? K - k - 8 : 0);
    const __m256 xl = _mm256_maskload_ps(x + k, ml), xh = _mm256_maskload_ps(x + k + 8, mh);
    for (int r = 0; r < R; r++) {
      lo[r] = _mm256_fmadd_ps(_mm256_maskload_ps(w + r * K + k, ml), xl, lo[r]);
      hi[r] = _mm256_fmadd_ps(_mm256_maskload_ps(w + r * K + k + 8, mh), xh, hi[r]);
    }
  }
  for (int r = 0; r < R; r++) out[r] = reduce16(lo[r], hi[r]);
}

KN_AVX2 void gemv_rows_avx2(const float *x, const float *W, int64_t K, int64_t n0, int64_t n1, float *y) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) dot_rows_avx2<4>(W + n * K, x, K, y + n);
  for (; n < n1; n++) dot_rows_avx2<1>(W + n * K, x, K, y + n);
}

bool have_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return yes;
}
#endif

}  // namespace

extern "C" {

void kn_gemv_f32(const float *x, const float *W, int64_t N, int64_t K, float *y) {
  if (N <= 0) return;
  parallel_for(N, GRAIN / (K > 0 ? K : 1) + 1, [&](int64_t n0, int64_t n1) {
#ifdef KN_DEC_X86
    if (have_avx512()) return gemv_rows_avx512(x, W, K, n0, n1, y);
    if (have_avx2_fma()) return gemv_rows_avx2(x, W, K, n0, n1, y);
#endif
    for (int64_t n = n0; n < n1; n++) y[n] = dot_row_scalar(W + n * K, x, K);
  });
}

void kn_add_rms_norm_f32(float *x, const float *r, const float *w, int64_t C, float eps, float *y) {
  if (r)
    for (int64_t j = 0; j < C; j++) x[j] += r[j];
  kn_rms_norm_f32(x, w, 1, C, eps, y, nullptr);
}

void kn_swiglu_f32(const float *g, const float *u, int64_t n, float *out) {
  for (int64_t j = 0; j < n; j++) {
    float s = g[j] * sigmoidf_fast(g[j]);  // silu, as kn_unary_f32's
    out[j] = s * u[j];
  }
}

/*
 * Rotary on one head in place, "half" pairs: x·cos + rotate_half(x)·sin with rotate_half([a, b])
 * = [−b, a] — the products and the sum each rounded to f32, as the composite (mul, mul, add) does.
 */
static void rotate_half_head(float *x, const float *cos, const float *sin, int64_t D) {
  int64_t half = D / 2;
  for (int64_t j = 0; j < half; j++) {
    float a = x[j], b = x[j + half];
    float ca = a * cos[j], sb = -b * sin[j];
    float cb = b * cos[j + half], sa = a * sin[j + half];
    x[j] = ca + sb;
    x[j + half] = cb + sa;
  }
}

/* a · b over n values in 16 running partial sums (vectorisable; a plain sum would be one long
   chain of dependent adds, which is what made attention ~15 % of a decode step). */
KN_CLONES static float dot_lanes(const float *a, const float *b, int64_t n) {
  float lanes[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; l++) lanes[l] += a[j + l] * b[j + l];
  float s = 0;
  for (; j < n; j++) s += a[j] * b[j];
  for (int l = 0; l < 16; l++) s += lanes[l];
  return s;
}

/* One query head over S cached positions: p = softmax(q·kᵀ·scale), y = p · v. */
KN_CLONES static void attend_head(const float *q, const float *k, const float *v, int64_t S, int64_t D, float scale,
                                  float *p, float *y) {
  float m = -INFINITY;
  for (int64_t s = 0; s < S; s++) {
    p[s] = dot_lanes(q, k + s * D, D) * scale;
    m = p[s] > m ? p[s] : m;
  }
  float inv = (float)(1.0 / exp_shift_row(p, m, p, S));
  for (int64_t j = 0; j < D; j++) y[j] = 0;
  for (int64_t s = 0; s < S; s++) {
    float ps = p[s] * inv;
    for (int64_t j = 0; j < D; j++) y[j] += ps * v[s * D + j];
  }
}

void kn_decode_attention_f32(float *q, float *k, const float *v, const float *cos, const float *sin, float *keys,
                             float *values, int64_t H, int64_t KV, int64_t D, int64_t max_len, int64_t pos,
                             float scale, float *y) {
  for (int64_t h = 0; h < H; h++) rotate_half_head(q + h * D, cos, sin, D);
  for (int64_t h = 0; h < KV; h++) {
    rotate_half_head(k + h * D, cos, sin, D);
    memcpy(keys + (h * max_len + pos) * D, k + h * D, sizeof(float) * (size_t)D);
    memcpy(values + (h * max_len + pos) * D, v + h * D, sizeof(float) * (size_t)D);
  }
  int64_t S = pos + 1, group = H / KV;
  /* one task per query head: scores over the S cached positions, softmax, weighted sum of values */
  parallel_for(H, GRAIN / (S * D * 2 + 1) + 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> scores((size_t)S);
    for (int64_t h = h0; h < h1; h++) {
      int64_t kv = (h / group) * max_len * D;
      attend_head(q + h * D, keys + kv, values + kv, S, D, scale, scores.data(), y + h * D);
    }
  });
}

}  // extern "C"
