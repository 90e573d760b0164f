/* Layer norm and RMS norm over the last axis, forward and backward (statistics in double). */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"

using namespace kn;

namespace {
inline int64_t grain_rows(int64_t C) { return GRAIN / (C > 0 ? C : 1) + 1; }

/* Σ over rows of per-part private [C] accumulators, for dw/db: rows split into fixed parts. */
template <class F>
void column_sums(int64_t rows, int64_t C, int nacc, float *const *outs, const F &row) {
  int64_t parts = kn_get_threads();
  if (rows * C < 2 * GRAIN || parts < 2) parts = 1;
  if (parts > rows) parts = rows > 0 ? rows : 1;
  std::vector<double> acc((size_t)(parts * nacc * C), 0.0);
  parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++)
      for (int64_t r = rows * p / parts; r < rows * (p + 1) / parts; r++) row(r, acc.data() + p * nacc * C);
  });
  for (int k = 0; k < nacc; k++) {
    if (!outs[k]) continue;
    for (int64_t j = 0; j < C; j++) {
      double s = 0;
      for (int64_t p = 0; p < parts; p++) s += acc[(size_t)((p * nacc + k) * C + j)];
      outs[k][j] = (float)s;
    }
  }
}
}  // namespace

extern "C" {

void kn_layer_norm_f32(const float *x, const float *w, const float *b, int64_t rows, int64_t C, float eps, float *y,
                       float *mean, float *rstd) {
  kn_add_layer_norm_f32(x, nullptr, w, b, rows, C, eps, nullptr, y, mean, rstd);
}

/* With r: s = x + r is written to `sum` and normalised while its row is in cache (a residual add
   and the next LayerNorm in one pass over memory); the same floats as the add, then the norm. */
void kn_add_layer_norm_f32(const float *x, const float *r, const float *w, const float *b, int64_t rows, int64_t C,
                           float eps, float *sum, float *y, float *mean, float *rstd) {
  parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      const float *xr = x + i * C;
      if (r) {
        float *sr = sum + i * C;
        const float *rr = r + i * C;
        for (int64_t j = 0; j < C; j++) sr[j] = xr[j] + rr[j];
        xr = sr;
      }
      double s = 0;
      for (int64_t j = 0; j < C; j++) s += xr[j];
      double mu = C > 0 ? s / (double)C : 0.0;
      double v = 0;
      for (int64_t j = 0; j < C; j++) v += (xr[j] - mu) * (xr[j] - mu);
      double rs = 1.0 / sqrt((C > 0 ? v / (double)C : 0.0) + (double)eps);
      float m = (float)mu, k = (float)rs;
      float *yr = y + i * C;
      for (int64_t j = 0; j < C; j++) {
        float h = (xr[j] - m) * k;
        yr[j] = h * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
      }
      if (mean) mean[i] = m;
      if (rstd) rstd[i] = k;
    }
  });
}

/* With acc (the gradient already collected for x, e.g. through a residual connection), dx = acc +
   the norm's own gradient: the same float sum as adding the two afterwards, without the extra pass.
   dx and the dw/db column sums come from one pass over x and g when both are wanted. */
void kn_layer_norm_backward_f32(const float *x, const float *w, const float *mean, const float *rstd, const float *g,
                                int64_t rows, int64_t C, float *dx, float *dw, float *db, const float *acc) {
  auto dx_row = [&](int64_t r) {
    const float *xr = x + r * C, *gr = g + r * C;
    float m = mean[r], k = rstd[r];
    double s1 = 0, s2 = 0;  // Σ dxhat, Σ dxhat·xhat
    for (int64_t j = 0; j < C; j++) {
      float dh = gr[j] * (w ? w[j] : 1.0f);
      s1 += dh;
      s2 += (double)dh * ((xr[j] - m) * k);
    }
    float a = C > 0 ? (float)(s1 / (double)C) : 0.0f, c = C > 0 ? (float)(s2 / (double)C) : 0.0f;
    float *dr = dx + r * C;
    for (int64_t j = 0; j < C; j++) {
      float dh = gr[j] * (w ? w[j] : 1.0f);
      dr[j] = k * (dh - a - (xr[j] - m) * k * c);
    }
    if (acc) {
      const float *ar = acc + r * C;
      for (int64_t j = 0; j < C; j++) dr[j] = ar[j] + dr[j];
    }
  };
  if (dw || db) {
    float *outs[2] = {dw, db};
    column_sums(rows, C, 2, outs, [&](int64_t r, double *sums) {
      if (dx) dx_row(r);
      const float *xr = x + r * C, *gr = g + r * C;
      float m = mean[r], k = rstd[r];
      for (int64_t j = 0; j < C; j++) {
        sums[j] += (double)gr[j] * ((xr[j] - m) * k);
        sums[C + j] += gr[j];
      }
    });
  } else if (dx) {
    parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) dx_row(r);
    });
  }
}

void kn_rms_norm_f32(const float *x, const float *w, int64_t rows, int64_t C, float eps, float *y, float *rstd) {
  parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float *xr = x + r * C;
      double s = 0;
      for (int64_t j = 0; j < C; j++) s += (double)xr[j] * xr[j];
      float k = (float)(1.0 / sqrt((C > 0 ? s / (double)C : 0.0) + (double)eps));
      for (int64_t j = 0; j < C; j++) y[r * C + j] = xr[j] * k * (w ? w[j] : 1.0f);
      if (rstd) rstd[r] = k;
    }
  });
}

void kn_rms_norm_backward_f32(const float *x, const float *w, const float *rstd, const float *g, int64_t rows,
                              int64_t C, float *dx, float *dw) {
  if (dx) {
    parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * C, *gr = g + r * C;
        float k = rstd[r];
        double s = 0;  // Σ dxhat·xhat
        for (int64_t j = 0; j < C; j++) s += (double)gr[j] * (w ? w[j] : 1.0f) * (xr[j] * k);
        float c = C > 0 ? (float)(s / (double)C) : 0.0f;
        for (int64_t j = 0; j < C; j++) dx[r * C + j] = k * (gr[j] * (w ? w[j] : 1.0f) - xr[j] * k * c);
      }
    });
  }
  if (dw) {
    float *outs[1] = {dw};
    column_sums(rows, C, 1, outs, [&](int64_t r, double *acc) {
      const float *xr = x + r * C, *gr = g + r * C;
      float k = rstd[r];
      for (int64_t j = 0; j < C; j++) acc[j] += (double)gr[j] * (xr[j] * k);
    });
  }
}

}  // extern "C"
