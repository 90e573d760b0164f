/* Reductions: sum/max/min over any set of axes, argmax/argmin and cumsum along one axis. */
#include <math.h>

#include <vector>

#include "internal.h"

using namespace kn;

namespace {

/* acc ← acc ∘ row, where the row maps onto acc with stride so (0 = every element into one slot). */
KN_CLONES
void sum_row(const float *x, int64_t sx, double *acc, int64_t so, int64_t n) {
  if (so == 0) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    if (sx == 1) {
      for (; i + 4 <= n; i += 4) { s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3]; }
    }
    for (; i < n; i++) s0 += x[i * sx];
    acc[0] += (s0 + s1) + (s2 + s3);
  } else if (sx == 1 && so == 1) {
    for (int64_t i = 0; i < n; i++) acc[i] += x[i];
  } else {
    for (int64_t i = 0; i < n; i++) acc[i * so] += x[i * sx];
  }
}

/* NaN wins: once NaN, the comparisons stay false. */
template <bool MAX>
void extreme_row(const float *x, int64_t sx, double *acc, int64_t so, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double v = x[i * sx];
    double &a = acc[i * so];
    if (MAX ? (v > a || v != v) : (v < a || v != v)) a = v;
  }
}

}  // namespace

extern "C" {

void kn_reduce_f32(kn_reduce_op op, const kn_view *x, uint32_t mask, float *out) {
  int nd = x->ndim;
  int64_t nout = 1;
  kn_view target;  // the output as a view of x's shape with stride 0 on reduced axes
  target.ndim = nd;
  target.data = out;
  for (int d = nd - 1; d >= 0; d--) {
    target.shape[d] = x->shape[d];
    bool reduced = (mask >> d) & 1u;
    target.strides[d] = reduced ? 0 : nout;
    if (!reduced) nout *= x->shape[d];
  }
  double init = op == KN_SUM ? 0.0 : op == KN_MAX ? -INFINITY : INFINITY;
  int64_t n = numel(x);
  if (nout == 0) return;
  if (n == 0) {
    for (int64_t i = 0; i < nout; i++) out[i] = (float)init;
    return;
  }
  Layout L;
  const kn_view *v[2] = {x, &target};
  coalesce(v, 2, &L);
  int64_t rows = rows_of(L);
  int T = kn_get_threads();
  int64_t parts = n >= 2 * GRAIN ? (rows < T ? rows : T) : 1;
  if (parts < 1) parts = 1;
  /* each part accumulates privately; parts are combined in order, so results do not depend on timing */
  std::vector<double> acc((size_t)(nout * parts), init);
  const float *X = (const float *)x->data;
  int nl = L.ndim;
  int64_t sx = L.strides[0][nl - 1], so = L.strides[1][nl - 1];
  parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      double *a = acc.data() + p * nout;
      for_rows(L, 2, rows * p / parts, rows * (p + 1) / parts, [&](const int64_t *off, int64_t len) {
        if (op == KN_SUM) sum_row(X + off[0], sx, a + off[1], so, len);
        else if (op == KN_MAX) extreme_row<true>(X + off[0], sx, a + off[1], so, len);
        else extreme_row<false>(X + off[0], sx, a + off[1], so, len);
      });
    }
  });
  for (int64_t p = 1; p < parts; p++) {
    const double *b = acc.data() + p * nout;
    for (int64_t i = 0; i < nout; i++) {
      double &a = acc[(size_t)i];
      if (op == KN_SUM) a += b[i];
      else if (a != a) continue;
      else if (op == KN_MAX ? (b[i] > a || b[i] != b[i]) : (b[i] < a || b[i] != b[i])) a = b[i];
    }
  }
  for (int64_t i = 0; i < nout; i++) out[i] = (float)acc[(size_t)i];
}

void kn_argreduce_f32(int is_min, const kn_view *x, int axis, int32_t *out) {
  /* iterate the other axes (as a view without `axis`) against the contiguous output */
  kn_view rest, o;
  rest.ndim = o.ndim = 0;
  rest.data = x->data;
  int64_t nout = 1;
  for (int d = 0; d < x->ndim; d++) {
    if (d == axis) continue;
    rest.shape[rest.ndim] = x->shape[d];
    rest.strides[rest.ndim++] = x->strides[d];
    nout *= x->shape[d];
  }
  int64_t len = x->shape[axis], sa = x->strides[axis];
  if (nout == 0) return;
  if (len == 0) {
    for (int64_t i = 0; i < nout; i++) out[i] = 0;
    return;
  }
  int64_t s = 1;
  o.ndim = rest.ndim;
  for (int d = rest.ndim - 1; d >= 0; d--) {
    o.shape[d] = rest.shape[d];
    o.strides[d] = s;
    s *= rest.shape[d];
  }
  Layout L;
  const kn_view *v[2] = {&rest, &o};
  coalesce(v, 2, &L);
  const float *X = (const float *)x->data;
  int nl = L.ndim;
  int64_t rows = rows_of(L);
  int64_t sx = L.strides[0][nl - 1], so = L.strides[1][nl - 1];
  parallel_for(rows, GRAIN / (len * L.shape[nl - 1]) + 1, [&](int64_t r0, int64_t r1) {
    for_rows(L, 2, r0, r1, [&](const int64_t *off, int64_t n) {
      for (int64_t j = 0; j < n; j++) {
        const float *p = X + off[0] + j * sx;
        float best = p[0];
        int32_t bi = 0;
        for (int64_t i = 1; i < len && best == best; i++) {
          float vv = p[i * sa];
          if (vv != vv || (is_min ? vv < best : vv > best)) {
            best = vv;
            bi = (int32_t)i;
          }
        }
        out[off[1] + j * so] = bi;
      }
    });
  });
}

void kn_cumsum_f32(const float *x, int64_t outer, int64_t n, int64_t inner, int reverse, float *out) {
  if (outer == 0 || n == 0 || inner == 0) return;
  /* threads own whole [n, inner] blocks; one double accumulator per column (as PyTorch's CPU
     kernel accumulates floats), so the inner loop runs along contiguous memory */
  parallel_for(outer, GRAIN / (n * inner) + 1, [&](int64_t o0, int64_t o1) {
    std::vector<double> acc((size_t)inner);
    for (int64_t o = o0; o < o1; o++) {
      for (int64_t j = 0; j < inner; j++) acc[(size_t)j] = 0.0;
      const float *xo = x + o * n * inner;
      float *yo = out + o * n * inner;
      for (int64_t t = 0; t < n; t++) {
        int64_t i = reverse ? n - 1 - t : t;
        const float *xr = xo + i * inner;
        float *yr = yo + i * inner;
        for (int64_t j = 0; j < inner; j++) {
          acc[(size_t)j] += xr[j];
          yr[j] = (float)acc[(size_t)j];
        }
      }
    }
  });
}

}  // extern "C"
