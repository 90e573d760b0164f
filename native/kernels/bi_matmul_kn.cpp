/*
 * The batch-invariant product for weights stored [in, out] (GPT-2's Conv1D layout): y [M, N] =
 * x [M, K] · W with W [K, N], so a GPT-2 model is served batched without a transposed copy of its
 * weights.
 *
 * Every output element is one chain over k = 0 … K−1 in order, from 0: acc = fma(x[m,k], w[k,n],
 * acc), one rounding per step. Tiles (rows × 8-lane column vectors, AVX2 + FMA) only interleave
 * independent chains, the column tails run the same chain one element at a time, and threads split
 * whole column chunks: an element's bits depend on its row of x, its column of W and K — never on
 * M, on the tile it fell in, or on the thread count. Without AVX2 the same chain runs through
 * fmaf (a single instruction on arm64, exact in libm elsewhere), so the bits do not depend on the
 * CPU either. (kn_bi_matmul_f32, for [out, in], sums 16 lanes instead; each order is fixed.)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

using namespace kn;

namespace {

/* Columns a thread's job covers: a multiple of every tile width below. */
const int64_t CHUNK = 64;

#if defined(__x86_64__) && defined(__GNUC__)

/* MR rows × NV vectors of 8 columns from column n0 over k in [k0, k1), in registers: from 0 when
   k0 = 0, else from where the previous rows of W left them in y (an f32 store and load change
   nothing, so each element's chain is the one over all of K). */
template <int MR, int NV>
KN_AVX2 inline __attribute__((always_inline)) void tile(const float *x, int64_t K, const float *w, int64_t N,
                                                        int64_t n0, int64_t k0, int64_t k1, float *y) {
  __m256 acc[MR][NV];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NV; j++) acc[i][j] = k0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + i * N + n0 + 8 * j);
  for (int64_t k = k0; k < k1; k++) {
    __m256 wv[NV];
    for (int j = 0; j < NV; j++) wv[j] = _mm256_loadu_ps(w + k * N + n0 + 8 * j);
    for (int i = 0; i < MR; i++) {
      const __m256 xb = _mm256_broadcast_ss(x + i * K + k);
      for (int j = 0; j < NV; j++) acc[i][j] = _mm256_fmadd_ps(xb, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NV; j++) _mm256_storeu_ps(y + i * N + n0 + 8 * j, acc[i][j]);
}

/* MR rows over columns [n0, n1) and k in [k0, k1): tiles of NV vectors, then single vectors, then
   single columns. */
template <int MR, int NV>
KN_AVX2 void rows_fma(const float *x, int64_t K, const float *w, int64_t N, int64_t n0, int64_t n1, int64_t k0,
                      int64_t k1, float *y) {
  int64_t n = n0;
  for (; n + 8 * NV <= n1; n += 8 * NV) tile<MR, NV>(x, K, w, N, n, k0, k1, y);
  for (; n + 8 <= n1; n += 8) tile<MR, 1>(x, K, w, N, n, k0, k1, y);
  for (; n < n1; n++)
    for (int i = 0; i < MR; i++) {
      __m128 acc = k0 == 0 ? _mm_setzero_ps() : _mm_load_ss(y + i * N + n);
      for (int64_t k = k0; k < k1; k++) acc = _mm_fmadd_ss(_mm_load_ss(x + i * K + k), _mm_load_ss(w + k * N + n), acc);
      _mm_store_ss(y + i * N + n, acc);
    }
}

/* Rows [0, M) over columns [n0, n1), KB = 16 rows of W at a time: those rows' segments are read as
   16 sequential streams (a tile walking all of K would touch a new page of W at every k, each row
   of W being N·4 bytes on). One row takes tiles of 64 columns (the weight stream is the work; eight
   chains hide the FMA latency); more take 32 columns in groups of three rows, each 16 × 32 block of
   W staying in L1 while the groups pass over it. */
KN_AVX2 void columns_fma(const float *x, int64_t M, int64_t K, const float *w, int64_t N, int64_t n0, int64_t n1,
                         float *y) {
  const int64_t KB = 16;
  for (int64_t k0 = 0; k0 < K; k0 += KB) {
    const int64_t k1 = k0 + KB < K ? k0 + KB : K;
    if (M == 1) {
      rows_fma<1, 8>(x, K, w, N, n0, n1, k0, k1, y);
      continue;
    }
    for (int64_t c = n0; c < n1; c += 32) {
      const int64_t c1 = c + 32 < n1 ? c + 32 : n1;
      int64_t m = 0;
      for (; m + 3 <= M; m += 3) rows_fma<3, 4>(x + m * K, K, w, N, c, c1, k0, k1, y + m * N);
      if (M - m == 2) rows_fma<2, 4>(x + m * K, K, w, N, c, c1, k0, k1, y + m * N);
      if (M - m == 1) rows_fma<1, 4>(x + m * K, K, w, N, c, c1, k0, k1, y + m * N);
    }
  }
}

#endif

/* The same chains without the AVX2 tiles, a row at a time. */
void columns_plain(const float *x, int64_t M, int64_t K, const float *w, int64_t N, int64_t n0, int64_t n1, float *y) {
  for (int64_t m = 0; m < M; m++) {
    float *ym = y + m * N;
    for (int64_t n = n0; n < n1; n++) ym[n] = 0.0f;
    for (int64_t k = 0; k < K; k++) {
      const float xv = x[m * K + k];
      const float *wk = w + k * N;
      for (int64_t n = n0; n < n1; n++) ym[n] = fmaf(xv, wk[n], ym[n]);
    }
  }
}

}  // namespace

void kn_bi_matmul_kn_f32(const float *x, int64_t M, int64_t K, const float *w, int64_t N, float *y) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return (void)memset(y, 0, (size_t)(M * N) * sizeof(float));  // an empty sum, as columns_plain gives
  const int64_t chunks = (N + CHUNK - 1) / CHUNK, per_chunk = M * K * CHUNK;
  const int64_t grain = per_chunk >= 65536 ? 1 : 65536 / (per_chunk > 0 ? per_chunk : 1);
  auto columns = columns_plain;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool tiles = have_avx2_fma() && !getenv("KNOBS_BI_NO_AVX2");  // a test compares the two paths
  if (tiles) columns = columns_fma;
#endif
  parallel_for(chunks, grain, [&](int64_t c0, int64_t c1) {
    columns(x, M, K, w, N, c0 * CHUNK, c1 * CHUNK < N ? c1 * CHUNK : N, y);
  });
}
