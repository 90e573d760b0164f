/* Layer norm and RMS norm over the last axis, forward and backward (statistics in double). */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"

using namespace kn;

namespace {
inline int64_t grain_rows(int64_t C) { return GRAIN / (C > 0 ? C : 1) + 1; }

/* Row statistics are summed in double over LANES interleaved partial sums, combined in one fixed
   order: a serial sum would chain every add on the last (4 cycles each, 2 µs a row at C = 256), and
   the order is the same for every row, batch size and thread count. */
const int LANES = 16;

/* No fused multiply-adds in these rows (the AVX2/AVX-512 clones could contract them): the values
   stay those of the baseline build and of the unvectorised loops they replaced. */
#pragma GCC optimize("fp-contract=off")

inline double combine(const double *acc) {
  double s = 0;
  for (int l = 0; l < LANES; l++) s += acc[l];
  return s;
}

/* mean and 1/sqrt(var + eps) of one row (biased variance, two passes). */
KN_CLONES
void row_stats(const float *x, int64_t C, float eps, float *mean, float *rstd) {
  double acc[LANES] = {0};
  int64_t j = 0;
  for (; j + LANES <= C; j += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += x[j + l];
  for (int l = 0; j < C; j++, l++) acc[l] += x[j];
  double mu = C > 0 ? combine(acc) / (double)C : 0.0;
  double dev[LANES] = {0};
  for (j = 0; j + LANES <= C; j += LANES)
    for (int l = 0; l < LANES; l++) dev[l] += (x[j + l] - mu) * (x[j + l] - mu);
  for (int l = 0; j < C; j++, l++) dev[l] += (x[j] - mu) * (x[j] - mu);
  double rs = 1.0 / sqrt((C > 0 ? combine(dev) / (double)C : 0.0) + (double)eps);
  *mean = (float)mu;
  *rstd = (float)rs;
}

/* y = (x − m)·k·w + b over one row (w, b may be null). */
KN_CLONES
void normalize_row(const float *x, float m, float k, const float *w, const float *b, int64_t C, float *y) {
  for (int64_t j = 0; j < C; j++) {
    float h = (x[j] - m) * k;
    y[j] = h * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
  }
}

/* One row of dx = k·(dh − mean(dh) − x̂·mean(dh·x̂)), dh = g·w, x̂ = (x − m)·k; plus acc when given. */
KN_CLONES
void layer_norm_dx_row(const float *x, const float *g, const float *w, float m, float k, int64_t C,
                       const float *acc, float *dx) {
  double s1[LANES] = {0}, s2[LANES] = {0};  // Σ dh, Σ dh·x̂
  int64_t j = 0;
  for (; j + LANES <= C; j += LANES)
    for (int l = 0; l < LANES; l++) {
      float dh = g[j + l] * (w ? w[j + l] : 1.0f);
      s1[l] += dh;
      s2[l] += (double)dh * ((x[j + l] - m) * k);
    }
  for (int l = 0; j < C; j++, l++) {
    float dh = g[j] * (w ? w[j] : 1.0f);
    s1[l] += dh;
    s2[l] += (double)dh * ((x[j] - m) * k);
  }
  float a = C > 0 ? (float)(combine(s1) / (double)C) : 0.0f, c = C > 0 ? (float)(combine(s2) / (double)C) : 0.0f;
  for (j = 0; j < C; j++) {
    float dh = g[j] * (w ? w[j] : 1.0f);
    dx[j] = k * (dh - a - (x[j] - m) * k * c);
  }
  if (acc)
    for (j = 0; j < C; j++) dx[j] = acc[j] + dx[j];
}

/* sums[j] += g·x̂ and sums[C + j] += g over one row (the dw, db column sums). */
KN_CLONES
void layer_norm_param_row(const float *x, const float *g, float m, float k, int64_t C, double *sums) {
  for (int64_t j = 0; j < C; j++) {
    sums[j] += (double)g[j] * ((x[j] - m) * k);
    sums[C + j] += g[j];
  }
}

KN_CLONES
void add_rows(const float *x, const float *r, int64_t C, float *s) {
  for (int64_t j = 0; j < C; j++) s[j] = x[j] + r[j];
}

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
        add_rows(xr, r + i * C, C, sum + i * C);
        xr = sum + i * C;
      }
      float m, k;
      row_stats(xr, C, eps, &m, &k);
      normalize_row(xr, m, k, w, b, C, y + i * C);
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
  if (dw || db) {
    float *outs[2] = {dw, db};
    column_sums(rows, C, 2, outs, [&](int64_t r, double *sums) {
      if (dx) layer_norm_dx_row(x + r * C, g + r * C, w, mean[r], rstd[r], C, acc ? acc + r * C : nullptr, dx + r * C);
      layer_norm_param_row(x + r * C, g + r * C, mean[r], rstd[r], C, sums);
    });
  } else if (dx) {
    parallel_for(rows, grain_rows(C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++)
        layer_norm_dx_row(x + r * C, g + r * C, w, mean[r], rstd[r], C, acc ? acc + r * C : nullptr, dx + r * C);
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
