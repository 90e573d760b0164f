/*
 * Causal self-attention, forward and backward. Query row i attends to keys 0 … i.
 *
 * Any layout where a head's rows are equally spaced: element (b, h, t, d) of q, k, v (and of their
 * gradients) sits at b·in.batch + h·in.head + t·in.row + d, of out and g at the same with `ol`. The
 * dense [B·H, T, D] layout and the GPT one — q, k, v read in place from the [B, T, 3C] output of
 * c_attn, out written as [B, T, C] — are two settings of these strides, so the model needs no
 * head split or merge copies.
 *
 * Work goes in blocks of QB query rows: for the block [i0, i1) only keys 0 … i1 − 1 can be seen,
 * so the scores S = scale·Q_blk·K[0:i1]ᵀ are a [QB, i1] tile (the only score memory, per thread).
 * The products run through one small register-blocked kernel (mm below: 4 rows × up to 64
 * columns of C in AVX-512 registers) that also skips the causal zeros: a row group computes
 * scores only up to its diagonal, and the products with P (or dS) sum only over the keys it sees.
 * Kᵀ (and Vᵀ in the backward) are transposed once per head so every product reads B along
 * contiguous rows; P and dS are read transposed in place (A is only broadcast, never loaded as a
 * vector). The backward recomputes P from the forward's log-sum-exp instead of storing it.
 *
 * Threads: the forward splits (head, query block) tasks, the backward whole heads (dK and dV sum
 * over a head's query blocks in one fixed order). Nothing a row computes depends on the thread
 * count or on the other rows of the batch.
 */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"
#include "mathf.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_ATT_X86 1
#define KN_AVX512 __attribute__((target("avx512f,fma")))
#endif

using namespace kn;

namespace {

const int64_t QB = 64;  // query rows per tile
const int64_t MR = 4;   // rows of C per register block

/* Which part of C[M, N] = A[M, K]·B[K, N] a causal tile needs, for the row group [m, m + rows):
   DIAG_N: scores, columns n < off + m + rows (query m + off sees keys ≤ itself);
   DIAG_K: P·V-like, sums over k < off + m + rows (A is zero beyond the diagonal);
   DIAG_K_FROM: Pᵀ·G-like, sums over k ≥ m − off (key m is seen by queries ≥ m). */
enum Causal { FULL, DIAG_N, DIAG_K, DIAG_K_FROM };

struct Range {
  int64_t n_hi, k_lo, k_hi;
};

inline Range range_of(Causal c, int64_t off, int64_t m, int64_t rows, int64_t N, int64_t K) {
  Range r{N, 0, K};
  if (c == DIAG_N) r.n_hi = off + m + rows < N ? off + m + rows : N;
  if (c == DIAG_K) r.k_hi = off + m + rows < K ? off + m + rows : K;
  if (c == DIAG_K_FROM) r.k_lo = m - off > 0 ? m - off : 0;
  return r;
}

/* A's element (m, k) is A[m·ars + k·acs]: rows of a matrix or of its transpose alike. */
struct Operands {
  const float *A;
  int64_t ars, acs;
  const float *B;
  int64_t ldb;
  float *C;
  int64_t ldc;
  bool accumulate;  // C += A·B, else C = A·B
};

KN_CLONES
void mm_rows_plain(const Operands &o, int64_t m0, int64_t rows, int64_t n_hi, int64_t k_lo, int64_t k_hi) {
  for (int64_t r = m0; r < m0 + rows; r++) {
    float *c = o.C + r * o.ldc;
    if (!o.accumulate) memset(c, 0, sizeof(float) * (size_t)n_hi);
    for (int64_t k = k_lo; k < k_hi; k++) {
      const float a = o.A[r * o.ars + k * o.acs];
      const float *b = o.B + k * o.ldb;
      for (int64_t n = 0; n < n_hi; n++) c[n] += a * b[n];
    }
  }
}

#ifdef KN_ATT_X86
bool have_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return yes;
}

/* C[m0 : m0 + R, n0 : n0 + 16·NV] over k in [k_lo, k_hi); `last` masks the final vector's columns.
   The operands are copied to locals: read through `o`, GCC keeps the accumulators in memory. */
template <int R, int NV>
KN_AVX512 void micro(const Operands &o, int64_t m0, int64_t n0, int64_t k_lo, int64_t k_hi, __mmask16 last) {
  const int64_t ars = o.ars, acs = o.acs, ldb = o.ldb, ldc = o.ldc;
  const float *__restrict a = o.A + m0 * ars + k_lo * acs;
  const float *__restrict b = o.B + k_lo * ldb + n0;
  float *__restrict C = o.C + m0 * ldc + n0;
  __m512 c[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
      c[r][v] = o.accumulate ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : (__mmask16)0xffff, C + r * ldc + 16 * v)
                             : _mm512_setzero_ps();
  for (int64_t k = k_lo; k < k_hi; k++, a += acs, b += ldb) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
    bv[NV - 1] = _mm512_maskz_loadu_ps(last, b + 16 * (NV - 1));
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(a[r * ars]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) c[r][v] = _mm512_fmadd_ps(av, bv[v], c[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
      _mm512_mask_storeu_ps(C + r * ldc + 16 * v, v == NV - 1 ? last : (__mmask16)0xffff, c[r][v]);
}

template <int R>
KN_AVX512 void micro_cols(const Operands &o, int64_t m0, int64_t n0, int64_t cols, int64_t k_lo, int64_t k_hi) {
  const int64_t nv = (cols + 15) / 16;
  const __mmask16 last = (__mmask16)(cols % 16 ? (1u << (cols % 16)) - 1 : 0xffff);
  switch (nv) {
    case 1: return micro<R, 1>(o, m0, n0, k_lo, k_hi, last);
    case 2: return micro<R, 2>(o, m0, n0, k_lo, k_hi, last);
    case 3: return micro<R, 3>(o, m0, n0, k_lo, k_hi, last);
    default: return micro<R, 4>(o, m0, n0, k_lo, k_hi, last);
  }
}

/* 64-column panels outside, row groups inside: a panel of B stays in L1 while every row group uses it. */
KN_AVX512 void mm_avx512(const Operands &o, int64_t M, int64_t N, int64_t K, Causal causal, int64_t off) {
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    for (int64_t m = 0; m < M; m += MR) {
      const int64_t rows = M - m < MR ? M - m : MR;
      const Range rg = range_of(causal, off, m, rows, N, K);
      if (rg.n_hi <= n0) continue;  // past every row's diagonal: never read
      const int64_t cols = rg.n_hi - n0 < 64 ? rg.n_hi - n0 : 64;
      switch (rows) {
        case 4: micro_cols<4>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        case 3: micro_cols<3>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        case 2: micro_cols<2>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        default: micro_cols<1>(o, m, n0, cols, rg.k_lo, rg.k_hi);
      }
    }
  }
}

/* The AVX2 + FMA kernel: 6 rows × 16 columns of C in 12 of the 16 ymm registers (the 6 × 16 block
   of AVX2 sgemm kernels: 2 loads of B and 6 broadcasts of A feed 12 FMAs per k). Each element of C
   is the same FMA chain over k as in the AVX-512 kernel; the row groups differ, which only adds or
   drops products with the zeros past the diagonal. */
const int64_t MR8 = 6, NR8 = 16;

/* C[m0 : m0 + R, n0 : n0 + 8·NV] over k in [k_lo, k_hi); with MASKED, `last` masks the final
   vector's columns. Operands copied to locals as in `micro`. */
template <int R, int NV, bool MASKED>
KN_AVX2 void micro8(const Operands &o, int64_t m0, int64_t n0, int64_t k_lo, int64_t k_hi, __m256i last) {
  const int64_t ars = o.ars, acs = o.acs, ldb = o.ldb, ldc = o.ldc;
  const float *__restrict a = o.A + m0 * ars + k_lo * acs;
  const float *__restrict b = o.B + k_lo * ldb + n0;
  float *__restrict C = o.C + m0 * ldc + n0;
  __m256 c[R][NV];
#pragma GCC unroll 6
  for (int r = 0; r < R; r++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
      const float *p = C + r * ldc + 8 * v;
      c[r][v] = !o.accumulate              ? _mm256_setzero_ps()
                : MASKED && v == NV - 1 ? _mm256_maskload_ps(p, last)
                                        : _mm256_loadu_ps(p);
    }
  for (int64_t k = k_lo; k < k_hi; k++, a += acs, b += ldb) {
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++)
      bv[v] = MASKED && v == NV - 1 ? _mm256_maskload_ps(b + 8 * v, last) : _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      const __m256 av = _mm256_broadcast_ss(a + r * ars);
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) c[r][v] = _mm256_fmadd_ps(av, bv[v], c[r][v]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; r++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) {
      float *p = C + r * ldc + 8 * v;
      if (MASKED && v == NV - 1) _mm256_maskstore_ps(p, last, c[r][v]);
      else _mm256_storeu_ps(p, c[r][v]);
    }
}

template <int R>
KN_AVX2 void micro8_cols(const Operands &o, int64_t m0, int64_t n0, int64_t cols, int64_t k_lo, int64_t k_hi) {
  const __m256i last = first_lanes(cols % 8 ? cols % 8 : 8);
  if (cols == 16) return micro8<R, 2, false>(o, m0, n0, k_lo, k_hi, last);
  if (cols == 8) return micro8<R, 1, false>(o, m0, n0, k_lo, k_hi, last);
  if (cols > 8) return micro8<R, 2, true>(o, m0, n0, k_lo, k_hi, last);
  return micro8<R, 1, true>(o, m0, n0, k_lo, k_hi, last);
}

/* 16-column panels outside, row groups inside, as mm_avx512. */
KN_AVX2 void mm_avx2(const Operands &o, int64_t M, int64_t N, int64_t K, Causal causal, int64_t off) {
  for (int64_t n0 = 0; n0 < N; n0 += NR8) {
    for (int64_t m = 0; m < M; m += MR8) {
      const int64_t rows = M - m < MR8 ? M - m : MR8;
      const Range rg = range_of(causal, off, m, rows, N, K);
      if (rg.n_hi <= n0) continue;  // past every row's diagonal: never read
      const int64_t cols = rg.n_hi - n0 < NR8 ? rg.n_hi - n0 : NR8;
      switch (rows) {
        case 6: micro8_cols<6>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        case 5: micro8_cols<5>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        case 4: micro8_cols<4>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        case 3: micro8_cols<3>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        case 2: micro8_cols<2>(o, m, n0, cols, rg.k_lo, rg.k_hi); break;
        default: micro8_cols<1>(o, m, n0, cols, rg.k_lo, rg.k_hi);
      }
    }
  }
}
#endif

/*
 * C (+)= A·B for the tile, skipping what `causal` says is not needed. With DIAG_N the columns
 * beyond a row group's diagonal are left as they were (callers read only up to the diagonal).
 */
void mm(const Operands &o, int64_t M, int64_t N, int64_t K, Causal causal, int64_t off) {
  if (M <= 0 || N <= 0) return;
#ifdef KN_ATT_X86
  if (have_avx512()) return mm_avx512(o, M, N, K, causal, off);
  if (have_avx2_fma()) return mm_avx2(o, M, N, K, causal, off);
#endif
  for (int64_t m = 0; m < M; m += MR) {
    const int64_t rows = M - m < MR ? M - m : MR;
    const Range rg = range_of(causal, off, m, rows, N, K);
    mm_rows_plain(o, m, rows, rg.n_hi, rg.k_lo, rg.k_hi);
  }
}

/* dst [D, n] (row length ld) = src [n, D] (rows `row` apart) transposed. */
void transpose_rows(const float *src, int64_t row, int64_t n, int64_t D, float *dst, int64_t ld) {
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t j1 = j0 + 16 < n ? j0 + 16 : n;
    for (int64_t d = 0; d < D; d++)
      for (int64_t j = j0; j < j1; j++) dst[d * ld + j] = src[j * row + d];
  }
}

KN_CLONES
float dot(const float *a, const float *b, int64_t D) {
  float lanes[16] = {0};
  int64_t d = 0;
  for (; d + 16 <= D; d += 16)
    for (int l = 0; l < 16; l++) lanes[l] += a[d + l] * b[d + l];
  float s = 0;
  for (; d < D; d++) s += a[d] * b[d];
  for (int l = 0; l < 16; l++) s += lanes[l];
  return s;
}

/* s[j] *= scale over n values; returns their max (a NaN among them is not seen here: exp_sum
   passes it on to the sum, and so to the whole row and its lse, as the composite). */
KN_CLONES
float scale_max(float *s, float scale, int64_t n) {
  float lanes[16];
  for (int l = 0; l < 16; l++) lanes[l] = -INFINITY;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; l++) {
      s[j + l] *= scale;
      lanes[l] = s[j + l] > lanes[l] ? s[j + l] : lanes[l];
    }
  float m = -INFINITY;
  for (; j < n; j++) {
    s[j] *= scale;
    m = s[j] > m ? s[j] : m;
  }
  for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
  return m;
}

/* s[j] = exp(s[j] − shift) over n values; returns their sum (16 partial sums, then in order). */
KN_CLONES
float exp_sum(float *s, float shift, int64_t n) {
  float lanes[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; l++) {
      s[j + l] = expf_fast(s[j + l] - shift);
      lanes[l] += s[j + l];
    }
  float sum = 0;
  for (; j < n; j++) {
    s[j] = expf_fast(s[j] - shift);
    sum += s[j];
  }
  for (int l = 0; l < 16; l++) sum += lanes[l];
  return sum;
}

/* p[j] = exp(p[j]·scale − lse) over n values (the forward's probabilities again). */
KN_CLONES
void probs_row(float *p, float scale, float lse, int64_t n) {
  for (int64_t j = 0; j < n; j++) p[j] = expf_fast(p[j] * scale - lse);
}

/* ds[j] = p[j]·(dp[j] − di)·scale, in place over dp. */
KN_CLONES
void ds_row(const float *p, float *dp, float di, float scale, int64_t n) {
  for (int64_t j = 0; j < n; j++) dp[j] = p[j] * (dp[j] - di) * scale;
}

inline int64_t blocks_of(int64_t T) { return (T + QB - 1) / QB; }

}  // namespace

extern "C" {

void kn_causal_attention_f32(const float *q, const float *k, const float *v, int64_t B, int64_t H, int64_t T,
                             int64_t D, kn_attn_layout in, kn_attn_layout ol, float scale, float *out,
                             float *lse) {
  const int64_t BH = B * H;
  if (BH <= 0 || T <= 0) return;
  if (D <= 0) {
    if (lse) for (int64_t r = 0; r < BH * T; r++) lse[r] = logf((float)(r % T + 1));  // all scores 0
    return;
  }
  const int64_t nb = blocks_of(T);
  parallel_for(BH * nb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> tile((size_t)(QB * T)), kt((size_t)(D * T));
    int64_t kt_head = -1;  // the head whose Kᵀ is in kt (a thread's tasks are consecutive)
    for (int64_t t = t0; t < t1; t++) {
      const int64_t bh = t / nb, b = bh / H, h = bh % H;
      const int64_t i0 = (t % nb) * QB, i1 = i0 + QB < T ? i0 + QB : T, rows = i1 - i0;
      const int64_t at = b * in.batch + h * in.head;
      const float *Q = q + at + i0 * in.row, *K = k + at, *V = v + at;
      float *O = out + b * ol.batch + h * ol.head + i0 * ol.row;
      if (kt_head != bh) {
        transpose_rows(K, in.row, T, D, kt.data(), T);
        kt_head = bh;
      }
      float *S = tile.data();
      /* S [rows, i1] = Q_blk · K[0:i1]ᵀ, up to each row's diagonal */
      mm({Q, in.row, 1, kt.data(), T, S, i1, false}, rows, i1, D, DIAG_N, i0);
      for (int64_t r = 0; r < rows; r++) {
        const int64_t i = i0 + r, n = i + 1;
        float *s = S + r * i1;
        const float m = scale_max(s, scale, n);
        const float shift = m == -INFINITY || m == INFINITY ? 0.0f : m;
        const float sum = exp_sum(s, shift, n);
        scale_row(s, 1.0f / sum, n);
        memset(s + n, 0, sizeof(float) * (size_t)(i1 - n));
        if (lse) lse[bh * T + i] = shift + logf(sum);
      }
      /* out_blk [rows, D] = P [rows, i1] · V[0:i1] */
      mm({S, i1, 1, V, in.row, O, ol.row, false}, rows, D, i1, DIAG_K, i0);
    }
  });
}

void kn_causal_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                                      const float *lse, const float *g, int64_t B, int64_t H, int64_t T,
                                      int64_t D, kn_attn_layout in, kn_attn_layout ol, float scale, float *dq,
                                      float *dk, float *dv) {
  const int64_t BH = B * H;
  if (BH <= 0 || T <= 0 || D <= 0) return;
  const int64_t nb = blocks_of(T);
  parallel_for(BH, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> P((size_t)(QB * T)), dP((size_t)(QB * T)), kt((size_t)(D * T)), vt((size_t)(D * T));
    for (int64_t bh = h0; bh < h1; bh++) {
      const int64_t b = bh / H, h = bh % H, row = in.row, orow = ol.row;
      const int64_t at = b * in.batch + h * in.head, oat = b * ol.batch + h * ol.head;
      const float *Q = q + at, *K = k + at, *V = v + at, *O = out + oat, *G = g + oat;
      float *dQ = dq + at, *dK = dk + at, *dV = dv + at;
      transpose_rows(K, row, T, D, kt.data(), T);
      transpose_rows(V, row, T, D, vt.data(), T);
      for (int64_t j = 0; j < T; j++) {
        memset(dK + j * row, 0, sizeof(float) * (size_t)D);
        memset(dV + j * row, 0, sizeof(float) * (size_t)D);
      }
      for (int64_t blk = 0; blk < nb; blk++) {
        const int64_t i0 = blk * QB, i1 = i0 + QB < T ? i0 + QB : T, rows = i1 - i0;
        float *p = P.data(), *dp = dP.data();
        const float *Qb = Q + i0 * row, *Gb = G + i0 * orow;
        /* P = exp(scale · Q_blk · K[0:i1]ᵀ − lse), 0 above the diagonal */
        mm({Qb, row, 1, kt.data(), T, p, i1, false}, rows, i1, D, DIAG_N, i0);
        for (int64_t r = 0; r < rows; r++) {
          const int64_t n = i0 + r + 1;
          probs_row(p + r * i1, scale, lse[bh * T + i0 + r], n);
          memset(p + r * i1 + n, 0, sizeof(float) * (size_t)(i1 - n));
        }
        /* dV[0:i1] += Pᵀ · G_blk */
        mm({p, 1, i1, Gb, orow, dV, row, true}, i1, D, rows, DIAG_K_FROM, i0);
        /* dP = G_blk · V[0:i1]ᵀ; dS = P ⊙ (dP − Σ_d g·out) · scale (in dp) */
        mm({Gb, orow, 1, vt.data(), T, dp, i1, false}, rows, i1, D, DIAG_N, i0);
        for (int64_t r = 0; r < rows; r++) {
          const int64_t i = i0 + r, n = i + 1;
          ds_row(p + r * i1, dp + r * i1, dot(G + i * orow, O + i * orow, D), scale, n);
          memset(dp + r * i1 + n, 0, sizeof(float) * (size_t)(i1 - n));
        }
        /* dQ_blk = dS · K[0:i1]; dK[0:i1] += dSᵀ · Q_blk */
        mm({dp, i1, 1, K, row, dQ + i0 * row, row, false}, rows, D, i1, DIAG_K, i0);
        mm({dp, 1, i1, Qb, row, dK, row, true}, i1, D, rows, DIAG_K_FROM, i0);
      }
    }
  });
}

}  // extern "C"
