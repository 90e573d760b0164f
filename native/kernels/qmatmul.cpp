/*
 * Quantized matrix products: y = x · Wᵀ with W [N, K] stored in ggml's q8_0 or q4_0 blocks, bytes
 * exactly as a GGUF file holds them, and the input gradient dx = dy · W. W is never expanded.
 *
 * Block layouts (ggml-common.h), 32 values per block along K:
 *   q8_0: f16 d, int8 q[32]                     value j = q[j]·d              (34 bytes)
 *   q4_0: f16 d, u8 qs[16] (nibbles)            value j = (lo(qs[j]) − 8)·d,
 *                                               value j+16 = (hi(qs[j]) − 8)·d (18 bytes)
 *
 * Forward, as ggml's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0: each activation row is quantized to
 * q8_0 per 32 values (quantize_row_q8_0_ref: dx = amax/127 kept as f16, q = roundf(x/dx)); each
 * block contributes (Σ q_w·q_x, an exact int32) · d_w · d_x to an f32 sum. With AVX-512 VNNI the
 * product runs on a packed copy of W ("x16" below: 16 rows interleaved per block, one
 * _mm512_dpbusd_epi32 for 4 values of 16 rows), with AVX2 on another ("x8": 8 rows, maddubs +
 * madd), which the native backend makes once per weight; kn_qmatmul_f32 packs for the call. Other
 * CPUs (or KNOBS_QMATMUL_SCALAR=1) take the scalar path on the blocks.
 *
 * Every path takes the same f32 steps per (activation row, weight row): scale = d_w·d_x, then
 * acc = fma(float(Σ q_w·q_x), scale, acc) over the blocks in order, from acc = 0. The block sums are
 * exact int32 whatever the instruction, so all paths give the same bits: a model's outputs do not
 * depend on the CPU (test/qmatmul.test.ts compares them).
 *
 * Threads split output rows only, and each (x row, W row) pair goes through the same code whatever
 * M or the thread count: a row's result never depends on the batch it came in (the serving issue
 * relies on that; test/qmatmul.test.ts checks it).
 *
 * The input gradient (training: M is batch × context, in the thousands) dequantizes W a tile at a
 * time into a small f32 panel and runs the f32 GEMM on it (see PANEL_* below); the split into
 * tiles is fixed, so its result is the same for every thread count.
 */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"
#include "mathf.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_QM_X86 1
#endif

using namespace kn;

namespace {

const int64_t QK = 32;

inline int64_t block_bytes(int type) { return type == KN_Q8_0 ? 34 : 18; }

/* The packed layout's rows per group and bytes per group and block (see "x16" below). */
const int64_t X16_ROWS = 16;
inline int64_t x16_block_bytes(int type) { return type == KN_Q8_0 ? 64 + 512 : 64 + 256; }

inline uint16_t load_u16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

/* One activation row as q8_0: q [K] int8 and d [K/32], the f16-rounded scales as f32. */
struct QRow {
  const int8_t *q;
  const float *d;
};

/* quantize_row_q8_0_ref on one row. */
void quantize_row_scalar(const float *x, int64_t K, int8_t *q, float *d) {
  for (int64_t b = 0; b < K / QK; b++) {
    const float *xb = x + b * QK;
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
    float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
    for (int j = 0; j < QK; j++) q[b * QK + j] = (int8_t)roundf(xb[j] * id);
    d[b] = f16_to_f32(f32_to_f16(db));
  }
}

#ifdef KN_QM_X86
/* The same bits as quantize_row_scalar, 8 lanes at a time (the scalar loop calls libm's fmaxf and
   roundf per element, ~12 % of a 16-row decode step's product time on an AVX2 EPYC): the
   max of |x| is exact in any order (NaN lanes are skipped as fmaxf skips them); x·id is one IEEE
   product either way; roundf's half away from zero is rebuilt exactly as t + (|p − t| ≥ ½ ? ±1 : 0)
   with t = trunc(p), since p − t is exact. */
KN_AVX2 void quantize_row_avx2(const float *x, int64_t K, int8_t *q, float *d) {
  const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < K / QK; b++) {
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
      v[i] = _mm256_loadu_ps(x + b * QK + 8 * i);
      amax = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), amax);  // a NaN |x| yields amax, as fmaxf
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float db = _mm_cvtss_f32(m) / 127.0f, id = db != 0 ? 1.0f / db : 0.0f;
    __m256i r[4];
    for (int i = 0; i < 4; i++) {
      const __m256 p = _mm256_mul_ps(v[i], _mm256_set1_ps(id));
      const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 away = _mm256_or_ps(one, _mm256_and_ps(p, sign));
      const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(p, t)), half, _CMP_GE_OQ);
      r[i] = _mm256_cvtps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, away)));  // integral: converts exactly
    }
    /* the packs interleave 128-bit lanes: 4-byte groups come out as r0 r1 r2 r3 (low halves), then
       the high halves; the permutation puts each r's two halves back together */
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256((__m256i *)(q + b * QK), _mm256_permutevar8x32_epi32(bytes, order));
    d[b] = f16_to_f32(f32_to_f16(db));
  }
}
#endif

bool have_avx2();  // the x8 kernels' check, below: the quantizer follows the product's path

void quantize_row(const float *x, int64_t K, int8_t *q, float *d) {
#ifdef KN_QM_X86
  if (have_avx2()) return quantize_row_avx2(x, K, q, d);
#endif
  quantize_row_scalar(x, K, q, d);
}

/* ---- scalar dot products: the packed kernels' f32 steps, one block at a time ---- */

/* fmaf is one rounding on every CPU (an instruction in the FMA clones, libm's exact fmaf in the
   baseline one), so these give the SIMD kernels' bits; a separate multiply and add would not. */
KN_CLONES
float dot_q8_scalar(const uint8_t *w, const QRow &x, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *blk = w + b * 34;
    const int8_t *qw = (const int8_t *)(blk + 2), *qx = x.q + b * QK;
    int32_t sumi = 0;
    for (int j = 0; j < QK; j++) sumi += qw[j] * qx[j];
    sum = fmaf((float)sumi, f16_to_f32(load_u16(blk)) * x.d[b], sum);
  }
  return sum;
}

KN_CLONES
float dot_q4_scalar(const uint8_t *w, const QRow &x, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *blk = w + b * 18;
    const int8_t *qx = x.q + b * QK;
    int32_t sumi = 0;
    for (int j = 0; j < QK / 2; j++)
      sumi += ((blk[2 + j] & 0x0f) - 8) * qx[j] + ((blk[2 + j] >> 4) - 8) * qx[j + QK / 2];
    sum = fmaf((float)sumi, f16_to_f32(load_u16(blk)) * x.d[b], sum);
  }
  return sum;
}

#ifdef KN_QM_X86
/* GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*() (a self-initialised
   variable), which -Wuninitialized flags once they are inlined into target("avx512…") functions. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define KN_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c,fma")))

/*
 * The packed layout for the product ("x16"): 16 rows interleaved per block, so one VNNI
 * instruction multiplies 4 values of each of 16 rows by the same 4 activation values and each
 * row's exact int32 block sum lands in its own lane — no sign juggling, no horizontal sums, one
 * scale vector per block for 16 rows. Per group of 16 rows and block b:
 *   f32 d[16]                 the rows' block scales (0 for padding rows)
 *   q8_0 (576 bytes):  u8 q[8][16][4],  q[k4][r][i] = w[r][32b + 4k4 + i] + 128
 *   q4_0 (320 bytes):  u8 q[4][16][4],  low nibble of q[c][r][i] = u[r][8c + i], high = u[r][8c + 4 + i]
 *                      with u the stored nibble (value = u − 8), still 4 bits a weight
 * The weight is the unsigned side of _mm512_dpbusd_epi32; starting the int32 sum at −128·Σ q_x
 * (q8_0) or −8·Σ q_x (q4_0) undoes the offset exactly. Rows past N (the last group) are zero.
 * Each row's value is Σ_b float(Σ q_w·q_x) · (d_w·d_x), summed over b in order: the same for
 * every M and thread count.
 */
/* G groups (group_bytes apart) · one activation row: G × 2 independent int32 chains per block,
   so the VNNI latency overlaps; each group's arithmetic is the same whatever G. */
template <int TYPE, int G>
KN_VNNI void x16_groups(const uint8_t *g, int64_t group_bytes, int64_t nb, const int8_t *q, const float *d,
                        const int32_t *qsum, float *out) {
  const int64_t block = TYPE == KN_Q8_0 ? 64 + 512 : 64 + 256;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  __m512 acc[G];
  for (int i = 0; i < G; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const int32_t *xq = (const int32_t *)(q + b * QK);
    const __m512i start = _mm512_set1_epi32((TYPE == KN_Q8_0 ? -128 : -8) * qsum[b]);
    const __m512 xd = _mm512_set1_ps(d[b]);
    __m512i s0[G], s1[G];
    for (int i = 0; i < G; i++) s0[i] = start, s1[i] = _mm512_setzero_si512();
    if (TYPE == KN_Q8_0) {
      for (int k4 = 0; k4 < 8; k4 += 2) {
        const __m512i x0 = _mm512_set1_epi32(xq[k4]), x1 = _mm512_set1_epi32(xq[k4 + 1]);
        for (int i = 0; i < G; i++) {
          const uint8_t *p = g + i * group_bytes + b * block;
          s0[i] = _mm512_dpbusd_epi32(s0[i], _mm512_loadu_si512(p + 64 + 64 * k4), x0);
          s1[i] = _mm512_dpbusd_epi32(s1[i], _mm512_loadu_si512(p + 128 + 64 * k4), x1);
        }
      }
    } else {
      for (int c = 0; c < 4; c++) {
        const __m512i x0 = _mm512_set1_epi32(xq[2 * c]), x1 = _mm512_set1_epi32(xq[2 * c + 1]);
        for (int i = 0; i < G; i++) {
          const __m512i v = _mm512_loadu_si512(g + i * group_bytes + b * block + 64 + 64 * c);
          s0[i] = _mm512_dpbusd_epi32(s0[i], _mm512_and_si512(v, low4), x0);
          s1[i] = _mm512_dpbusd_epi32(s1[i], _mm512_and_si512(_mm512_srli_epi16(v, 4), low4), x1);
        }
      }
    }
    for (int i = 0; i < G; i++) {
      const uint8_t *p = g + i * group_bytes + b * block;
      __m512 scale = _mm512_mul_ps(_mm512_loadu_ps((const float *)p), xd);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0[i], s1[i])), scale, acc[i]);
    }
  }
  for (int i = 0; i < G; i++) _mm512_storeu_ps(out + i * X16_ROWS, acc[i]);
}

/* One activation row against groups [g, g + G) of packed W, G = 2 or 1. */
KN_VNNI void x16_dispatch(int type, int G, const uint8_t *g, int64_t group_bytes, int64_t nb, const int8_t *q,
                          const float *d, const int32_t *qsum, float *out) {
  if (type == KN_Q8_0) {
    if (G == 2) x16_groups<KN_Q8_0, 2>(g, group_bytes, nb, q, d, qsum, out);
    else x16_groups<KN_Q8_0, 1>(g, group_bytes, nb, q, d, qsum, out);
  } else {
    if (G == 2) x16_groups<KN_Q4_0, 2>(g, group_bytes, nb, q, d, qsum, out);
    else x16_groups<KN_Q4_0, 1>(g, group_bytes, nb, q, d, qsum, out);
  }
}

bool have_vnni() {
  static const bool yes = [] {
    if (getenv("KNOBS_QMATMUL_SCALAR")) return false;  // tests and benches compare the two paths
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }();
  return yes;
}
#pragma GCC diagnostic pop

/*
 * The AVX2 packed layout ("x8"): x16's idea in 256 bits — 8 rows interleaved per block, so each
 * row's block sum stays in its own 32-bit lane (no horizontal sums) and one scale vector serves 8
 * rows. Per group of 8 rows and block b:
 *   f32 d[8]                  the rows' block scales (0 for padding rows)
 *   q8_0 (256 bytes):  i8 q[8][8][4],  q[k4][r][i] = w[r][32b + 4k4 + i]  (signed, as in the blocks)
 *   q4_0 (128 bytes):  u8 q[4][8][4],  low nibble of q[c][r][i] = u[r][8c + i], high = u[r][8c + 4 + i]
 * AVX2 has no dpbusd: _mm256_maddubs_epi16 multiplies unsigned by signed bytes and adds each pair
 * into a saturating int16, _mm256_madd_epi16 by ones adds pairs of those into the row's int32 lane.
 * - q8_0 keeps w signed and feeds |w| as the unsigned side, x with w's sign (_mm256_sign_epi8) as
 *   the signed one: a pair is at most 2·128·127 = 32512 < 32767, never saturated (x16's w + 128
 *   would reach 2·255·127).
 * - q4_0's nibble u (value u − 8) is unsigned already: a pair is at most 2·15·128, so a block's 8
 *   maddubs add up in int16 (≤ 30720) before one madd, and 8·Σ q_x taken off gives Σ (u − 8)·q_x.
 * The f32 steps per lane are x16's: scale = d_w·d_x, acc = fma(float(isum), scale, acc).
 */
const int64_t X8_ROWS = 8;
inline int64_t x8_block_bytes(int type) { return type == KN_Q8_0 ? 32 + 256 : 32 + 128; }

inline int32_t load_i32(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* One 4-value step k4 of a q8_0 block for R rows: |w| as maddubs' unsigned side, x with w's sign. */
template <int R>
KN_AVX2 inline void x8_q8_step(const uint8_t *wb, const int8_t *const *xq, int k4, __m256i ones, __m256i *s) {
  const __m256i w = _mm256_loadu_si256((const __m256i *)(wb + 32 + 32 * k4)), aw = _mm256_abs_epi8(w);
  for (int i = 0; i < R; i++) {
    const __m256i x = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(xq[i] + 4 * k4)), w);
    s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, x), ones));
  }
}

/* R activation rows (from m) × one group of 8 weight rows: out [R][8]. Each loaded weight vector
   meets the R rows; every (row, weight row) keeps its own int32 and f32 sums, whatever R. */
template <int TYPE, int R>
KN_AVX2 void x8_tile(const uint8_t *g, const QRows &a, int64_t m, float *out, const Prefetch &pf) {
  const int64_t block = x8_block_bytes(TYPE);
  const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
  __m256 acc[R];
  for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.nb; b++) {
    const uint8_t *wb = g + b * block;
    pf.block(b);
    const int8_t *xq[R];
    for (int i = 0; i < R; i++) xq[i] = a.q + (m + i) * a.K + b * QK;
    __m256i s[R];
    if (TYPE == KN_Q8_0) {
      for (int i = 0; i < R; i++) s[i] = _mm256_setzero_si256();
      if (R == 1) {
        for (int k4 = 0; k4 < 8; k4++) x8_q8_step<R>(wb, xq, k4, ones, s);
      } else {
        /* fully unrolled, GCC hoists every broadcast and spills the accumulators: two steps at a time */
#pragma GCC unroll 2
        for (int k4 = 0; k4 < 8; k4++) x8_q8_step<R>(wb, xq, k4, ones, s);
      }
    } else {
      __m256i t[R];
      for (int i = 0; i < R; i++) t[i] = _mm256_setzero_si256();
      for (int c = 0; c < 4; c++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(wb + 32 + 32 * c));
        const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        for (int i = 0; i < R; i++) {
          const __m256i x0 = _mm256_set1_epi32(load_i32(xq[i] + 8 * c));
          const __m256i x1 = _mm256_set1_epi32(load_i32(xq[i] + 8 * c + 4));
          t[i] = _mm256_add_epi16(t[i], _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1)));
        }
      }
      for (int i = 0; i < R; i++)
        s[i] = _mm256_sub_epi32(_mm256_madd_epi16(t[i], ones), _mm256_set1_epi32(8 * a.qsum[(m + i) * a.nb + b]));
    }
    const __m256 dw = _mm256_loadu_ps((const float *)wb);
    for (int i = 0; i < R; i++) {
      const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[(m + i) * a.nb + b]));
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), scale, acc[i]);
    }
  }
  for (int i = 0; i < R; i++) _mm256_storeu_ps(out + X8_ROWS * i, acc[i]);
}

/* All M rows against groups [g0, g1): per group, tiles of 4 rows, then the 1–3 left. A group's
   weights (8 rows × K) stay in L1 while the tiles after the first read them again, and each tile
   asks for its share of the next group (Prefetch, internal.h). */
template <int TYPE>
KN_AVX2 void x8_groups(const uint8_t *packed, const QRows &a, int64_t M, float *y, int64_t N, int64_t g0, int64_t g1) {
  const int64_t group_bytes = a.nb * x8_block_bytes(TYPE), groups = (N + X8_ROWS - 1) / X8_ROWS, tiles = (M + 3) / 4;
  float out[4 * X8_ROWS];
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *p = packed + g * group_bytes, *next = g + 1 < groups ? p + group_bytes : nullptr;
    const int64_t n0 = g * X8_ROWS, rows = N - n0 < X8_ROWS ? N - n0 : X8_ROWS;
    for (int64_t m = 0; m < M;) {
      const int64_t r = M - m < 4 ? M - m : 4;
      const Prefetch pf = Prefetch::share(next, group_bytes, tiles, m / 4, a.nb);
      switch (r) {
        case 4: x8_tile<TYPE, 4>(p, a, m, out, pf); break;
        case 3: x8_tile<TYPE, 3>(p, a, m, out, pf); break;
        case 2: x8_tile<TYPE, 2>(p, a, m, out, pf); break;
        default: x8_tile<TYPE, 1>(p, a, m, out, pf); break;
      }
      for (int64_t i = 0; i < r; i++) memcpy(y + (m + i) * N + n0, out + X8_ROWS * i, sizeof(float) * (size_t)rows);
      m += r;
    }
  }
}

bool have_avx2() {
  static const bool yes = [] {
    return !getenv("KNOBS_QMATMUL_SCALAR") && have_avx2_fma();
  }();
  return yes;
}
#else
bool have_vnni() { return false; }
bool have_avx2() { return false; }
#endif

/*
 * The training-sized products run on f32 panels of W dequantized a tile at a time (at most
 * PANEL_FLOATS floats per thread, never the whole weight) through the f32 GEMM, which reaches
 * the machine's f32 peak where the per-block int8 kernels are shaped for a few activation rows.
 */
const int64_t PANEL_M = 256, PANEL_BLOCKS = 8, PANEL_FLOATS = 32768;

/* Rows n0…n1 of W, blocks b0…b1 of each, as f32 [n1 − n0, (b1 − b0)·32]. */
void dequantize_panel(int type, const uint8_t *w, int64_t nb, int64_t n0, int64_t n1, int64_t b0, int64_t b1,
                      float *out) {
  const int64_t bb = block_bytes(type);
  for (int64_t n = n0; n < n1; n++) {
    for (int64_t b = b0; b < b1; b++) {
      const uint8_t *blk = w + (n * nb + b) * bb;
      const float dw = f16_to_f32(load_u16(blk));
      float *o = out + ((n - n0) * (b1 - b0) + (b - b0)) * QK;
      if (type == KN_Q8_0) {
        for (int j = 0; j < QK; j++) o[j] = (float)((const int8_t *)(blk + 2))[j] * dw;
      } else {
        for (int j = 0; j < QK / 2; j++) {
          o[j] = (float)((blk[2 + j] & 0x0f) - 8) * dw;
          o[j + QK / 2] = (float)((blk[2 + j] >> 4) - 8) * dw;
        }
      }
    }
  }
}

/* W's ggml blocks in a packed layout of `rows` rows per group (x16 or x8, see above): per block the
   rows' f32 scales, then chunks c of 4 values × `rows` rows at 4·rows·c bytes after them; q8_0
   stores q + q8_offset (x16: 128, the unsigned side of dpbusd; x8: 0), q4_0 two nibbles a byte. */
void repack(int type, const uint8_t *w, int64_t N, int64_t K, int64_t rows, int q8_offset, uint8_t *out) {
  const int64_t nb = K / QK, groups = (N + rows - 1) / rows, bb = block_bytes(type);
  const int64_t head = 4 * rows, xb = head + (type == KN_Q8_0 ? 32 : 16) * rows;
  memset(out, 0, (size_t)(groups * nb * xb));
  for (int64_t g = 0; g < groups; g++) {
    for (int64_t b = 0; b < nb; b++) {
      uint8_t *p = out + (g * nb + b) * xb;
      for (int64_t r = 0; r < rows && g * rows + r < N; r++) {
        const uint8_t *blk = w + ((g * rows + r) * nb + b) * bb;
        float scale = f16_to_f32(load_u16(blk));
        memcpy(p + 4 * r, &scale, 4);  // out need not be 4-byte aligned
        uint8_t u[QK];                 // the block's 32 weights as stored (q + offset, or the nibble)
        for (int j = 0; j < QK; j++)
          u[j] = type == KN_Q8_0 ? (uint8_t)(((const int8_t *)(blk + 2))[j] + q8_offset)
                                 : (uint8_t)(j < 16 ? blk[2 + j] & 0x0f : blk[2 + j - 16] >> 4);
        for (int i = 0; i < 4; i++) {
          if (type == KN_Q8_0)
            for (int k4 = 0; k4 < 8; k4++) p[head + head * k4 + 4 * r + i] = u[4 * k4 + i];
          else
            for (int c = 0; c < 4; c++) p[head + head * c + 4 * r + i] = (uint8_t)(u[8 * c + i] | (u[8 * c + 4 + i] << 4));
        }
      }
    }
  }
}

}  // namespace

namespace kn {

QPack qpack_layout() { return have_vnni() ? QPACK_X16 : have_avx2() ? QPACK_X8 : QPACK_NONE; }

void x8_product(int type, const QRows &a, int64_t M, const uint8_t *packed, int64_t N, float *y) {
#ifdef KN_QM_X86
  const int64_t groups = (N + X8_ROWS - 1) / X8_ROWS;
  /* at least ~128k multiply-adds per task; the split only moves whole groups */
  parallel_for(groups, (int64_t)(GRAIN * 4 / (M * a.K * X8_ROWS)) + 1, [&](int64_t g0, int64_t g1) {
    if (type == KN_Q8_0) x8_groups<KN_Q8_0>(packed, a, M, y, N, g0, g1);
    else x8_groups<KN_Q4_0>(packed, a, M, y, N, g0, g1);
  });
#else
  (void)type, (void)a, (void)M, (void)packed, (void)N, (void)y;
#endif
}

}  // namespace kn

extern "C" {

const char *kn_qmatmul_isa(void) {
  switch (qpack_layout()) {
    case QPACK_X16: return "avx512_vnni";
    case QPACK_X8: return "avx2";
    default: return "scalar";
  }
}

void kn_qmatmul_f32(int type, const float *x, int64_t M, int64_t K, const uint8_t *w, int64_t N, float *y) {
  if (M == 0 || N == 0) return;
  int64_t nb = K / QK, bb = block_bytes(type);
  if (nb == 0) {
    memset(y, 0, sizeof(float) * (size_t)(M * N));
    return;
  }
  if (int64_t bytes = kn_qrepack_bytes(type, N, K)) {  // VNNI or AVX2: the packed layout, made for this call
    std::vector<uint8_t> packed((size_t)bytes);
    kn_qrepack(type, w, N, K, packed.data());
    return kn_qmatmul_packed_f32(type, x, M, K, packed.data(), N, y);
  }
  std::vector<int8_t> q((size_t)(M * K));
  std::vector<float> d((size_t)(M * nb));
  for (int64_t m = 0; m < M; m++) quantize_row(x + m * K, K, q.data() + m * K, d.data() + m * nb);
  /* work per output row ≈ M·K multiply-adds; small products stay on the calling thread */
  parallel_for(N, (int64_t)(GRAIN * 4 / (M * K)) + 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const uint8_t *wr = w + n * nb * bb;
      for (int64_t m = 0; m < M; m++) {
        QRow xr{q.data() + m * K, d.data() + m * nb};
        y[m * N + n] = type == KN_Q8_0 ? dot_q8_scalar(wr, xr, nb) : dot_q4_scalar(wr, xr, nb);
      }
    }
  });
}

void kn_q8_quantize_rows(const float *x, int64_t K, int64_t m0, int64_t m1, int8_t *q, float *d, int32_t *qsum) {
  int64_t nb = K / QK;
  for (int64_t m = m0; m < m1; m++) {
    quantize_row(x + m * K, K, q + m * K, d + m * nb);
    for (int64_t b = 0; b < nb; b++) {
      int32_t s = 0;
      for (int j = 0; j < QK; j++) s += q[m * K + b * QK + j];
      qsum[m * nb + b] = s;
    }
  }
}

int64_t kn_qrepack_bytes(int type, int64_t N, int64_t K) {
  if ((type != KN_Q8_0 && type != KN_Q4_0) || K % QK != 0) return 0;
  switch (qpack_layout()) {
    case QPACK_X16: return (N + X16_ROWS - 1) / X16_ROWS * (K / QK) * x16_block_bytes(type);
#ifdef KN_QM_X86
    case QPACK_X8: return (N + X8_ROWS - 1) / X8_ROWS * (K / QK) * x8_block_bytes(type);
#endif
    default: return 0;
  }
}

void kn_qrepack(int type, const uint8_t *w, int64_t N, int64_t K, uint8_t *out) {
  if (qpack_layout() == QPACK_X16) repack(type, w, N, K, X16_ROWS, 128, out);
#ifdef KN_QM_X86
  else if (qpack_layout() == QPACK_X8) repack(type, w, N, K, X8_ROWS, 0, out);
#endif
}

void kn_qmatmul_packed_f32(int type, const float *x, int64_t M, int64_t K, const uint8_t *packed, int64_t N, float *y) {
  if (M == 0 || N == 0) return;
  int64_t nb = K / QK, groups = (N + X16_ROWS - 1) / X16_ROWS;
  std::vector<int8_t> q((size_t)(M * K));
  std::vector<float> d((size_t)(M * nb));
  std::vector<int32_t> qsum((size_t)(M * nb));
  kn_q8_quantize_rows(x, K, 0, M, q.data(), d.data(), qsum.data());
  if (qpack_layout() == QPACK_X8)
    return x8_product(type, QRows{q.data(), d.data(), qsum.data(), K, nb}, M, packed, N, y);
  parallel_for(groups, (int64_t)(GRAIN * 4 / (M * K * X16_ROWS)) + 1, [&](int64_t g0, int64_t g1) {
#ifdef KN_QM_X86
    float out[2 * X16_ROWS];
    const int64_t group_bytes = nb * x16_block_bytes(type);
    for (int64_t g = g0; g < g1;) {
      const int G = g1 - g >= 2 ? 2 : 1;
      int64_t rows = N - g * X16_ROWS < G * X16_ROWS ? N - g * X16_ROWS : G * X16_ROWS;
      for (int64_t m = 0; m < M; m++) {
        const int8_t *qm = q.data() + m * K;
        const float *dm = d.data() + m * nb;
        const int32_t *sm = qsum.data() + m * nb;
        x16_dispatch(type, G, packed + g * group_bytes, group_bytes, nb, qm, dm, sm, out);
        memcpy(y + m * N + g * X16_ROWS, out, sizeof(float) * (size_t)rows);
      }
      g += G;
    }
#else
    (void)g0, (void)g1;
#endif
  });
}

void kn_qmatmul_backward_f32(int type, const float *dy, int64_t M, int64_t N, const uint8_t *w, int64_t K, float *dx) {
  int64_t nb = K / QK;
  if (M == 0 || N == 0 || nb == 0) {
    memset(dx, 0, sizeof(float) * (size_t)(M * K));
    return;
  }
  /* Tiles of dx, PANEL_M rows × PANEL_BLOCKS blocks of columns: a fixed split, so every element is
     computed by the same calls whatever the thread count (and whichever thread runs the tile). */
  const int64_t mt = (M + PANEL_M - 1) / PANEL_M, kt = (nb + PANEL_BLOCKS - 1) / PANEL_BLOCKS;
  parallel_for(mt * kt, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> panel((size_t)PANEL_FLOATS);
    for (int64_t t = t0; t < t1; t++) {
      const int64_t m0 = t / kt * PANEL_M, m1 = m0 + PANEL_M < M ? m0 + PANEL_M : M;
      const int64_t b0 = t % kt * PANEL_BLOCKS, b1 = b0 + PANEL_BLOCKS < nb ? b0 + PANEL_BLOCKS : nb;
      const int64_t cols = (b1 - b0) * QK, rows = PANEL_FLOATS / cols;
      for (int64_t n0 = 0; n0 < N; n0 += rows) {  // dx tile (+)= dy[m0:m1, n0:n1] · W[n0:n1, cols]
        const int64_t n1 = n0 + rows < N ? n0 + rows : N;
        dequantize_panel(type, w, nb, n0, n1, b0, b1, panel.data());
        kn_sgemm_serial(0, 0, m1 - m0, cols, n1 - n0, 1.0f, dy + m0 * N + n0, N, panel.data(), cols,
                        n0 == 0 ? 0.0f : 1.0f, dx + m0 * K + b0 * QK, K);
      }
    }
  });
}

}  // extern "C"
