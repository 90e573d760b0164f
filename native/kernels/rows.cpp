/* Row gather (embedding lookup) and its gradient, scatter-add of rows. */
#include <string.h>

#include "internal.h"

using namespace kn;

namespace {
inline int64_t id_at(const void *ids, int ids64, int64_t i) {
  return ids64 ? ((const int64_t *)ids)[i] : (int64_t)((const int32_t *)ids)[i];
}
}  // namespace

extern "C" {

void kn_gather_rows_f32(const kn_view *table, const void *ids, int ids64, int64_t n, float *out) {
  int64_t C = table->shape[1], sr = table->strides[0], sc = table->strides[1];
  const float *T = (const float *)table->data;
  if (C == 0) return;
  parallel_for(n, GRAIN / C + 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float *row = T + id_at(ids, ids64, i) * sr;
      float *o = out + i * C;
      if (sc == 1) memcpy(o, row, sizeof(float) * (size_t)C);
      else for (int64_t c = 0; c < C; c++) o[c] = row[c * sc];
    }
  });
}

void kn_scatter_add_rows_f32(const kn_view *src, const void *ids, int ids64, int64_t n, int64_t rows, float *out) {
  int64_t C = src->shape[1], sr = src->strides[0], sc = src->strides[1];
  const float *S = (const float *)src->data;
  memset(out, 0, sizeof(float) * (size_t)(rows * C));
  if (C == 0 || n == 0) return;
  /* threads own column ranges, so duplicate ids never race; each thread keeps the row order */
  parallel_for(C, n * C >= GRAIN && C >= 64 ? 32 : C, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; i++) {
      float *o = out + id_at(ids, ids64, i) * C;
      const float *s = S + i * sr;
      if (sc == 1) for (int64_t c = c0; c < c1; c++) o[c] += s[c];
      else for (int64_t c = c0; c < c1; c++) o[c] += s[c * sc];
    }
  });
}

}  // extern "C"
