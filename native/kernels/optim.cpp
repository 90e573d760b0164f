/* Fused optimizer steps. */
#include <math.h>

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
}  // namespace

extern "C" void kn_adamw_f32(float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, int64_t step, int decoupled) {
  /* PyTorch's order: decay the weights (AdamW) or add wd·p to the gradient (Adam), update the
     moments, then the bias-corrected step. */
  double bc1 = 1.0 - pow((double)beta1, (double)step), bc2 = 1.0 - pow((double)beta2, (double)step);
  float step_size = (float)(lr / bc1), inv = (float)(1.0 / sqrt(bc2));
  float decay = decoupled ? 1.0f - lr * weight_decay : 1.0f, l2 = decoupled ? 0.0f : weight_decay;
  parallel_for(n, GRAIN, [&](int64_t i0, int64_t i1) {
    adamw_range(param + i0, grad + i0, m + i0, v + i0, i1 - i0, beta1, beta2, eps, decay, l2, step_size, inv);
  });
}
