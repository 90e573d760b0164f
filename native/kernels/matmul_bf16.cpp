/*
 * bf16 mixed-precision GEMM: C (f32) = op(A) · op(B) with A and B rounded to bfloat16 (round to
 * nearest even) and products accumulated in f32, by oneDNN's matmul primitive (AVX512_BF16 dot
 * products or AMX tiles, whichever oneDNN's JIT picks for the CPU). Only oneDNN builds have it;
 * kn_bf16_available() says whether this build and CPU can run it.
 *
 * Threads as kn_sgemm: the pool splits C into row blocks and each block runs one primitive with
 * oneDNN's OpenMP team limited to the calling thread. B is converted to bf16 once (in parallel)
 * before the split; each block converts its own rows of A on its thread. Both keep their stored
 * layout (A [rows, K] or, transposed, [K, rows]; B [K, N] or [N, K]) with tight strides: oneDNN's
 * AMX matmul (brg:avx512_core_amx_bf16) takes either as is, but not a transposed A with a wider
 * leading dimension (it falls back to a slower kernel), hence the per-block conversion.
 *
 * Primitives are created once per shape (creation costs ~0.1–1 ms; a training step uses a handful
 * of shapes) and executed with a user-provided scratchpad, so concurrent blocks share nothing. A
 * block oneDNN will not take runs as an f32 GEMM instead (more precise, never wrong).
 */
#include <stdint.h>
#include <string.h>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "internal.h"

#ifdef KN_HAVE_DNNL
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>

namespace kn {
dnnl_engine_t dnnl_cpu_engine();
}
#endif

namespace {

/* f32 → bf16, round to nearest even; NaN stays a (quiet) NaN instead of rounding into Inf. */
inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

KN_CLONES
void convert_rows(const float *src, int64_t ld, int64_t rows, int64_t cols, uint16_t *dst) {
  for (int64_t r = 0; r < rows; r++) {
    const float *s = src + r * ld;
    uint16_t *d = dst + r * cols;
    for (int64_t c = 0; c < cols; c++) d[c] = to_bf16(s[c]);
  }
}

/* An operand [R, Cc] as stored ([Cc, R] when trans) → the same layout, tight, in bf16; stored rows
   split across the pool. */
void convert(int trans, int64_t R, int64_t Cc, const float *X, int64_t ld, uint16_t *out, bool threads) {
  int64_t rows = trans ? Cc : R, cols = trans ? R : Cc;
  auto part = [&](int64_t r0, int64_t r1) { convert_rows(X + r0 * ld, ld, r1 - r0, cols, out + r0 * cols); };
  if (threads) kn::parallel_for(rows, kn::GRAIN / (cols > 0 ? cols : 1) + 1, part);
  else part(0, rows);
}

#ifdef KN_HAVE_DNNL

dnnl_engine_t engine() { return kn::dnnl_cpu_engine(); }

struct Prim {
  dnnl_primitive_t prim = nullptr;
  dnnl_memory_desc_t a, b, c, scratch;
  size_t scratch_bytes = 0;
  const char *impl = "";
};

/* One primitive per (M, N, K, ta, lda, tb, ldc), created on first use and kept for the process. A
   transposed A block is stored [K, lda] (row stride 1, column stride lda; lda = its rows, as converted). */
const Prim *primitive(int64_t M, int64_t N, int64_t K, int ta, int64_t lda, int tb, int64_t ldc) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int, int64_t, int, int64_t>, Prim> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(M, N, K, ta, lda, tb, ldc);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.prim ? &it->second : nullptr;
  Prim &p = cache[key];
  dnnl_dims_t da = {M, K}, sa_plain = {K, 1}, sa_trans = {1, lda};
  dnnl_dims_t db = {K, N}, sb_plain = {N, 1}, sb_trans = {1, K};
  dnnl_dims_t dc = {M, N}, sc = {ldc, 1};
  dnnl_memory_desc_init_by_strides(&p.a, 2, da, dnnl_bf16, ta ? sa_trans : sa_plain);
  dnnl_memory_desc_init_by_strides(&p.b, 2, db, dnnl_bf16, tb ? sb_trans : sb_plain);
  dnnl_memory_desc_init_by_strides(&p.c, 2, dc, dnnl_f32, sc);
  dnnl_matmul_desc_t desc;
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_primitive_desc_t pd = nullptr;
  bool ok = dnnl_matmul_desc_init(&desc, &p.a, &p.b, nullptr, &p.c) == dnnl_success &&
            dnnl_primitive_attr_create(&attr) == dnnl_success &&
            dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
            dnnl_primitive_desc_create(&pd, &desc, attr, engine(), nullptr) == dnnl_success;
  if (ok) {
    p.scratch = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p.scratch_bytes = dnnl_memory_desc_get_size(&p.scratch);
    const char *impl = nullptr;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) p.impl = impl;
    ok = dnnl_primitive_create(&p.prim, pd) == dnnl_success;
  }
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (!ok) p.prim = nullptr;
  return p.prim ? &p : nullptr;
}

/* Runs one cached primitive on the calling thread. Returns false when oneDNN refused the shape. */
bool run_block(int64_t M, int64_t N, int64_t K, const uint16_t *A, int ta, int64_t lda, const uint16_t *B, int tb,
               float *C, int64_t ldc) {
  const Prim *p = primitive(M, N, K, ta, lda, tb, ldc);
  if (!p) return false;
  static thread_local std::vector<char> scratch;
  static thread_local dnnl_stream_t stream = nullptr;
  if (!stream) dnnl_stream_create(&stream, engine(), dnnl_stream_default_flags);
  if (scratch.size() < p->scratch_bytes) scratch.resize(p->scratch_bytes);
  dnnl_memory_t ma, mb, mc, ms;
  dnnl_memory_create(&ma, &p->a, engine(), const_cast<uint16_t *>(A));
  dnnl_memory_create(&mb, &p->b, engine(), const_cast<uint16_t *>(B));
  dnnl_memory_create(&mc, &p->c, engine(), C);
  dnnl_memory_create(&ms, &p->scratch, engine(), scratch.data());
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, ms}};
  omp_set_num_threads(1);  // this thread only: the pool does the splitting (docs/native.md, "Threads")
  sigset_t prof, old;      // as gemm_serial in matmul.cpp: no SIGPROF inside oneDNN's JIT code
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  pthread_sigmask(SIG_BLOCK, &prof, &old);
  dnnl_status_t st = dnnl_primitive_execute(p->prim, stream, 4, args);
  if (st == dnnl_success) st = dnnl_stream_wait(stream);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  dnnl_memory_destroy(ma);
  dnnl_memory_destroy(mb);
  dnnl_memory_destroy(mc);
  dnnl_memory_destroy(ms);
  return st == dnnl_success;
}

#endif

}  // namespace

extern "C" {

int kn_bf16_available(void) {
#ifdef KN_HAVE_DNNL
  // oneDNN's view of the CPU (and of DNNL_MAX_CPU_ISA, which can lower it): bf16 dot products or AMX.
  unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
  return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16 ? 1 : 0;
#else
  return 0;
#endif
}

const char *kn_onednn_isa(void) {
#ifdef KN_HAVE_DNNL
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
    default: return "other";
  }
#else
  return "none";
#endif
}

const char *kn_bf16_impl(void) {
#ifdef KN_HAVE_DNNL
  if (!kn_bf16_available()) return "none";
  const Prim *p = primitive(256, 256, 256, 0, 256, 0, 256);
  return p ? p->impl : "none";
#else
  return "none";
#endif
}

int kn_sgemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                  int64_t ldb, float *C, int64_t ldc, int threads) {
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0) {
    for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, sizeof(float) * (size_t)N);
    return 0;
  }
#ifdef KN_HAVE_DNNL
  if (!kn_bf16_available()) return -1;
  /* B's conversion buffer belongs to the calling thread (a batch of small products runs one product
     per pool thread); each block's A buffer to the thread that runs the block. */
  static thread_local std::vector<uint16_t> bbuf;
  bbuf.resize((size_t)(K * N));
  int T = threads ? kn_get_threads() : 1;
  double flops = 2.0 * (double)M * (double)N * (double)K;
  bool split = T > 1 && flops >= 2.0 * 96 * 96 * 96 && M >= 32;
  convert(tb, K, N, B, ldb, bbuf.data(), split);
  const uint16_t *b = bbuf.data();
  auto rows = [&](int64_t s, int64_t e) {  // rows s … e of op(A) and C
    static thread_local std::vector<uint16_t> abuf;
    abuf.resize((size_t)((e - s) * K));
    const float *a = ta ? A + s : A + s * lda;
    convert(ta, e - s, K, a, lda, abuf.data(), false);
    if (!run_block(e - s, N, K, abuf.data(), ta, ta ? e - s : K, b, tb, C + s * ldc, ldc))
      kn::kn_sgemm_serial(ta, tb, e - s, N, K, 1.0f, a, lda, B, ldb, 0.0f, C + s * ldc, ldc);
  };
  if (!split) {
    rows(0, M);
    return 0;
  }
  /* Row blocks, multiples of 16 rows (whole micro-tiles); one per thread. */
  int64_t block = ((M + T - 1) / T + 15) / 16 * 16;
  int64_t parts = (M + block - 1) / block;
  kn::parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) rows(p * block, p * block + block < M ? p * block + block : M);
  });
  return 0;
#else
  (void)ta, (void)tb, (void)A, (void)lda, (void)B, (void)ldb, (void)ldc, (void)threads;
  return -1;
#endif
}

}  // extern "C"

#ifdef KN_HAVE_DNNL
/* The one oneDNN CPU engine of the process (bf16 matmul here, convolutions in conv_dnnl.cpp). */
dnnl_engine_t kn::dnnl_cpu_engine() {
  static dnnl_engine_t e = [] {
    dnnl_engine_t made = nullptr;
    dnnl_engine_create(&made, dnnl_cpu, 0);
    return made;
  }();
  return e;
}
#endif
