/* Scalar math shared by the kernels, written so that loops over it vectorise. */
#ifndef KNOBS_MATHF_H
#define KNOBS_MATHF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

namespace kn {

#define KN_INLINE static inline __attribute__((always_inline))

/* IEEE half → float, exact. */
KN_INLINE float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) bits = sign | 0x7f800000 | (man << 13);
  else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (man == 0) bits = sign;
  else {  // subnormal: normalise
    int e = -1;
    do { e++; man <<= 1; } while (!(man & 0x400));
    bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* float → IEEE half, round to nearest even (ggml's GGML_FP32_TO_FP16). */
KN_INLINE uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
  if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // rounds past the largest half
  if (ax < 0x38800000) {                                    // half subnormal (or zero)
    float v;
    uint32_t t = ax;
    memcpy(&v, &t, 4);
    return (uint16_t)(sign | (uint32_t)nearbyintf(v * 16777216.0f));  // v / 2^-24, ties to even
  }
  uint32_t r = ax + 0xfff + ((ax >> 13) & 1) - 0x38000000;
  return (uint16_t)(sign | (r >> 13));
}

/*
 * e^x in f32 without a libm call, so loops of it vectorise: x = n·ln2 + r with |r| ≤ ln2/2, e^r by
 * its degree-6 Taylor polynomial (error below 2 ulp), 2^n built from exponent bits in two halves so
 * that n = 128 (x near the overflow edge) and subnormal results both come out right.
 * Overflow gives +Inf, underflow 0, NaN stays NaN.
 */
KN_INLINE float pow2i(int32_t n) {
  int32_t bits = (n + 127) << 23;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

KN_INLINE float expf_fast(float x) {
  float xc = x > 88.72283f ? 88.72283f : (x < -103.9f ? -103.9f : x);
  float n = floorf(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ni = (int32_t)n;
  int32_t n1 = ni >> 1;
  float y = p * pow2i(n1) * pow2i(ni - n1);
  y = x > 88.72284f ? INFINITY : y;
  y = x < -103.9f ? 0.0f : y;
  return x != x ? x : y;
}

KN_INLINE float sigmoidf_fast(float x) { return 1.0f / (1.0f + expf_fast(-x)); }

/*
 * tanh in f32, vectorisable. |x| < 0.625: the odd Taylor series to x^19 (the first dropped term is
 * below 1e-8 relative there); otherwise 1 − 2/(e^{2|x|} + 1) with the sign put back, where the
 * subtraction loses at most a bit. e^{2|x|} overflowing to +Inf gives exactly ±1; NaN stays NaN.
 */
KN_INLINE float tanhf_fast(float x) {
  float a = fabsf(x);
  float z = x * x;
  float p = -443861162.0f / 1856156927625.0f;
  p = p * z + 6404582.0f / 10854718875.0f;
  p = p * z - 929569.0f / 638512875.0f;
  p = p * z + 21844.0f / 6081075.0f;
  p = p * z - 1382.0f / 155925.0f;
  p = p * z + 62.0f / 2835.0f;
  p = p * z - 17.0f / 315.0f;
  p = p * z + 2.0f / 15.0f;
  p = p * z - 1.0f / 3.0f;
  float small = x + x * z * p;
  float big = 1.0f - 2.0f / (expf_fast(2.0f * a) + 1.0f);
  big = copysignf(big, x);
  return a < 0.625f ? copysignf(small, x) : (x != x ? x : big);
}

const float SQRT_2_OVER_PI = 0.7978845608028654f;
const float GELU_TANH_COEF = 0.044715f;
const float INV_SQRT_2 = 0.7071067811865476f;
const float INV_SQRT_2PI = 0.3989422804014327f;

}  // namespace kn
#endif
