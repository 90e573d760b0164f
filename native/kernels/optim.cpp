/* Fused optimizer steps. */
#include <math.h>

#include <vector>

#include "internal.h"

using namespace kn;

namespace {
KN_CLONES
void adamw_range(float *p, const float *g, float *m, float *v, int64_t n, float b1, float b2, float eps,
                 float decay, float l2, float step_size, float inv_bc2_sqrt) {
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] + l2 * p[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) * inv_bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * mi / denom;
  }
}

KN_CLONES
double sum_squares(const float *x, int64_t n) {
  /* eight running sums (element i into sum i mod 8), added in a fixed order: vectorisable, and the
     same result on every run */
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += (double)x[i + j] * (double)x[i + j];
  for (int j = 0; i < n; i++, j++) s[j] += (double)x[i] * (double)x[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

KN_CLONES
void scale_range(float *x, int64_t n, double k) {
  for (int64_t i = 0; i < n; i++) x[i] = (float)((double)x[i] * k);
}

/* One parameter's update coefficients, from the hyperparameters as floats (as the binding passes them). */
struct AdamCoefs {
  float b1, b2, eps, decay, l2, step_size, inv;
};

AdamCoefs adam_coefs(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step, int decoupled) {
  /* PyTorch's order: decay the weights (AdamW) or add wd·p to the gradient (Adam), update the
     moments, then the bias-corrected step. */
  double bc1 = 1.0 - pow((double)beta1, (double)step), bc2 = 1.0 - pow((double)beta2, (double)step);
  AdamCoefs c;
  c.b1 = beta1;
  c.b2 = beta2;
  c.eps = eps;
  c.step_size = (float)(lr / bc1);
  c.inv = (float)(1.0 / sqrt(bc2));
  c.decay = decoupled ? 1.0f - lr * weight_decay : 1.0f;
  c.l2 = decoupled ? 0.0f : weight_decay;
  return c;
}

/* Elements per task of the many-tensor kernels: whole small tensors, large ones in pieces. */
const int64_t PIECE = GRAIN;

struct Piece {
  int64_t tensor, begin, end;
};

std::vector<Piece> pieces_of(int64_t count, const int64_t *n) {
  std::vector<Piece> out;
  for (int64_t t = 0; t < count; t++)
    for (int64_t b = 0; b < n[t]; b += PIECE) out.push_back({t, b, b + PIECE < n[t] ? b + PIECE : n[t]});
  return out;
}
}  // namespace

extern "C" void kn_adamw_f32(float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, int64_t step, int decoupled) {
  AdamCoefs c = adam_coefs(lr, beta1, beta2, eps, weight_decay, step, decoupled);
  parallel_for(n, GRAIN, [&](int64_t i0, int64_t i1) {
    adamw_range(param + i0, grad + i0, m + i0, v + i0, i1 - i0, c.b1, c.b2, c.eps, c.decay, c.l2, c.step_size, c.inv);
  });
}

/* kn_adamw_f32 on each of `count` tensors in one call: the same arithmetic per element, so the
   results are those of the per-tensor calls bit for bit; the work is split in pieces across the pool. */
extern "C" void kn_adamw_many_f32(int64_t count, float *const *param, const float *const *grad, float *const *m,
                                  float *const *v, const int64_t *n, const double *hyper) {
  std::vector<AdamCoefs> c((size_t)count);
  for (int64_t t = 0; t < count; t++) {
    const double *h = hyper + 7 * t;
    c[t] = adam_coefs((float)h[0], (float)h[1], (float)h[2], (float)h[3], (float)h[4], (int64_t)h[5], (int)h[6]);
  }
  std::vector<Piece> work = pieces_of(count, n);
  parallel_for((int64_t)work.size(), 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; w++) {
      const Piece &q = work[w];
      const AdamCoefs &k = c[q.tensor];
      int64_t i = q.begin;
      adamw_range(param[q.tensor] + i, grad[q.tensor] + i, m[q.tensor] + i, v[q.tensor] + i, q.end - i, k.b1, k.b2,
                  k.eps, k.decay, k.l2, k.step_size, k.inv);
    }
  });
}

/* Σ x² over `count` arrays, each piece summed in double, the pieces added in order: the result
   depends on the arrays only, not on the thread count. */
extern "C" double kn_sum_squares_many_f32(int64_t count, const float *const *x, const int64_t *n) {
  std::vector<Piece> work = pieces_of(count, n);
  std::vector<double> part(work.size(), 0.0);
  parallel_for((int64_t)work.size(), 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; w++) part[w] = sum_squares(x[work[w].tensor] + work[w].begin, work[w].end - work[w].begin);
  });
  double total = 0.0;
  for (double p : part) total += p;
  return total;
}

/* x ← x·k in place over `count` arrays, the product taken in double and rounded once (as a JS
   loop over a Float32Array computes it). */
extern "C" void kn_scale_many_f32(int64_t count, float *const *x, const int64_t *n, double k) {
  std::vector<Piece> work = pieces_of(count, n);
  parallel_for((int64_t)work.size(), 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; w++) scale_range(x[work[w].tensor] + work[w].begin, work[w].end - work[w].begin, k);
  });
}
