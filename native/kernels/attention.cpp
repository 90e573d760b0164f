/*
 * Causal self-attention over [BH, T, D] (batch·heads flattened), forward and backward. Query row i
 * attends to keys 0 … i.
 *
 * Work goes in blocks of QB query rows: for the block [i0, i1) only keys 0 … i1 − 1 can be seen,
 * so the scores S = scale·Q_blk·K[0:i1]ᵀ (a [QB, i1] tile, the only score memory, per thread) and
 * the products with V are single-threaded GEMMs through the library (kn_sgemm_serial) — about
 * half the flops of the full T×T product, at GEMM speed. The softmax runs row by row on the tile
 * (masked entries set to 0). The backward recomputes each tile's probabilities from the forward's
 * log-sum-exp instead of storing them.
 */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"
#include "mathf.h"

using namespace kn;

namespace {

const int64_t QB = 64;  // query rows per tile

KN_CLONES
float dot(const float *a, const float *b, int64_t D) {
  float s = 0.0f;
  for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
  return s;
}

/* ds[j] = p[j]·(dp[j] − di)·scale, in place over dp. */
KN_CLONES
void ds_row(const float *p, float *dp, float di, float scale, int64_t n) {
  for (int64_t j = 0; j < n; j++) dp[j] = p[j] * (dp[j] - di) * scale;
}

inline int64_t blocks_of(int64_t T) { return (T + QB - 1) / QB; }

}  // namespace

extern "C" {

void kn_causal_attention_f32(const float *q, const float *k, const float *v, int64_t BH, int64_t T, int64_t D,
                             float scale, float *out, float *lse) {
  if (BH <= 0 || T <= 0) return;
  if (D <= 0) {
    if (lse) for (int64_t r = 0; r < BH * T; r++) lse[r] = logf((float)(r % T + 1));  // all scores 0
    return;
  }
  const int64_t nb = blocks_of(T);
  /* one task per (head, query block); the scores tile is per thread */
  parallel_for(BH * nb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> tile((size_t)(QB * T));
    for (int64_t t = t0; t < t1; t++) {
      const int64_t h = t / nb, i0 = (t % nb) * QB, i1 = i0 + QB < T ? i0 + QB : T, rows = i1 - i0;
      const float *Q = q + (h * T + i0) * D, *K = k + h * T * D, *V = v + h * T * D;
      float *S = tile.data();
      /* S [rows, i1] = scale · Q_blk · K[0:i1]ᵀ */
      kn_sgemm_serial(0, 1, rows, i1, D, scale, Q, D, K, D, 0.0f, S, i1);
      for (int64_t r = 0; r < rows; r++) {
        const int64_t i = i0 + r, n = i + 1;
        float *s = S + r * i1;
        float m = -INFINITY;
        bool nan = false;
        for (int64_t j = 0; j < n; j++) {
          m = s[j] > m ? s[j] : m;
          nan |= s[j] != s[j];
        }
        float shift = m == -INFINITY || m == INFINITY ? 0.0f : m;
        double sum = exp_shift_row(s, shift, s, n);
        if (nan) sum = NAN;
        scale_row(s, (float)(1.0 / sum), n);
        memset(s + n, 0, sizeof(float) * (size_t)(i1 - n));
        if (lse) lse[h * T + i] = shift + (float)log(sum);
      }
      /* out_blk [rows, D] = P [rows, i1] · V[0:i1] */
      kn_sgemm_serial(0, 0, rows, D, i1, 1.0f, S, i1, V, D, 0.0f, out + (h * T + i0) * D, D);
    }
  });
}

void kn_causal_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                                      const float *lse, const float *g, int64_t BH, int64_t T, int64_t D,
                                      float scale, float *dq, float *dk, float *dv) {
  size_t total = (size_t)(BH * T * D);
  if (total == 0) return;
  memset(dk, 0, sizeof(float) * total);
  memset(dv, 0, sizeof(float) * total);
  const int64_t nb = blocks_of(T);
  /* heads are independent (dk, dv sum over a head's query blocks): one head per task */
  parallel_for(BH, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> P((size_t)(QB * T)), dP((size_t)(QB * T));
    for (int64_t h = h0; h < h1; h++) {
      const int64_t base = h * T * D;
      const float *Q = q + base, *K = k + base, *V = v + base, *O = out + base, *G = g + base;
      float *dQ = dq + base, *dK = dk + base, *dV = dv + base;
      for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * QB, i1 = i0 + QB < T ? i0 + QB : T, rows = i1 - i0;
        float *p = P.data(), *dp = dP.data();
        /* P = exp(scale · Q_blk · K[0:i1]ᵀ − lse), 0 above the diagonal */
        kn_sgemm_serial(0, 1, rows, i1, D, scale, Q + i0 * D, D, K, D, 0.0f, p, i1);
        for (int64_t r = 0; r < rows; r++) {
          const int64_t i = i0 + r, n = i + 1;
          float *pr = p + r * i1;
          float l = lse[h * T + i];
          for (int64_t j = 0; j < n; j++) pr[j] = expf_fast(pr[j] - l);
          memset(pr + n, 0, sizeof(float) * (size_t)(i1 - n));
        }
        /* dV[0:i1] += Pᵀ · G_blk */
        kn_sgemm_serial(1, 0, i1, D, rows, 1.0f, p, i1, G + i0 * D, D, 1.0f, dV, D);
        /* dP = G_blk · V[0:i1]ᵀ; dS = P ⊙ (dP − Σ_d g·out) · scale (in dp) */
        kn_sgemm_serial(0, 1, rows, i1, D, 1.0f, G + i0 * D, D, V, D, 0.0f, dp, i1);
        for (int64_t r = 0; r < rows; r++) {
          const int64_t i = i0 + r;
          float di = dot(G + i * D, O + i * D, D);
          ds_row(p + r * i1, dp + r * i1, di, scale, i1);
        }
        /* dQ_blk = dS · K[0:i1]; dK[0:i1] += dSᵀ · Q_blk */
        kn_sgemm_serial(0, 0, rows, D, i1, 1.0f, dp, i1, K, D, 0.0f, dQ + i0 * D, D);
        kn_sgemm_serial(1, 0, i1, D, rows, 1.0f, dp, i1, Q + i0 * D, D, 1.0f, dK, D);
      }
    }
  });
}

}  // extern "C"
