/*
 * Causal self-attention over [BH, T, D] (batch·heads flattened), forward and backward, with the
 * softmax kept row by row (one pass of online max/sum per query) so no [T, T] matrix is stored.
 * Query row i attends to keys 0 … i.
 */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"
#include "mathf.h"

using namespace kn;

namespace {
KN_CLONES
float dot(const float *a, const float *b, int64_t D) {
  float s = 0.0f;
  for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
  return s;
}

KN_CLONES
void axpy(float a, const float *x, float *y, int64_t D) {
  for (int64_t d = 0; d < D; d++) y[d] += a * x[d];
}
}  // namespace

extern "C" {

void kn_causal_attention_f32(const float *q, const float *k, const float *v, int64_t BH, int64_t T, int64_t D,
                             float scale, float *out, float *lse) {
  parallel_for(BH * T, GRAIN / (T * D + 1) + 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> s((size_t)T);
    for (int64_t r = r0; r < r1; r++) {
      int64_t h = r / T, i = r % T;
      const float *qi = q + r * D, *K = k + h * T * D, *V = v + h * T * D;
      float m = -INFINITY;
      for (int64_t j = 0; j <= i; j++) {
        s[j] = scale * dot(qi, K + j * D, D);
        m = s[j] > m || s[j] != s[j] ? s[j] : m;
      }
      float *o = out + r * D;
      memset(o, 0, sizeof(float) * (size_t)D);
      double sum = 0;
      float shift = m == -INFINITY || m == INFINITY ? 0.0f : m;
      for (int64_t j = 0; j <= i; j++) {
        s[j] = expf_fast(s[j] - shift);
        sum += s[j];
      }
      float inv = (float)(1.0 / sum);
      for (int64_t j = 0; j <= i; j++) axpy(s[j] * inv, V + j * D, o, D);
      if (lse) lse[r] = shift + (float)log(sum);
    }
  });
}

void kn_causal_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                                      const float *lse, const float *g, int64_t BH, int64_t T, int64_t D, float scale,
                                      float *dq, float *dk, float *dv) {
  size_t total = (size_t)(BH * T * D);
  memset(dq, 0, sizeof(float) * total);
  memset(dk, 0, sizeof(float) * total);
  memset(dv, 0, sizeof(float) * total);
  /* heads are independent: one head per task */
  parallel_for(BH, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; h++) {
      const int64_t base = h * T * D;
      const float *Q = q + base, *K = k + base, *V = v + base, *O = out + base, *G = g + base;
      float *dQ = dq + base, *dK = dk + base, *dV = dv + base;
      for (int64_t i = 0; i < T; i++) {
        const float *qi = Q + i * D, *gi = G + i * D;
        float Di = dot(gi, O + i * D, D);  // Σ_j P_ij dP_ij = g_i · out_i
        float l = lse[h * T + i];
        for (int64_t j = 0; j <= i; j++) {
          float p = expf_fast(scale * dot(qi, K + j * D, D) - l);
          axpy(p, gi, dV + j * D, D);
          float dp = dot(gi, V + j * D, D);
          float ds = p * (dp - Di) * scale;
          axpy(ds, K + j * D, dQ + i * D, D);
          axpy(ds, qi, dK + j * D, D);
        }
      }
    }
  });
}

}  // extern "C"
