/*
 * Matrix products. GEMM goes to the library chosen at build time (oneDNN by default, OpenBLAS, or
 * both for benchmarking; docs/native.md has the measurements), always single-threaded inside our own pool: kn_sgemm splits C into row or column
 * blocks, one per pool thread, so the BLAS never starts threads of its own. Without a library the
 * built-in blocked kernel below runs (about a third of what a BLAS reaches; it is the fallback).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "internal.h"

#ifdef KN_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef KN_HAVE_DNNL
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#endif

namespace {

enum Lib { BUILTIN = 0, OPENBLAS = 1, ONEDNN = 2 };

/* With both libraries linked, oneDNN where it runs AVX-512 (there it measured ~2x OpenBLAS at every
   size) and OpenBLAS on AVX2-only CPUs, where oneDNN's AVX2 sgemm loses to it: 1.2-2.7x on
   transposed-A weight gradients and 1.5x at n = 512 (docs/native.md, "Choosing the GEMM library"). */
bool onednn_runs_avx512() {
#ifdef KN_HAVE_DNNL
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core:
    case dnnl_cpu_isa_avx512_core_vnni:
    case dnnl_cpu_isa_avx512_core_bf16:
    case dnnl_cpu_isa_avx512_core_amx: return true;
    default: return false;
  }
#else
  return false;
#endif
}

Lib default_lib() {
#if defined(KN_PREFER_OPENBLAS) && defined(KN_HAVE_OPENBLAS)
  return OPENBLAS;
#elif defined(KN_HAVE_DNNL) && defined(KN_HAVE_OPENBLAS)
  return onednn_runs_avx512() ? ONEDNN : OPENBLAS;
#elif defined(KN_HAVE_DNNL)
  return ONEDNN;
#elif defined(KN_HAVE_OPENBLAS)
  return OPENBLAS;
#else
  return BUILTIN;
#endif
}

Lib &current_lib() {
  static Lib lib = [] {
#ifdef KN_HAVE_OPENBLAS
    openblas_set_num_threads(1);  // the pool splits the work; OpenBLAS must not add threads
#endif
    return default_lib();
  }();
  return lib;
}

/* ---- built-in fallback: C[M,N] += A[M,K] B[K,N], all row-major contiguous-row ---------------- */

const int64_t KC = 256, NC = 512, MR = 4;

KN_CLONES
void builtin_block(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                   float *C, int64_t ldc) {
  /* Four rows of C at a time share each loaded row of B; the j loop vectorises. */
  int64_t i = 0;
  for (; i + MR <= M; i += MR) {
    float *c0 = C + i * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
    const float *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    for (int64_t k = 0; k < K; k++) {
      const float *b = B + k * ldb;
      const float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
      for (int64_t j = 0; j < N; j++) {
        const float bj = b[j];
        c0[j] += x0 * bj;
        c1[j] += x1 * bj;
        c2[j] += x2 * bj;
        c3[j] += x3 * bj;
      }
    }
  }
  for (; i < M; i++) {
    float *c = C + i * ldc;
    const float *a = A + i * lda;
    for (int64_t k = 0; k < K; k++) {
      const float *b = B + k * ldb;
      const float x = a[k];
      for (int64_t j = 0; j < N; j++) c[j] += x * b[j];
    }
  }
}

void builtin_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  /* Transposed operands are packed to plain row-major first (the fallback favours simplicity). */
  std::vector<float> pa, pb;
  if (ta || alpha != 1.0f) {
    pa.resize((size_t)(M * K));
    for (int64_t i = 0; i < M; i++)
      for (int64_t k = 0; k < K; k++) pa[i * K + k] = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
    A = pa.data();
    lda = K;
  }
  if (tb) {
    pb.resize((size_t)(K * N));
    for (int64_t k = 0; k < K; k++)
      for (int64_t j = 0; j < N; j++) pb[k * N + j] = B[j * ldb + k];
    B = pb.data();
    ldb = N;
  }
  for (int64_t i = 0; i < M; i++) {
    float *c = C + i * ldc;
    if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
    else if (beta != 1.0f) for (int64_t j = 0; j < N; j++) c[j] *= beta;
  }
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    int64_t kc = K - k0 < KC ? K - k0 : KC;
    for (int64_t j0 = 0; j0 < N; j0 += NC) {
      int64_t nc = N - j0 < NC ? N - j0 : NC;
      builtin_block(M, nc, kc, A + k0, lda, B + k0 * ldb + j0, ldb, C + j0, ldc);
    }
  }
}

/* One single-threaded GEMM on the calling thread with the current library. */
void gemm_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; i++) {
      float *c = C + i * ldc;
      for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    }
    return;
  }
  switch (current_lib()) {
#ifdef KN_HAVE_OPENBLAS
    case OPENBLAS:
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                  (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
      return;
#endif
#ifdef KN_HAVE_DNNL
    case ONEDNN: {
      omp_set_num_threads(1);  // per-thread setting: oneDNN's OpenMP team stays this one thread
      /* SIGPROF (V8's sampling profiler, node --cpu-prof) arriving inside oneDNN's AVX-512 JIT code
         corrupts the heap (reproduced: `node --cpu-prof` + sgemm aborts in malloc within seconds;
         most likely the full AVX-512 signal frame overruns the handler's small alternate stack).
         Deferring SIGPROF until the call returns costs two syscalls; profiles lose no samples. */
      sigset_t prof, old;
      sigemptyset(&prof);
      sigaddset(&prof, SIGPROF);
      pthread_sigmask(SIG_BLOCK, &prof, &old);
      dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      return;
    }
#endif
    default:
      builtin_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

}  // namespace

namespace kn {
void kn_sgemm_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
}  // namespace kn

namespace {

struct GemmJob {
  int ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int64_t lda, ldb, ldc;
  bool by_rows;
  int64_t block;
};

/*
 * C = Aᵀ·B with C at least twice as tall as wide (a weight gradient Xᵀ·dY of a layer whose input is
 * wider than its output, e.g. an MLP's down projection) runs 1.2-1.5x faster as its transpose,
 * Cᵀ = Bᵀ·A, written to scratch and transposed into C: oneDNN's sgemm handles the transposed-A case
 * with a short N poorly (docs/performance.md, "Weight gradients of down projections"). The scratch is
 * per thread and kept: an arena inside the addon, bounded by MAX_SCRATCH.
 */
const int64_t MAX_SCRATCH = (int64_t)1 << 22;  // floats (16 MiB)

bool prefer_transposed(int ta, int tb, int64_t M, int64_t N, int64_t K, float beta) {
  return current_lib() == ONEDNN && ta && !tb && beta == 0.0f && K > 0 && M >= 2 * N && M >= 1024 &&
         M * N <= MAX_SCRATCH;
}

/* C[i, j] = T[j, i] for C's rows [r0, r1), in 32×32 tiles (T is Cᵀ, [N, M]). */
void transpose_rows(const float *T, int64_t M, int64_t N, float *C, int64_t ldc, int64_t r0, int64_t r1) {
  for (int64_t i0 = r0; i0 < r1; i0 += 32)
    for (int64_t j0 = 0; j0 < N; j0 += 32) {
      int64_t i1 = i0 + 32 < r1 ? i0 + 32 : r1, j1 = j0 + 32 < N ? j0 + 32 : N;
      for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) C[i * ldc + j] = T[j * M + i];
    }
}

float *transpose_scratch(int64_t n) {
  static thread_local std::vector<float> scratch;
  if ((int64_t)scratch.size() < n) scratch.resize((size_t)n);
  return scratch.data();
}

void sgemm_via_transpose(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                         int64_t ldb, float *C, int64_t ldc) {
  float *T = transpose_scratch(M * N);  // Cᵀ: [N, M]
  kn_sgemm(1, 0, N, M, K, alpha, B, ldb, A, lda, 0.0f, T, M);
  /* the pool splits C's rows, 32 at a time */
  kn::parallel_for((M + 31) / 32, 4, [&](int64_t b0, int64_t b1) {
    transpose_rows(T, M, N, C, ldc, b0 * 32, b1 * 32 < M ? b1 * 32 : M);
  });
}

/* kn_sgemm as it runs at one thread, on the calling thread: the same bits as kn_sgemm at one thread. */
void sgemm_one_thread(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (!prefer_transposed(ta, tb, M, N, K, beta)) {
    gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  float *T = transpose_scratch(M * N);
  gemm_serial(1, 0, N, M, K, alpha, B, ldb, A, lda, 0.0f, T, M);
  transpose_rows(T, M, N, C, ldc, 0, M);
}

/* Block p of `blocks` equal blocks (multiples of 16, so BLAS micro-tiles stay whole) of C's longer side. */
void gemm_block(const GemmJob &j, int64_t p) {
  int64_t side = j.by_rows ? j.M : j.N;
  int64_t s = p * j.block, e = s + j.block < side ? s + j.block : side;
  if (s >= e) return;
  if (j.by_rows) {
    const float *a = j.ta ? j.A + s : j.A + s * j.lda;
    gemm_serial(j.ta, j.tb, e - s, j.N, j.K, j.alpha, a, j.lda, j.B, j.ldb, j.beta, j.C + s * j.ldc, j.ldc);
  } else {
    const float *b = j.tb ? j.B + s * j.ldb : j.B + s;
    gemm_serial(j.ta, j.tb, j.M, e - s, j.K, j.alpha, j.A, j.lda, b, j.ldb, j.beta, j.C + s, j.ldc);
  }
}

/* Fills in how a GEMM splits into `blocks` blocks; returns how many blocks are non-empty. */
int64_t plan_blocks(GemmJob &j, int64_t blocks) {
  j.by_rows = j.M >= j.N;
  int64_t side = j.by_rows ? j.M : j.N;
  int64_t block = (side + blocks - 1) / blocks;
  j.block = (block + 15) / 16 * 16;
  return (side + j.block - 1) / j.block;
}

}  // namespace

extern "C" {

const char *kn_gemm_library(void) {
  switch (current_lib()) {
    case OPENBLAS: return "openblas";
    case ONEDNN: return "onednn";
    default: return "builtin";
  }
}

const char *kn_gemm_libraries(void) {
  return ""
#ifdef KN_HAVE_OPENBLAS
         "openblas,"
#endif
#ifdef KN_HAVE_DNNL
         "onednn,"
#endif
         "builtin";
}

int kn_select_gemm(const char *name) {
  if (!name) return -1;
#ifdef KN_HAVE_OPENBLAS
  if (!strcmp(name, "openblas")) { current_lib() = OPENBLAS; return 0; }
#endif
#ifdef KN_HAVE_DNNL
  if (!strcmp(name, "onednn")) { current_lib() = ONEDNN; return 0; }
#endif
  if (!strcmp(name, "builtin")) { current_lib() = BUILTIN; return 0; }
  return -1;
}

void kn_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (prefer_transposed(ta, tb, M, N, K, beta)) {
    sgemm_via_transpose(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    return;
  }
  int T = kn_get_threads();
  double flops = 2.0 * (double)M * (double)N * (double)(K > 0 ? K : 1);
  if (T <= 1 || flops < 2.0 * 96 * 96 * 96) {
    gemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  /* Split the longer side of C into T blocks, one per pool thread. */
  GemmJob j{ta, tb, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc, true, 0};
  int64_t parts = plan_blocks(j, T);
  kn::parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) gemm_block(j, p);
  });
}

}  // extern "C"

namespace {

/* How a strided [R, Cc] matrix reaches the BLAS: plain (unit column stride), transposed (unit row
   stride), or packed into a contiguous copy when neither holds (e.g. a broadcast inside the matrix). */
struct MatArg {
  int trans;
  int64_t ld;
  bool pack;
};

MatArg classify(int64_t R, int64_t Cc, int64_t sR, int64_t sC) {
  int64_t rmin = Cc > 1 ? Cc : 1, cmin = R > 1 ? R : 1;
  if ((sC == 1 || Cc == 1) && (R == 1 || sR >= rmin)) return {0, R == 1 ? rmin : sR, false};
  if ((sR == 1 || R == 1) && (Cc == 1 || sC >= cmin)) return {1, Cc == 1 ? cmin : sC, false};
  return {0, rmin, true};
}

void pack(const float *src, int64_t R, int64_t Cc, int64_t sR, int64_t sC, float *dst) {
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < Cc; c++) dst[r * Cc + c] = src[r * sR + c * sC];
}

}  // namespace

namespace {

/* kn_matmul_f32 and kn_matmul_bf16: the same batching, the GEMM in f32 or bf16 (matmul_bf16.cpp). */
void matmul_views(const kn_view *a, const kn_view *b, float *out, bool bf16) {
  int nd = a->ndim;
  int64_t M = a->shape[nd - 2], K = a->shape[nd - 1], N = b->shape[nd - 1];
  int64_t batch = 1;
  for (int d = 0; d < nd - 2; d++) batch *= a->shape[d];
  if (batch == 0 || M == 0 || N == 0) return;
  int64_t sAM = a->strides[nd - 2], sAK = a->strides[nd - 1];
  int64_t sBK = b->strides[nd - 2], sBN = b->strides[nd - 1];
  MatArg ma = classify(M, K, sAM, sAK), mb = classify(K, N, sBK, sBN);
  const float *A0 = (const float *)a->data, *B0 = (const float *)b->data;

  auto one = [&](int64_t p, bool inner_parallel, std::vector<float> &scratch) {
    /* batch index p → element offsets of this matrix in a and b (stride 0 = broadcast batch) */
    int64_t oa = 0, ob = 0, r = p;
    for (int d = nd - 3; d >= 0; d--) {
      int64_t i = r % a->shape[d];
      r /= a->shape[d];
      oa += i * a->strides[d];
      ob += i * b->strides[d];
    }
    const float *A = A0 + oa, *B = B0 + ob;
    if (ma.pack || mb.pack) scratch.resize((size_t)((ma.pack ? M * K : 0) + (mb.pack ? K * N : 0)));
    float *s = scratch.data();
    if (ma.pack) { pack(A, M, K, sAM, sAK, s); A = s; s += M * K; }
    if (mb.pack) { pack(B, K, N, sBK, sBN, s); B = s; }
    float *C = out + p * M * N;
    if (bf16) kn_sgemm_bf16(ma.trans, mb.trans, M, N, K, A, ma.ld, B, mb.ld, C, N, inner_parallel ? 1 : 0);
    else if (inner_parallel) kn_sgemm(ma.trans, mb.trans, M, N, K, 1.0f, A, ma.ld, B, mb.ld, 0.0f, C, N);
    else gemm_serial(ma.trans, mb.trans, M, N, K, 1.0f, A, ma.ld, B, mb.ld, 0.0f, C, N);
  };

  double flops = 2.0 * (double)M * (double)N * (double)(K > 0 ? K : 1);
  if (batch > 1 && flops < 2.0 * 256 * 256 * 256) {
    /* many small products: one whole product per task */
    kn::parallel_for(batch, flops < 2.0 * 16 * 16 * 16 ? 64 : 1, [&](int64_t p0, int64_t p1) {
      std::vector<float> scratch;
      for (int64_t p = p0; p < p1; p++) one(p, false, scratch);
    });
  } else {
    std::vector<float> scratch;
    for (int64_t p = 0; p < batch; p++) one(p, true, scratch);
  }
}

}  // namespace

extern "C" void kn_matmul_f32(const kn_view *a, const kn_view *b, float *out) { matmul_views(a, b, out, false); }

extern "C" void kn_matmul_accumulate_f32(const kn_view *a, const kn_view *b, float alpha, const float *bias, float *c) {
  int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
  if (M == 0 || N == 0) return;
  if (K <= kn::LOW_RANK) {
    kn::low_rank_accumulate(a, b, alpha, bias, c);
    return;
  }
  if (N <= kn::LOW_RANK && !bias) {
    kn::narrow_accumulate(a, b, alpha, c);
    return;
  }
  if (bias)
    kn::parallel_for(M, kn::GRAIN / N + 1, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; i++)
        for (int64_t j = 0; j < N; j++) c[i * N + j] += bias[j];
    });
  MatArg ma = classify(M, K, a->strides[0], a->strides[1]), mb = classify(K, N, b->strides[0], b->strides[1]);
  const float *A = (const float *)a->data, *B = (const float *)b->data;
  std::vector<float> scratch((size_t)((ma.pack ? M * K : 0) + (mb.pack ? K * N : 0)));
  float *s = scratch.data();
  if (ma.pack) { pack(A, M, K, a->strides[0], a->strides[1], s); A = s; s += M * K; }
  if (mb.pack) { pack(B, K, N, b->strides[0], b->strides[1], s); B = s; }
  kn_sgemm(ma.trans, mb.trans, M, N, K, alpha, A, ma.ld, B, mb.ld, 1.0f, c, N);
}

extern "C" int kn_matmul_bf16(const kn_view *a, const kn_view *b, float *out) {
  if (!kn_bf16_available()) return -1;
  matmul_views(a, b, out, true);
  return 0;
}

/*
 * Two independent 2-D products at once (a linear layer's backward: dX = dY·Wᵀ and dW = Xᵀ·dY).
 * Splitting each small GEMM (M = 2048, N or K = 256 at kjv-gpt) across both threads costs a sync
 * and two half-size calls; instead each product gets half the pool: at two threads, each runs
 * whole on its own thread (docs/performance.md, "Pairs of GEMMs"). With an even T each product is
 * cut into T/2 blocks (an odd T: T blocks, both products in one job), so the bits depend on the
 * thread count only; at two threads they equal kn_matmul_f32's at one thread. One thread, a product
 * too small to share or large enough to split well (PAIR_MAX_FLOPS), or an operand that needs
 * packing: the two products run one after the other, exactly as two kn_matmul_f32 calls.
 */
/* Products at least this large split across the whole pool as two kn_matmul_f32 calls. On an AVX2
   EPYC the kjv-gpt step (products of 268–1074 MFLOP) ran 1.13–1.20× faster split than paired, where
   each product ran on one thread at ~62–80 GFLOP/s; LoRA's rank-8 pair (25 MFLOP each) stays a pair
   (docs/performance.md, "AVX2 EPYC"). */
const double PAIR_MAX_FLOPS = 2.0 * 512 * 512 * 256;

extern "C" void kn_matmul_pair_f32(const kn_view *a1, const kn_view *b1, float *out1, const kn_view *a2,
                                   const kn_view *b2, float *out2) {
  const kn_view *as[2] = {a1, a2}, *bs[2] = {b1, b2};
  float *outs[2] = {out1, out2};
  GemmJob jobs[2];
  int T = kn_get_threads();
  bool pair = T >= 2;
  for (int g = 0; g < 2 && pair; g++) {
    const kn_view *a = as[g], *b = bs[g];
    int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
    MatArg ma = classify(M, K, a->strides[0], a->strides[1]), mb = classify(K, N, b->strides[0], b->strides[1]);
    const double flops = 2.0 * (double)M * (double)N * (double)K;
    pair = !ma.pack && !mb.pack && M > 0 && N > 0 && K > 0 && flops >= 2.0 * 96 * 96 * 96 && flops < PAIR_MAX_FLOPS;
    jobs[g] = GemmJob{ma.trans, mb.trans, M, N, K, 1.0f, 0.0f, (const float *)a->data, (const float *)b->data,
                      outs[g], ma.ld, mb.ld, N, true, 0};
  }
  if (!pair) {
    matmul_views(a1, b1, out1, false);
    matmul_views(a2, b2, out2, false);
    return;
  }
  /* even T: T/2 blocks each, so each product has half the threads; odd T: T blocks each, two per thread */
  int64_t per = T % 2 == 0 ? T / 2 : T;
  int64_t blocks[2] = {plan_blocks(jobs[0], per), plan_blocks(jobs[1], per)};
  kn::parallel_for(blocks[0] + blocks[1], 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      int g = p < blocks[0] ? 0 : 1;
      const GemmJob &j = jobs[g];
      if (blocks[g] == 1)
        sgemm_one_thread(j.ta, j.tb, j.M, j.N, j.K, 1.0f, j.A, j.lda, j.B, j.ldb, 0.0f, j.C, j.ldc);
      else gemm_block(j, g == 0 ? p : p - blocks[0]);
    }
  });
}
