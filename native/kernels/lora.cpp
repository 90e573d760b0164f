/*
 * The low-rank products of a LoRA linear (src/ops/lora-linear.ts), for ranks up to LOW_RANK (32):
 *
 *   narrow_accumulate    c [M, n] = c + alpha · a [M, K] · b [K, n], n ≤ 32     (t = s·x·Aᵀ, the down projection)
 *   low_rank_accumulate  c [M, N] = (c + bias) + alpha · a [M, k] · b [k, N], k ≤ 32
 *                        (y += b + t·Bᵀ in the forward, dX += u·A in the backward)
 *   kn_lora_backward_f32 u = g·sB, dB = gᵀ·t and dA = uᵀ·h in one pass over g [M, N] and h [M, K]
 *
 * A BLAS runs a product with a side this short at a fraction of its rate (OpenBLAS: 5–10 GFLOP/s at
 * 2048 × 768 × 8 in the kjv-gpt step on an AVX2 EPYC, against ~60 for the layer's own GEMM), and the
 * backward read g twice (u, dB) and h again (dA). Here the rank sits in a vector's lanes (r rounded up
 * to 8, zero-padded): a row of the long operand against the rank rows of a packed transpose
 * (rank_row), or 8 columns of it down a block of rows into 8 rank accumulators (tile_accumulate).
 *
 * Every output element is a chain of fused multiply-adds in an order fixed by the shapes: threads take
 * whole rows, or the backward's tasks of rows (set by M alone), whose partial dB and dA add up in task
 * order, so the bits do not depend on the thread count. Without AVX2 + FMA (or with KNOBS_LORA_NO_AVX2
 * set, which a test uses) the portable loops run the same chains with fmaf, to the same bits; every
 * multiply-add is written as one (c + alpha·acc too), since GCC contracts a separate multiply and add
 * into an FMA where the target has one, and not where it has none.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <memory>
#include <vector>

#include "internal.h"

namespace {

inline int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

/* A row stride for n floats (at least round8(n)) that is an odd number of 64-byte lines: rows a multiple
   of 1–4 KiB apart share a few L1 sets, and the 8 to 32 rows a loop here reads together would evict
   each other (at n = 1024 the products ran at half speed). */
inline int64_t padded_ld(int64_t n) { return ((n + 15) / 16 | 1) * 16; }

/* Rows per pass inside a task of the backward: the rows a pass reads twice (for u, then for the
   tiles of dB) stay in L2. */
const int64_t PASS_ROWS = 32;

/* Rows per task of the backward: set by M alone, so that its partial sums (and the bits) do not depend
   on the thread count; at least 128, and at most 32 tasks (each task's partials are memory the call
   takes, and a pass of the reduction). */
inline int64_t task_rows(int64_t M) {
  const int64_t spread = ((M + 31) / 32 + PASS_ROWS - 1) / PASS_ROWS * PASS_ROWS;
  return spread > 128 ? spread : 128;
}

/* dst [R8, C8] = a zero-padded transpose: dst[p, j] = src[j·sJ + p·sP] for p < R, j < C, else 0. */
void pack_transposed(const float *src, int64_t C, int64_t R, int64_t sJ, int64_t sP, int64_t R8, int64_t C8,
                     float *dst) {
  for (int64_t p = 0; p < R8; p++)
    for (int64_t j = 0; j < C8; j++) dst[p * C8 + j] = p < R && j < C ? src[j * sJ + p * sP] : 0.0f;
}

/* dst [R, ldp] = src [R, C] (strided) with columns C … ldp zeroed. */
void pack_padded(const float *src, int64_t R, int64_t C, int64_t sR, int64_t sC, int64_t ldp, float *dst) {
  for (int64_t i = 0; i < R; i++)
    for (int64_t j = 0; j < ldp; j++) dst[i * ldp + j] = j < C ? src[i * sR + j * sC] : 0.0f;
}

bool use_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = kn::have_avx2_fma() && !getenv("KNOBS_LORA_NO_AVX2");
  return yes;
#else
  return false;
#endif
}

/*
 * The two shapes every product here is made of, portable and AVX2, with the same chains:
 *
 * rank_row: out[p] = Σ_j a[j] · Bt[p, j] for the r8 rows p of Bt [r8, ldb] (zero-padded past n). Lane l
 * of a vector sums the j ≡ l (mod 8) in order; the eight lanes then add as ((0+1)+(2+3))+((4+5)+(6+7)).
 * With `copy`, the row is also written there, zero-padded to a whole vector, for a tile to read again.
 *
 * tile_accumulate: C[p, j] += Σ_i a[i, j] · w[i, p] for the 8 rows p of C (one group of ranks) and j < n,
 * one chain down the rows i in order; a's rows hold round8(n) floats (zeros past n).
 */
void rank_row_portable(const float *a, int64_t n, const float *Bt, int64_t ldb, int64_t r8, float *out,
                       float *copy) {
  if (copy)
    for (int64_t j = 0; j < round8(n); j++) copy[j] = j < n ? a[j] : 0.0f;
  for (int64_t p = 0; p < r8; p++) {
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = 0; j < round8(n); j++) lane[j % 8] = fmaf(j < n ? a[j] : 0.0f, Bt[p * ldb + j], lane[j % 8]);
    out[p] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
}

void tile_accumulate_portable(const float *a, int64_t sa, int64_t n, const float *w, int64_t sw, int64_t rows,
                              float *C, int64_t ldc) {
  for (int64_t p = 0; p < 8; p++)
    for (int64_t j = 0; j < n; j++) {
      float c = C[p * ldc + j];
      for (int64_t i = 0; i < rows; i++) c = fmaf(a[i * sa + j], w[i * sw + p], c);
      C[p * ldc + j] = c;
    }
}

void low_rank_rows_portable(const float *A, int64_t sam, int64_t sak, int64_t k, const float *Bp, int64_t N,
                            float alpha, const float *bias, float *c, int64_t r0, int64_t r1) {
  for (int64_t i = r0; i < r1; i++) {
    float *ci = c + i * N;
    for (int64_t j = 0; j < N; j++) {
      float acc = 0.0f;
      for (int64_t q = 0; q < k; q++) acc = fmaf(A[i * sam + q * sak], Bp[q * N + j], acc);
      ci[j] = fmaf(alpha, acc, bias ? ci[j] + bias[j] : ci[j]);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)

using kn::first_lanes;

/* The 8 lanes of each of a[0…7] summed into lane p of the result, as rank_row's comment says. */
KN_AVX2 inline __m256 lane_sums(const __m256 *a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 q0 = _mm256_hadd_ps(h01, h23), q1 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}

KN_AVX2 void rank_row_avx2(const float *a, int64_t n, const float *Bt, int64_t ldb, int64_t r8, float *out,
                           float *copy) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t p0 = 0; p0 < r8; p0 += 8, copy = nullptr) {
    const float *bt = Bt + p0 * ldb;
    __m256 acc[8];
    for (int p = 0; p < 8; p++) acc[p] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n8; j += 8) {
      const __m256 av = _mm256_loadu_ps(a + j);
      if (copy) _mm256_storeu_ps(copy + j, av);
      for (int p = 0; p < 8; p++) acc[p] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bt + p * ldb + j), acc[p]);
    }
    if (n8 < n) {
      const __m256 av = _mm256_maskload_ps(a + n8, first_lanes(n - n8));
      if (copy) _mm256_storeu_ps(copy + n8, av);
      for (int p = 0; p < 8; p++) acc[p] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bt + p * ldb + n8), acc[p]);
    }
    _mm256_storeu_ps(out + p0, lane_sums(acc));
  }
}

KN_AVX2 void tile_accumulate_avx2(const float *a, int64_t sa, int64_t n, const float *w, int64_t sw, int64_t rows,
                                  float *C, int64_t ldc) {
  for (int64_t j = 0; j < n; j += 8) {
    __m256 c[8];
    for (int p = 0; p < 8; p++) c[p] = _mm256_loadu_ps(C + p * ldc + j);
    for (int64_t i = 0; i < rows; i++) {
      const __m256 av = _mm256_loadu_ps(a + i * sa + j);
      for (int p = 0; p < 8; p++) c[p] = _mm256_fmadd_ps(av, _mm256_broadcast_ss(w + i * sw + p), c[p]);
    }
    for (int p = 0; p < 8; p++) _mm256_storeu_ps(C + p * ldc + j, c[p]);
  }
}

/* One row of c = (c + bias) + alpha · a_i·Bp for an inner size k ≤ LOW_RANK, 64 columns at a time. */
KN_AVX2 void low_rank_row_avx2(const float *a, int64_t sak, int64_t k, const float *Bp, int64_t N, float alpha,
                               const float *bias, float *c) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t j0 = 0;
  for (; j0 + 64 <= N; j0 += 64) {
    __m256 acc[8];
    for (int v = 0; v < 8; v++) acc[v] = _mm256_setzero_ps();
    for (int64_t q = 0; q < k; q++) {
      const __m256 x = _mm256_broadcast_ss(a + q * sak);
      const float *bq = Bp + q * N + j0;
      for (int v = 0; v < 8; v++) acc[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bq + v * 8), acc[v]);
    }
    for (int v = 0; v < 8; v++) {
      __m256 cv = _mm256_loadu_ps(c + j0 + v * 8);
      if (bias) cv = _mm256_add_ps(cv, _mm256_loadu_ps(bias + j0 + v * 8));
      _mm256_storeu_ps(c + j0 + v * 8, _mm256_fmadd_ps(va, acc[v], cv));
    }
  }
  for (; j0 < N; j0 += 8) {
    const __m256i m = first_lanes(N - j0);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t q = 0; q < k; q++)
      acc = _mm256_fmadd_ps(_mm256_broadcast_ss(a + q * sak), _mm256_maskload_ps(Bp + q * N + j0, m), acc);
    __m256 cv = _mm256_maskload_ps(c + j0, m);
    if (bias) cv = _mm256_add_ps(cv, _mm256_maskload_ps(bias + j0, m));
    _mm256_maskstore_ps(c + j0, m, _mm256_fmadd_ps(va, acc, cv));
  }
}

#endif

void rank_row(bool avx2, const float *a, int64_t n, const float *Bt, int64_t ldb, int64_t r8, float *out,
              float *copy = nullptr) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (avx2) return rank_row_avx2(a, n, Bt, ldb, r8, out, copy);
#endif
  rank_row_portable(a, n, Bt, ldb, r8, out, copy);
}

void tile_accumulate(bool avx2, const float *a, int64_t sa, int64_t n, const float *w, int64_t sw, int64_t rows,
                     float *C, int64_t ldc) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (avx2) return tile_accumulate_avx2(a, sa, n, w, sw, rows, C, ldc);
#endif
  tile_accumulate_portable(a, sa, n, w, sw, rows, C, ldc);
}

}  // namespace

namespace kn {

void narrow_accumulate(const kn_view *a, const kn_view *b, float alpha, float *c) {
  const int64_t M = a->shape[0], K = a->shape[1], n = b->shape[1], r8 = round8(n), ldb = padded_ld(K);
  std::vector<float> Bt((size_t)(r8 * ldb));
  pack_transposed((const float *)b->data, K, n, b->strides[0], b->strides[1], r8, ldb, Bt.data());
  const float *A = (const float *)a->data;
  const int64_t sam = a->strides[0], sak = a->strides[1];
  const bool avx2 = use_avx2();
  kn::parallel_for(M, GRAIN / (K + 1) + 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> out((size_t)r8), row(sak == 1 ? 0 : (size_t)K);
    for (int64_t i = r0; i < r1; i++) {
      const float *ai = A + i * sam;
      if (sak != 1) {
        for (int64_t k = 0; k < K; k++) row[k] = ai[k * sak];
        ai = row.data();
      }
      rank_row(avx2, ai, K, Bt.data(), ldb, r8, out.data());
      for (int64_t p = 0; p < n; p++) c[i * n + p] = fmaf(alpha, out[p], c[i * n + p]);
    }
  });
}

void low_rank_accumulate(const kn_view *a, const kn_view *b, float alpha, const float *bias, float *c) {
  const int64_t M = a->shape[0], k = a->shape[1], N = b->shape[1];
  std::vector<float> Bp((size_t)(k * N));
  pack_padded((const float *)b->data, k, N, b->strides[0], b->strides[1], N, Bp.data());
  const float *A = (const float *)a->data;
  const int64_t sam = a->strides[0], sak = a->strides[1];
  const bool avx2 = use_avx2();
  kn::parallel_for(M, GRAIN / N + 1, [&](int64_t r0, int64_t r1) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx2) {
      for (int64_t i = r0; i < r1; i++) low_rank_row_avx2(A + i * sam, sak, k, Bp.data(), N, alpha, bias, c + i * N);
      return;
    }
#endif
    low_rank_rows_portable(A, sam, sak, k, Bp.data(), N, alpha, bias, c, r0, r1);
  });
}

}  // namespace kn

extern "C" void kn_lora_backward_f32(const float *g, int64_t M, int64_t N, const float *sB, const float *t,
                                     const float *h, int64_t K, int64_t r, float *u, float *dB, float *dA) {
  if (N <= 0 || K <= 0 || r <= 0) return;
  if (M <= 0) {  // no rows: the sums are empty
    memset(dB, 0, sizeof(float) * (size_t)(N * r));
    memset(dA, 0, sizeof(float) * (size_t)(r * K));
    return;
  }
  const int64_t r8 = round8(r), ldg = padded_ld(N), ldh = padded_ld(K);
  const int64_t rows_per_task = task_rows(M), tasks = (M + rows_per_task - 1) / rows_per_task;
  const int64_t per_task = r8 * (ldg + ldh);
  std::vector<float> sBt((size_t)(r8 * ldg)), tp((size_t)(M * r8));
  pack_transposed(sB, N, r, r, 1, r8, ldg, sBt.data());
  pack_padded(t, M, r, r, 1, r8, tp.data());
  /* each task's dBᵀ [r8, ldg] and dA [r8, ldh]; added up in task order below */
  std::unique_ptr<float[]> partial(new float[(size_t)(tasks * per_task)]);
  const bool avx2 = use_avx2();
  kn::parallel_for(tasks, 1, [&](int64_t k0, int64_t k1) {
    /* a pass's rows of g, h and u, at strides that keep them apart in L1 (hb's padding stays zero) */
    std::vector<float> gb((size_t)(PASS_ROWS * ldg)), hb((size_t)(PASS_ROWS * ldh), 0.0f), ub((size_t)(PASS_ROWS * r8));
    for (int64_t task = k0; task < k1; task++) {
      float *dBt = partial.get() + task * per_task, *dAr = dBt + r8 * ldg;
      memset(dBt, 0, sizeof(float) * (size_t)per_task);
      const int64_t end = (task + 1) * rows_per_task < M ? (task + 1) * rows_per_task : M;
      for (int64_t i0 = task * rows_per_task; i0 < end; i0 += PASS_ROWS) {
        const int64_t rows = end - i0 < PASS_ROWS ? end - i0 : PASS_ROWS;
        for (int64_t q = 0; q < rows; q++) {
          rank_row(avx2, g + (i0 + q) * N, N, sBt.data(), ldg, r8, ub.data() + q * r8, gb.data() + q * ldg);  // u = g·sB
          for (int64_t p = 0; p < r; p++) u[(i0 + q) * r + p] = ub[q * r8 + p];
          memcpy(hb.data() + q * ldh, h + (i0 + q) * K, sizeof(float) * (size_t)K);
        }
        for (int64_t p0 = 0; p0 < r8; p0 += 8) {
          tile_accumulate(avx2, gb.data(), ldg, N, tp.data() + i0 * r8 + p0, r8, rows, dBt + p0 * ldg, ldg);  // gᵀ·t
          tile_accumulate(avx2, hb.data(), ldh, K, ub.data() + p0, r8, rows, dAr + p0 * ldh, ldh);  // uᵀ·h
        }
      }
    }
  });
  /* row p of dBᵀ (items 0 … r−1) and of dA (items r … 2r−1): the tasks' partials added in task order */
  kn::parallel_for(2 * r, 1, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; e++) {
      const bool of_b = e < r;
      const int64_t p = of_b ? e : e - r, len = of_b ? N : K, at = of_b ? p * ldg : r8 * ldg + p * ldh;
      std::vector<float> sum(partial.get() + at, partial.get() + at + len);
      for (int64_t task = 1; task < tasks; task++) {
        const float *part = partial.get() + task * per_task + at;
        for (int64_t j = 0; j < len; j++) sum[j] += part[j];
      }
      if (of_b)
        for (int64_t j = 0; j < N; j++) dB[j * r + p] = sum[j];
      else memcpy(dA + p * K, sum.data(), sizeof(float) * (size_t)K);
    }
  });
}
