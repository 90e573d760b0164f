/* Shared helpers of the kernel files: the thread pool, view iteration, ISA dispatch macros. */
#ifndef KNOBS_INTERNAL_H
#define KNOBS_INTERNAL_H

#include <stdint.h>
#include <string.h>
#include "../kernels.h"

namespace kn {

/* Runs fn(begin, end) over [0, n) split into at most kn_get_threads() contiguous chunks, on the
   shared pool. Work below `grain` items (or called from inside a pool job) runs inline. */
typedef void (*range_fn)(void *ctx, int64_t begin, int64_t end);
void parallel_range(int64_t n, int64_t grain, range_fn fn, void *ctx);

template <class F>
inline void parallel_for(int64_t n, int64_t grain, const F &f) {
  if (n <= 0) return;
  parallel_range(n, grain, [](void *c, int64_t b, int64_t e) { (*static_cast<const F *>(c))(b, e); },
                 const_cast<F *>(&f));
}

int64_t numel(const kn_view *v);

/* A view flattened to as few dims as possible, jointly for several operands of one shape:
   size-1 dims dropped, neighbouring dims merged where every operand is contiguous across them. */
struct Layout {
  int ndim;
  int64_t shape[KN_MAX_DIMS];
  int64_t strides[4][KN_MAX_DIMS];
};
void coalesce(const kn_view *const *views, int count, Layout *out);

/* Row iteration of a coalesced layout: rows are the innermost dim; calls
   row(offsets[], len) for rows [r0, r1) of the total rows = numel / shape[last]. */
template <class F>
inline void for_rows(const Layout &L, int count, int64_t r0, int64_t r1, const F &row) {
  int nd = L.ndim;
  int64_t len = nd ? L.shape[nd - 1] : 1;
  int64_t idx[KN_MAX_DIMS];
  int64_t off[4] = {0, 0, 0, 0};
  /* unravel r0 over the outer dims */
  int64_t r = r0;
  for (int d = nd - 2; d >= 0; d--) {
    idx[d] = r % L.shape[d];
    r /= L.shape[d];
    for (int k = 0; k < count; k++) off[k] += idx[d] * L.strides[k][d];
  }
  for (int64_t rr = r0; rr < r1; rr++) {
    row(off, len);
    for (int d = nd - 2; d >= 0; d--) {
      idx[d]++;
      for (int k = 0; k < count; k++) off[k] += L.strides[k][d];
      if (idx[d] < L.shape[d]) break;
      for (int k = 0; k < count; k++) off[k] -= L.strides[k][d] * L.shape[d];
      idx[d] = 0;
    }
  }
}

inline int64_t rows_of(const Layout &L) {
  int64_t n = 1;
  for (int d = 0; d + 1 < L.ndim; d++) n *= L.shape[d];
  return n;
}

/* kn_sgemm on the calling thread only (for kernels that already run one task per pool thread). */
void kn_sgemm_serial(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* y = exp(x − shift) over one row (y may be x); returns Σ y, summed in double. Softmax's inner loop,
   shared by the softmax and attention kernels (defined in softmax.cpp). */
double exp_shift_row(const float *x, float shift, float *y, int64_t n);

/* y *= k over one row (defined in softmax.cpp). */
void scale_row(float *y, float k, int64_t n);

/* 2-D convolution by oneDNN's primitives (conv_dnnl.cpp); false when this build has no oneDNN,
   oneDNN refuses the shape, or KNOBS_CONV=im2col — the caller then runs im2col + GEMM. */
bool conv2d_dnnl(const kn_conv2d *p, const float *x, const float *w, float *out);
bool conv2d_backward_input_dnnl(const kn_conv2d *p, const float *gout, const float *w, float *dx);
bool conv2d_backward_weight_dnnl(const kn_conv2d *p, const float *gout, const float *x, float *dw);

/* Activation rows quantized to q8_0 for a packed quantized product (kn_q8_quantize_rows): q [M, K],
   d and qsum [M, K/32]. */
struct QRows {
  const int8_t *q;
  const float *d;
  const int32_t *qsum;
  int64_t K, nb;
};

/*
 * What one tile of a packed quantized product asks memory for while it computes: its share of the
 * next weight groups' bytes, a few cache lines per block, into L2. The first tile of a group reads
 * the group from memory and the tiles after it from L1; without this, memory idles while those
 * compute and the first tile of every group stalls on its loads. A prefetch changes no value.
 */
struct Prefetch {
  const uint8_t *base = nullptr;
  int64_t begin = 0, end = 0, step = 64;

  /* Tile t of `tiles` over the `bytes` at `next`, spread over the tile's nb blocks. A lone tile asks
     for nothing: one pass streams like a single row, which the hardware's prefetcher keeps up with. */
  static Prefetch share(const uint8_t *next, int64_t bytes, int64_t tiles, int64_t t, int64_t nb) {
    if (next == nullptr || tiles <= 1) return Prefetch{};
    const int64_t per = (bytes + tiles - 1) / tiles, b = t * per, e = b + per < bytes ? b + per : bytes;
    return Prefetch{next, b, e, ((e - b + nb - 1) / nb + 63) / 64 * 64};
  }

  /* The lines due with block b. */
  void block(int64_t b) const {
    for (int64_t at = begin + b * step, e = at + step < end ? at + step : end; at < e; at += 64)
      __builtin_prefetch(base + at, 0, 2);  // locality 2: prefetcht1, toward L2
  }
};

/* The packed layout kn_qrepack writes on this CPU (qmatmul.cpp): "x16" with AVX-512 VNNI, "x8" with
   AVX2, none otherwise (or with KNOBS_QMATMUL_SCALAR set). */
enum QPack { QPACK_NONE, QPACK_X16, QPACK_X8 };
QPack qpack_layout();

/* y [M, N] = rows [0, M) of a · Wᵀ on W's x8 layout (AVX2), threads splitting the groups of 8 weight
   rows: kn_qmatmul_packed_f32 and kn_bi_qmatmul_packed_f32 on an AVX2 CPU. */
void x8_product(int type, const QRows &a, int64_t M, const uint8_t *packed, int64_t N, float *y);

/* LoRA's low-rank products (lora.cpp), for kn_matmul_accumulate_f32: c [M, n] += alpha · a [M, K] · b [K, n]
   with n ≤ LOW_RANK; c [M, N] = (c + bias) + alpha · a [M, k] · b [k, N] with k ≤ LOW_RANK. */
const int64_t LOW_RANK = 32;
void narrow_accumulate(const kn_view *a, const kn_view *b, float alpha, float *c);
void low_rank_accumulate(const kn_view *a, const kn_view *b, float alpha, const float *bias, float *c);

/* Elements of work per thread below which splitting costs more than it gains. */
const int64_t GRAIN = 32768;

}  // namespace kn

/* The hand-written AVX2 + FMA paths, selected at run time where the CPU has no AVX-512 (AMD before
   Zen 4, many VMs); the build's baseline stays x86-64-v2. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_AVX2 __attribute__((target("avx2,fma")))
namespace kn {
bool have_avx2_fma();  // runtime.cpp

/* The first n (0 … 8) of 8 lanes set: the mask of AVX2's maskload / maskstore. */
KN_AVX2 inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
}  // namespace kn
#endif

/* Hot loops are compiled three times (AVX-512, AVX2, baseline x86-64-v2) and picked at load time
   by the dynamic loader (GCC function multi-versioning), so one binary runs on any x86-64 CPU. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(KN_NO_CLONES)
#define KN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KN_CLONES
#endif

#endif
