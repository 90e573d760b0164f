/* Softmax and log-softmax over the last axis (with backwards), and fused cross-entropy. */
#include <math.h>

#include "internal.h"
#include "mathf.h"

using namespace kn;

namespace kn {

KN_CLONES
double exp_shift_row(const float *x, float shift, float *y, int64_t n) {
  for (int64_t j = 0; j < n; j++) y[j] = expf_fast(x[j] - shift);
  double s = 0;
  for (int64_t j = 0; j < n; j++) s += y[j];
  return s;
}

KN_CLONES
void scale_row(float *y, float k, int64_t n) {
  for (int64_t j = 0; j < n; j++) y[j] *= k;
}

}  // namespace kn

namespace {

KN_CLONES
float row_max(const float *x, int64_t C) {
  float m = -INFINITY;
  for (int64_t j = 0; j < C; j++) m = x[j] > m ? x[j] : m;
  return m;
}

bool has_nan(const float *x, int64_t C) {
  for (int64_t j = 0; j < C; j++)
    if (x[j] != x[j]) return true;
  return false;
}

/* Row max that is safe when every entry is −Inf (then the shift is 0, and exp gives 0s or NaN as
   PyTorch does). */
inline float safe_max(const float *x, int64_t C) {
  float m = row_max(x, C);
  return m == -INFINITY || m == INFINITY ? (m == INFINITY ? m : 0.0f) : m;
}

inline int64_t grain_rows(int64_t C) { return GRAIN / (C > 0 ? C : 1) + 1; }

/* No fused multiply-adds from here on (the AVX2/AVX-512 clones could contract them): the row's
   exponentials are those of the baseline build. */
#pragma GCC optimize("fp-contract=off")

/*
 * One row of cross-entropy: returns lse − x[t] (in double) and, with dr, writes dlogits =
 * softmax · inv, minus inv at the target. Σ exp is summed over 16 interleaved double partial sums
 * combined in a fixed order (a serial sum chains every add); the gradient reuses the row's f32
 * exponentials, scaled by inv / Σ (within a few ulp of exp(x − lse)·inv, without a libm exp per
 * element).
 */
KN_CLONES
double cross_entropy_row(const float *x, int64_t C, int64_t t, float inv, float *dr) {
  const int LANES = 16;
  float m = safe_max(x, C);
  double acc[LANES] = {0};
  int64_t j = 0;
  for (; j + LANES <= C; j += LANES)
    for (int l = 0; l < LANES; l++) {
      float e = expf_fast(x[j + l] - m);
      if (dr) dr[j + l] = e;
      acc[l] += e;
    }
  for (int l = 0; j < C; j++, l++) {
    float e = expf_fast(x[j] - m);
    if (dr) dr[j] = e;
    acc[l] += e;
  }
  double s = 0;
  for (int l = 0; l < LANES; l++) s += acc[l];
  if (dr) {
    float k = (float)((double)inv / s);
    for (j = 0; j < C; j++) dr[j] *= k;
    dr[t] -= inv;
  }
  return m + log(s) - x[t];
}

}  // namespace

extern "C" {

void kn_softmax_f32(const float *x, int64_t rows, int64_t C, float *out) {
  parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *xr = x + r * C;
      float *y = out + r * C;
      float m = safe_max(xr, C);
      double s = exp_shift_row(xr, m, y, C);
      if (has_nan(xr, C)) s = NAN;
      scale_row(y, (float)(1.0 / s), C);
    }
  });
}

void kn_log_softmax_f32(const float *x, int64_t rows, int64_t C, float *out) {
  parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *xr = x + r * C;
      float *y = out + r * C;
      float m = safe_max(xr, C);
      double s = exp_shift_row(xr, m, y, C);
      /* (x − m) − log s, not x − (m + log s): with large m the rounding of m + log s in f32 would
         cost up to an ulp of m in every output */
      float ls = (float)log(s);
      if (has_nan(xr, C)) ls = NAN;
      for (int64_t j = 0; j < C; j++) y[j] = (xr[j] - m) - ls;
    }
  });
}

void kn_softmax_backward_f32(const float *y, const float *g, int64_t rows, int64_t C, float *dx) {
  parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *yr = y + r * C, *gr = g + r * C;
      double dot = 0;
      for (int64_t j = 0; j < C; j++) dot += (double)gr[j] * yr[j];
      float d = (float)dot;
      for (int64_t j = 0; j < C; j++) dx[r * C + j] = yr[j] * (gr[j] - d);
    }
  });
}

void kn_log_softmax_backward_f32(const float *y, const float *g, int64_t rows, int64_t C, float *dx) {
  parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *yr = y + r * C, *gr = g + r * C;
      double s = 0;
      for (int64_t j = 0; j < C; j++) s += gr[j];
      float sf = (float)s;
      for (int64_t j = 0; j < C; j++) dx[r * C + j] = gr[j] - expf_fast(yr[j]) * sf;
    }
  });
}

float kn_cross_entropy_f32(const float *logits, const int32_t *t, int64_t rows, int64_t C, int32_t ignore,
                           float *dlogits) {
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; r++) counted += t[r] != ignore;
  /* per-row losses summed per part in a fixed split, so the result does not depend on timing */
  const int64_t parts = 64;
  double partial[parts] = {0};
  const float inv = counted > 0 ? 1.0f / (float)counted : NAN;  // no counted rows: NaN, as PyTorch's mean
  parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      double acc = 0;
      for (int64_t r = rows * p / parts; r < rows * (p + 1) / parts; r++) {
        const float *xr = logits + r * C;
        float *dr = dlogits ? dlogits + r * C : nullptr;
        if (t[r] == ignore) {
          if (dr) for (int64_t j = 0; j < C; j++) dr[j] = 0.0f;
          continue;
        }
        acc += cross_entropy_row(xr, C, t[r], inv, dr);
      }
      partial[p] = acc;
    }
  });
  double total = 0;
  for (int64_t p = 0; p < parts; p++) total += partial[p];
  return counted > 0 ? (float)(total / (double)counted) : NAN;
}

}  // extern "C"
