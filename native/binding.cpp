/*
 * The N-API layer: turns JS arguments into kernels.h calls. It holds no math. Every argument is
 * checked here before a kernel sees it — typed-array kind, shapes, strides and offsets against the
 * storage length — and a failed check throws an Error with code E_BACKEND whose message names
 * this file and line, so a bug in the TS side points at the rule it broke.
 *
 * Views travel as (typed array, layout): all layouts of one call are packed by the TS side into one
 * Float64Array `meta` = [ndim, offset, shape…, strides…] per view, in argument order, so a call costs
 * a handful of N-API round trips whatever the rank.
 */
#include <math.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "kernels.h"

namespace {

struct Fail {};  // thrown after a JS exception is pending; caught at the function boundary

[[noreturn]] void fail_at(napi_env env, const char *file, int line, const char *msg) {
  char buf[512];
  const char *base = strrchr(file, '/');
  snprintf(buf, sizeof buf, "knobs native (%s:%d): %s", base ? base + 1 : file, line, msg);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "E_BACKEND", buf);
  throw Fail{};
}

#define CHECK(cond, ...)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      char m_[400];                                              \
      snprintf(m_, sizeof m_, __VA_ARGS__);                      \
      fail_at(env, __FILE__, __LINE__, m_);                      \
    }                                                            \
  } while (0)
#define NAPI(call) CHECK((call) == napi_ok, "N-API call failed: %s", #call)

struct Args {
  napi_env env;
  size_t argc = 24;
  napi_value argv[24];
  Args(napi_env e, napi_callback_info info) : env(e) {
    napi_env env = e;
    NAPI(napi_get_cb_info(e, info, &argc, argv, nullptr, nullptr));
  }
};

struct Array {
  void *data = nullptr;
  size_t length = 0;  // elements
  napi_typedarray_type type = napi_float32_array;
  size_t elem = 4;
};

size_t elem_size(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: return 4;
    default: return 8;
  }
}

const char *type_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    default: return "BigUint64Array";
  }
}

#define ARG_COUNT(n) CHECK(a.argc >= (size_t)(n), "expected %d arguments, got %zu", (int)(n), a.argc)

Array array_at(napi_env env, napi_value v, const char *what) {
  bool is = false;
  NAPI(napi_is_typedarray(env, v, &is));
  CHECK(is, "%s must be a typed array", what);
  Array r;
  napi_value ab;
  size_t byte_offset;
  NAPI(napi_get_typedarray_info(env, v, &r.type, &r.length, &r.data, &ab, &byte_offset));
  r.elem = elem_size(r.type);
  return r;
}
#define ARRAY(i, what) array_at(env, a.argv[i], what)

Array typed(napi_env env, napi_value v, napi_typedarray_type t, const char *what) {
  Array r = array_at(env, v, what);
  CHECK(r.type == t, "%s must be a %s, got a %s", what, type_name(t), type_name(r.type));
  return r;
}
#define F32(i, what) typed(env, a.argv[i], napi_float32_array, what)
#define ARRAY_V(v, what) array_at(env, v, what)

bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return true;
  return t == napi_null || t == napi_undefined;
}

double number_at(napi_env env, napi_value v, const char *what) {
  double d;
  CHECK(napi_get_value_double(env, v, &d) == napi_ok, "%s must be a number", what);
  return d;
}
#define NUM(i, what) number_at(env, a.argv[i], what)

int64_t int_at(napi_env env, napi_value v, const char *what, int64_t lo, int64_t hi) {
  double d = number_at(env, v, what);
  CHECK(d == floor(d) && d >= (double)lo && d <= (double)hi, "%s must be an integer in [%lld, %lld], got %g", what,
        (long long)lo, (long long)hi, d);
  return (int64_t)d;
}
#define INT(i, what, lo, hi) int_at(env, a.argv[i], what, lo, hi)
const int64_t BIG = (int64_t)1 << 50;

/* Reads views from the packed meta array, checking each against its storage. */
struct MetaReader {
  napi_env env;
  const double *m;
  size_t n, pos = 0;
  MetaReader(napi_env e, napi_value v) : env(e) {
    Array arr = typed(e, v, napi_float64_array, "meta (view layouts)");
    m = (const double *)arr.data;
    n = arr.length;
  }
  int64_t next(const char *what) {
    CHECK(pos < n, "meta ends early while reading %s", what);
    double d = m[pos++];
    CHECK(d == floor(d) && d >= 0 && d <= (double)BIG, "%s must be a non-negative integer, got %g", what, d);
    return (int64_t)d;
  }
  /* Fills v for a view over `arr` and checks that every element it can address is inside arr. */
  void view(const Array &arr, kn_view *v, const char *what) {
    int64_t nd = next("ndim");
    CHECK(nd <= KN_MAX_DIMS, "%s has rank %lld; the native backend handles up to %d", what, (long long)nd, KN_MAX_DIMS);
    int64_t offset = next("offset");
    v->ndim = (int)nd;
    bool empty = false;
    for (int d = 0; d < nd; d++) {
      v->shape[d] = next("shape");
      if (v->shape[d] == 0) empty = true;
    }
    double last = (double)offset;
    for (int d = 0; d < nd; d++) {
      v->strides[d] = next("stride");
      if (!empty) last += (double)(v->shape[d] - 1) * (double)v->strides[d];
    }
    CHECK(empty || last < (double)arr.length,
          "%s reaches element %.0f but its storage holds %zu (offset %lld)", what, last, arr.length,
          (long long)offset);
    CHECK((size_t)offset <= arr.length, "%s offset %lld is past its storage (%zu)", what, (long long)offset, arr.length);
    v->data = (const char *)arr.data + (size_t)offset * arr.elem;
  }
};

int64_t numel(const kn_view &v) {
  int64_t n = 1;
  for (int d = 0; d < v.ndim; d++) n *= v.shape[d];
  return n;
}

bool same_shape(const kn_view &x, const kn_view &y) {
  if (x.ndim != y.ndim) return false;
  for (int d = 0; d < x.ndim; d++)
    if (x.shape[d] != y.shape[d]) return false;
  return true;
}

void check_out(napi_env env, const Array &out, int64_t need, const char *what) {
  CHECK((int64_t)out.length >= need, "%s holds %zu elements but the result needs %lld", what, out.length,
        (long long)need);
}

napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

napi_value number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

napi_value string(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

#define FN(name) napi_value name(napi_env env, napi_callback_info info)
#define BODY_BEGIN try { Args a(env, info);
#define BODY_END } catch (const Fail &) { return nullptr; }

/* ---- runtime ----------------------------------------------------------------------------- */

int malloc_tuned_flag = 0;

FN(js_info) {
  BODY_BEGIN
  (void)a;
  napi_value o;
  NAPI(napi_create_object(env, &o));
  NAPI(napi_set_named_property(env, o, "gemm", string(env, kn_gemm_library())));
  NAPI(napi_set_named_property(env, o, "gemmLibraries", string(env, kn_gemm_libraries())));
  NAPI(napi_set_named_property(env, o, "isa", string(env, kn_cpu_isa())));
  NAPI(napi_set_named_property(env, o, "onednnIsa", string(env, kn_onednn_isa())));
  napi_value bf16;
  NAPI(napi_get_boolean(env, kn_bf16_available() != 0, &bf16));
  NAPI(napi_set_named_property(env, o, "bf16", bf16));
  NAPI(napi_set_named_property(env, o, "threads", number(env, kn_get_threads())));
  napi_value tuned;
  NAPI(napi_get_boolean(env, malloc_tuned_flag != 0, &tuned));
  NAPI(napi_set_named_property(env, o, "mallocTuned", tuned));
  return o;
  BODY_END
}

FN(js_set_threads) {
  BODY_BEGIN
  ARG_COUNT(1);
  return number(env, kn_set_threads((int)INT(0, "threads", 1, 256)));
  BODY_END
}

FN(js_select_gemm) {
  BODY_BEGIN
  ARG_COUNT(1);
  char name[32];
  size_t len;
  NAPI(napi_get_value_string_utf8(env, a.argv[0], name, sizeof name, &len));
  CHECK(kn_select_gemm(name) == 0, "GEMM library '%s' is not in this build (have: %s)", name, kn_gemm_libraries());
  return undefined(env);
  BODY_END
}

/* sgemm(transA, transB, M, N, K, A, B, C): C = op(A)·op(B), all contiguous. */
FN(js_sgemm) {
  BODY_BEGIN
  ARG_COUNT(8);
  int ta = (int)INT(0, "transA", 0, 1), tb = (int)INT(1, "transB", 0, 1);
  int64_t M = INT(2, "M", 0, BIG), N = INT(3, "N", 0, BIG), K = INT(4, "K", 0, BIG);
  Array A = F32(5, "A"), B = F32(6, "B"), C = F32(7, "C");
  CHECK((double)M * K <= (double)A.length, "A holds %zu elements, needs M·K = %lld", A.length, (long long)(M * K));
  CHECK((double)K * N <= (double)B.length, "B holds %zu elements, needs K·N = %lld", B.length, (long long)(K * N));
  CHECK((double)M * N <= (double)C.length, "C holds %zu elements, needs M·N = %lld", C.length, (long long)(M * N));
  kn_sgemm(ta, tb, M, N, K, 1.0f, (const float *)A.data, ta ? (M > 0 ? M : 1) : (K > 0 ? K : 1),
           (const float *)B.data, tb ? (K > 0 ? K : 1) : (N > 0 ? N : 1), 0.0f, (float *)C.data, N > 0 ? N : 1);
  return undefined(env);
  BODY_END
}

/* sgemmBf16(transA, transB, M, N, K, A, B, C): js_sgemm with bf16 products (f32 accumulation). */
FN(js_sgemm_bf16) {
  BODY_BEGIN
  ARG_COUNT(8);
  int ta = (int)INT(0, "transA", 0, 1), tb = (int)INT(1, "transB", 0, 1);
  int64_t M = INT(2, "M", 0, BIG), N = INT(3, "N", 0, BIG), K = INT(4, "K", 0, BIG);
  Array A = F32(5, "A"), B = F32(6, "B"), C = F32(7, "C");
  CHECK((double)M * K <= (double)A.length, "A holds %zu elements, needs M·K = %lld", A.length, (long long)(M * K));
  CHECK((double)K * N <= (double)B.length, "B holds %zu elements, needs K·N = %lld", B.length, (long long)(K * N));
  CHECK((double)M * N <= (double)C.length, "C holds %zu elements, needs M·N = %lld", C.length, (long long)(M * N));
  CHECK(kn_bf16_available(), "bf16 GEMM needs oneDNN on a CPU with AVX512_BF16 or AMX (oneDNN ISA here: %s)",
        kn_onednn_isa());
  kn_sgemm_bf16(ta, tb, M, N, K, (const float *)A.data, ta ? (M > 0 ? M : 1) : (K > 0 ? K : 1),
                (const float *)B.data, tb ? (K > 0 ? K : 1) : (N > 0 ? N : 1), (float *)C.data, N > 0 ? N : 1, 1);
  return undefined(env);
  BODY_END
}

FN(js_bf16_impl) {
  BODY_BEGIN
  (void)a;
  return string(env, kn_bf16_impl());
  BODY_END
}

/* matmul(a, b, meta, out) and matmulBf16(a, b, meta, out) */
napi_value matmul_common(napi_env env, napi_callback_info info, bool bf16) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array sa = F32(0, "a"), sb = F32(1, "b"), out = F32(3, "out");
  MetaReader r(env, a.argv[2]);
  kn_view va, vb;
  r.view(sa, &va, "a");
  r.view(sb, &vb, "b");
  int nd = va.ndim;
  CHECK(nd >= 2 && vb.ndim == nd, "matmul needs a and b of one rank ≥ 2, got %d and %d", va.ndim, vb.ndim);
  for (int d = 0; d < nd - 2; d++)
    CHECK(va.shape[d] == vb.shape[d], "matmul batch dim %d differs: %lld vs %lld", d, (long long)va.shape[d],
          (long long)vb.shape[d]);
  CHECK(va.shape[nd - 1] == vb.shape[nd - 2], "matmul inner dims differ: %lld vs %lld", (long long)va.shape[nd - 1],
        (long long)vb.shape[nd - 2]);
  int64_t need = numel(va) / (va.shape[nd - 1] ? va.shape[nd - 1] : 1) * vb.shape[nd - 1];
  if (va.shape[nd - 1] == 0) {
    need = vb.shape[nd - 1];
    for (int d = 0; d < nd - 1; d++) need *= va.shape[d];
  }
  check_out(env, out, need, "out");
  if (bf16)
    CHECK(kn_matmul_bf16(&va, &vb, (float *)out.data) == 0,
          "bf16 matmul needs oneDNN on a CPU with AVX512_BF16 or AMX (oneDNN ISA here: %s)", kn_onednn_isa());
  else kn_matmul_f32(&va, &vb, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_matmul) { return matmul_common(env, info, false); }

float *opt_f32(napi_env env, napi_value v, int64_t need, const char *what);  // defined below
float *req_f32(napi_env env, napi_value v, int64_t need, const char *what);  // defined below

/* matmulAccumulate(a, b, meta, c, alpha, bias?): c [M, N] += bias [N] + alpha · a [M, K] · b [K, N] (2-D views;
   c row-major; bias null or absent: none). */
FN(js_matmul_accumulate) {
  BODY_BEGIN
  ARG_COUNT(5);
  Array sa = F32(0, "a"), sb = F32(1, "b"), c = F32(3, "c");
  MetaReader r(env, a.argv[2]);
  kn_view va, vb;
  r.view(sa, &va, "a");
  r.view(sb, &vb, "b");
  CHECK(va.ndim == 2 && vb.ndim == 2, "matmulAccumulate needs 2-D a and b, got %d and %d dims", va.ndim, vb.ndim);
  CHECK(va.shape[1] == vb.shape[0], "matmulAccumulate inner dims differ: %lld vs %lld", (long long)va.shape[1],
        (long long)vb.shape[0]);
  check_out(env, c, va.shape[0] * vb.shape[1], "c");
  const float *bias = a.argc > 5 ? opt_f32(env, a.argv[5], vb.shape[1], "bias") : nullptr;
  kn_matmul_accumulate_f32(&va, &vb, (float)NUM(4, "alpha"), bias, (float *)c.data);
  return undefined(env);
  BODY_END
}
FN(js_matmul_bf16) { return matmul_common(env, info, true); }

/* loraBackward(g, sB, t, h, M, N, K, r, u, dB, dA): u [M, r] = g [M, N] · sB [N, r], dB [N, r] = gᵀ·t (t [M, r]),
   dA [r, K] = uᵀ·h (h [M, K]), all dense, r ≤ 32, in one pass over g and h (lora.cpp). */
FN(js_lora_backward) {
  BODY_BEGIN
  ARG_COUNT(11);
  int64_t M = INT(4, "M", 0, BIG), N = INT(5, "N", 1, BIG), K = INT(6, "K", 1, BIG), r = INT(7, "r", 1, 32);
  CHECK((double)M * (double)(N > K ? N : K) < 4e15, "M·N is too large");
  const float *g = req_f32(env, a.argv[0], M * N, "g");
  const float *sB = req_f32(env, a.argv[1], N * r, "sB");
  const float *t = req_f32(env, a.argv[2], M * r, "t");
  const float *h = req_f32(env, a.argv[3], M * K, "h");
  float *u = req_f32(env, a.argv[8], M * r, "u");
  float *dB = req_f32(env, a.argv[9], N * r, "dB");
  float *dA = req_f32(env, a.argv[10], r * K, "dA");
  kn_lora_backward_f32(g, M, N, sB, t, h, K, r, u, dB, dA);
  return undefined(env);
  BODY_END
}

/* matmulPair(a1, b1, a2, b2, meta, out1, out2): out1 = a1·b1 and out2 = a2·b2, 2-D views, in one job. */
FN(js_matmul_pair) {
  BODY_BEGIN
  ARG_COUNT(7);
  Array s[4] = {F32(0, "a1"), F32(1, "b1"), F32(2, "a2"), F32(3, "b2")};
  Array o1 = F32(5, "out1"), o2 = F32(6, "out2");
  MetaReader r(env, a.argv[4]);
  kn_view v[4];
  const char *names[4] = {"a1", "b1", "a2", "b2"};
  for (int i = 0; i < 4; i++) {
    r.view(s[i], &v[i], names[i]);
    CHECK(v[i].ndim == 2, "matmulPair needs 2-D operands, %s has %d dims", names[i], v[i].ndim);
  }
  for (int g = 0; g < 2; g++)
    CHECK(v[2 * g].shape[1] == v[2 * g + 1].shape[0], "matmulPair product %d: inner dims differ: %lld vs %lld", g + 1,
          (long long)v[2 * g].shape[1], (long long)v[2 * g + 1].shape[0]);
  check_out(env, o1, v[0].shape[0] * v[1].shape[1], "out1");
  check_out(env, o2, v[2].shape[0] * v[3].shape[1], "out2");
  kn_matmul_pair_f32(&v[0], &v[1], (float *)o1.data, &v[2], &v[3], (float *)o2.data);
  return undefined(env);
  BODY_END
}


/* ---- elementwise ------------------------------------------------------------------------- */

FN(js_unary) {
  BODY_BEGIN
  ARG_COUNT(4);
  int op = (int)INT(0, "op", 0, KN_UNARY_COUNT - 1);
  Array x = F32(1, "x"), out = F32(3, "out");
  MetaReader r(env, a.argv[2]);
  kn_view vx;
  r.view(x, &vx, "x");
  check_out(env, out, numel(vx), "out");
  kn_unary_f32((kn_unary_op)op, &vx, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_activation_backward) {
  BODY_BEGIN
  ARG_COUNT(5);
  int op = (int)INT(0, "op", 0, KN_UNARY_COUNT - 1);
  CHECK(kn_is_activation((kn_unary_op)op), "op must be an activation (relu, gelu, gelu_tanh, silu)");
  Array x = F32(1, "x"), g = F32(2, "g"), out = F32(4, "out");
  MetaReader r(env, a.argv[3]);
  kn_view vx, vg;
  r.view(x, &vx, "x");
  r.view(g, &vg, "g");
  CHECK(same_shape(vx, vg), "x and g must have one shape");
  check_out(env, out, numel(vx), "out");
  kn_activation_backward_f32((kn_unary_op)op, &vx, &vg, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_binary) {
  BODY_BEGIN
  ARG_COUNT(5);
  int op = (int)INT(0, "op", 0, KN_BINARY_COUNT - 1);
  Array x = F32(1, "a"), y = F32(2, "b");
  Array out = typed(env, a.argv[4], op >= KN_EQ ? napi_uint8_array : napi_float32_array, "out");
  MetaReader r(env, a.argv[3]);
  kn_view va, vb;
  r.view(x, &va, "a");
  r.view(y, &vb, "b");
  CHECK(same_shape(va, vb), "a and b must have one shape (broadcast with stride-0 views first)");
  check_out(env, out, numel(va), "out");
  kn_binary_f32((kn_binary_op)op, &va, &vb, out.data);
  return undefined(env);
  BODY_END
}

FN(js_where) {
  BODY_BEGIN
  ARG_COUNT(5);
  Array c = typed(env, a.argv[0], napi_uint8_array, "cond"), x = F32(1, "a"), y = F32(2, "b"), out = F32(4, "out");
  MetaReader r(env, a.argv[3]);
  kn_view vc, va, vb;
  r.view(c, &vc, "cond");
  r.view(x, &va, "a");
  r.view(y, &vb, "b");
  CHECK(same_shape(vc, va) && same_shape(va, vb), "cond, a and b must have one shape");
  check_out(env, out, numel(va), "out");
  kn_where_f32(&vc, &va, &vb, (float *)out.data);
  return undefined(env);
  BODY_END
}

/* assign(dst, src, meta): any typed arrays of one element size. */
FN(js_assign) {
  BODY_BEGIN
  ARG_COUNT(3);
  Array d = ARRAY(0, "dst"), s = ARRAY(1, "src");
  CHECK(d.elem == s.elem, "dst (%s) and src (%s) must have one element size", type_name(d.type), type_name(s.type));
  MetaReader r(env, a.argv[2]);
  kn_view vd, vs;
  r.view(d, &vd, "dst");
  r.view(s, &vs, "src");
  CHECK(same_shape(vd, vs), "dst and src must have one shape");
  kn_assign(d.elem, (void *)vd.data, &vd, &vs);
  return undefined(env);
  BODY_END
}

bool dtype_of(napi_typedarray_type t, bool as_bool, kn_dtype *out) {
  switch (t) {
    case napi_float32_array: *out = KN_F32; return true;
    case napi_float64_array: *out = KN_F64; return true;
    case napi_int32_array: *out = KN_I32; return true;
    case napi_int8_array: *out = KN_I8; return true;
    case napi_uint8_array: *out = as_bool ? KN_BOOL : KN_U8; return true;
    default: return false;
  }
}

/* cast(x, meta, out, outIsBool) */
FN(js_cast) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array x = ARRAY(0, "x"), out = ARRAY(2, "out");
  bool as_bool = false;
  NAPI(napi_get_value_bool(env, a.argv[3], &as_bool));
  kn_dtype from, to;
  CHECK(dtype_of(x.type, false, &from), "cast cannot read a %s", type_name(x.type));
  CHECK(dtype_of(out.type, as_bool, &to), "cast cannot write a %s", type_name(out.type));
  MetaReader r(env, a.argv[1]);
  kn_view vx;
  r.view(x, &vx, "x");
  check_out(env, out, numel(vx), "out");
  kn_cast(from, &vx, to, out.data);
  return undefined(env);
  BODY_END
}

/* ---- reductions --------------------------------------------------------------------------- */

FN(js_reduce) {
  BODY_BEGIN
  ARG_COUNT(5);
  int op = (int)INT(0, "op", 0, 2);
  Array x = F32(1, "x"), out = F32(4, "out");
  MetaReader r(env, a.argv[2]);
  kn_view vx;
  r.view(x, &vx, "x");
  uint32_t mask = (uint32_t)INT(3, "axis mask", 0, (1 << KN_MAX_DIMS) - 1);
  CHECK((mask >> vx.ndim) == 0, "axis mask %u names an axis past rank %d", mask, vx.ndim);
  int64_t need = 1;
  for (int d = 0; d < vx.ndim; d++) need *= (mask >> d) & 1u ? 1 : vx.shape[d];
  check_out(env, out, need, "out");
  kn_reduce_f32((kn_reduce_op)op, &vx, mask, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_arg_reduce) {
  BODY_BEGIN
  ARG_COUNT(5);
  int is_min = (int)INT(0, "isMin", 0, 1);
  Array x = F32(1, "x"), out = typed(env, a.argv[4], napi_int32_array, "out");
  MetaReader r(env, a.argv[2]);
  kn_view vx;
  r.view(x, &vx, "x");
  int axis = (int)INT(3, "axis", 0, KN_MAX_DIMS - 1);
  CHECK(axis < vx.ndim, "axis %d is out of range for rank %d", axis, vx.ndim);
  int64_t need = 1;
  for (int d = 0; d < vx.ndim; d++) need *= d == axis ? 1 : vx.shape[d];
  check_out(env, out, need, "out");
  kn_argreduce_f32(is_min, &vx, axis, (int32_t *)out.data);
  return undefined(env);
  BODY_END
}

/* ---- rows ---------------------------------------------------------------------------------- */

/* ids as (pointer, is64, n), every id checked against [0, limit). */
const void *ids_at(napi_env env, napi_value v, int64_t limit, int *is64, int64_t *n) {
  Array ids = ARRAY_V(v, "ids");
  CHECK(ids.type == napi_int32_array || ids.type == napi_bigint64_array, "ids must be an Int32Array or BigInt64Array, got a %s",
        type_name(ids.type));
  *is64 = ids.type == napi_bigint64_array;
  *n = (int64_t)ids.length;
  for (size_t i = 0; i < ids.length; i++) {
    int64_t id = *is64 ? ((const int64_t *)ids.data)[i] : ((const int32_t *)ids.data)[i];
    CHECK(id >= 0 && id < limit, "id %lld at position %zu is outside [0, %lld)", (long long)id, i, (long long)limit);
  }
  return ids.data;
}

FN(js_gather_rows) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array t = F32(0, "table"), out = F32(3, "out");
  MetaReader r(env, a.argv[1]);
  kn_view vt;
  r.view(t, &vt, "table");
  CHECK(vt.ndim == 2, "table must have rank 2, got %d", vt.ndim);
  int is64;
  int64_t n;
  const void *ids = ids_at(env, a.argv[2], vt.shape[0], &is64, &n);
  check_out(env, out, n * vt.shape[1], "out");
  kn_gather_rows_f32(&vt, ids, is64, n, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_scatter_add_rows) {
  BODY_BEGIN
  ARG_COUNT(5);
  Array s = F32(0, "src"), out = F32(4, "out");
  MetaReader r(env, a.argv[1]);
  kn_view vs;
  r.view(s, &vs, "src");
  CHECK(vs.ndim == 2, "src must have rank 2, got %d", vs.ndim);
  int64_t rows = INT(3, "rows", 0, BIG);
  int is64;
  int64_t n;
  const void *ids = ids_at(env, a.argv[2], rows, &is64, &n);
  CHECK(n == vs.shape[0], "ids has %lld entries but src has %lld rows", (long long)n, (long long)vs.shape[0]);
  check_out(env, out, rows * vs.shape[1], "out");
  kn_scatter_add_rows_f32(&vs, ids, is64, n, rows, (float *)out.data);
  return undefined(env);
  BODY_END
}

/* ---- convolution and pooling --------------------------------------------------------------- */

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  int64_t span = d * (k - 1) + 1;
  return in + 2 * p < span ? 0 : (in + 2 * p - span) / s + 1;
}

/* params = [N, Cin, H, W, Cout, Cin/groups, kH, kW, sh, sw, ph, pw, dh, dw, groups] */
kn_conv2d conv_params(napi_env env, napi_value v) {
  Array pa = typed(env, v, napi_float64_array, "conv params");
  CHECK(pa.length == 15, "conv params must hold 15 numbers, got %zu", pa.length);
  const double *q = (const double *)pa.data;
  for (int i = 0; i < 15; i++) CHECK(q[i] == floor(q[i]) && q[i] >= 0 && q[i] <= (double)BIG, "conv param %d = %g is not a size", i, q[i]);
  kn_conv2d p;
  p.N = (int64_t)q[0]; p.Cin = (int64_t)q[1]; p.H = (int64_t)q[2]; p.W = (int64_t)q[3]; p.Cout = (int64_t)q[4];
  int64_t cin_g = (int64_t)q[5];
  p.kH = (int64_t)q[6]; p.kW = (int64_t)q[7];
  p.stride[0] = (int64_t)q[8]; p.stride[1] = (int64_t)q[9]; p.padding[0] = (int64_t)q[10]; p.padding[1] = (int64_t)q[11];
  p.dilation[0] = (int64_t)q[12]; p.dilation[1] = (int64_t)q[13]; p.groups = (int64_t)q[14];
  CHECK(p.stride[0] > 0 && p.stride[1] > 0 && p.dilation[0] > 0 && p.dilation[1] > 0, "stride and dilation must be ≥ 1");
  CHECK(p.groups > 0 && p.Cin % p.groups == 0 && p.Cout % p.groups == 0 && cin_g * p.groups == p.Cin,
        "groups %lld must divide Cin %lld and Cout %lld, with w's Cin/groups = %lld", (long long)p.groups,
        (long long)p.Cin, (long long)p.Cout, (long long)cin_g);
  p.Ho = out_size(p.H, p.kH, p.stride[0], p.padding[0], p.dilation[0]);
  p.Wo = out_size(p.W, p.kW, p.stride[1], p.padding[1], p.dilation[1]);
  CHECK((double)p.N * p.Cin * p.H * p.W < 4e15 && (double)p.N * p.Cout * p.Ho * p.Wo < 4e15 &&
        (double)p.Cin * p.kH * p.kW * p.Ho * p.Wo < 4e15, "conv sizes are too large");
  return p;
}

#define NEED(arr, count, what) check_out(env, arr, count, what)

FN(js_conv2d) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array x = F32(0, "x"), w = F32(1, "w"), out = F32(3, "out");
  kn_conv2d p = conv_params(env, a.argv[2]);
  NEED(x, p.N * p.Cin * p.H * p.W, "x");
  NEED(w, p.Cout * (p.Cin / p.groups) * p.kH * p.kW, "w");
  NEED(out, p.N * p.Cout * p.Ho * p.Wo, "out");
  kn_conv2d_f32(&p, (const float *)x.data, (const float *)w.data, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_conv2d_backward_input) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array g = F32(0, "g"), w = F32(1, "w"), out = F32(3, "dx");
  kn_conv2d p = conv_params(env, a.argv[2]);
  NEED(g, p.N * p.Cout * p.Ho * p.Wo, "g");
  NEED(w, p.Cout * (p.Cin / p.groups) * p.kH * p.kW, "w");
  NEED(out, p.N * p.Cin * p.H * p.W, "dx");
  kn_conv2d_backward_input_f32(&p, (const float *)g.data, (const float *)w.data, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_conv2d_backward_weight) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array g = F32(0, "g"), x = F32(1, "x"), out = F32(3, "dw");
  kn_conv2d p = conv_params(env, a.argv[2]);
  NEED(g, p.N * p.Cout * p.Ho * p.Wo, "g");
  NEED(x, p.N * p.Cin * p.H * p.W, "x");
  NEED(out, p.Cout * (p.Cin / p.groups) * p.kH * p.kW, "dw");
  kn_conv2d_backward_weight_f32(&p, (const float *)g.data, (const float *)x.data, (float *)out.data);
  return undefined(env);
  BODY_END
}

/* params = [N, C, H, W, kH, kW, sh, sw, ph, pw] */
kn_pool2d pool_params(napi_env env, napi_value v) {
  Array pa = typed(env, v, napi_float64_array, "pool params");
  CHECK(pa.length == 10, "pool params must hold 10 numbers, got %zu", pa.length);
  const double *q = (const double *)pa.data;
  for (int i = 0; i < 10; i++) CHECK(q[i] == floor(q[i]) && q[i] >= 0 && q[i] <= (double)BIG, "pool param %d = %g is not a size", i, q[i]);
  kn_pool2d p;
  p.N = (int64_t)q[0]; p.C = (int64_t)q[1]; p.H = (int64_t)q[2]; p.W = (int64_t)q[3];
  p.kH = (int64_t)q[4]; p.kW = (int64_t)q[5]; p.stride[0] = (int64_t)q[6]; p.stride[1] = (int64_t)q[7];
  p.padding[0] = (int64_t)q[8]; p.padding[1] = (int64_t)q[9];
  CHECK(p.kH > 0 && p.kW > 0 && p.stride[0] > 0 && p.stride[1] > 0, "pool kernel and stride must be ≥ 1");
  CHECK(p.H * p.W < ((int64_t)1 << 31), "pool planes over 2^31 pixels do not fit the i32 indices");
  p.Ho = out_size(p.H, p.kH, p.stride[0], p.padding[0], 1);
  p.Wo = out_size(p.W, p.kW, p.stride[1], p.padding[1], 1);
  CHECK((double)p.N * p.C * p.H * p.W < 4e15 && (double)p.N * p.C * p.Ho * p.Wo < 4e15, "pool sizes are too large");
  return p;
}

FN(js_max_pool2d) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array x = F32(0, "x"), out = F32(2, "out"), idx = typed(env, a.argv[3], napi_int32_array, "indices");
  kn_pool2d p = pool_params(env, a.argv[1]);
  NEED(x, p.N * p.C * p.H * p.W, "x");
  NEED(out, p.N * p.C * p.Ho * p.Wo, "out");
  NEED(idx, p.N * p.C * p.Ho * p.Wo, "indices");
  kn_max_pool2d_f32(&p, (const float *)x.data, (float *)out.data, (int32_t *)idx.data);
  return undefined(env);
  BODY_END
}

/* sizes = [N, C, H, W, Ho, Wo]: a max pool's backward needs its geometry only through the indices. */
kn_pool2d pool_sizes(napi_env env, napi_value v) {
  Array sz = typed(env, v, napi_float64_array, "sizes");
  CHECK(sz.length == 6, "sizes must hold [N, C, H, W, Ho, Wo], got %zu numbers", sz.length);
  const double *q = (const double *)sz.data;
  for (int i = 0; i < 6; i++) CHECK(q[i] == floor(q[i]) && q[i] >= 0 && q[i] <= (double)BIG, "size %d = %g is not a size", i, q[i]);
  kn_pool2d p;
  memset(&p, 0, sizeof p);
  p.N = (int64_t)q[0]; p.C = (int64_t)q[1]; p.H = (int64_t)q[2]; p.W = (int64_t)q[3]; p.Ho = (int64_t)q[4]; p.Wo = (int64_t)q[5];
  CHECK((double)p.N * p.C * p.H * p.W < 4e15 && (double)p.N * p.C * p.Ho * p.Wo < 4e15, "pool sizes are too large");
  return p;
}

void check_pool_index(napi_env env, const kn_pool2d &p, const int32_t *ix, int64_t bad) {
  CHECK(bad < 0, "index %d at %lld is outside the %lldx%lld plane", bad < 0 ? 0 : ix[bad], (long long)bad,
        (long long)p.H, (long long)p.W);
}

/* maxPool2dBackward(g, indices, sizes, dx) */
FN(js_max_pool2d_backward) {
  BODY_BEGIN
  ARG_COUNT(4);
  Array g = F32(0, "g"), idx = typed(env, a.argv[1], napi_int32_array, "indices"), out = F32(3, "dx");
  kn_pool2d p = pool_sizes(env, a.argv[2]);
  int64_t no = p.N * p.C * p.Ho * p.Wo;
  NEED(g, no, "g");
  NEED(idx, no, "indices");
  NEED(out, p.N * p.C * p.H * p.W, "dx");
  const int32_t *ix = (const int32_t *)idx.data;
  check_pool_index(env, p, ix, kn_max_pool2d_backward_f32(&p, (const float *)g.data, ix, (float *)out.data));
  return undefined(env);
  BODY_END
}

/* maxPool2dBiasRelu(x, bias, params, out, indices) */
FN(js_max_pool2d_bias_relu) {
  BODY_BEGIN
  ARG_COUNT(5);
  Array x = F32(0, "x"), out = F32(3, "out"), idx = typed(env, a.argv[4], napi_int32_array, "indices");
  kn_pool2d p = pool_params(env, a.argv[2]);
  const float *bias = req_f32(env, a.argv[1], p.C, "bias");
  NEED(x, p.N * p.C * p.H * p.W, "x");
  NEED(out, p.N * p.C * p.Ho * p.Wo, "out");
  NEED(idx, p.N * p.C * p.Ho * p.Wo, "indices");
  kn_max_pool2d_bias_relu_f32(&p, (const float *)x.data, bias, (float *)out.data, (int32_t *)idx.data);
  return undefined(env);
  BODY_END
}

/* maxPool2dBiasReluBackward(g, out, indices, sizes, dx, db | null) */
FN(js_max_pool2d_bias_relu_backward) {
  BODY_BEGIN
  ARG_COUNT(6);
  kn_pool2d p = pool_sizes(env, a.argv[3]);
  int64_t no = p.N * p.C * p.Ho * p.Wo;
  const float *g = req_f32(env, a.argv[0], no, "g"), *y = req_f32(env, a.argv[1], no, "out");
  Array idx = typed(env, a.argv[2], napi_int32_array, "indices");
  NEED(idx, no, "indices");
  float *dx = req_f32(env, a.argv[4], p.N * p.C * p.H * p.W, "dx"), *db = opt_f32(env, a.argv[5], p.C, "db");
  const int32_t *ix = (const int32_t *)idx.data;
  check_pool_index(env, p, ix, kn_max_pool2d_bias_relu_backward_f32(&p, g, y, ix, dx, db));
  return undefined(env);
  BODY_END
}

FN(js_avg_pool2d) {
  BODY_BEGIN
  ARG_COUNT(3);
  Array x = F32(0, "x"), out = F32(2, "out");
  kn_pool2d p = pool_params(env, a.argv[1]);
  NEED(x, p.N * p.C * p.H * p.W, "x");
  NEED(out, p.N * p.C * p.Ho * p.Wo, "out");
  kn_avg_pool2d_f32(&p, (const float *)x.data, (float *)out.data);
  return undefined(env);
  BODY_END
}

FN(js_avg_pool2d_backward) {
  BODY_BEGIN
  ARG_COUNT(3);
  Array g = F32(0, "g"), out = F32(2, "dx");
  kn_pool2d p = pool_params(env, a.argv[1]);
  NEED(g, p.N * p.C * p.Ho * p.Wo, "g");
  NEED(out, p.N * p.C * p.H * p.W, "dx");
  kn_avg_pool2d_backward_f32(&p, (const float *)g.data, (float *)out.data);
  return undefined(env);
  BODY_END
}

/* ---- fused kernels -------------------------------------------------------------------------- */

/* rows and C, checked so that rows·C fits comfortably. */
void rows_cols(napi_env env, napi_value vr, napi_value vc, int64_t *rows, int64_t *C) {
  *rows = int_at(env, vr, "rows", 0, BIG);
  *C = int_at(env, vc, "C", 0, BIG);
  CHECK((double)*rows * (double)*C < 4e15, "rows·C = %g is too large", (double)*rows * (double)*C);
}

float *opt_f32(napi_env env, napi_value v, int64_t need, const char *what) {
  if (is_nullish(env, v)) return nullptr;
  Array arr = typed(env, v, napi_float32_array, what);
  check_out(env, arr, need, what);
  return (float *)arr.data;
}

float *req_f32(napi_env env, napi_value v, int64_t need, const char *what) {
  Array arr = typed(env, v, napi_float32_array, what);
  check_out(env, arr, need, what);
  return (float *)arr.data;
}

typedef void (*row_kernel)(const float *, int64_t, int64_t, float *);
typedef void (*row_kernel2)(const float *, const float *, int64_t, int64_t, float *);

napi_value rows1(napi_env env, napi_callback_info info, row_kernel k) {
  BODY_BEGIN
  ARG_COUNT(4);
  int64_t rows, C;
  rows_cols(env, a.argv[1], a.argv[2], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "x");
  float *out = req_f32(env, a.argv[3], rows * C, "out");
  k(x, rows, C, out);
  return undefined(env);
  BODY_END
}

napi_value rows2(napi_env env, napi_callback_info info, row_kernel2 k) {
  BODY_BEGIN
  ARG_COUNT(5);
  int64_t rows, C;
  rows_cols(env, a.argv[2], a.argv[3], &rows, &C);
  const float *y = req_f32(env, a.argv[0], rows * C, "y");
  const float *g = req_f32(env, a.argv[1], rows * C, "g");
  float *out = req_f32(env, a.argv[4], rows * C, "dx");
  k(y, g, rows, C, out);
  return undefined(env);
  BODY_END
}

FN(js_softmax) { return rows1(env, info, kn_softmax_f32); }
FN(js_log_softmax) { return rows1(env, info, kn_log_softmax_f32); }
FN(js_softmax_backward) { return rows2(env, info, kn_softmax_backward_f32); }
FN(js_log_softmax_backward) { return rows2(env, info, kn_log_softmax_backward_f32); }

/* cumsum(x, outer, n, inner, reverse, out): x contiguous, seen as [outer, n, inner] */
FN(js_cumsum) {
  BODY_BEGIN
  ARG_COUNT(6);
  int64_t outer = INT(1, "outer", 0, BIG), n = INT(2, "n", 0, BIG), inner = INT(3, "inner", 0, BIG);
  CHECK((double)outer * (double)n * (double)inner < 4e15, "outer·n·inner is too large");
  int64_t size = outer * n * inner;
  const float *x = req_f32(env, a.argv[0], size, "x");
  int reverse = (int)INT(4, "reverse", 0, 1);
  float *out = req_f32(env, a.argv[5], size, "out");
  kn_cumsum_f32(x, outer, n, inner, reverse, out);
  return undefined(env);
  BODY_END
}

/* layerNorm(x, w?, b?, rows, C, eps, y, mean?, rstd?) */
FN(js_layer_norm) {
  BODY_BEGIN
  ARG_COUNT(9);
  int64_t rows, C;
  rows_cols(env, a.argv[3], a.argv[4], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "x");
  const float *w = opt_f32(env, a.argv[1], C, "w"), *b = opt_f32(env, a.argv[2], C, "b");
  float eps = (float)NUM(5, "eps");
  float *y = req_f32(env, a.argv[6], rows * C, "y");
  float *mean = opt_f32(env, a.argv[7], rows, "mean"), *rstd = opt_f32(env, a.argv[8], rows, "rstd");
  kn_layer_norm_f32(x, w, b, rows, C, eps, y, mean, rstd);
  return undefined(env);
  BODY_END
}

/* addLayerNorm(x, r, w?, b?, rows, C, eps, sum, y, mean?, rstd?): layerNorm of sum = x + r */
FN(js_add_layer_norm) {
  BODY_BEGIN
  ARG_COUNT(11);
  int64_t rows, C;
  rows_cols(env, a.argv[4], a.argv[5], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "x"), *r = req_f32(env, a.argv[1], rows * C, "r");
  const float *w = opt_f32(env, a.argv[2], C, "w"), *b = opt_f32(env, a.argv[3], C, "b");
  float eps = (float)NUM(6, "eps");
  float *sum = req_f32(env, a.argv[7], rows * C, "sum"), *y = req_f32(env, a.argv[8], rows * C, "y");
  float *mean = opt_f32(env, a.argv[9], rows, "mean"), *rstd = opt_f32(env, a.argv[10], rows, "rstd");
  kn_add_layer_norm_f32(x, r, w, b, rows, C, eps, sum, y, mean, rstd);
  return undefined(env);
  BODY_END
}

/* layerNormBackward(x, w?, mean, rstd, g, rows, C, dx?, dw?, db?, acc?): acc is added into dx */
FN(js_layer_norm_backward) {
  BODY_BEGIN
  ARG_COUNT(10);
  int64_t rows, C;
  rows_cols(env, a.argv[5], a.argv[6], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "x");
  const float *w = opt_f32(env, a.argv[1], C, "w");
  const float *mean = req_f32(env, a.argv[2], rows, "mean"), *rstd = req_f32(env, a.argv[3], rows, "rstd");
  const float *g = req_f32(env, a.argv[4], rows * C, "g");
  float *dx = opt_f32(env, a.argv[7], rows * C, "dx"), *dw = opt_f32(env, a.argv[8], C, "dw"),
        *db = opt_f32(env, a.argv[9], C, "db");
  const float *acc = opt_f32(env, a.argv[10], rows * C, "acc");
  kn_layer_norm_backward_f32(x, w, mean, rstd, g, rows, C, dx, dw, db, acc);
  return undefined(env);
  BODY_END
}

/* rmsNorm(x, w?, rows, C, eps, y, rstd?) */
FN(js_rms_norm) {
  BODY_BEGIN
  ARG_COUNT(7);
  int64_t rows, C;
  rows_cols(env, a.argv[2], a.argv[3], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "x");
  const float *w = opt_f32(env, a.argv[1], C, "w");
  float eps = (float)NUM(4, "eps");
  float *y = req_f32(env, a.argv[5], rows * C, "y");
  float *rstd = opt_f32(env, a.argv[6], rows, "rstd");
  kn_rms_norm_f32(x, w, rows, C, eps, y, rstd);
  return undefined(env);
  BODY_END
}

/* rmsNormBackward(x, w?, rstd, g, rows, C, dx?, dw?) */
FN(js_rms_norm_backward) {
  BODY_BEGIN
  ARG_COUNT(8);
  int64_t rows, C;
  rows_cols(env, a.argv[4], a.argv[5], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "x");
  const float *w = opt_f32(env, a.argv[1], C, "w");
  const float *rstd = req_f32(env, a.argv[2], rows, "rstd");
  const float *g = req_f32(env, a.argv[3], rows * C, "g");
  float *dx = opt_f32(env, a.argv[6], rows * C, "dx"), *dw = opt_f32(env, a.argv[7], C, "dw");
  kn_rms_norm_backward_f32(x, w, rstd, g, rows, C, dx, dw);
  return undefined(env);
  BODY_END
}

/* crossEntropy(logits, targets, rows, C, ignoreIndex, dlogits?) → mean loss */
FN(js_cross_entropy) {
  BODY_BEGIN
  ARG_COUNT(6);
  int64_t rows, C;
  rows_cols(env, a.argv[2], a.argv[3], &rows, &C);
  const float *x = req_f32(env, a.argv[0], rows * C, "logits");
  Array t = typed(env, a.argv[1], napi_int32_array, "targets");
  check_out(env, t, rows, "targets");
  int32_t ignore = (int32_t)INT(4, "ignoreIndex", INT32_MIN, INT32_MAX);
  const int32_t *tt = (const int32_t *)t.data;
  for (int64_t i = 0; i < rows; i++)
    CHECK(tt[i] == ignore || (tt[i] >= 0 && tt[i] < C), "target %d at row %lld is outside [0, %lld)", tt[i],
          (long long)i, (long long)C);
  float *d = opt_f32(env, a.argv[5], rows * C, "dlogits");
  return number(env, kn_cross_entropy_f32(x, tt, rows, C, ignore, d));
  BODY_END
}

/* biasActivation(h, rows, N, bias?, act, y?): h += bias in place, y = act(h) (act −1: none). */
FN(js_bias_activation) {
  BODY_BEGIN
  ARG_COUNT(6);
  int64_t rows = INT(1, "rows", 0, BIG), N = INT(2, "N", 0, BIG);
  CHECK((double)rows * (double)N < 4e15, "rows·N is too large");
  int act = (int)INT(4, "act", -1, KN_UNARY_COUNT - 1);
  CHECK(act < 0 || kn_is_activation((kn_unary_op)act), "act must be −1 or an activation (relu, gelu, gelu_tanh, silu)");
  float *h = req_f32(env, a.argv[0], rows * N, "h");
  const float *bias = opt_f32(env, a.argv[3], N, "bias");
  float *y = act >= 0 ? req_f32(env, a.argv[5], rows * N, "y") : nullptr;
  kn_bias_act_f32(h, bias, act, rows, N, y);
  return undefined(env);
  BODY_END
}

/* biasActivationBackward(g, h?, rows, N, act, dh?, db?): dh = g · act'(h), db = Σrows dh (or g). */
FN(js_bias_activation_backward) {
  BODY_BEGIN
  ARG_COUNT(7);
  int64_t rows = INT(2, "rows", 0, BIG), N = INT(3, "N", 0, BIG);
  CHECK((double)rows * (double)N < 4e15, "rows·N is too large");
  int act = (int)INT(4, "act", -1, KN_UNARY_COUNT - 1);
  CHECK(act < 0 || kn_is_activation((kn_unary_op)act), "act must be −1 or an activation (relu, gelu, gelu_tanh, silu)");
  const float *g = req_f32(env, a.argv[0], rows * N, "g");
  const float *h = act >= 0 ? req_f32(env, a.argv[1], rows * N, "h") : nullptr;
  float *dh = act >= 0 ? opt_f32(env, a.argv[5], rows * N, "dh") : nullptr;
  float *db = opt_f32(env, a.argv[6], N, "db");
  kn_bias_act_backward_f32(g, h, act, rows, N, dh, db);
  return undefined(env);
  BODY_END
}

/* adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step[, decoupled = true]) */
FN(js_adamw) {
  BODY_BEGIN
  ARG_COUNT(10);
  Array p = F32(0, "param");
  int64_t n = (int64_t)p.length;
  const float *g = req_f32(env, a.argv[1], n, "grad");
  float *m = req_f32(env, a.argv[2], n, "m"), *v = req_f32(env, a.argv[3], n, "v");
  kn_adamw_f32((float *)p.data, g, m, v, n, (float)NUM(4, "lr"), (float)NUM(5, "beta1"), (float)NUM(6, "beta2"),
               (float)NUM(7, "eps"), (float)NUM(8, "weightDecay"), INT(9, "step", 1, BIG),
               a.argc > 10 ? (int)INT(10, "decoupled", 0, 1) : 1);
  return undefined(env);
  BODY_END
}

/* The Float32Arrays of a JS array (one per tensor of a many-tensor call), `count` of them. */
std::vector<Array> f32_list(napi_env env, napi_value v, const char *what) {
  bool is = false;
  NAPI(napi_is_array(env, v, &is));
  CHECK(is, "%s must be an array of Float32Arrays", what);
  uint32_t len = 0;
  NAPI(napi_get_array_length(env, v, &len));
  std::vector<Array> out(len);
  for (uint32_t i = 0; i < len; i++) {
    napi_value e;
    NAPI(napi_get_element(env, v, i, &e));
    out[i] = typed(env, e, napi_float32_array, what);
  }
  return out;
}

/* adamMany(params, grads, ms, vs, hyper): adamw on each tensor, hyper [7·count] as kn_adamw_many_f32. */
FN(js_adam_many) {
  BODY_BEGIN
  ARG_COUNT(5);
  std::vector<Array> p = f32_list(env, a.argv[0], "params"), g = f32_list(env, a.argv[1], "grads"),
                     m = f32_list(env, a.argv[2], "ms"), v = f32_list(env, a.argv[3], "vs");
  size_t count = p.size();
  CHECK(g.size() == count && m.size() == count && v.size() == count,
        "params, grads, ms and vs must have one length, got %zu, %zu, %zu, %zu", count, g.size(), m.size(), v.size());
  Array h = typed(env, a.argv[4], napi_float64_array, "hyper");
  CHECK(h.length == 7 * count, "hyper holds %zu numbers, needs 7 per tensor (%zu)", h.length, 7 * count);
  const double *hy = (const double *)h.data;
  std::vector<float *> pp(count), mp(count), vp(count);
  std::vector<const float *> gp(count);
  std::vector<int64_t> n(count);
  for (size_t t = 0; t < count; t++) {
    n[t] = (int64_t)p[t].length;
    CHECK(g[t].length == p[t].length && m[t].length == p[t].length && v[t].length == p[t].length,
          "tensor %zu: param, grad, m and v must have one length", t);
    const double *ht = hy + 7 * t;
    CHECK(ht[5] >= 1 && ht[5] == floor(ht[5]) && ht[5] <= (double)BIG, "tensor %zu: step must be an integer ≥ 1", t);
    CHECK(ht[6] == 0 || ht[6] == 1, "tensor %zu: decoupled must be 0 or 1", t);
    pp[t] = (float *)p[t].data;
    gp[t] = (const float *)g[t].data;
    mp[t] = (float *)m[t].data;
    vp[t] = (float *)v[t].data;
  }
  kn_adamw_many_f32((int64_t)count, pp.data(), gp.data(), mp.data(), vp.data(), n.data(), hy);
  return undefined(env);
  BODY_END
}

/* sumSquaresMany(arrays) → Σ x² in double. */
FN(js_sum_squares_many) {
  BODY_BEGIN
  ARG_COUNT(1);
  std::vector<Array> x = f32_list(env, a.argv[0], "arrays");
  std::vector<const float *> xp(x.size());
  std::vector<int64_t> n(x.size());
  for (size_t t = 0; t < x.size(); t++) {
    xp[t] = (const float *)x[t].data;
    n[t] = (int64_t)x[t].length;
  }
  return number(env, kn_sum_squares_many_f32((int64_t)x.size(), xp.data(), n.data()));
  BODY_END
}

/* scaleMany(arrays, k): x ← x·k in place. */
FN(js_scale_many) {
  BODY_BEGIN
  ARG_COUNT(2);
  std::vector<Array> x = f32_list(env, a.argv[0], "arrays");
  std::vector<float *> xp(x.size());
  std::vector<int64_t> n(x.size());
  for (size_t t = 0; t < x.size(); t++) {
    xp[t] = (float *)x[t].data;
    n[t] = (int64_t)x[t].length;
  }
  kn_scale_many_f32((int64_t)x.size(), xp.data(), n.data(), NUM(1, "k"));
  return undefined(env);
  BODY_END
}

void attn_dims(napi_env env, napi_value *v, int64_t *BH, int64_t *T, int64_t *D) {
  *BH = int_at(env, v[0], "BH", 0, BIG);
  *T = int_at(env, v[1], "T", 0, BIG);
  *D = int_at(env, v[2], "D", 0, BIG);
  CHECK((double)*BH * (double)*T * (double)*D < 4e15, "BH·T·D is too large");
}

/* causalAttention(q, k, v, BH, T, D, scale, out, lse?): dense [BH, T, D] */
FN(js_causal_attention) {
  BODY_BEGIN
  ARG_COUNT(9);
  int64_t BH, T, D;
  attn_dims(env, a.argv + 3, &BH, &T, &D);
  int64_t n = BH * T * D;
  const float *q = req_f32(env, a.argv[0], n, "q"), *k = req_f32(env, a.argv[1], n, "k"), *v = req_f32(env, a.argv[2], n, "v");
  float *out = req_f32(env, a.argv[7], n, "out"), *lse = opt_f32(env, a.argv[8], BH * T, "lse");
  kn_attn_layout dense = {T * D, 0, D};
  kn_causal_attention_f32(q, k, v, BH, 1, T, D, dense, dense, (float)NUM(6, "scale"), out, lse);
  return undefined(env);
  BODY_END
}

/* causalAttentionBackward(q, k, v, out, lse, g, BH, T, D, scale, dq, dk, dv) */
FN(js_causal_attention_backward) {
  BODY_BEGIN
  ARG_COUNT(13);
  int64_t BH, T, D;
  attn_dims(env, a.argv + 6, &BH, &T, &D);
  int64_t n = BH * T * D;
  const float *q = req_f32(env, a.argv[0], n, "q"), *k = req_f32(env, a.argv[1], n, "k"), *v = req_f32(env, a.argv[2], n, "v");
  const float *o = req_f32(env, a.argv[3], n, "out"), *lse = req_f32(env, a.argv[4], BH * T, "lse");
  const float *g = req_f32(env, a.argv[5], n, "g");
  float *dq = req_f32(env, a.argv[10], n, "dq"), *dk = req_f32(env, a.argv[11], n, "dk"), *dv = req_f32(env, a.argv[12], n, "dv");
  kn_attn_layout dense = {T * D, 0, D};
  kn_causal_attention_backward_f32(q, k, v, o, lse, g, BH, 1, T, D, dense, dense, (float)NUM(9, "scale"), dq, dk, dv);
  return undefined(env);
  BODY_END
}

/* B, T, H, D of the packed layout: qkv [B, T, 3·H·D], out [B, T, H·D]. */
void qkv_dims(napi_env env, napi_value *v, int64_t *B, int64_t *T, int64_t *H, int64_t *D) {
  *B = int_at(env, v[0], "B", 0, BIG);
  *T = int_at(env, v[1], "T", 0, BIG);
  *H = int_at(env, v[2], "H", 0, BIG);
  *D = int_at(env, v[3], "D", 0, BIG);
  CHECK((double)*B * (double)*T * (double)*H * (double)*D < 1e15, "B·T·H·D is too large");
}

/* The three heads' layouts of qkv [B, T, 3C] and of out [B, T, C], C = H·D. */
void qkv_layouts(int64_t T, int64_t H, int64_t D, kn_attn_layout *in, kn_attn_layout *ol) {
  const int64_t C = H * D;
  *in = {T * 3 * C, D, 3 * C};
  *ol = {T * C, D, C};
}

/* causalAttentionQKV(qkv, B, T, H, D, scale, out, lse?) */
FN(js_causal_attention_qkv) {
  BODY_BEGIN
  ARG_COUNT(8);
  int64_t B, T, H, D;
  qkv_dims(env, a.argv + 1, &B, &T, &H, &D);
  int64_t n = B * T * H * D;
  const float *qkv = req_f32(env, a.argv[0], 3 * n, "qkv");
  float *out = req_f32(env, a.argv[6], n, "out"), *lse = opt_f32(env, a.argv[7], B * H * T, "lse");
  kn_attn_layout in, ol;
  qkv_layouts(T, H, D, &in, &ol);
  const int64_t C = H * D;
  kn_causal_attention_f32(qkv, qkv + C, qkv + 2 * C, B, H, T, D, in, ol, (float)NUM(5, "scale"), out, lse);
  return undefined(env);
  BODY_END
}

/* causalAttentionQKVBackward(qkv, out, lse, g, B, T, H, D, scale, dqkv) */
FN(js_causal_attention_qkv_backward) {
  BODY_BEGIN
  ARG_COUNT(10);
  int64_t B, T, H, D;
  qkv_dims(env, a.argv + 4, &B, &T, &H, &D);
  int64_t n = B * T * H * D;
  const float *qkv = req_f32(env, a.argv[0], 3 * n, "qkv"), *o = req_f32(env, a.argv[1], n, "out");
  const float *lse = req_f32(env, a.argv[2], B * H * T, "lse"), *g = req_f32(env, a.argv[3], n, "g");
  float *dqkv = req_f32(env, a.argv[9], 3 * n, "dqkv");
  kn_attn_layout in, ol;
  qkv_layouts(T, H, D, &in, &ol);
  const int64_t C = H * D;
  kn_causal_attention_backward_f32(qkv, qkv + C, qkv + 2 * C, o, lse, g, B, H, T, D, in, ol, (float)NUM(8, "scale"),
                                   dqkv, dqkv + C, dqkv + 2 * C);
  return undefined(env);
  BODY_END
}

/* Quantized weights: a Uint8Array of N·K/32 ggml blocks of `type` (kn_qtype), checked against N and K. */
const uint8_t *qweight(napi_env env, napi_value v, int type, int64_t N, int64_t K) {
  Array w = typed(env, v, napi_uint8_array, "w (quantized blocks)");
  CHECK(K % 32 == 0, "K = %lld is not a multiple of the 32-value block", (long long)K);
  int64_t need = N * (K / 32) * (type == KN_Q8_0 ? 34 : 18);
  CHECK((int64_t)w.length == need, "w holds %zu bytes but %lld×%lld in %s blocks take %lld", w.length, (long long)N,
        (long long)K, type == KN_Q8_0 ? "q8_0" : "q4_0", (long long)need);
  return (const uint8_t *)w.data;
}

/* qmatmul(type, x, M, K, w, N, y): y [M, N] = x [M, K] · Wᵀ */
FN(js_qmatmul) {
  BODY_BEGIN
  ARG_COUNT(7);
  int type = (int)INT(0, "type", 0, 64);
  CHECK(type == KN_Q8_0 || type == KN_Q4_0, "type %d is not q8_0 (8) or q4_0 (2)", type);
  int64_t M = INT(2, "M", 0, BIG), K = INT(3, "K", 0, BIG), N = INT(5, "N", 0, BIG);
  CHECK((double)M * (double)K < 4e15 && (double)M * (double)N < 4e15, "M·K or M·N is too large");
  const float *x = req_f32(env, a.argv[1], M * K, "x");
  const uint8_t *w = qweight(env, a.argv[4], type, N, K);
  float *y = req_f32(env, a.argv[6], M * N, "y");
  kn_qmatmul_f32(type, x, M, K, w, N, y);
  return undefined(env);
  BODY_END
}

/* qmatmulBackward(type, dy, M, N, w, K, dx): dx [M, K] = dy [M, N] · W */
FN(js_qmatmul_backward) {
  BODY_BEGIN
  ARG_COUNT(7);
  int type = (int)INT(0, "type", 0, 64);
  CHECK(type == KN_Q8_0 || type == KN_Q4_0, "type %d is not q8_0 (8) or q4_0 (2)", type);
  int64_t M = INT(2, "M", 0, BIG), N = INT(3, "N", 0, BIG), K = INT(5, "K", 0, BIG);
  CHECK((double)M * (double)K < 4e15 && (double)M * (double)N < 4e15, "M·K or M·N is too large");
  const float *dy = req_f32(env, a.argv[1], M * N, "dy");
  const uint8_t *w = qweight(env, a.argv[4], type, N, K);
  float *dx = req_f32(env, a.argv[6], M * K, "dx");
  kn_qmatmul_backward_f32(type, dy, M, N, w, K, dx);
  return undefined(env);
  BODY_END
}

/* qrepackBytes(type, N, K): bytes of the packed layout, 0 when there is none here */
FN(js_qrepack_bytes) {
  BODY_BEGIN
  ARG_COUNT(3);
  int type = (int)INT(0, "type", 0, 64);
  int64_t N = INT(1, "N", 0, BIG), K = INT(2, "K", 0, BIG);
  CHECK((double)N * (double)K < 4e15, "N·K is too large");
  napi_value out;
  NAPI(napi_create_double(env, (double)kn_qrepack_bytes(type, N, K), &out));
  return out;
  BODY_END
}

/* Packed q8_0 bytes, checked against their size for N and K. */
const uint8_t *packed_weight(napi_env env, napi_value v, int type, int64_t N, int64_t K, const char *what) {
  Array p = typed(env, v, napi_uint8_array, what);
  int64_t need = kn_qrepack_bytes(type, N, K);
  CHECK(need > 0, "no packed layout for type %d here", type);
  CHECK((int64_t)p.length == need, "%s holds %zu bytes but the packed %lld×%lld takes %lld", what, p.length,
        (long long)N, (long long)K, (long long)need);
  return (const uint8_t *)p.data;
}

/* qrepack(type, w, N, K, out): out = W in the packed layout */
FN(js_qrepack) {
  BODY_BEGIN
  ARG_COUNT(5);
  int type = (int)INT(0, "type", 0, 64);
  int64_t N = INT(2, "N", 0, BIG), K = INT(3, "K", 0, BIG);
  const uint8_t *w = qweight(env, a.argv[1], type, N, K);
  uint8_t *out = (uint8_t *)packed_weight(env, a.argv[4], type, N, K, "out");
  kn_qrepack(type, w, N, K, out);
  return undefined(env);
  BODY_END
}

/* (type, x, M, K, packed, N, y): the arguments of both packed products, checked, then `product`. */
using PackedProduct = void (*)(int, const float *, int64_t, int64_t, const uint8_t *, int64_t, float *);
static napi_value packed_product(napi_env env, napi_callback_info info, PackedProduct product) {
  BODY_BEGIN
  ARG_COUNT(7);
  int type = (int)INT(0, "type", 0, 64);
  int64_t M = INT(2, "M", 0, BIG), K = INT(3, "K", 0, BIG), N = INT(5, "N", 0, BIG);
  CHECK((double)M * (double)K < 4e15 && (double)M * (double)N < 4e15, "M·K or M·N is too large");
  const float *x = req_f32(env, a.argv[1], M * K, "x");
  const uint8_t *p = packed_weight(env, a.argv[4], type, N, K, "packed");
  float *y = req_f32(env, a.argv[6], M * N, "y");
  product(type, x, M, K, p, N, y);
  return undefined(env);
  BODY_END
}

/* qmatmulPacked(type, x, M, K, packed, N, y): qmatmul on the packed layout */
FN(js_qmatmul_packed) { return packed_product(env, info, kn_qmatmul_packed_f32); }

/* gemv(x, W, N, K, y): y [N] = W [N, K] · x [K] */
FN(js_gemv) {
  BODY_BEGIN
  ARG_COUNT(5);
  int64_t N = INT(2, "N", 0, BIG), K = INT(3, "K", 0, BIG);
  CHECK((double)N * (double)K < 4e15, "N·K is too large");
  const float *x = req_f32(env, a.argv[0], K, "x");
  const float *w = req_f32(env, a.argv[1], N * K, "W");
  float *y = req_f32(env, a.argv[4], N, "y");
  kn_gemv_f32(x, w, N, K, y);
  return undefined(env);
  BODY_END
}

/* addRmsNorm(x, r?, w, C, eps, y): x += r; y = rms_norm(x) · w */
FN(js_add_rms_norm) {
  BODY_BEGIN
  ARG_COUNT(6);
  int64_t C = INT(3, "C", 0, BIG);
  float *x = req_f32(env, a.argv[0], C, "x");
  const float *r = opt_f32(env, a.argv[1], C, "r");
  const float *w = req_f32(env, a.argv[2], C, "w");
  float *y = req_f32(env, a.argv[5], C, "y");
  kn_add_rms_norm_f32(x, r, w, C, (float)NUM(4, "eps"), y);
  return undefined(env);
  BODY_END
}

/* swiglu(g, u, n, out): out = silu(g) · u */
FN(js_swiglu) {
  BODY_BEGIN
  ARG_COUNT(4);
  int64_t n = INT(2, "n", 0, BIG);
  const float *g = req_f32(env, a.argv[0], n, "g"), *u = req_f32(env, a.argv[1], n, "u");
  float *out = req_f32(env, a.argv[3], n, "out");
  kn_swiglu_f32(g, u, n, out);
  return undefined(env);
  BODY_END
}

/* decodeAttention(q, k, v, cos, sin, keys, values, H, KV, D, maxLen, pos, scale, y) */
FN(js_decode_attention) {
  BODY_BEGIN
  ARG_COUNT(14);
  int64_t H = INT(7, "H", 1, 1 << 20), KV = INT(8, "KV", 1, 1 << 20), D = INT(9, "D", 2, 1 << 20);
  int64_t L = INT(10, "maxLen", 1, (int64_t)1 << 30), pos = INT(11, "pos", 0, L - 1);
  CHECK(H % KV == 0, "H = %lld is not a multiple of KV = %lld", (long long)H, (long long)KV);
  CHECK(D % 2 == 0, "D = %lld is odd", (long long)D);
  CHECK((double)KV * (double)L * (double)D < 4e15, "KV·maxLen·D is too large");
  float *q = req_f32(env, a.argv[0], H * D, "q"), *k = req_f32(env, a.argv[1], KV * D, "k");
  const float *v = req_f32(env, a.argv[2], KV * D, "v");
  const float *cs = req_f32(env, a.argv[3], D, "cos"), *sn = req_f32(env, a.argv[4], D, "sin");
  float *keys = req_f32(env, a.argv[5], KV * L * D, "keys"), *values = req_f32(env, a.argv[6], KV * L * D, "values");
  float *y = req_f32(env, a.argv[13], H * D, "y");
  kn_decode_attention_f32(q, k, v, cs, sn, keys, values, H, KV, D, L, pos, (float)NUM(12, "scale"), y);
  return undefined(env);
  BODY_END
}

FN(js_qmatmul_isa) {
  BODY_BEGIN
  (void)a;
  return string(env, kn_qmatmul_isa());
  BODY_END
}
/* biQmatmulPacked(type, x, M, K, packed, N, y): qmatmulPacked's bits, rows tiled (bi_decode.cpp). */
FN(js_bi_qmatmul_packed) { return packed_product(env, info, kn_bi_qmatmul_packed_f32); }

/* (x, M, K, w, N, y) of the batch-invariant f32 products, checked, into `product`. */
typedef void (*BiProduct)(const float *, int64_t, int64_t, const float *, int64_t, float *);
static napi_value bi_product(napi_env env, napi_callback_info info, BiProduct product) {
  BODY_BEGIN
  ARG_COUNT(6);
  int64_t M = INT(1, "M", 0, BIG), K = INT(2, "K", 0, BIG), N = INT(4, "N", 0, BIG);
  CHECK((double)M * (double)K < 4e15 && (double)M * (double)N < 4e15 && (double)N * (double)K < 4e15,
        "M·K, M·N or N·K is too large");
  const float *x = req_f32(env, a.argv[0], M * K, "x");
  const float *w = req_f32(env, a.argv[3], N * K, "w");
  float *y = req_f32(env, a.argv[5], M * N, "y");
  product(x, M, K, w, N, y);
  return undefined(env);
  BODY_END
}

/* biMatmul(x, M, K, w, N, y): y [M, N] = x [M, K] · Wᵀ, W stored [N, K], batch-invariant (bi_decode.cpp). */
FN(js_bi_matmul) { return bi_product(env, info, kn_bi_matmul_f32); }

/* biMatmulKn(x, M, K, w, N, y): y [M, N] = x [M, K] · W, W stored [K, N], batch-invariant (bi_matmul_kn.cpp). */
FN(js_bi_matmul_kn) { return bi_product(env, info, kn_bi_matmul_kn_f32); }

/* biRmsNorm(x, M, C, w, eps, y) */
FN(js_bi_rms_norm) {
  BODY_BEGIN
  ARG_COUNT(6);
  int64_t M = INT(1, "M", 0, BIG), C = INT(2, "C", 1, BIG);
  CHECK((double)M * (double)C < 4e15, "M·C is too large");
  const float *x = req_f32(env, a.argv[0], M * C, "x");
  const float *w = req_f32(env, a.argv[3], C, "w");
  float *y = req_f32(env, a.argv[5], M * C, "y");
  kn_bi_rms_norm_f32(x, M, C, w, (float)NUM(4, "eps"), y);
  return undefined(env);
  BODY_END
}

/* Row r's first lens[r] + extra positions (≥ 1) are in its table's blocks, and those blocks in the pool of
   `blocks`: what a paged-cache kernel reads or writes of row r never leaves the pool. */
void check_paged_rows(napi_env env, const Array &tb, const Array &ln, int64_t R, int64_t stride, int64_t block,
                      int64_t blocks, int extra, const char *what) {
  CHECK((int64_t)tb.length >= R * stride && (int64_t)ln.length >= R, "tables or %s is shorter than R rows", what);
  const int32_t *tables = (const int32_t *)tb.data, *lens = (const int32_t *)ln.data;
  for (int64_t r = 0; r < R; r++) {
    const int64_t len = (int64_t)lens[r] + extra;
    CHECK(len >= 1 && (len + block - 1) / block <= stride, "row %lld: %s %d does not fit its table", (long long)r,
          what, lens[r]);
    for (int64_t b = 0; b < (len + block - 1) / block; b++)
      CHECK(tables[r * stride + b] >= 0 && tables[r * stride + b] < blocks, "row %lld: block %d is not in the pool",
            (long long)r, tables[r * stride + b]);
  }
}

/* A paged cache's key and value pools: both Float32Array (an f32 cache) or both Uint16Array (IEEE half),
   the same whole number of [KVH, block, D] blocks. */
struct KvPools {
  void *k, *v;
  int f16;
  int64_t blocks;
};
KvPools kv_pools(napi_env env, napi_value kv, napi_value vv, int64_t per_block) {
  Array kp = array_at(env, kv, "kpool"), vp = array_at(env, vv, "vpool");
  CHECK(kp.type == napi_float32_array || kp.type == napi_uint16_array,
        "kpool must be a Float32Array (f32 cache) or a Uint16Array (f16 cache), got a %s", type_name(kp.type));
  CHECK(vp.type == kp.type, "vpool must be a %s like kpool, got a %s", type_name(kp.type), type_name(vp.type));
  CHECK(kp.length == vp.length && (int64_t)kp.length % per_block == 0,
        "kpool and vpool must be the same whole number of [KVH, block, D] blocks");
  return KvPools{kp.data, vp.data, kp.type == napi_uint16_array, (int64_t)kp.length / per_block};
}

/* biPagedAttention(q, R, H, D, kpool, vpool, KVH, block, tables, tableStride, lens, scale, out): pools of f32 or f16 */
FN(js_bi_paged_attention) {
  BODY_BEGIN
  ARG_COUNT(13);
  int64_t R = INT(1, "R", 0, BIG), H = INT(2, "H", 1, 1 << 16), D = INT(3, "D", 1, 1 << 16);
  int64_t KVH = INT(6, "KVH", 1, 1 << 16), block = INT(7, "block", 1, 1 << 16);
  int64_t stride = INT(9, "tableStride", 1, BIG);
  CHECK(H % KVH == 0, "H = %lld is not a multiple of KVH = %lld", (long long)H, (long long)KVH);
  CHECK((double)R * (double)H * (double)D < 4e15 && (double)R * (double)stride < 4e15, "R is too large");
  const float *q = req_f32(env, a.argv[0], R * H * D, "q");
  const KvPools pools = kv_pools(env, a.argv[4], a.argv[5], KVH * block * D);
  Array tb = typed(env, a.argv[8], napi_int32_array, "tables");
  Array ln = typed(env, a.argv[10], napi_int32_array, "lens");
  const int32_t *tables = (const int32_t *)tb.data, *lens = (const int32_t *)ln.data;
  check_paged_rows(env, tb, ln, R, stride, block, pools.blocks, 0, "lens");
  float *out = req_f32(env, a.argv[12], R * H * D, "out");
  kn_bi_paged_attention_f32(q, R, H, D, pools.k, pools.v, pools.f16, KVH, block, tables, stride, lens,
                            (float)NUM(11, "scale"), out);
  return undefined(env);
  BODY_END
}

/* biAddRmsNorm(x, r, M, C, w, eps, y): x += r (r may be null), then y = rms_norm(x) · w */
FN(js_bi_add_rms_norm) {
  BODY_BEGIN
  ARG_COUNT(7);
  int64_t M = INT(2, "M", 0, BIG), C = INT(3, "C", 1, BIG);
  CHECK((double)M * (double)C < 4e15, "M·C is too large");
  float *x = req_f32(env, a.argv[0], M * C, "x");
  const float *r = is_nullish(env, a.argv[1]) ? nullptr : req_f32(env, a.argv[1], M * C, "r");
  const float *w = req_f32(env, a.argv[4], C, "w");
  float *y = req_f32(env, a.argv[6], M * C, "y");
  kn_bi_add_rms_norm_f32(x, r, M, C, w, (float)NUM(5, "eps"), y);
  return undefined(env);
  BODY_END
}

/* biRopeKv(q, k, v, R, H, KVH, D, cos, sin, positions, kpool, vpool, block, tables, tableStride): pools of f32 or f16 */
FN(js_bi_rope_kv) {
  BODY_BEGIN
  ARG_COUNT(15);
  int64_t R = INT(3, "R", 0, BIG), H = INT(4, "H", 1, 1 << 16), KVH = INT(5, "KVH", 1, 1 << 16);
  int64_t D = INT(6, "D", 2, 1 << 16), block = INT(12, "block", 1, 1 << 16), stride = INT(14, "tableStride", 1, BIG);
  CHECK(D % 2 == 0, "D = %lld is not even", (long long)D);
  CHECK((double)R * (double)(H + KVH) * (double)D < 4e15 && (double)R * (double)stride < 4e15, "R is too large");
  float *q = req_f32(env, a.argv[0], R * H * D, "q");
  float *k = req_f32(env, a.argv[1], R * KVH * D, "k");
  const float *v = req_f32(env, a.argv[2], R * KVH * D, "v");
  Array cs = typed(env, a.argv[7], napi_float32_array, "cos"), sn = typed(env, a.argv[8], napi_float32_array, "sin");
  CHECK(cs.length == sn.length && cs.length % (size_t)(D / 2) == 0, "cos and sin must be the same [positions, D/2]");
  const int64_t positions_known = (int64_t)cs.length / (D / 2);
  Array ps = typed(env, a.argv[9], napi_int32_array, "positions");
  const KvPools pools = kv_pools(env, a.argv[10], a.argv[11], KVH * block * D);
  Array tb = typed(env, a.argv[13], napi_int32_array, "tables");
  check_paged_rows(env, tb, ps, R, stride, block, pools.blocks, 1, "position");
  const int32_t *positions = (const int32_t *)ps.data;
  for (int64_t r = 0; r < R; r++)
    CHECK(positions[r] < positions_known, "row %lld: position %d has no cos/sin (%lld positions)", (long long)r,
          positions[r], (long long)positions_known);
  kn_bi_rope_kv_f32(q, k, v, R, H, KVH, D, (const float *)cs.data, (const float *)sn.data, positions, pools.k, pools.v,
                    pools.f16, block, (const int32_t *)tb.data, stride);
  return undefined(env);
  BODY_END
}

/* biStoreKv(k, v, R, KVH, D, positions, kpool, vpool, block, tables, tableStride): biRopeKv without the rotation */
FN(js_bi_store_kv) {
  BODY_BEGIN
  ARG_COUNT(11);
  int64_t R = INT(2, "R", 0, BIG), KVH = INT(3, "KVH", 1, 1 << 16), D = INT(4, "D", 1, 1 << 16);
  int64_t block = INT(8, "block", 1, 1 << 16), stride = INT(10, "tableStride", 1, BIG);
  CHECK((double)R * (double)KVH * (double)D < 4e15 && (double)R * (double)stride < 4e15, "R is too large");
  const float *k = req_f32(env, a.argv[0], R * KVH * D, "k");
  const float *v = req_f32(env, a.argv[1], R * KVH * D, "v");
  Array ps = typed(env, a.argv[5], napi_int32_array, "positions");
  const KvPools pools = kv_pools(env, a.argv[6], a.argv[7], KVH * block * D);
  Array tb = typed(env, a.argv[9], napi_int32_array, "tables");
  check_paged_rows(env, tb, ps, R, stride, block, pools.blocks, 1, "position");
  kn_bi_store_kv_f32(k, v, R, KVH, D, (const int32_t *)ps.data, pools.k, pools.v, pools.f16, block,
                     (const int32_t *)tb.data, stride);
  return undefined(env);
  BODY_END
}

/* biSwiglu(gate, up, n, out): out = silu(gate) · up */
FN(js_bi_swiglu) {
  BODY_BEGIN
  ARG_COUNT(4);
  int64_t n = INT(2, "n", 0, BIG);
  const float *g = req_f32(env, a.argv[0], n, "gate");
  const float *u = req_f32(env, a.argv[1], n, "up");
  float *out = req_f32(env, a.argv[3], n, "out");
  kn_bi_swiglu_f32(g, u, n, out);
  return undefined(env);
  BODY_END
}
}  // namespace

#define EXPORT(name, fn) {name, nullptr, fn, nullptr, nullptr, nullptr, napi_enumerable, nullptr}

NAPI_MODULE_INIT() {
  static const int tuned = kn_tune_malloc();  // once per process, before the first tensor
  malloc_tuned_flag = tuned;
  napi_property_descriptor props[] = {
      EXPORT("info", js_info),
      EXPORT("setThreads", js_set_threads),
      EXPORT("selectGemm", js_select_gemm),
      EXPORT("sgemm", js_sgemm),
      EXPORT("matmul", js_matmul),
      EXPORT("matmulBf16", js_matmul_bf16),
      EXPORT("sgemmBf16", js_sgemm_bf16),
      EXPORT("bf16Impl", js_bf16_impl),
      EXPORT("unary", js_unary),
      EXPORT("activationBackward", js_activation_backward),
      EXPORT("biasActivation", js_bias_activation),
      EXPORT("biasActivationBackward", js_bias_activation_backward),
      EXPORT("matmulAccumulate", js_matmul_accumulate),
      EXPORT("matmulPair", js_matmul_pair),
      EXPORT("loraBackward", js_lora_backward),
      EXPORT("binary", js_binary),
      EXPORT("where", js_where),
      EXPORT("assign", js_assign),
      EXPORT("cast", js_cast),
      EXPORT("reduce", js_reduce),
      EXPORT("argReduce", js_arg_reduce),
      EXPORT("cumsum", js_cumsum),
      EXPORT("gatherRows", js_gather_rows),
      EXPORT("scatterAddRows", js_scatter_add_rows),
      EXPORT("conv2d", js_conv2d),
      EXPORT("conv2dBackwardInput", js_conv2d_backward_input),
      EXPORT("conv2dBackwardWeight", js_conv2d_backward_weight),
      EXPORT("maxPool2d", js_max_pool2d),
      EXPORT("maxPool2dBackward", js_max_pool2d_backward),
      EXPORT("maxPool2dBiasRelu", js_max_pool2d_bias_relu),
      EXPORT("maxPool2dBiasReluBackward", js_max_pool2d_bias_relu_backward),
      EXPORT("avgPool2d", js_avg_pool2d),
      EXPORT("avgPool2dBackward", js_avg_pool2d_backward),
      EXPORT("softmax", js_softmax),
      EXPORT("logSoftmax", js_log_softmax),
      EXPORT("softmaxBackward", js_softmax_backward),
      EXPORT("logSoftmaxBackward", js_log_softmax_backward),
      EXPORT("layerNorm", js_layer_norm),
      EXPORT("addLayerNorm", js_add_layer_norm),
      EXPORT("layerNormBackward", js_layer_norm_backward),
      EXPORT("rmsNorm", js_rms_norm),
      EXPORT("rmsNormBackward", js_rms_norm_backward),
      EXPORT("crossEntropy", js_cross_entropy),
      EXPORT("adamw", js_adamw),
      EXPORT("adamMany", js_adam_many),
      EXPORT("sumSquaresMany", js_sum_squares_many),
      EXPORT("scaleMany", js_scale_many),
      EXPORT("causalAttention", js_causal_attention),
      EXPORT("causalAttentionBackward", js_causal_attention_backward),
      EXPORT("causalAttentionQKV", js_causal_attention_qkv),
      EXPORT("causalAttentionQKVBackward", js_causal_attention_qkv_backward),
      EXPORT("qmatmul", js_qmatmul),
      EXPORT("qmatmulBackward", js_qmatmul_backward),
      EXPORT("qmatmulIsa", js_qmatmul_isa),
      EXPORT("biMatmul", js_bi_matmul),
      EXPORT("biMatmulKn", js_bi_matmul_kn),
      EXPORT("biQmatmulPacked", js_bi_qmatmul_packed),
      EXPORT("biRmsNorm", js_bi_rms_norm),
      EXPORT("biAddRmsNorm", js_bi_add_rms_norm),
      EXPORT("biRopeKv", js_bi_rope_kv),
      EXPORT("biStoreKv", js_bi_store_kv),
      EXPORT("biPagedAttention", js_bi_paged_attention),
      EXPORT("biSwiglu", js_bi_swiglu),
      EXPORT("qrepackBytes", js_qrepack_bytes),
      EXPORT("qrepack", js_qrepack),
      EXPORT("qmatmulPacked", js_qmatmul_packed),
      EXPORT("gemv", js_gemv),
      EXPORT("addRmsNorm", js_add_rms_norm),
      EXPORT("swiglu", js_swiglu),
      EXPORT("decodeAttention", js_decode_attention),
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
