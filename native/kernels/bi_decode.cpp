/*
 * Batch-invariant decode kernels for continuous batching (src/serve/): a row's result depends only
 * on that row's data and the reduction length — never on how many rows came with it, which rows
 * they were, or the thread count. That is what lets a request's tokens stay the same whoever
 * else is decoding (docs/batching.md gives the argument).
 *
 * The rule every kernel here follows: one output element is always reduced by the same sequence
 * of floating-point operations. Dot products run over K in chunks of 16 into 16 independent lanes
 * (lane j sums the products at k ≡ j mod 16, in increasing k), then the lanes are added in one
 * fixed pairwise tree, then the < 16 leftover products in order. Register tiles (several rows ×
 * several weight rows at once) only interleave independent dot products; they never change one.
 * Threads split output columns (matmul) or (row, head) pairs (attention) or rows (norms), never a
 * reduction. oneDNN does not promise this: it picks its blocking and K-splitting by shape, so a
 * row's bits can change with M.
 *
 * The quantized product (kn_bi_qmatmul_packed_f32) has exact int32 block sums, so only its f32
 * steps need an order: per (row, weight row) the scale d_w·d_x, then acc = fma(float(Σ q_w·q_x),
 * scale, acc) over the blocks in order — kn_qmatmul_packed_f32's steps, so the bits equal its.
 * With AVX2 (no VNNI) both run one kernel, qmatmul.cpp's x8_product, which already tiles rows.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>
#include <vector>

#include "internal.h"
#include "mathf.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_BI_X86 1
#endif

using namespace kn;

namespace {

typedef float v16 __attribute__((vector_size(64)));

inline v16 load16(const float *p) {
  v16 v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* The fixed lane tree: 8 pairs, then 4, 2, 1. */
inline float lanes_sum(v16 v) {
  float a[16];
  memcpy(a, &v, sizeof a);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++) a[i] += a[i + w];
  return a[0];
}

/* The same tree for sixteen sums at once: output i of the result is lanes_sum(v[i]), bit for bit
   (level by level the same pairs are added: lanes j and j+8, then j and j+4, j+2, j+1). */
inline v16 lanes_sum16(const v16 *v) {
  v16 w[8], u[4], z[2];
  for (int p = 0; p < 8; p++)
    w[p] = __builtin_shufflevector(v[2 * p], v[2 * p + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(v[2 * p], v[2 * p + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  for (int q = 0; q < 4; q++)
    u[q] = __builtin_shufflevector(w[2 * q], w[2 * q + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(w[2 * q], w[2 * q + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int s = 0; s < 2; s++)
    z[s] = __builtin_shufflevector(u[2 * s], u[2 * s + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(u[2 * s], u[2 * s + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(z[0], z[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(z[0], z[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* y[i, j] = x_i · w_j for an MR × NR tile (MR·NR ≤ 16); every (i, j) takes the same operations in
   any tile: the lanes of a missing output are zeros that never meet another output's lanes. */
template <int MR, int NR>
inline __attribute__((always_inline)) void dot_tile(const float *x, int64_t ldx, const float *w, int64_t ldw,
                                                    int64_t K, float *y, int64_t ldy) {
  static_assert(MR * NR <= 16, "one lanes_sum16 per tile");
  v16 acc[16];
  for (int i = 0; i < 16; i++) acc[i] = v16{};
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    v16 wv[NR];
    for (int j = 0; j < NR; j++) wv[j] = load16(w + j * ldw + k);
    for (int i = 0; i < MR; i++) {
      v16 xv = load16(x + i * ldx + k);
      for (int j = 0; j < NR; j++) acc[i * NR + j] += xv * wv[j];
    }
  }
  v16 sums = lanes_sum16(acc);
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) {
      float tail = 0.0f;
      for (int64_t t = k; t < K; t++) tail += x[i * ldx + t] * w[j * ldw + t];
      y[i * ldy + j] = sums[i * NR + j] + tail;
    }
}

const int MR = 4;
const int NR = 4;

/* Rows [0, M) against weight rows [n0, n0 + nr), nr ≤ NR. */
template <int NT>
inline __attribute__((always_inline)) void column_block(const float *x, int64_t M, int64_t K, const float *w, int64_t n0,
                                                        int64_t N, float *y) {
  int64_t m = 0;
  for (; m + MR <= M; m += MR) dot_tile<MR, NT>(x + m * K, K, w + n0 * K, K, K, y + m * N + n0, N);
  for (; m < M; m++) dot_tile<1, NT>(x + m * K, K, w + n0 * K, K, K, y + m * N + n0, N);
}

KN_CLONES
void matmul_columns(const float *x, int64_t M, int64_t K, const float *w, int64_t N, float *y, int64_t t0,
                    int64_t t1) {
  for (int64_t t = t0; t < t1; t++) {
    int64_t n0 = t * NR;
    if (n0 + NR <= N) column_block<NR>(x, M, K, w, n0, N, y);
    else
      for (int64_t n = n0; n < N; n++) column_block<1>(x, M, K, w, n, N, y);
  }
}

#ifdef KN_BI_X86
/*
 * The same products for AVX2, which has 16 registers of 8 floats: a 4 × 4 tile's accumulators alone
 * would be 32 of them, and GCC's AVX2 clone spilled (6–8 GFLOP/s on one Zen 3 core). Here each
 * output's 16 lanes are two 8-float registers. A 4 × 3 tile runs lanes 0–7 over all of K, then lanes
 * 8–15: 12 accumulators, 3 weight vectors and one row vector are exactly the 16 registers (M = 16,
 * K 768, N 2048: 65 GFLOP/s, against 58 for 3 × 2 tiles with both halves in one pass and 48 for
 * 4 × 2 or 5 × 2). Lane j still sums the products at k ≡ j (mod 16) in increasing k, with the same
 * fused multiply-add, and lanes_tree8 (below) closes them as lanes_sum16 would: every output has
 * dot_tile's bits.
 */
typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float *p) {
  v8 v;
  memcpy(&v, p, sizeof v);
  return v;
}

#define KN_AVX2_INLINE KN_AVX2 __attribute__((always_inline)) inline
/* The attention helpers also read an f16 cache's halves, widened exactly in registers (F16C). */
#define KN_AVX2_F16C __attribute__((target("avx2,fma,f16c")))

KN_AVX2_F16C inline __attribute__((always_inline)) __m256 load8_ps(const float *p) { return _mm256_loadu_ps(p); }
KN_AVX2_F16C inline __attribute__((always_inline)) __m256 load8_ps(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* low half: a's lanes j + (j+4), high half: b's */
KN_AVX2_INLINE __m256 add_halves(__m256 a, __m256 b) {
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* per 128-bit half: p's lanes j + (j+2), then q's */
KN_AVX2_INLINE __m256 add_pairs(__m256 p, __m256 q) {
  return _mm256_add_ps(_mm256_shuffle_ps(p, q, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(p, q, _MM_SHUFFLE(3, 2, 3, 2)));
}

/*
 * lanes_sum's tree for eight sums at once on AVX2 (GCC lowers lanes_sum16's 16-float shuffles to
 * scalar moves there). t[i] holds sum i's lanes j + (j+8), the tree's first level; the rest pairs
 * lanes j, j+4 (128-bit halves), then j, j+2 and j, j+1 (in-lane shuffles) — the same operands per
 * add as lanes_sum, so the same bits. Lane i of the result is sum i.
 */
KN_AVX2_INLINE __m256 lanes_tree8(const __m256 *t) {
  const __m256 w01 = add_pairs(add_halves(t[0], t[4]), add_halves(t[1], t[5]));  // sums 0, 1 | 4, 5
  const __m256 w23 = add_pairs(add_halves(t[2], t[6]), add_halves(t[3], t[7]));  // sums 2, 3 | 6, 7
  return _mm256_add_ps(_mm256_shuffle_ps(w01, w23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(w01, w23, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <int MT, int NT, bool SPLIT>
KN_AVX2_INLINE void dot_tile_avx2(const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t K, float *y,
                                  int64_t ldy) {
  static_assert(MT * NT <= 16, "one lanes_sum16 per tile");
  /* With SPLIT, lanes 0–7 over all of K, then lanes 8–15: only MT·NT accumulators live at a time (the
     tile's rows stay in L1 between the two passes); else both halves in one pass. Either way each
     lane runs through its k in order. */
  const int64_t K16 = K / 16 * 16;
  v8 lo[MT * NT], hi[MT * NT];
  for (int i = 0; i < MT * NT; i++) lo[i] = hi[i] = v8{};
  for (int half = 0; half < (SPLIT ? 2 : 1); half++) {
    v8 *acc = half ? hi : lo;
    for (int64_t k = 8 * half; k < K16; k += 16) {
      v8 wv[NT];
      for (int j = 0; j < NT; j++) wv[j] = load8(w + j * ldw + k);
      for (int i = 0; i < MT; i++) {
        const v8 xv = load8(x + i * ldx + k);
        for (int j = 0; j < NT; j++) acc[i * NT + j] += xv * wv[j];
      }
      if (!SPLIT) {
        for (int j = 0; j < NT; j++) wv[j] = load8(w + j * ldw + k + 8);
        for (int i = 0; i < MT; i++) {
          const v8 xv = load8(x + i * ldx + k + 8);
          for (int j = 0; j < NT; j++) hi[i * NT + j] += xv * wv[j];
        }
      }
    }
  }
  __m256 first[16];  // the tree's first level: lanes j + (j+8)
  for (int i = 0; i < 16; i++) first[i] = i < MT * NT ? (__m256)(lo[i] + hi[i]) : _mm256_setzero_ps();
  float sums[16];
  _mm256_storeu_ps(sums, lanes_tree8(first));
  if (MT * NT > 8) _mm256_storeu_ps(sums + 8, lanes_tree8(first + 8));
  for (int i = 0; i < MT; i++)
    for (int j = 0; j < NT; j++) {
      float tail = 0.0f;
      for (int64_t k = K16; k < K; k++) tail += x[i * ldx + k] * w[j * ldw + k];
      y[i * ldy + j] = sums[i * NT + j] + tail;
    }
}

/* Tiles of MT rows × NT weight rows over column tiles [t0, t1) of NT weight rows each. */
template <int MT, int NT, bool SPLIT>
KN_AVX2 void matmul_columns_avx2(const float *x, int64_t M, int64_t K, const float *w, int64_t N, float *y, int64_t t0,
                                 int64_t t1) {
  for (int64_t t = t0; t < t1; t++) {
    const int64_t n0 = t * NT;
    if (n0 + NT <= N) {
      int64_t m = 0;
      for (; m + MT <= M; m += MT) dot_tile_avx2<MT, NT, SPLIT>(x + m * K, K, w + n0 * K, K, K, y + m * N + n0, N);
      for (; m < M; m++) dot_tile_avx2<1, NT, SPLIT>(x + m * K, K, w + n0 * K, K, K, y + m * N + n0, N);
    } else
      for (int64_t n = n0; n < N; n++)
        for (int64_t m = 0; m < M; m++) dot_tile_avx2<1, 1, SPLIT>(x + m * K, K, w + n * K, K, K, y + m * N + n, N);
  }
}

/* AVX2 without AVX-512: the AVX2 tiles (matmul, attention's weighted values); AVX-512 (or neither)
   keeps the 16-lane clones. */
bool use_avx2_tiles() {
  static const bool yes = [] {
    if (getenv("KNOBS_BI_NO_AVX2")) return false;  // a test compares the two paths' bits
    __builtin_cpu_init();
    return !__builtin_cpu_supports("avx512f") && have_avx2_fma();
  }();
  return yes;
}
#else
bool use_avx2_tiles() { return false; }
#endif

/* n halves → f32, exactly: F16C where the CPU has it (x86-64-v3), else bit by bit. */
#ifdef KN_BI_X86
__attribute__((target("avx,f16c"))) void widen_f16_f16c(const uint16_t *h, int64_t n, float *out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
  for (; i < n; i++) out[i] = f16_to_f32(h[i]);
}
#endif

bool have_f16c() {
#ifdef KN_BI_X86
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v3") != 0;
  }();
  return yes;
#else
  return false;
#endif
}

void widen_f16(const uint16_t *h, int64_t n, float *out) {
#ifdef KN_BI_X86
  if (have_f16c()) return widen_f16_f16c(h, n, out);
#endif
  for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(h[i]);
}

/* One dot product, the matmul's order (lanes, then lanes_sum's tree, then the tail). */
/* silu(gate)·up, elementwise (expf_fast vectorises where libm's expf would not). */
KN_CLONES
void swiglu_range(const float *gate, const float *up, float *out, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i++) {
    float g = gate[i];
    out[i] = g / (1.0f + expf_fast(-g)) * up[i];
  }
}

KN_CLONES
float dot(const float *a, const float *b, int64_t n) {
  v16 acc = v16{};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) acc += load16(a + k) * load16(b + k);
  float tail = 0.0f;
  for (int64_t t = k; t < n; t++) tail += a[t] * b[t];
  return lanes_sum(acc) + tail;
}

/* x += r (when r is not null; one f32 add per element), then y = rms_norm(x)·w, for rows [r0, r1). */
KN_CLONES
void add_rms_rows(float *x, const float *res, int64_t C, const float *w, float eps, float *y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    float *xr = x + r * C;
    float *yr = y + r * C;
    if (res)
      for (int64_t c = 0; c < C; c++) xr[c] += res[r * C + c];
    float ss = dot(xr, xr, C);
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] * inv) * w[c];
  }
}

/* Σ_t p_t·v_t for HN heads × DV vectors of 16 columns (starting at column d0), kept in registers over
   all positions: each value vector is loaded once for the HN heads. Per output element the sum runs
   in position order. */
template <int HN, int DV>
inline __attribute__((always_inline)) void weighted_values(const float *p, int64_t ldp, int64_t len,
                                                           const float *const *vat, int64_t d0, const float *inv,
                                                           int64_t D, float *out) {
  v16 acc[HN][DV];
  for (int j = 0; j < HN; j++)
    for (int c = 0; c < DV; c++) acc[j][c] = v16{};
  for (int64_t t = 0; t < len; t++) {
    if (t + 16 < len)
      for (int c = 0; c < DV; c++) __builtin_prefetch(vat[t + 16] + d0 + 16 * c);
    v16 v[DV];
    for (int c = 0; c < DV; c++) v[c] = load16(vat[t] + d0 + 16 * c);
    for (int j = 0; j < HN; j++) {
      const float pj = p[j * ldp + t];
      for (int c = 0; c < DV; c++) acc[j][c] += pj * v[c];
    }
  }
  for (int j = 0; j < HN; j++)
    for (int c = 0; c < DV; c++) {
      const v16 o = acc[j][c] * inv[j];
      memcpy(out + j * D + d0 + 16 * c, &o, sizeof o);
    }
}

template <int HN>
inline __attribute__((always_inline)) void weighted_values_dv(int dv, const float *p, int64_t ldp, int64_t len,
                                                              const float *const *vat, int64_t d0, const float *inv,
                                                              int64_t D, float *out) {
  switch (dv) {
    case 4: weighted_values<HN, 4>(p, ldp, len, vat, d0, inv, D, out); break;
    case 3: weighted_values<HN, 3>(p, ldp, len, vat, d0, inv, D, out); break;
    case 2: weighted_values<HN, 2>(p, ldp, len, vat, d0, inv, D, out); break;
    default: weighted_values<HN, 1>(p, ldp, len, vat, d0, inv, D, out); break;
  }
}

#ifdef KN_BI_X86
/* weighted_values for AVX2 (16 registers of 8 floats): HN heads × DV8 vectors of 8 columns, at most
   ~12 accumulators, so nothing spills; per output element the same sum in position order. The values
   are f32, or f16 (E = uint16_t) widened exactly as they are loaded: the same sums either way. */
template <int HN, int DV8, class E>
KN_AVX2_F16C inline __attribute__((always_inline)) void weighted_values_avx2(const float *p, int64_t ldp, int64_t len,
                                                                           const E *const *vat, int64_t d0,
                                                                           const float *inv, int64_t D, float *out) {
  v8 acc[HN][DV8];
  for (int j = 0; j < HN; j++)
    for (int c = 0; c < DV8; c++) acc[j][c] = v8{};
  for (int64_t t = 0; t < len; t++) {
    if (t + 16 < len) __builtin_prefetch(vat[t + 16] + d0);
    v8 v[DV8];
    for (int c = 0; c < DV8; c++) v[c] = load8_ps(vat[t] + d0 + 8 * c);
    for (int j = 0; j < HN; j++) {
      const float pj = p[j * ldp + t];
      for (int c = 0; c < DV8; c++) acc[j][c] += pj * v[c];
    }
  }
  for (int j = 0; j < HN; j++)
    for (int c = 0; c < DV8; c++) {
      const v8 o = acc[j][c] * inv[j];
      memcpy(out + j * D + d0 + 8 * c, &o, sizeof o);
    }
}

template <int HN, class E>
KN_AVX2_F16C inline __attribute__((always_inline)) void weighted_values_avx2_dv(
    int64_t dv8, const float *p, int64_t ldp, int64_t len, const E *const *vat, int64_t d0, const float *inv,
    int64_t D, float *out) {
  if (dv8 == 3) weighted_values_avx2<HN, 3>(p, ldp, len, vat, d0, inv, D, out);
  else if (dv8 == 2) weighted_values_avx2<HN, 2>(p, ldp, len, vat, d0, inv, D, out);
  else weighted_values_avx2<HN, 1>(p, ldp, len, vat, d0, inv, D, out);
}

/* Σ_t p_t·v_t for hn ≤ 4 heads over columns [0, D16) in passes of up to 24 columns. */
template <class E>
KN_AVX2_F16C void weighted_values_avx2_all(int64_t hn, const float *p, int64_t ldp, int64_t len, const E *const *vat,
                                           int64_t D16, const float *inv, int64_t D, float *out) {
  for (int64_t d0 = 0; d0 < D16;) {
    const int64_t dv8 = D16 - d0 >= 24 ? 3 : (D16 - d0) / 8;  // D16 is a multiple of 16: whole 8s remain
    switch (hn) {
      case 4: weighted_values_avx2_dv<4, E>(dv8, p, ldp, len, vat, d0, inv, D, out); break;
      case 3: weighted_values_avx2_dv<3, E>(dv8, p, ldp, len, vat, d0, inv, D, out); break;
      case 2: weighted_values_avx2_dv<2, E>(dv8, p, ldp, len, vat, d0, inv, D, out); break;
      default: weighted_values_avx2_dv<1, E>(dv8, p, ldp, len, vat, d0, inv, D, out); break;
    }
    d0 += 8 * dv8;
  }
}

/*
 * attend_group's scores of n ≤ 16 positions (keys kat[0 … n−1]) for hn ≤ 4 heads (q: hn × D), on
 * AVX2: each score is dot()'s reduction — lanes j and j + 8 of the 16 as one 8-float register pair,
 * fused multiply-adds in k order — closed by lanes_tree8, so the same bits as the 16-lane code.
 * A chunk of fewer than 16 positions repeats its last key (those scores are dropped). The keys are
 * f32, or f16 (E = uint16_t, only where D is a multiple of 16) widened exactly as they are loaded —
 * each key vector once, for all the heads (chunk_dots_avx2: the heads' queries are read from L1
 * instead; one load of the key per head cost 8–10 % of a decode step's attention).
 */
template <int HN, class E>
KN_AVX2_F16C inline __attribute__((always_inline)) void chunk_dots_avx2(const float *q, int64_t D, const E *const *kat,
                                                                      int64_t n, __m256 (*t)[16]) {
  const int64_t D16 = D / 16 * 16;
  for (int64_t i = 0; i < 16; i++) {
    const E *key = kat[i < n ? i : n - 1];
    __m256 lo[HN], hi[HN];
    for (int j = 0; j < HN; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int64_t k = 0; k < D16; k += 16) {
      const __m256 k0 = load8_ps(key + k), k1 = load8_ps(key + k + 8);  // widened once for the HN heads
      for (int j = 0; j < HN; j++) {
        lo[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + j * D + k), k0, lo[j]);
        hi[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + j * D + k + 8), k1, hi[j]);
      }
    }
    for (int j = 0; j < HN; j++) t[j][i] = _mm256_add_ps(lo[j], hi[j]);
  }
}

template <class E>
KN_AVX2_F16C void chunk_scores_avx2(const float *q, int64_t hn, int64_t D, const E *const *kat, int64_t n, float scale,
                                    float *s, int64_t lds) {
  __m256 t[4][16];
  switch (hn) {
    case 4: chunk_dots_avx2<4>(q, D, kat, n, t); break;
    case 3: chunk_dots_avx2<3>(q, D, kat, n, t); break;
    case 2: chunk_dots_avx2<2>(q, D, kat, n, t); break;
    default: chunk_dots_avx2<1>(q, D, kat, n, t); break;
  }
  const int64_t D16 = D / 16 * 16;
  for (int64_t j = 0; j < hn; j++) {
    const float *qh = q + j * D;
    float sums[16];
    _mm256_storeu_ps(sums, lanes_tree8(t[j]));
    _mm256_storeu_ps(sums + 8, lanes_tree8(t[j] + 8));
    for (int64_t i = 0; i < n; i++) {
      float tail = 0.0f;
      if constexpr (std::is_same<E, float>::value)
        for (int64_t k = D16; k < D; k++) tail += qh[k] * kat[i][k];
      s[j * lds + i] = (sums[i] + tail) * scale;
    }
  }
}
#endif

/*
 * One (row, KV head): softmax(scale·q·Kᵀ)·V for each of the `group` query heads that share the KV
 * head, over the row's own `len` cached positions. Each key and value is read once for all of them.
 * Per (row, head) the operations are fixed by `len` and D alone:
 * - each score is dot()'s reduction, computed for 16 positions at once (lanes_sum16 gives
 *   lanes_sum's bits; a last chunk of fewer positions repeats its last key, whose extra scores are
 *   dropped — the lanes of different positions never meet);
 * - the softmax takes the max (16 lanes; a max is exact in any order), expf_fast of each score minus it, and their sum
 *   in 16 lanes (lane j: positions ≡ j mod 16, in order; the scores are padded with zeros to a
 *   multiple of 16, and x + 0 = x) closed by lanes_sum's tree;
 * - each output element sums p_t·v_t in position order, times 1 / the sum.
 */
KN_CLONES
void attend_group(const float *q, int64_t group, int64_t D, int64_t len, float scale, float *s,
                  const void *const *kat_any, const void *const *vat_any, bool halves, const void *next_keys,
                  int64_t next_bytes, bool avx2, float *out) {
  const int64_t D16 = D / 16 * 16, padded = (len + 15) / 16 * 16, elem = halves ? 2 : 4;
  /* f32 vectors everywhere, except on the AVX2 path with `halves`: an f16 cache read in place */
  const float *const *kat = (const float *const *)kat_any, *const *vat = (const float *const *)vat_any;
  const uint16_t *const *kat16 = (const uint16_t *const *)kat_any, *const *vat16 = (const uint16_t *const *)vat_any;
  for (int64_t t0 = 0; t0 < len; t0 += 16) {
    const int64_t n = len - t0 < 16 ? len - t0 : 16;
    v16 acc[4][16];  // [head of the pass][position]: the 16 lanes of each score's dot product
    /* the next chunk's keys toward L1 while this one computes (blocks are scattered: no hardware prefetch) */
    for (int64_t i = t0 + 16; i < t0 + 32; i++) {
      const void *next = i < len ? kat_any[i] : i - len < len ? vat_any[i - len] : nullptr;  // then the values
      if (next)
        for (int64_t at = 0; at < D * elem; at += 64) __builtin_prefetch((const char *)next + at);
    }
    for (int64_t h0 = 0; h0 < group; h0 += 4) {
      const int64_t hn = group - h0 < 4 ? group - h0 : 4;
#ifdef KN_BI_X86
      if (avx2) {
        if (halves) chunk_scores_avx2(q + h0 * D, hn, D, kat16 + t0, n, scale, s + h0 * padded + t0, padded);
        else chunk_scores_avx2(q + h0 * D, hn, D, kat + t0, n, scale, s + h0 * padded + t0, padded);
        continue;
      }
#endif
      for (int64_t i = 0; i < 16; i++) {
        const float *key = kat[t0 + (i < n ? i : n - 1)];
        for (int64_t j = 0; j < hn; j++) {
          const float *qh = q + (h0 + j) * D;
          v16 a = v16{};
          for (int64_t k = 0; k < D16; k += 16) a += load16(qh + k) * load16(key + k);
          acc[j][i] = a;
        }
      }
      for (int64_t j = 0; j < hn; j++) {
        const float *qh = q + (h0 + j) * D;
        const v16 sums = lanes_sum16(acc[j]);
        for (int64_t i = 0; i < n; i++) {
          float tail = 0.0f;
          for (int64_t k = D16; k < D; k++) tail += qh[k] * kat[t0 + i][k];
          s[(h0 + j) * padded + t0 + i] = (sums[i] + tail) * scale;
        }
      }
    }
  }
  /* the next pair's first keys (contiguous in its first block) stream in while these values are summed */
  for (int64_t at = 0; at < next_bytes; at += 64) __builtin_prefetch((const char *)next_keys + at);
  float inv[4];
  for (int64_t h0 = 0; h0 < group; h0 += 4) {
    const int64_t hn = group - h0 < 4 ? group - h0 : 4;
    for (int64_t j = 0; j < hn; j++) {
      float *sh = s + (h0 + j) * padded;
      for (int64_t t = len; t < padded; t++) sh[t] = sh[len - 1];  // the max is unchanged
      v16 top = load16(sh);
      for (int64_t t = 16; t < padded; t += 16) {
        const v16 v = load16(sh + t);
        top = v > top ? v : top;
      }
      float mx = top[0];
      for (int i = 1; i < 16; i++) mx = top[i] > mx ? top[i] : mx;
      for (int64_t t = 0; t < len; t++) sh[t] = expf_fast(sh[t] - mx);  // vectorises; elementwise
      for (int64_t t = len; t < padded; t++) sh[t] = 0.0f;
      v16 sum = v16{};
      for (int64_t t = 0; t < padded; t += 16) sum += load16(sh + t);
      inv[j] = 1.0f / lanes_sum(sum);
    }
    /* Σ_t p_t·v_t: up to 4 heads × 64 columns per pass in registers, then the < 16 columns left. */
    const float *p = s + h0 * padded;
    float *o = out + h0 * D;
#ifdef KN_BI_X86
    if (avx2 && halves) weighted_values_avx2_all(hn, p, padded, len, vat16, D16, inv, D, o);
    else if (avx2) weighted_values_avx2_all(hn, p, padded, len, vat, D16, inv, D, o);
    else
#endif
    for (int64_t d0 = 0; d0 < D16; d0 += 64) {
      const int dv = (int)((D16 - d0) / 16 < 4 ? (D16 - d0) / 16 : 4);
      switch (hn) {
        case 4: weighted_values_dv<4>(dv, p, padded, len, vat, d0, inv, D, o); break;
        case 3: weighted_values_dv<3>(dv, p, padded, len, vat, d0, inv, D, o); break;
        case 2: weighted_values_dv<2>(dv, p, padded, len, vat, d0, inv, D, o); break;
        default: weighted_values_dv<1>(dv, p, padded, len, vat, d0, inv, D, o); break;
      }
    }
    for (int64_t j = 0; j < hn; j++)
      for (int64_t d = D16; d < D; d++) {
        float acc = 0.0f;
        for (int64_t t = 0; t < len; t++) acc += p[j * padded + t] * vat[t][d];
        o[j * D + d] = acc * inv[j];
      }
  }
}

/*
 * Each row's query and key heads rotated at the row's position (rotate-half pairs j, j + D/2:
 * a·cos − b·sin, b·cos + a·sin, each product and sum rounded to f32 — no fused multiply-add, so
 * the same bits as the model's rope in any build), then the row's key and value heads stored in
 * its cache slot. Without cos (learned positions) nothing is rotated, only stored. Elementwise: a
 * row's values depend on nothing else.
 */
__attribute__((optimize("fp-contract=off"))) void rope_kv_rows(float *q, float *k, const float *v, int64_t H,
                                                               int64_t KVH, int64_t D, const float *cos,
                                                               const float *sin, const int32_t *positions,
                                                               void *kpool, void *vpool, bool kv_f16, int64_t block,
                                                               const int32_t *tables, int64_t stride, int64_t r0,
                                                               int64_t r1) {
  const int64_t half = D / 2;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t pos = positions[r];
    if (cos) {
      const float *c = cos + pos * half, *s = sin + pos * half;
      for (int64_t h = 0; h < H + KVH; h++) {
        float *x = h < H ? q + (r * H + h) * D : k + (r * KVH + h - H) * D;
        for (int64_t j = 0; j < half; j++) {
          const float a = x[j], b = x[j + half];
          const float ac = a * c[j], bs = b * s[j], bc = b * c[j], as = a * s[j];
          x[j] = ac - bs;
          x[j + half] = bc + as;
        }
      }
    }
    const int64_t slot = (int64_t)tables[r * stride + pos / block] * KVH * block + pos % block;
    for (int64_t g = 0; g < KVH; g++) {
      const int64_t to = (slot + g * block) * D;
      const float *kr = k + (r * KVH + g) * D, *vr = v + (r * KVH + g) * D;
      if (kv_f16) {  // rounded to nearest even, as ggml stores an F16 cache
        for (int64_t j = 0; j < D; j++) {
          ((uint16_t *)kpool)[to + j] = f32_to_f16(kr[j]);
          ((uint16_t *)vpool)[to + j] = f32_to_f16(vr[j]);
        }
      } else {
        memcpy((float *)kpool + to, kr, D * sizeof(float));
        memcpy((float *)vpool + to, vr, D * sizeof(float));
      }
    }
  }
}

/*
 * The positions of one (row, KV head) as pointers to their key and value vectors: into the pools
 * themselves when they hold f32, or f16 read in place (`in_place`: the AVX2 path widens each vector
 * exactly in registers as it loads it); otherwise, for f16, into `scratch` ([len, D] keys, then
 * values), where each block's vectors are widened exactly to f32 first. Attention runs the same
 * operations on the same values either way: an f16 cache changes what is stored, never how it is
 * reduced, and halves the bytes a decode step pulls from memory.
 */
void kv_positions(const void *kpool, const void *vpool, bool kv_f16, bool in_place, int64_t KVH, int64_t g,
                  int64_t block, int64_t D, const int32_t *table, int64_t len, float *scratch, const void **kat,
                  const void **vat) {
  const int64_t elem = kv_f16 ? 2 : 4;
  for (int64_t b = 0, t = 0; t < len; b++) {
    const int64_t at = ((int64_t)table[b] * KVH + g) * block * D, n = len - t < block ? len - t : block;
    if (kv_f16 && !in_place) {
      float *ks = scratch + t * D, *vs = scratch + (len + t) * D;
      widen_f16(((const uint16_t *)kpool) + at, n * D, ks);
      widen_f16(((const uint16_t *)vpool) + at, n * D, vs);
      for (int64_t i = 0; i < n; i++) kat[t + i] = ks + i * D, vat[t + i] = vs + i * D;
    } else {
      const char *kb = (const char *)kpool + at * elem, *vb = (const char *)vpool + at * elem;
      for (int64_t i = 0; i < n; i++) kat[t + i] = kb + i * D * elem, vat[t + i] = vb + i * D * elem;
    }
    t += n;
  }
}

#ifdef KN_BI_X86
/* GCC 12's AVX-512 headers trip -Wuninitialized once inlined into target("avx512…") code (see qmatmul.cpp). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define KN_BI_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c,fma")))

/* The packed layout's geometry (qmatmul.cpp, "x16"): 16 weight rows per group; per block a
   64-byte f32 scale vector, then 8 (q8_0) or 4 (q4_0) 64-byte vectors of 4 values × 16 rows. */
const int64_t X16 = 16;
inline int64_t x16_block(int type) { return type == KN_Q8_0 ? 64 + 512 : 64 + 256; }

/*
 * R activation rows × G groups of 16 weight rows: each weight vector is loaded (and for q4_0
 * unpacked) once and meets R rows, instead of once per row. Every (row, weight row) keeps its own
 * int32 block sum and f32 accumulator, so a tile only interleaves independent outputs.
 */
template <int TYPE, int R, int G>
KN_BI_VNNI void x16_tile(const uint8_t *w, int64_t group_bytes, const QRows &a, int64_t m, float *y, int64_t N,
                         int64_t n0, const Prefetch &pf) {
  const int64_t block = TYPE == KN_Q8_0 ? 64 + 512 : 64 + 256;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  __m512 acc[R][G];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < G; j++) acc[i][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; b++) {
    const uint8_t *wb = w + b * block;
    pf.block(b);
    const int32_t *xq[R];
    __m512i s[R][G];
    for (int i = 0; i < R; i++) {
      xq[i] = (const int32_t *)(a.q + (m + i) * a.K + b * 32);
      /* the weights are stored +128 (q8_0) or +8 (q4_0): start each sum at the offset's product */
      const __m512i start = _mm512_set1_epi32((TYPE == KN_Q8_0 ? -128 : -8) * a.qsum[(m + i) * a.nb + b]);
      for (int j = 0; j < G; j++) s[i][j] = start;
    }
    if (TYPE == KN_Q8_0) {
      for (int k4 = 0; k4 < 8; k4++) {
        __m512i wv[G];
        for (int j = 0; j < G; j++) wv[j] = _mm512_loadu_si512(wb + j * group_bytes + 64 + 64 * k4);
        for (int i = 0; i < R; i++) {
          const __m512i xv = _mm512_set1_epi32(xq[i][k4]);
          for (int j = 0; j < G; j++) s[i][j] = _mm512_dpbusd_epi32(s[i][j], wv[j], xv);
        }
      }
    } else {
      for (int c = 0; c < 4; c++) {
        __m512i lo[G], hi[G];
        for (int j = 0; j < G; j++) {
          const __m512i v = _mm512_loadu_si512(wb + j * group_bytes + 64 + 64 * c);
          lo[j] = _mm512_and_si512(v, low4);
          hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        }
        for (int i = 0; i < R; i++) {
          const __m512i x0 = _mm512_set1_epi32(xq[i][2 * c]), x1 = _mm512_set1_epi32(xq[i][2 * c + 1]);
          for (int j = 0; j < G; j++) s[i][j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s[i][j], lo[j], x0), hi[j], x1);
        }
      }
    }
    for (int j = 0; j < G; j++) {
      const __m512 dw = _mm512_loadu_ps((const float *)(wb + j * group_bytes));
      for (int i = 0; i < R; i++) {
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[(m + i) * a.nb + b]));
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][j]), scale, acc[i][j]);
      }
    }
  }
  for (int j = 0; j < G; j++) {
    int64_t n = n0 + j * X16, left = N - n;
    const __mmask16 keep = left >= X16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    for (int i = 0; i < R; i++) _mm512_mask_storeu_ps(y + (m + i) * N + n, keep, acc[i][j]);
  }
}

/* All M rows against G groups, in tiles of 4 rows then the 1–3 left; each tile asks for its share of
   the next G groups (Prefetch, internal.h), except after the last. */
template <int TYPE, int G>
KN_BI_VNNI void x16_rows(const uint8_t *w, int64_t group_bytes, const QRows &a, int64_t M, float *y, int64_t N,
                         int64_t n0, bool last) {
  const int64_t tiles = (M + 3) / 4;
  auto pf = [&](int64_t t) { return Prefetch::share(last ? nullptr : w + G * group_bytes, G * group_bytes, tiles, t, a.nb); };
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) x16_tile<TYPE, 4, G>(w, group_bytes, a, m, y, N, n0, pf(m / 4));
  switch (M - m) {
    case 3: x16_tile<TYPE, 3, G>(w, group_bytes, a, m, y, N, n0, pf(m / 4)); break;
    case 2: x16_tile<TYPE, 2, G>(w, group_bytes, a, m, y, N, n0, pf(m / 4)); break;
    case 1: x16_tile<TYPE, 1, G>(w, group_bytes, a, m, y, N, n0, pf(m / 4)); break;
    default: break;
  }
}

template <int TYPE>
KN_BI_VNNI void x16_groups(const uint8_t *packed, const QRows &a, int64_t M, float *y, int64_t N, int64_t g0,
                           int64_t g1) {
  const int64_t group_bytes = a.nb * x16_block(TYPE), groups = (N + X16 - 1) / X16;
  int64_t g = g0;
  for (; g + 2 <= g1; g += 2)
    x16_rows<TYPE, 2>(packed + g * group_bytes, group_bytes, a, M, y, N, g * X16, g + 4 > groups);
  if (g < g1) x16_rows<TYPE, 1>(packed + g * group_bytes, group_bytes, a, M, y, N, g * X16, true);
}
#pragma GCC diagnostic pop
#endif

typedef void (*ColumnsFn)(const float *, int64_t, int64_t, const float *, int64_t, float *, int64_t, int64_t);

/* Column tiles of nr weight rows, split across threads (at least ~64k multiply-adds each); the split
   only moves whole tiles, so no output's operations change with it. */
void split_columns(int64_t M, int64_t K, int64_t N, int64_t nr, ColumnsFn columns, const float *x, const float *w,
                   float *y) {
  const int64_t tiles = (N + nr - 1) / nr, per_tile = M * K * nr;
  const int64_t grain = per_tile >= 65536 ? 1 : 65536 / (per_tile > 0 ? per_tile : 1);
  parallel_for(tiles, grain, [&](int64_t t0, int64_t t1) { columns(x, M, K, w, N, y, t0, t1); });
}

}  // namespace

void kn_bi_matmul_f32(const float *x, int64_t M, int64_t K, const float *w, int64_t N, float *y) {
  if (M <= 0 || N <= 0) return;
#ifdef KN_BI_X86
  /* AVX2: 4 × 3 tiles in two half passes; up to three rows take 1 × 4 in one pass (the weight
     stream is the work there). */
  if (use_avx2_tiles()) {
    if (M < 4) return split_columns(M, K, N, 4, matmul_columns_avx2<1, 4, false>, x, w, y);
    return split_columns(M, K, N, 3, matmul_columns_avx2<4, 3, true>, x, w, y);
  }
#endif
  split_columns(M, K, N, NR, matmul_columns, x, w, y);
}

void kn_bi_rms_norm_f32(const float *x, int64_t M, int64_t C, const float *w, float eps, float *y) {
  kn_bi_add_rms_norm_f32(const_cast<float *>(x), nullptr, M, C, w, eps, y);  // x is only read without a residual
}

/* A decode step's rows are a few microseconds of work: below ~64k elements a thread's wake-up costs more. */
void kn_bi_add_rms_norm_f32(float *x, const float *r, int64_t M, int64_t C, const float *w, float eps, float *y) {
  parallel_for(M, C >= 65536 ? 1 : 65536 / C + 1,
               [&](int64_t r0, int64_t r1) { add_rms_rows(x, r, C, w, eps, y, r0, r1); });
}

void kn_bi_rope_kv_f32(float *q, float *k, const float *v, int64_t R, int64_t H, int64_t KVH, int64_t D,
                       const float *cos, const float *sin, const int32_t *positions, void *kpool, void *vpool,
                       int kv_f16, int64_t block, const int32_t *tables, int64_t table_stride) {
  parallel_for(R, 8, [&](int64_t r0, int64_t r1) {  // ~3.5 µs a row (cold cache slots): worth a split
    rope_kv_rows(q, k, v, H, KVH, D, cos, sin, positions, kpool, vpool, kv_f16 != 0, block, tables, table_stride,
                 r0, r1);
  });
}

void kn_bi_store_kv_f32(const float *k, const float *v, int64_t R, int64_t KVH, int64_t D, const int32_t *positions,
                        void *kpool, void *vpool, int kv_f16, int64_t block, const int32_t *tables,
                        int64_t table_stride) {
  parallel_for(R, 8, [&](int64_t r0, int64_t r1) {  // k is only read without cos
    rope_kv_rows(nullptr, const_cast<float *>(k), v, 0, KVH, D, nullptr, nullptr, positions, kpool, vpool,
                 kv_f16 != 0, block, tables, table_stride, r0, r1);
  });
}

void kn_bi_paged_attention_f32(const float *q, int64_t R, int64_t H, int64_t D, const void *kpool,
                               const void *vpool, int kv_f16, int64_t KVH, int64_t block, const int32_t *tables,
                               int64_t table_stride, const int32_t *lens, float scale, float *out) {
  int64_t group = H / KVH;
  const bool avx2 = use_avx2_tiles();
  /* Threads split (row, KV head) pairs, the query heads of one KV head together, into runs of about
     equal work (Σ of the rows' lengths): a prefill chunk's short rows next to long decode rows would
     otherwise leave one thread with most of it. Which thread runs a pair changes none of its bits. */
  const int64_t parts = kn_get_threads() < R * KVH ? kn_get_threads() : R * KVH;
  std::vector<int64_t> cut((size_t)parts + 1, R * KVH);
  int64_t total = 0;
  for (int64_t r = 0; r < R; r++) total += (lens[r] + 16) * KVH;  // + a fixed cost per pair
  cut[0] = 0;
  for (int64_t i = 0, part = 1, done = 0; i < R * KVH && part < parts; i++) {
    done += lens[i / KVH] + 16;
    while (part < parts && done * parts >= total * part) cut[(size_t)part++] = i + 1;
  }
  const int64_t elem = kv_f16 ? 2 : 4;
  const bool in_place = kv_f16 && avx2 && D % 16 == 0 && have_f16c();
  parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> s, scratch;
    std::vector<const void *> at;
    for (int64_t i = cut[(size_t)p0]; i < cut[(size_t)p1]; i++) {
      int64_t r = i / KVH, g = i % KVH, len = lens[r];
      if ((int64_t)at.size() < 2 * len) {
        s.resize(group * ((len + 15) / 16 * 16));  // the scores, padded to whole 16-position chunks
        at.resize(2 * len);
        if (kv_f16 && !in_place) scratch.resize(2 * len * D);
      }
      const void *next = nullptr;
      int64_t next_len = 0;
      if (i + 1 < cut[(size_t)p1]) {
        const int64_t nr = (i + 1) / KVH, ng = (i + 1) % KVH;
        next = (const char *)kpool + ((int64_t)tables[nr * table_stride] * KVH + ng) * block * D * elem;
        next_len = lens[nr] < block ? lens[nr] : block;
        next_len = next_len < 16 ? next_len : 16;
      }
      kv_positions(kpool, vpool, kv_f16 != 0, in_place, KVH, g, block, D, tables + r * table_stride, len,
                   scratch.data(), at.data(), at.data() + len);
      attend_group(q + (r * H + g * group) * D, group, D, len, scale, s.data(), at.data(), at.data() + len, in_place,
                   next, next_len * D * elem, avx2, out + (r * H + g * group) * D);
    }
  });
}

void kn_bi_swiglu_f32(const float *gate, const float *up, int64_t n, float *out) {
  parallel_for(n, 16384, [&](int64_t b, int64_t e) { swiglu_range(gate, up, out, b, e); });
}

void kn_bi_qmatmul_packed_f32(int type, const float *x, int64_t M, int64_t K, const uint8_t *packed, int64_t N,
                              float *y) {
  if (M <= 0 || N <= 0) return;
#ifdef KN_BI_X86
  int64_t nb = K / 32, groups = (N + X16 - 1) / X16;
  std::vector<int8_t> q((size_t)(M * K));
  std::vector<float> d((size_t)(M * nb));
  std::vector<int32_t> qsum((size_t)(M * nb));
  parallel_for(M, K >= 16384 ? 1 : 16384 / (K + 1) + 1,
               [&](int64_t m0, int64_t m1) { kn_q8_quantize_rows(x, K, m0, m1, q.data(), d.data(), qsum.data()); });
  const QRows a{q.data(), d.data(), qsum.data(), K, nb};
  if (qpack_layout() == QPACK_X8) return x8_product(type, a, M, packed, N, y);
  /* Pairs of groups per task, at least ~64k multiply-adds each; the split only moves whole groups. */
  int64_t per_pair = M * K * 2 * X16;
  int64_t grain = per_pair >= 65536 ? 1 : 65536 / per_pair;
  parallel_for((groups + 1) / 2, grain, [&](int64_t p0, int64_t p1) {
    int64_t g0 = 2 * p0, g1 = 2 * p1 < groups ? 2 * p1 : groups;
    if (type == KN_Q8_0) x16_groups<KN_Q8_0>(packed, a, M, y, N, g0, g1);
    else x16_groups<KN_Q4_0>(packed, a, M, y, N, g0, g1);
  });
#else
  (void)type, (void)x, (void)K, (void)packed;  // no packed layout off x86 (kn_qrepack_bytes is 0)
#endif
}
