/*
 * 2-D convolution by oneDNN's direct-convolution primitives: forward, backward data (the input
 * gradient) and backward weights. conv.cpp calls these first and keeps im2col + GEMM for builds
 * without oneDNN, for shapes oneDNN refuses, and when KNOBS_CONV=im2col (to compare the two).
 *
 * Why: im2col + GEMM runs one small GEMM per image (conv 1 of the Fashion-MNIST CNN is 32×784×9),
 * far from the GEMM's peak, and materialises the column matrix three times per step; oneDNN's JIT
 * convolutions work on channel-blocked layouts (nChw16c) straight from the image.
 *
 * The primitives choose their own layouts (format "any"); the caller's tensors stay plain NCHW /
 * OIHW, and reorders convert in and out where the chosen layout differs (their buffers are reused
 * per thread, so a step does not fault fresh pages in). Primitives are created once per shape and
 * direction (creation takes ~1 ms) and kept for the process. Threads: see run() — the batch is
 * split across knobs' pool; a fixed thread count gives a fixed split and summation order, so
 * results are deterministic per thread count.
 */
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <vector>

#include "internal.h"

#ifdef KN_HAVE_DNNL
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>

namespace kn {
dnnl_engine_t dnnl_cpu_engine();  // matmul_bf16.cpp
}

namespace {

dnnl_engine_t engine() { return kn::dnnl_cpu_engine(); }

enum Dir { FORWARD = 0, BACKWARD_DATA = 1, BACKWARD_WEIGHTS = 2 };

/* One of a primitive's three tensors: the caller's plain layout, the primitive's, and the reorder
   between them (null when they are the same). Inputs reorder user → inner, outputs inner → user. */
struct Operand {
  int arg;
  bool output;
  dnnl_memory_desc_t user, inner;
  dnnl_primitive_t reorder = nullptr;
  size_t inner_bytes = 0;
};

struct ConvPrim {
  dnnl_primitive_t prim = nullptr;
  Operand ops[3];
  dnnl_memory_desc_t scratch;
  size_t scratch_bytes = 0;
};

/* Everything that shapes a primitive: the conv geometry (batch included) and the direction. */
struct Key {
  int64_t v[17];
  bool operator<(const Key &o) const { return memcmp(v, o.v, sizeof v) < 0; }
};

Key key_of(const kn_conv2d *p, Dir dir) {
  Key k;
  int64_t vals[17] = {p->N, p->Cin, p->H, p->W, p->Cout, p->kH, p->kW, p->Ho, p->Wo, p->stride[0], p->stride[1],
                      p->padding[0], p->padding[1], p->dilation[0], p->dilation[1], p->groups, dir};
  memcpy(k.v, vals, sizeof vals);
  return k;
}

void plain_descs(const kn_conv2d *p, dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei, dnnl_memory_desc_t *dst,
                 dnnl_format_tag_t act_tag, bool any_weights) {
  dnnl_dims_t ds = {p->N, p->Cin, p->H, p->W}, dd = {p->N, p->Cout, p->Ho, p->Wo};
  dnnl_memory_desc_init_by_tag(src, 4, ds, dnnl_f32, act_tag);
  dnnl_memory_desc_init_by_tag(dst, 4, dd, dnnl_f32, act_tag);
  if (p->groups == 1) {
    dnnl_dims_t dw = {p->Cout, p->Cin, p->kH, p->kW};
    dnnl_memory_desc_init_by_tag(wei, 4, dw, dnnl_f32, any_weights ? dnnl_format_tag_any : dnnl_oihw);
  } else {
    /* [Cout, Cin/g, kH, kW] is, as memory, [g, Cout/g, Cin/g, kH, kW] */
    dnnl_dims_t dw = {p->groups, p->Cout / p->groups, p->Cin / p->groups, p->kH, p->kW};
    dnnl_memory_desc_init_by_tag(wei, 5, dw, dnnl_f32, any_weights ? dnnl_format_tag_any : dnnl_goihw);
  }
}

/* oneDNN's geometry: dilation counts the gaps (d − 1); the right padding is whatever makes the
   output size come out as Ho (it can be smaller than the left one when the stride drops a tail). */
struct Geometry {
  dnnl_dims_t strides, dilates, pad_l, pad_r;
};

Geometry geometry(const kn_conv2d *p) {
  Geometry g;
  const int64_t in[2] = {p->H, p->W}, k[2] = {p->kH, p->kW}, out[2] = {p->Ho, p->Wo};
  for (int i = 0; i < 2; i++) {
    g.strides[i] = p->stride[i];
    g.dilates[i] = p->dilation[i] - 1;
    g.pad_l[i] = p->padding[i];
    g.pad_r[i] = (out[i] - 1) * p->stride[i] + (k[i] - 1) * p->dilation[i] + 1 - in[i] - p->padding[i];
  }
  return g;
}

bool forward_desc(const kn_conv2d *p, const Geometry &g, dnnl_convolution_desc_t *d) {
  dnnl_memory_desc_t src, wei, dst;
  plain_descs(p, &src, &wei, &dst, dnnl_format_tag_any, true);
  return dnnl_dilated_convolution_forward_desc_init(d, dnnl_forward_training, dnnl_convolution_direct, &src, &wei,
                                                    nullptr, &dst, g.strides, g.dilates, g.pad_l,
                                                    g.pad_r) == dnnl_success;
}

/* Fills op's inner desc from the primitive and creates the reorder when the layouts differ. */
bool attach(dnnl_primitive_desc_t pd, dnnl_query_t what, Operand *op) {
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, 0);
  if (!md) return false;
  op->inner = *md;
  op->inner_bytes = dnnl_memory_desc_get_size(md);
  if (dnnl_memory_desc_equal(&op->user, &op->inner)) return true;
  dnnl_primitive_desc_t rpd = nullptr;
  const dnnl_memory_desc_t *from = op->output ? &op->inner : &op->user, *to = op->output ? &op->user : &op->inner;
  bool ok = dnnl_reorder_primitive_desc_create(&rpd, from, engine(), to, engine(), nullptr) == dnnl_success &&
            dnnl_primitive_create(&op->reorder, rpd) == dnnl_success;
  if (rpd) dnnl_primitive_desc_destroy(rpd);
  return ok;
}

bool build(const kn_conv2d *p, Dir dir, ConvPrim *c) {
  Geometry g = geometry(p);
  dnnl_memory_desc_t src, wei, dst;
  plain_descs(p, &src, &wei, &dst, dnnl_nchw, false);
  dnnl_convolution_desc_t fwd;
  if (!forward_desc(p, g, &fwd)) return false;
  dnnl_primitive_attr_t attr = nullptr;
  if (dnnl_primitive_attr_create(&attr) != dnnl_success) return false;
  dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  dnnl_primitive_desc_t hint = nullptr, pd = nullptr;
  bool ok = dnnl_primitive_desc_create(&hint, &fwd, attr, engine(), nullptr) == dnnl_success;
  if (ok && dir == FORWARD) {
    pd = hint;
    hint = nullptr;
    c->ops[0] = {DNNL_ARG_SRC, false, src, {}};
    c->ops[1] = {DNNL_ARG_WEIGHTS, false, wei, {}};
    c->ops[2] = {DNNL_ARG_DST, true, dst, {}};
    ok = attach(pd, dnnl_query_src_md, &c->ops[0]) && attach(pd, dnnl_query_weights_md, &c->ops[1]) &&
         attach(pd, dnnl_query_dst_md, &c->ops[2]);
  } else if (ok) {
    dnnl_memory_desc_t a_src, a_wei, a_dst;
    plain_descs(p, &a_src, &a_wei, &a_dst, dnnl_format_tag_any, true);
    dnnl_convolution_desc_t bwd;
    ok = (dir == BACKWARD_DATA ? dnnl_dilated_convolution_backward_data_desc_init(
                                     &bwd, dnnl_convolution_direct, &a_src, &a_wei, &a_dst, g.strides, g.dilates,
                                     g.pad_l, g.pad_r)
                               : dnnl_dilated_convolution_backward_weights_desc_init(
                                     &bwd, dnnl_convolution_direct, &a_src, &a_wei, nullptr, &a_dst, g.strides,
                                     g.dilates, g.pad_l, g.pad_r)) == dnnl_success &&
         dnnl_primitive_desc_create(&pd, &bwd, attr, engine(), hint) == dnnl_success;
    if (ok && dir == BACKWARD_DATA) {
      c->ops[0] = {DNNL_ARG_DIFF_DST, false, dst, {}};
      c->ops[1] = {DNNL_ARG_WEIGHTS, false, wei, {}};
      c->ops[2] = {DNNL_ARG_DIFF_SRC, true, src, {}};
      ok = attach(pd, dnnl_query_diff_dst_md, &c->ops[0]) && attach(pd, dnnl_query_weights_md, &c->ops[1]) &&
           attach(pd, dnnl_query_diff_src_md, &c->ops[2]);
    } else if (ok) {
      c->ops[0] = {DNNL_ARG_DIFF_DST, false, dst, {}};
      c->ops[1] = {DNNL_ARG_SRC, false, src, {}};
      c->ops[2] = {DNNL_ARG_DIFF_WEIGHTS, true, wei, {}};
      ok = attach(pd, dnnl_query_diff_dst_md, &c->ops[0]) && attach(pd, dnnl_query_src_md, &c->ops[1]) &&
           attach(pd, dnnl_query_diff_weights_md, &c->ops[2]);
    }
  }
  if (ok) {
    c->scratch = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    c->scratch_bytes = dnnl_memory_desc_get_size(&c->scratch);
    ok = dnnl_primitive_create(&c->prim, pd) == dnnl_success;
  }
  if (hint) dnnl_primitive_desc_destroy(hint);
  if (pd) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_attr_destroy(attr);
  if (!ok) c->prim = nullptr;
  return ok;
}

/* The cached primitive for this shape and direction; null when oneDNN refused it. Created with
   oneDNN's OpenMP team at one thread (some implementations fix their work split at creation). */
const ConvPrim *primitive(const kn_conv2d *p, Dir dir) {
  static std::mutex mu;
  static std::map<Key, ConvPrim> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key k = key_of(p, dir);
  auto it = cache.find(k);
  if (it != cache.end()) return it->second.prim ? &it->second : nullptr;
  ConvPrim &c = cache[k];
  omp_set_num_threads(1);
  build(p, dir, &c);
  return c.prim ? &c : nullptr;
}

bool disabled() {
  static const bool off = [] {
    const char *v = getenv("KNOBS_CONV");
    return v && !strcmp(v, "im2col");
  }();
  return off;
}

/* The JIT kernels block channels by 16. Below that per group (a first layer on 1–3 input channels)
   they gain little and the reorders of the large activations to and from the blocked layout cost
   more than they save: measured on the Fashion-MNIST CNN, conv 1 (1 → 32 channels, 28×28, batch
   128) ran forward in 3.3 ms this way against 1.6 ms by im2col + GEMM, while conv 2 (32 → 64,
   14×14) ran 6.9 ms against 11.3 ms (one core, CPU time). */
bool worth_it(const kn_conv2d *p) { return p->Cin / p->groups >= 16 && p->Cout / p->groups >= 16; }

dnnl_memory_t memory(const dnnl_memory_desc_t *md, void *data) {
  dnnl_memory_t m = nullptr;
  dnnl_memory_create(&m, md, engine(), data);
  return m;
}

bool execute(dnnl_primitive_t prim, dnnl_stream_t stream, int n, const dnnl_exec_arg_t *args) {
  return dnnl_primitive_execute(prim, stream, n, args) == dnnl_success;
}

/* Runs primitive c on the calling thread with the three operands' plain buffers (in ops order). */
bool run_serial(const ConvPrim *c, const float *in0, const float *in1, float *out) {
  static thread_local dnnl_stream_t stream = nullptr;
  static thread_local std::vector<char> buffers[4];
  if (!stream) dnnl_stream_create(&stream, engine(), dnnl_stream_default_flags);
  void *user[3] = {const_cast<float *>(in0), const_cast<float *>(in1), out};
  dnnl_memory_t um[3], im[3];
  for (int i = 0; i < 3; i++) {
    const Operand &op = c->ops[i];
    um[i] = memory(&op.user, user[i]);
    if (!op.reorder) { im[i] = um[i]; continue; }
    if (buffers[i].size() < op.inner_bytes) buffers[i].resize(op.inner_bytes);
    im[i] = memory(&op.inner, buffers[i].data());
  }
  if (buffers[3].size() < c->scratch_bytes) buffers[3].resize(c->scratch_bytes);
  dnnl_memory_t ms = memory(&c->scratch, buffers[3].data());
  omp_set_num_threads(1);  // this thread only: the pool does the splitting, as for GEMM
  sigset_t prof, old;      // as gemm_serial in matmul.cpp: no SIGPROF inside oneDNN's JIT code
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  pthread_sigmask(SIG_BLOCK, &prof, &old);
  bool ok = true;
  for (int i = 0; i < 3 && ok; i++) {
    const Operand &op = c->ops[i];
    if (op.output || !op.reorder) continue;
    dnnl_exec_arg_t r[] = {{DNNL_ARG_FROM, um[i]}, {DNNL_ARG_TO, im[i]}};
    ok = execute(op.reorder, stream, 2, r);
  }
  if (ok) {
    dnnl_exec_arg_t args[] = {{c->ops[0].arg, im[0]}, {c->ops[1].arg, im[1]}, {c->ops[2].arg, im[2]},
                              {DNNL_ARG_SCRATCHPAD, ms}};
    ok = execute(c->prim, stream, 4, args);
  }
  if (ok && c->ops[2].reorder) {
    dnnl_exec_arg_t r[] = {{DNNL_ARG_FROM, im[2]}, {DNNL_ARG_TO, um[2]}};
    ok = execute(c->ops[2].reorder, stream, 2, r);
  }
  if (ok) ok = dnnl_stream_wait(stream) == dnnl_success;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  for (int i = 0; i < 3; i++) {
    if (im[i] != um[i]) dnnl_memory_destroy(im[i]);
    dnnl_memory_destroy(um[i]);
  }
  dnnl_memory_destroy(ms);
  return ok;
}

/*
 * Runs direction dir over the batch split into one contiguous slice of images per pool thread,
 * each slice a single-threaded primitive (as kn_sgemm splits C): oneDNN's own OpenMP team, tried
 * first, ran 2–4× slower than the pool on this shared 2-core VM, where one descheduled OpenMP
 * thread stalls the whole team at every barrier. Weight gradients: slice 0 writes dw, the others
 * private copies summed in slice order at the end (a fixed order per thread count).
 */
bool run(const kn_conv2d *p, Dir dir, const float *in0, const float *in1, float *out) {
  if (disabled() || p->N <= 0 || !worth_it(p)) return false;
  int64_t parts = kn_get_threads() < p->N ? kn_get_threads() : p->N;
  kn_conv2d slice[2] = {*p, *p};  // slices hold ⌊N/parts⌋ or ⌈N/parts⌉ images
  slice[0].N = p->N / parts;
  slice[1].N = (p->N + parts - 1) / parts;
  const ConvPrim *prim[2] = {primitive(&slice[0], dir), primitive(&slice[1], dir)};
  if (!prim[0] || !prim[1]) return false;
  const int64_t x_image = p->Cin * p->H * p->W, y_image = p->Cout * p->Ho * p->Wo;
  const int64_t wn = p->Cout * (p->Cin / p->groups) * p->kH * p->kW;
  std::vector<float> priv(dir == BACKWARD_WEIGHTS ? (size_t)(wn * (parts - 1)) : 0);
  std::vector<char> ok((size_t)parts, 0);
  kn::parallel_for(parts, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      int64_t n0 = p->N * q / parts, n = p->N * (q + 1) / parts - n0;
      const ConvPrim *c = prim[n == slice[0].N ? 0 : 1];
      switch (dir) {
        case FORWARD: ok[q] = run_serial(c, in0 + n0 * x_image, in1, out + n0 * y_image); break;
        case BACKWARD_DATA: ok[q] = run_serial(c, in0 + n0 * y_image, in1, out + n0 * x_image); break;
        case BACKWARD_WEIGHTS:
          ok[q] = run_serial(c, in0 + n0 * y_image, in1 + n0 * x_image, q == 0 ? out : priv.data() + (q - 1) * wn);
          break;
      }
    }
  });
  for (int64_t q = 0; q < parts; q++)
    if (!ok[q]) return false;
  for (int64_t q = 1; q < parts && dir == BACKWARD_WEIGHTS; q++) {
    const float *s = priv.data() + (q - 1) * wn;
    for (int64_t i = 0; i < wn; i++) out[i] += s[i];
  }
  return true;
}

}  // namespace

namespace kn {
bool conv2d_dnnl(const kn_conv2d *p, const float *x, const float *w, float *out) {
  return run(p, FORWARD, x, w, out);
}
bool conv2d_backward_input_dnnl(const kn_conv2d *p, const float *gout, const float *w, float *dx) {
  return run(p, BACKWARD_DATA, gout, w, dx);
}
bool conv2d_backward_weight_dnnl(const kn_conv2d *p, const float *gout, const float *x, float *dw) {
  return run(p, BACKWARD_WEIGHTS, gout, x, dw);
}
}  // namespace kn

#else

namespace kn {
bool conv2d_dnnl(const kn_conv2d *, const float *, const float *, float *) { return false; }
bool conv2d_backward_input_dnnl(const kn_conv2d *, const float *, const float *, float *) { return false; }
bool conv2d_backward_weight_dnnl(const kn_conv2d *, const float *, const float *, float *) { return false; }
}  // namespace kn

#endif
