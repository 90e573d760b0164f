/* Elementwise kernels: unary ops and the fused activation gradients, binary arithmetic and compare, where, assign, cast. */
#include <math.h>
#include <string.h>

#include <vector>

#include "internal.h"
#include "mathf.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_GELU_X86 1
#endif

using namespace kn;

namespace {

/* ---- unary ----------------------------------------------------------------------------------- */

template <int OP>
KN_INLINE float unary1(float x) {
  switch (OP) {
    case KN_NEG: return -x;
    case KN_EXP: return expf_fast(x);
    case KN_LOG: return logf(x);
    case KN_SQRT: return sqrtf(x);
    case KN_RSQRT: return 1.0f / sqrtf(x);
    case KN_ABS: return fabsf(x);
    case KN_TANH: return tanhf_fast(x);
    case KN_SIGMOID: return sigmoidf_fast(x);
    case KN_RELU: return x > 0.0f || x != x ? x : 0.0f;
    case KN_GELU: return 0.5f * x * (1.0f + erff(x * INV_SQRT_2));
    /* ½x(1 + tanh u) = x·σ(2u): no cancellation where tanh u → −1 */
    case KN_GELU_TANH: return x * sigmoidf_fast(2.0f * SQRT_2_OVER_PI * (x + GELU_TANH_COEF * x * x * x));
    case KN_SILU: return x * sigmoidf_fast(x);
    default: /* sign */ return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);  // ±0 and NaN map to themselves
  }
}

/*
 * f'(x) of the activations with a fused backward (test/fused.test.ts checks each against its
 * composite rule in src/autograd/gradients.ts); PyTorch's convention at the kink: relu'(0) = 0.
 */
template <int OP>
KN_INLINE float deriv1(float x) {
  switch (OP) {
    case KN_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case KN_GELU: return 0.5f * (1.0f + erff(x * INV_SQRT_2)) + x * INV_SQRT_2PI * expf_fast(-0.5f * x * x);
    case KN_GELU_TANH: {
      /* with s = σ(2u): ½(1 + tanh u) = s and ½(1 − tanh² u) = 2s(1 − s) */
      float s = sigmoidf_fast(2.0f * SQRT_2_OVER_PI * (x + GELU_TANH_COEF * x * x * x));
      return s + 2.0f * x * s * (1.0f - s) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_COEF * x * x);
    }
    default: /* silu */ { float s = sigmoidf_fast(x); return s * (1.0f + x * (1.0f - s)); }
  }
}

#ifdef KN_GELU_X86
#define KN_AVX512 __attribute__((target("avx512f,fma")))

bool have_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return yes;
}

/*
 * GPT-2's tanh GELU on 16 lanes, the formula of unary1/deriv1 (x·σ(2u), u = √(2/π)(x + 0.044715x³)):
 * e^{−2u} by expf_fast's reduction and degree-6 polynomial with 2^n applied by scalef (which gives
 * +Inf and 0 at the ends itself), and 1/(1 + e) by rcp14 plus one Newton step (~1 ulp) instead of a
 * division. The compiler's vectorisation of the scalar formula ran at ~1.5-2 ns per element, which
 * made GELU and its derivative ~7 % of a kjv-gpt training step; this runs several times faster.
 * The argument of exp is clamped to [−103.9, 88]: e stays finite, so 1 + e has a reciprocal.
 */
KN_AVX512 inline __m512 sigmoid_2u(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 inner = _mm512_fmadd_ps(_mm512_set1_ps(GELU_TANH_COEF), x3, x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(SQRT_2_OVER_PI), inner);
  __m512 z = _mm512_mul_ps(u, _mm512_set1_ps(-2.0f));
  z = _mm512_max_ps(_mm512_set1_ps(-103.9f), _mm512_min_ps(_mm512_set1_ps(88.0f), z));  // NaN passes through
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(z, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), z);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, n));
  const __m512 inv = _mm512_rcp14_ps(d);
  const __m512 s = _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, _mm512_set1_ps(2.0f)));
  /* past the clamp σ is 0, as 1/(1 + e^z) is in f32 (so gelu(−Inf) = −Inf·0 = NaN, as the composite) */
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, _mm512_set1_ps(88.0f), _CMP_GE_OQ), s, _mm512_setzero_ps());
}

/* y = gelu_tanh(x) over n values. */
KN_AVX512 void gelu_tanh_dense(const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, sigmoid_2u(v)));
  }
}

/* y = g · gelu_tanh'(x) over n values: s + 2x·s(1 − s)·√(2/π)(1 + 3·0.044715x²) with s = σ(2u). */
KN_AVX512 void gelu_tanh_backward_dense(const float *x, const float *g, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 s = sigmoid_2u(v);
    const __m512 du = _mm512_mul_ps(_mm512_set1_ps(SQRT_2_OVER_PI),
                                    _mm512_fmadd_ps(_mm512_set1_ps(3.0f * GELU_TANH_COEF), _mm512_mul_ps(v, v),
                                                    _mm512_set1_ps(1.0f)));
    const __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(v, v), s), _mm512_sub_ps(_mm512_set1_ps(1.0f), s));
    const __m512 dv = _mm512_fmadd_ps(t, du, s);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + i), dv));
  }
}

/*
 * The AVX2 + FMA version for CPUs without AVX-512 (every AMD before Zen 4): the same formula on 8
 * lanes, with 2^n built from exponent bits and 1/(1 + e) by a division (AVX2 has no scalef, and
 * its rcp is only 12 bits). The lower clamp is −87 so that 2^n stays a normal number; below it e
 * is under 2⁻¹²⁵, and 1 + e = 1 in f32 either way.
 */
KN_AVX2 inline __m256 sigmoid_2u_avx2(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 inner = _mm256_fmadd_ps(_mm256_set1_ps(GELU_TANH_COEF), x3, x);
  const __m256 u = _mm256_mul_ps(_mm256_set1_ps(SQRT_2_OVER_PI), inner);
  __m256 z = _mm256_mul_ps(u, _mm256_set1_ps(-2.0f));
  z = _mm256_max_ps(_mm256_set1_ps(-87.0f), _mm256_min_ps(_mm256_set1_ps(88.0f), z));  // NaN passes through
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), z);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 d = _mm256_fmadd_ps(p, _mm256_castsi256_ps(bits), _mm256_set1_ps(1.0f));
  const __m256 s = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
  return _mm256_blendv_ps(s, _mm256_setzero_ps(), _mm256_cmp_ps(z, _mm256_set1_ps(88.0f), _CMP_GE_OQ));
}

KN_AVX2 inline __m256 gelu_tanh8(__m256 v) { return _mm256_mul_ps(v, sigmoid_2u_avx2(v)); }

KN_AVX2 inline __m256 gelu_tanh_backward8(__m256 v, __m256 g) {
  const __m256 s = sigmoid_2u_avx2(v);
  const __m256 du = _mm256_mul_ps(_mm256_set1_ps(SQRT_2_OVER_PI),
                                  _mm256_fmadd_ps(_mm256_set1_ps(3.0f * GELU_TANH_COEF), _mm256_mul_ps(v, v),
                                                  _mm256_set1_ps(1.0f)));
  const __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(v, v), s), _mm256_sub_ps(_mm256_set1_ps(1.0f), s));
  return _mm256_mul_ps(g, _mm256_fmadd_ps(t, du, s));
}

/* y = gelu_tanh(x) over n values, 8 at a time; the last < 8 through a zero-padded copy. */
KN_AVX2 void gelu_tanh_dense_avx2(const float *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu_tanh8(_mm256_loadu_ps(x + i)));
  if (i == n) return;
  float xs[8] = {0}, ys[8];
  memcpy(xs, x + i, sizeof(float) * (size_t)(n - i));
  _mm256_storeu_ps(ys, gelu_tanh8(_mm256_loadu_ps(xs)));
  memcpy(y + i, ys, sizeof(float) * (size_t)(n - i));
}

KN_AVX2 void gelu_tanh_backward_dense_avx2(const float *x, const float *g, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, gelu_tanh_backward8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(g + i)));
  if (i == n) return;
  float xs[8] = {0}, gs[8] = {0}, ys[8];
  memcpy(xs, x + i, sizeof(float) * (size_t)(n - i));
  memcpy(gs, g + i, sizeof(float) * (size_t)(n - i));
  _mm256_storeu_ps(ys, gelu_tanh_backward8(_mm256_loadu_ps(xs), _mm256_loadu_ps(gs)));
  memcpy(y + i, ys, sizeof(float) * (size_t)(n - i));
}

/* Strided x (and g) are gathered 256 at a time and run through the dense loop of the CPU's ISA,
   so every layout gives the same bits. */
const int64_t GATHER = 256;

typedef void (*GeluDense)(const float *x, float *y, int64_t n);
typedef void (*GeluBackwardDense)(const float *x, const float *g, float *y, int64_t n);

void gelu_tanh_gathered(GeluDense dense, const float *x, int64_t s, float *y, int64_t n) {
  if (s == 1) return dense(x, y, n);
  float xs[GATHER];
  for (int64_t i0 = 0; i0 < n; i0 += GATHER) {
    const int64_t m = n - i0 < GATHER ? n - i0 : GATHER;
    for (int64_t j = 0; j < m; j++) xs[j] = x[(i0 + j) * s];
    dense(xs, y + i0, m);
  }
}

void gelu_tanh_backward_gathered(GeluBackwardDense dense, const float *x, int64_t sx, const float *g, int64_t sg,
                                 float *y, int64_t n) {
  if (sx == 1 && sg == 1) return dense(x, g, y, n);
  float xs[GATHER], gs[GATHER];
  for (int64_t i0 = 0; i0 < n; i0 += GATHER) {
    const int64_t m = n - i0 < GATHER ? n - i0 : GATHER;
    for (int64_t j = 0; j < m; j++) {
      xs[j] = x[(i0 + j) * sx];
      gs[j] = g[(i0 + j) * sg];
    }
    dense(xs, gs, y + i0, m);
  }
}

/* The tanh GELU's dense loops for this CPU, or null (the scalar formula then). */
GeluDense gelu_tanh_kernel() {
  static const GeluDense f = have_avx512() ? gelu_tanh_dense : have_avx2_fma() ? gelu_tanh_dense_avx2 : nullptr;
  return f;
}

GeluBackwardDense gelu_tanh_backward_kernel() {
  static const GeluBackwardDense f =
      have_avx512() ? gelu_tanh_backward_dense : have_avx2_fma() ? gelu_tanh_backward_dense_avx2 : nullptr;
  return f;
}
#endif

#define UNARY_CASES(M) \
  M(KN_NEG) M(KN_EXP) M(KN_LOG) M(KN_SQRT) M(KN_RSQRT) M(KN_ABS) M(KN_TANH) M(KN_SIGMOID) M(KN_RELU) M(KN_GELU) \
  M(KN_GELU_TANH) M(KN_SILU) M(KN_SIGN)

/* y[i] = f(x[i·s]) for one row; the unit-stride case is the vectorised one. */
KN_CLONES
void unary_row(int op, const float *x, int64_t s, float *y, int64_t n) {
#ifdef KN_GELU_X86
  if (op == KN_GELU_TANH && gelu_tanh_kernel()) return gelu_tanh_gathered(gelu_tanh_kernel(), x, s, y, n);
#endif
  switch (op) {
#define M(OP)                                                         \
  case OP:                                                            \
    if (s == 1) for (int64_t i = 0; i < n; i++) y[i] = unary1<OP>(x[i]); \
    else for (int64_t i = 0; i < n; i++) y[i] = unary1<OP>(x[i * s]);    \
    return;
    UNARY_CASES(M)
#undef M
  }
}

#define ACTIVATION_CASES(M) M(KN_RELU) M(KN_GELU) M(KN_GELU_TANH) M(KN_SILU)

KN_CLONES
void activation_backward_row(int op, const float *x, int64_t sx, const float *g, int64_t sg, float *y, int64_t n) {
#ifdef KN_GELU_X86
  if (op == KN_GELU_TANH && gelu_tanh_backward_kernel())
    return gelu_tanh_backward_gathered(gelu_tanh_backward_kernel(), x, sx, g, sg, y, n);
#endif
  switch (op) {
#define M(OP)                                                                          \
  case OP:                                                                             \
    if (sx == 1 && sg == 1) for (int64_t i = 0; i < n; i++) y[i] = g[i] * deriv1<OP>(x[i]); \
    else for (int64_t i = 0; i < n; i++) y[i] = g[i * sg] * deriv1<OP>(x[i * sx]);         \
    return;
    ACTIVATION_CASES(M)
#undef M
  }
}

/* acc[j] += x[j]: a row of a bias gradient's column sums (and h[j] += b[j]: a bias add). */
KN_CLONES
void add_row(float *acc, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) acc[i] += x[i];
}

/* Rows per partial sum of a bias gradient: fixed, so the sum's order never depends on the threads. */
const int64_t BIAS_ROWS = 64;

/* Contiguous output strides of a view's shape, as a pseudo-view for coalescing. */
kn_view contiguous_like(const kn_view *v, void *data) {
  kn_view o;
  o.data = data;
  o.ndim = v->ndim;
  int64_t s = 1;
  for (int d = v->ndim - 1; d >= 0; d--) {
    o.shape[d] = v->shape[d];
    o.strides[d] = s;
    s *= v->shape[d];
  }
  return o;
}

/*
 * Visits the elements of `count` views of one shape in row-major order, split across the pool:
 * seg(offsets (elements, per view), length, inner strides, flat index of the first element).
 * Rows that a thread boundary cuts are visited in two parts.
 */
template <class F>
void for_segments(const kn_view *const *views, int count, const F &seg) {
  int64_t n = numel(views[0]);
  if (n == 0) return;
  Layout L;
  coalesce(views, count, &L);
  int nd = L.ndim;
  int64_t len = L.shape[nd - 1];
  parallel_for(n, GRAIN, [&](int64_t e0, int64_t e1) {
    int64_t r0 = e0 / len, r1 = (e1 + len - 1) / len;
    int64_t flat = r0 * len;
    int64_t inner[4];
    for (int k = 0; k < count; k++) inner[k] = L.strides[k][nd - 1];
    for_rows(L, count, r0, r1, [&](const int64_t *off, int64_t rowlen) {
      int64_t b = flat < e0 ? e0 - flat : 0;
      int64_t e = flat + rowlen > e1 ? e1 - flat : rowlen;
      if (e > b) {
        int64_t o[4];
        for (int k = 0; k < count; k++) o[k] = off[k] + b * inner[k];
        seg(o, e - b, inner, flat + b);
      }
      flat += rowlen;
    });
  });
}

/* ---- binary ---------------------------------------------------------------------------------- */

template <int OP>
KN_INLINE float arith(float a, float b) {
  switch (OP) {
    case KN_ADD: return a + b;
    case KN_SUB: return a - b;
    case KN_MUL: return a * b;
    case KN_DIV: return a / b;
    case KN_POW: return powf(a, b);
    case KN_MAXIMUM: return a != a || b != b ? a + b : (a >= b ? a : b);
    default: /* minimum */ return a != a || b != b ? a + b : (a <= b ? a : b);
  }
}

template <int OP>
KN_INLINE uint8_t compare(float a, float b) {
  switch (OP) {
    case KN_EQ: return a == b;
    case KN_NE: return a != b;
    case KN_LT: return a < b;
    case KN_LE: return a <= b;
    case KN_GT: return a > b;
    default: return a >= b;
  }
}

#define ARITH_CASES(M) M(KN_ADD) M(KN_SUB) M(KN_MUL) M(KN_DIV) M(KN_POW) M(KN_MAXIMUM) M(KN_MINIMUM)
#define COMPARE_CASES(M) M(KN_EQ) M(KN_NE) M(KN_LT) M(KN_LE) M(KN_GT) M(KN_GE)

/* One row of a ∘ b with strides sa, sb; specialised for (1,1), (1,0) and (0,1). */
#define ROW_LOOPS(EXPR)                                                          \
  if (sa == 1 && sb == 1) for (int64_t i = 0; i < n; i++) y[i] = EXPR(a[i], b[i]); \
  else if (sa == 1 && sb == 0) { const float bv = b[0]; for (int64_t i = 0; i < n; i++) y[i] = EXPR(a[i], bv); } \
  else if (sa == 0 && sb == 1) { const float av = a[0]; for (int64_t i = 0; i < n; i++) y[i] = EXPR(av, b[i]); } \
  else for (int64_t i = 0; i < n; i++) y[i] = EXPR(a[i * sa], b[i * sb]);

KN_CLONES
void arith_row(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n) {
  switch (op) {
#define M(OP) case OP: { ROW_LOOPS(arith<OP>) return; }
    ARITH_CASES(M)
#undef M
  }
}

KN_CLONES
void compare_row(int op, const float *a, int64_t sa, const float *b, int64_t sb, uint8_t *y, int64_t n) {
  switch (op) {
#define M(OP) case OP: { ROW_LOOPS(compare<OP>) return; }
    COMPARE_CASES(M)
#undef M
  }
}

template <class T>
void copy_row(T *d, int64_t sd, const T *s, int64_t ss, int64_t n) {
  if (sd == 1 && ss == 1) memcpy(d, s, (size_t)n * sizeof(T));
  else if (ss == 0) { T v = s[0]; for (int64_t i = 0; i < n; i++) d[i * sd] = v; }
  else for (int64_t i = 0; i < n; i++) d[i * sd] = s[i * ss];
}

/*
 * The copy that makes a transposed matrix row-major (weight gradients of [out, in] layers, q/k/v
 * heads): when the destination's two innermost dims are contiguous [R, C] and the source reads
 * them with unit stride down R, copy in 32×32 tiles so reads and writes both stay in cache.
 * Returns false (and does nothing) for any other layout.
 */
template <class T>
bool transposed_copy(T *d, const T *s, const Layout &L) {
  int nd = L.ndim;
  if (nd < 2) return false;
  const int64_t R = L.shape[nd - 2], C = L.shape[nd - 1];
  const int64_t sr = L.strides[1][nd - 2], sc = L.strides[1][nd - 1];
  if (L.strides[0][nd - 1] != 1 || L.strides[0][nd - 2] != C || sr != 1 || sc == 1 || R < 8 || C < 8) return false;
  const int64_t mats = rows_of(L) / R, TB = 32, rblocks = (R + TB - 1) / TB;
  parallel_for(mats * rblocks, GRAIN / (TB * C) + 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      int64_t m = q / rblocks, i0 = (q % rblocks) * TB, i1 = i0 + TB < R ? i0 + TB : R;
      /* the matrix's offsets: unravel m over the dims outside the last two */
      int64_t od = 0, os = 0, rest = m;
      for (int k = nd - 3; k >= 0; k--) {
        int64_t idx = rest % L.shape[k];
        rest /= L.shape[k];
        od += idx * L.strides[0][k];
        os += idx * L.strides[1][k];
      }
      for (int64_t j0 = 0; j0 < C; j0 += TB) {
        int64_t j1 = j0 + TB < C ? j0 + TB : C;
        for (int64_t j = j0; j < j1; j++) {
          const T *sp = s + os + j * sc;
          T *dp = d + od + j;
          for (int64_t i = i0; i < i1; i++) dp[i * C] = sp[i];
        }
      }
    }
  });
  return true;
}

/* JS-style conversion of a finite-or-not double to an integer type of `bits` bits (wraps). */
template <class T>
KN_INLINE T to_int(double v) {
  if (!(v == v) || v == INFINITY || v == -INFINITY) return 0;
  double t = trunc(v);
  if (!(fabs(t) < 9.0e18)) t = fmod(t, 18446744073709551616.0);
  return (T)(uint64_t)(int64_t)t;
}

template <class S>
double read_as_double(const void *p, int64_t i) { return (double)((const S *)p)[i]; }

}  // namespace

extern "C" {

void kn_unary_f32(kn_unary_op op, const kn_view *x, float *out) {
  kn_view o = contiguous_like(x, out);
  const kn_view *v[2] = {x, &o};
  const float *X = (const float *)x->data;
  for_segments(v, 2, [&](const int64_t *off, int64_t n, const int64_t *inner, int64_t) {
    unary_row(op, X + off[0], inner[0], out + off[1], n);
  });
}

void kn_activation_backward_f32(kn_unary_op op, const kn_view *x, const kn_view *g, float *out) {
  kn_view o = contiguous_like(x, out);
  const kn_view *v[3] = {x, g, &o};
  const float *X = (const float *)x->data, *G = (const float *)g->data;
  for_segments(v, 3, [&](const int64_t *off, int64_t n, const int64_t *inner, int64_t) {
    activation_backward_row(op, X + off[0], inner[0], G + off[1], inner[1], out + off[2], n);
  });
}

/* A linear layer's epilogue in one pass per row while the row is in cache: the bias add into the
   GEMM's output (the same float sum as a separate add), then the activation (the same function as
   kn_unary_f32), so the fused layer's forward equals its composite bit for bit. */
void kn_bias_act_f32(float *h, const float *bias, int act, int64_t rows, int64_t N, float *y) {
  if (rows <= 0 || N <= 0 || (!bias && act < 0)) return;
  parallel_for(rows, GRAIN / N + 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float *hr = h + r * N;
      if (bias) add_row(hr, bias, N);
      if (act >= 0) unary_row(act, hr, 1, y + r * N, N);
    }
  });
}

/* dh = g · act'(h) and db = Σrows dh in one pass: each block of BIAS_ROWS rows sums into its own
   partial row (float, as the rows stream by), and the partials are added in block order in double. */
void kn_bias_act_backward_f32(const float *g, const float *h, int act, int64_t rows, int64_t N, float *dh,
                              float *db) {
  if (N <= 0) return;
  if (act < 0) dh = nullptr;
  if (!dh && !db) return;
  const int64_t blocks = (rows + BIAS_ROWS - 1) / BIAS_ROWS;
  std::vector<float> part(db ? (size_t)(blocks * N) : 0, 0.0f);
  parallel_for(blocks, GRAIN / (BIAS_ROWS * N) + 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      int64_t r1 = (b + 1) * BIAS_ROWS < rows ? (b + 1) * BIAS_ROWS : rows;
      for (int64_t r = b * BIAS_ROWS; r < r1; r++) {
        const float *src = g + r * N;
        if (dh) {
          activation_backward_row(act, h + r * N, 1, src, 1, dh + r * N, N);
          src = dh + r * N;
        }
        if (db) add_row(part.data() + b * N, src, N);
      }
    }
  });
  if (!db) return;
  std::vector<double> acc((size_t)N, 0.0);
  for (int64_t b = 0; b < blocks; b++) {
    const float *p = part.data() + b * N;
    for (int64_t j = 0; j < N; j++) acc[j] += p[j];
  }
  for (int64_t j = 0; j < N; j++) db[j] = (float)acc[j];
}

void kn_binary_f32(kn_binary_op op, const kn_view *a, const kn_view *b, void *out) {
  kn_view o = contiguous_like(a, out);
  const kn_view *v[3] = {a, b, &o};
  const float *A = (const float *)a->data, *B = (const float *)b->data;
  bool cmp = op >= KN_EQ;
  for_segments(v, 3, [&](const int64_t *off, int64_t n, const int64_t *inner, int64_t) {
    if (cmp) compare_row(op, A + off[0], inner[0], B + off[1], inner[1], (uint8_t *)out + off[2], n);
    else arith_row(op, A + off[0], inner[0], B + off[1], inner[1], (float *)out + off[2], n);
  });
}

void kn_where_f32(const kn_view *cond, const kn_view *a, const kn_view *b, float *out) {
  kn_view o = contiguous_like(a, out);
  const kn_view *v[4] = {cond, a, b, &o};
  const uint8_t *C = (const uint8_t *)cond->data;
  const float *A = (const float *)a->data, *B = (const float *)b->data;
  for_segments(v, 4, [&](const int64_t *off, int64_t n, const int64_t *s, int64_t) {
    const uint8_t *c = C + off[0];
    const float *x = A + off[1], *y = B + off[2];
    float *r = out + off[3];
    for (int64_t i = 0; i < n; i++) r[i] = c[i * s[0]] ? x[i * s[1]] : y[i * s[2]];
  });
}

void kn_assign(size_t elem, void *dst, const kn_view *dl, const kn_view *src) {
  kn_view d = *dl;
  d.data = dst;
  const kn_view *v[2] = {&d, src};
  if (numel(&d) >= 1024 && (elem == 4 || elem == 8)) {
    Layout L;
    coalesce(v, 2, &L);
    if (elem == 4 ? transposed_copy((uint32_t *)dst, (const uint32_t *)src->data, L)
                  : transposed_copy((uint64_t *)dst, (const uint64_t *)src->data, L))
      return;
  }
  for_segments(v, 2, [&](const int64_t *off, int64_t n, const int64_t *s, int64_t) {
    switch (elem) {
      case 1: copy_row((uint8_t *)dst + off[0], s[0], (const uint8_t *)src->data + off[1], s[1], n); break;
      case 2: copy_row((uint16_t *)dst + off[0], s[0], (const uint16_t *)src->data + off[1], s[1], n); break;
      case 4: copy_row((uint32_t *)dst + off[0], s[0], (const uint32_t *)src->data + off[1], s[1], n); break;
      default: copy_row((uint64_t *)dst + off[0], s[0], (const uint64_t *)src->data + off[1], s[1], n); break;
    }
  });
}

void kn_cast(kn_dtype from, const kn_view *x, kn_dtype to, void *out) {
  kn_view o = contiguous_like(x, out);
  const kn_view *v[2] = {x, &o};
  double (*rd)(const void *, int64_t) = from == KN_F32   ? read_as_double<float>
                                        : from == KN_F64 ? read_as_double<double>
                                        : from == KN_I32 ? read_as_double<int32_t>
                                        : from == KN_I8  ? read_as_double<int8_t>
                                                         : read_as_double<uint8_t>;
  for_segments(v, 2, [&](const int64_t *off, int64_t n, const int64_t *s, int64_t flat) {
    for (int64_t i = 0; i < n; i++) {
      double d = rd(x->data, off[0] + i * s[0]);
      int64_t j = flat + i;
      switch (to) {
        case KN_F32: ((float *)out)[j] = (float)d; break;
        case KN_F64: ((double *)out)[j] = d; break;
        case KN_I32: ((int32_t *)out)[j] = to_int<int32_t>(d); break;
        case KN_I8: ((int8_t *)out)[j] = to_int<int8_t>(d); break;
        case KN_U8: ((uint8_t *)out)[j] = to_int<uint8_t>(d); break;
        case KN_BOOL: ((uint8_t *)out)[j] = d != 0.0 ? 1 : 0; break;  // NaN is truthy, as in PyTorch
      }
    }
  });
}

}  // extern "C"
