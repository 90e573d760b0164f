/*
 * knobs native kernels: a plain C API (pointers, shapes, strides) so each kernel can be called and
 * tested from C alone. The N-API layer (binding.cpp) checks every argument against the storage it
 * came from; the kernels trust their arguments and never allocate what they return.
 *
 * Conventions
 *  - A kn_view describes a strided read of `data` (already advanced by the view's offset, in
 *    elements): element (i0, …, i{n-1}) lives at data[Σ ik·strides[k]]. Strides may be 0
 *    (broadcast) or negative-free transposes; shapes may hold 0 (empty) or 1.
 *  - Outputs are contiguous, row-major, caller-allocated, of the size the kernel documents.
 *  - Work above a size threshold is split across the shared pool (kn_set_threads); the BLAS, when
 *    linked, runs inside that pool single-threaded, so the process never runs more compute threads
 *    than kn_get_threads().
 *  - NaN and Inf flow through as IEEE arithmetic does; no kernel traps or reads out of bounds on them.
 */
#ifndef KNOBS_KERNELS_H
#define KNOBS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KN_MAX_DIMS 16

typedef struct kn_view {
  const void *data;          /* first element of the view (storage + offset) */
  int ndim;
  int64_t shape[KN_MAX_DIMS];
  int64_t strides[KN_MAX_DIMS]; /* in elements */
} kn_view;

/* ---- runtime -------------------------------------------------------------------------------- */

/* Threads of the shared pool (1 … 256); also the BLAS thread count. Returns the value in force. */
int kn_set_threads(int n);
int kn_get_threads(void);
/* "openblas", "onednn" or "builtin": the GEMM library this build uses now. */
const char *kn_gemm_library(void);
/* Comma-separated libraries compiled in; kn_select_gemm picks one of them (0 on success). */
const char *kn_gemm_libraries(void);
int kn_select_gemm(const char *name);
/* Best instruction set the CPU offers among those compiled for: "avx512f", "avx2" or "sse4.2". */
const char *kn_cpu_isa(void);
/*
 * Keeps freed heap memory mapped for reuse (glibc: a fixed 32 MiB mmap threshold and a 1 GiB trim
 * threshold), so that tensor buffers freed by the garbage collector are recycled instead of being
 * returned to the OS and faulted in again page by page on the next allocation. Called once when the
 * addon loads; a no-op off glibc, when GLIBC_TUNABLES sets malloc options, or with
 * KNOBS_MALLOC_TUNE=0. Returns 1 when it changed the settings.
 */
int kn_tune_malloc(void);

/* ---- elementwise ---------------------------------------------------------------------------- */

typedef enum kn_unary_op {
  KN_NEG, KN_EXP, KN_LOG, KN_SQRT, KN_RSQRT, KN_ABS, KN_TANH, KN_SIGMOID,
  KN_RELU, KN_GELU, KN_GELU_TANH, KN_SILU, KN_SIGN, KN_UNARY_COUNT
} kn_unary_op;

typedef enum kn_binary_op {
  KN_ADD, KN_SUB, KN_MUL, KN_DIV, KN_POW, KN_MAXIMUM, KN_MINIMUM,
  KN_EQ, KN_NE, KN_LT, KN_LE, KN_GT, KN_GE, KN_BINARY_COUNT
} kn_binary_op;

/* out[i] = f(x[i]); out has numel(x) floats. */
void kn_unary_f32(kn_unary_op op, const kn_view *x, float *out);
/* Activations whose gradient has a fused kernel (the rest are composites in src/autograd/gradients.ts). */
static inline int kn_is_activation(kn_unary_op op) {
  return op == KN_RELU || op == KN_GELU || op == KN_GELU_TANH || op == KN_SILU;
}
/* out[i] = g[i] · f'(x[i]) for an activation op (relu'(0) = 0, as PyTorch). x, g same shape. */
void kn_activation_backward_f32(kn_unary_op op, const kn_view *x, const kn_view *g, float *out);
/* The epilogue of a linear layer on its GEMM output h [rows, N] (row-major): h += bias in place
   (bias [N], may be null), then y = act(h) for an activation op (act < 0: none, y unused). */
void kn_bias_act_f32(float *h, const float *bias, int act, int64_t rows, int64_t N, float *y);
/* Its backward: dh = g · act'(h) (act ≥ 0; g, h, dh [rows, N]) and db [N] = Σrows dh (g when act < 0).
   dh or db may be null (not wanted); db's sum order depends only on rows, not on the threads. */
void kn_bias_act_backward_f32(const float *g, const float *h, int act, int64_t rows, int64_t N, float *dh,
                              float *db);
/* a ∘ b over one shape (a's). Arithmetic ops write floats; compare ops write 0/1 bytes. */
void kn_binary_f32(kn_binary_op op, const kn_view *a, const kn_view *b, void *out);
/* cond (bytes, nonzero = true) ? a : b. */
void kn_where_f32(const kn_view *cond, const kn_view *a, const kn_view *b, float *out);
/* Strided copy between views of one shape, any element size (1, 2, 4 or 8 bytes). */
void kn_assign(size_t elem_size, void *dst, const kn_view *dst_layout, const kn_view *src);

typedef enum kn_dtype { KN_F32, KN_F64, KN_I32, KN_U8, KN_I8, KN_BOOL } kn_dtype;
/* Contiguous conversion of a view (JS semantics: float→int truncates, wraps, NaN/Inf → 0). */
void kn_cast(kn_dtype from, const kn_view *x, kn_dtype to, void *out);

/* ---- reductions ----------------------------------------------------------------------------- */

typedef enum kn_reduce_op { KN_SUM, KN_MAX, KN_MIN } kn_reduce_op;
/* Reduces the axes set in axis_mask (bit k = axis k); out has x's shape with those axes = 1.
   Sums accumulate in double; NaN wins max/min; an empty reduction gives 0 / -Inf / +Inf. */
void kn_reduce_f32(kn_reduce_op op, const kn_view *x, uint32_t axis_mask, float *out);
/* Index of the first max (is_min = 0) or min along axis; the first NaN counts as the extreme. */
void kn_argreduce_f32(int is_min, const kn_view *x, int axis, int32_t *out);
/* Running sums along the middle axis of contiguous x seen as [outer, n, inner] (from the end when
   reverse ≠ 0), accumulated in double; out has x's size. */
void kn_cumsum_f32(const float *x, int64_t outer, int64_t n, int64_t inner, int reverse, float *out);

/* ---- matrix products ------------------------------------------------------------------------ */

/* Row-major C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C, like cblas_sgemm (RowMajor). */
void kn_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Batched product of a [...batch, M, K] and b [...batch, K, N] (same ndim ≥ 2, batch dims equal,
   any strides: unit-stride rows or columns go to the BLAS directly, others are packed first). */
void kn_matmul_f32(const kn_view *a, const kn_view *b, float *out);
/* c [M, N] (row-major) += bias [N] (or nothing: null) + alpha · a [M, K] · b [K, N] for 2-D views (the
   GEMM's beta = 1; an inner size ≤ 32, a LoRA rank, in one pass over c; an output ≤ 32 wide and no bias,
   LoRA's down projection, in one pass over a: lora.cpp): a fused LoRA linear adds its bias and its
   low-rank product into the base's output without separate passes. */
void kn_matmul_accumulate_f32(const kn_view *a, const kn_view *b, float alpha, const float *bias, float *c);
/* A LoRA linear's low-rank backward in one pass over g [M, N] and h [M, K], rank 1 ≤ r ≤ 32 (lora.cpp):
   u [M, r] = g·sB (sB [N, r], the scaled lora_B), dB [N, r] = gᵀ·t (t [M, r]) and dA [r, K] = uᵀ·h,
   all dense row-major; the bits do not depend on the thread count. */
void kn_lora_backward_f32(const float *g, int64_t M, int64_t N, const float *sB, const float *t, const float *h,
                          int64_t K, int64_t r, float *u, float *dB, float *dA);
/* out1 = a1·b1 and out2 = a2·b2 (2-D views, row-major outputs) as one job, each product on its own
   half of the pool (matmul.cpp); at two threads the bits equal kn_matmul_f32's at one thread. */
void kn_matmul_pair_f32(const kn_view *a1, const kn_view *b1, float *out1, const kn_view *a2, const kn_view *b2,
                        float *out2);

/* ---- bf16 mixed precision (matmul_bf16.cpp; oneDNN builds only) ----------------------------- */

/* 1 when this build and CPU run bf16 GEMMs (oneDNN reports AVX512_BF16 or AMX), else 0. */
int kn_bf16_available(void);
/* The ISA oneDNN's JIT uses ("avx512_core_amx", "avx512_core_bf16", …; "none" without oneDNN). */
const char *kn_onednn_isa(void);
/* oneDNN's implementation of the bf16 matmul (e.g. "brg:avx512_core_amx"), "none" when unavailable. */
const char *kn_bf16_impl(void);
/* C[M,N] (f32) = op(A)·op(B) with A, B rounded to bf16 and f32 accumulation; threads ≠ 0 splits C
   across the pool. Returns -1 (C untouched) when kn_bf16_available() is 0. */
int kn_sgemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float *C, int64_t ldc, int threads);
/* kn_matmul_f32 with bf16 products (as kn_sgemm_bf16); -1 when unavailable. */
int kn_matmul_bf16(const kn_view *a, const kn_view *b, float *out);

/* table [V, C] (view) rows picked by ids (n contiguous i32, or i64 when ids64) → out [n, C]. */
void kn_gather_rows_f32(const kn_view *table, const void *ids, int ids64, int64_t n, float *out);
/* out [rows, C] = 0, then out[ids[i]] += src[i] for src [n, C] (view). */
void kn_scatter_add_rows_f32(const kn_view *src, const void *ids, int ids64, int64_t n, int64_t rows, float *out);

/* ---- convolution and pooling (contiguous NCHW) ---------------------------------------------- */

typedef struct kn_conv2d {
  int64_t N, Cin, H, W, Cout, kH, kW, Ho, Wo;
  int64_t stride[2], padding[2], dilation[2], groups;
} kn_conv2d;

/* x [N, Cin, H, W] ⋆ w [Cout, Cin/groups, kH, kW] → out [N, Cout, Ho, Wo]. */
void kn_conv2d_f32(const kn_conv2d *p, const float *x, const float *w, float *out);
void kn_conv2d_backward_input_f32(const kn_conv2d *p, const float *g, const float *w, float *dx);
void kn_conv2d_backward_weight_f32(const kn_conv2d *p, const float *g, const float *x, float *dw);

typedef struct kn_pool2d {
  int64_t N, C, H, W, Ho, Wo, kH, kW, stride[2], padding[2];
} kn_pool2d;

/* indices hold h·W + w of the chosen input pixel within its plane. */
void kn_max_pool2d_f32(const kn_pool2d *p, const float *x, float *out, int32_t *indices);
/* Returns −1, or the position of an index outside its H×W plane (dx is then partly written). */
int64_t kn_max_pool2d_backward_f32(const kn_pool2d *p, const float *g, const int32_t *indices, float *dx);
/* relu(max pool + bias[c]) in one pass (the CNN's conv block after its convolution). */
void kn_max_pool2d_bias_relu_f32(const kn_pool2d *p, const float *x, const float *bias, float *out, int32_t *indices);
/* Its backward from g and the forward's out and indices: dx and, when db is not null, db [C].
   Returns −1, or the position of an index outside its plane (as kn_max_pool2d_backward_f32). */
int64_t kn_max_pool2d_bias_relu_backward_f32(const kn_pool2d *p, const float *g, const float *out,
                                             const int32_t *indices, float *dx, float *db);
/* Padding counts toward the divisor (count_include_pad). */
void kn_avg_pool2d_f32(const kn_pool2d *p, const float *x, float *out);
void kn_avg_pool2d_backward_f32(const kn_pool2d *p, const float *g, float *dx);

/* ---- fused kernels (contiguous rows of length C) -------------------------------------------- */

void kn_softmax_f32(const float *x, int64_t rows, int64_t C, float *out);
void kn_log_softmax_f32(const float *x, int64_t rows, int64_t C, float *out);
/* dx = y ⊙ (g − Σ g⊙y) for y = softmax(x). */
void kn_softmax_backward_f32(const float *y, const float *g, int64_t rows, int64_t C, float *dx);
/* dx = g − softmax ⊙ Σ g for y = log_softmax(x). */
void kn_log_softmax_backward_f32(const float *y, const float *g, int64_t rows, int64_t C, float *dx);

/* y = (x − mean) · rstd · w + b over each row; w, b may be NULL; mean/rstd [rows] may be NULL. */
void kn_layer_norm_f32(const float *x, const float *w, const float *b, int64_t rows, int64_t C, float eps,
                       float *y, float *mean, float *rstd);
/* kn_layer_norm_f32 of s = x + r, with s written to sum [rows, C]. */
void kn_add_layer_norm_f32(const float *x, const float *r, const float *w, const float *b, int64_t rows, int64_t C,
                           float eps, float *sum, float *y, float *mean, float *rstd);
/* dx [rows, C]; dw, db [C] are overwritten (NULL to skip). Needs mean/rstd from the forward.
   acc [rows, C] (NULL for none) is added into dx: a gradient x already has from elsewhere. */
void kn_layer_norm_backward_f32(const float *x, const float *w, const float *mean, const float *rstd,
                                const float *g, int64_t rows, int64_t C, float *dx, float *dw, float *db,
                                const float *acc);
/* y = x · rsqrt(mean(x²) + eps) · w; rstd [rows] may be NULL. */
void kn_rms_norm_f32(const float *x, const float *w, int64_t rows, int64_t C, float eps, float *y, float *rstd);
void kn_rms_norm_backward_f32(const float *x, const float *w, const float *rstd, const float *g,
                              int64_t rows, int64_t C, float *dx, float *dw);

/* Mean cross-entropy of logits [rows, C] against i32 targets; rows whose target == ignore_index
   do not count. Returns the loss; dlogits (may be NULL) = (softmax − onehot) / counted rows. */
float kn_cross_entropy_f32(const float *logits, const int32_t *targets, int64_t rows, int64_t C,
                           int32_t ignore_index, float *dlogits);

/* One fused Adam/AdamW step over n parameters, in place, bias correction with `step` ≥ 1.
   decoupled ≠ 0: PyTorch's AdamW (p ← p·(1 − lr·wd)); 0: PyTorch's Adam (g ← g + wd·p). */
void kn_adamw_f32(float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step, int decoupled);
/* kn_adamw_f32 on `count` tensors in one call (bitwise the same per tensor): tensor t has n[t]
   elements and hyper[7t..7t+6] = lr, beta1, beta2, eps, weight_decay, step, decoupled. */
void kn_adamw_many_f32(int64_t count, float *const *param, const float *const *grad, float *const *m,
                       float *const *v, const int64_t *n, const double *hyper);
/* Σ x² (in double) over `count` arrays of n[t] floats; independent of the thread count. */
double kn_sum_squares_many_f32(int64_t count, const float *const *x, const int64_t *n);
/* x ← (float)((double)x · k) in place over `count` arrays. */
void kn_scale_many_f32(int64_t count, float *const *x, const int64_t *n, double k);

/* Where a head's rows lie: element (b, h, t, d) at b·batch + h·head + t·row + d. Dense
   [B, H, T, D] is {H·T·D, T·D, D}; q of GPT's fused [B, T, 3C] projection (C = H·D) is
   {T·3C, D, 3C} (k and v: the same from +C and +2C), its [B, T, C] output {T·C, D, C}. */
typedef struct kn_attn_layout {
  int64_t batch, head, row;
} kn_attn_layout;

/* Causal self-attention over B·H heads of T positions and D dims; q, k, v in layout `in`, out in
   `ol`, scale usually 1/√D. lse [B·H·T] dense (may be NULL) keeps the log-sum-exp of each row for
   the backward. */
void kn_causal_attention_f32(const float *q, const float *k, const float *v, int64_t B, int64_t H, int64_t T,
                             int64_t D, kn_attn_layout in, kn_attn_layout ol, float scale, float *out, float *lse);
/* dq, dk, dv (layout `in`; every element written) from g = dL/dout (layout `ol`), out and lse of the forward. */
void kn_causal_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                                      const float *lse, const float *g, int64_t B, int64_t H, int64_t T,
                                      int64_t D, kn_attn_layout in, kn_attn_layout ol, float scale, float *dq,
                                      float *dk, float *dv);

/* ---- quantized products (qmatmul.cpp) ------------------------------------------------------ */

/* ggml block types, by their ggml type ids: 32 values per block (see qmatmul.cpp for the bytes). */
typedef enum kn_qtype { KN_Q4_0 = 2, KN_Q8_0 = 8 } kn_qtype;
/* y [M, N] = x [M, K] · Wᵀ for W [N, K] in blocks along K (K a multiple of 32; N·K/32 blocks).
   Each x row is quantized to q8_0 first, as ggml does; a row's result is independent of M and of
   the thread count. */
void kn_qmatmul_f32(int type, const float *x, int64_t M, int64_t K, const uint8_t *w, int64_t N, float *y);
/* dx [M, K] = dy [M, N] · W: W dequantized one small f32 tile at a time (never whole) through the
   f32 GEMM; the same bits for every thread count. */
void kn_qmatmul_backward_f32(int type, const float *dy, int64_t M, int64_t N, const uint8_t *w, int64_t K, float *dx);
/*
 * A second layout of a q8_0 / q4_0 W for the product (qmatmul.cpp; per ISA: "x16", 16 rows interleaved
 * per block, with AVX-512 VNNI, "x8", 8 rows, with AVX2; 1.06× / 1.11× the ggml bytes either way):
 * kn_qrepack_bytes is its size, 0 when this CPU or type has none (then
 * use kn_qmatmul_f32); kn_qrepack writes it from ggml blocks; kn_qmatmul_packed_f32 is
 * kn_qmatmul_f32 on it (same integers per block; each row's value independent of M and threads).
 */
int64_t kn_qrepack_bytes(int type, int64_t N, int64_t K);
void kn_qrepack(int type, const uint8_t *w, int64_t N, int64_t K, uint8_t *out);
void kn_qmatmul_packed_f32(int type, const float *x, int64_t M, int64_t K, const uint8_t *packed, int64_t N, float *y);
/* Rows [m0, m1) of x [·, K] as the packed product's q8_0 activations: q [·, K] int8, d [·, K/32] the
   f16-rounded block scales, qsum [·, K/32] each block's Σ q (ggml's quantize_row_q8_0_ref). */
void kn_q8_quantize_rows(const float *x, int64_t K, int64_t m0, int64_t m1, int8_t *q, float *d, int32_t *qsum);
/* "avx512_vnni", "avx2" or "scalar": the path kn_qmatmul_f32 takes on this CPU (KNOBS_QMATMUL_SCALAR=1 forces scalar). */
const char *kn_qmatmul_isa(void);

/* ---- batch-invariant decode kernels (bi_decode.cpp) ----------------------------------------- */

/* Each output element is reduced in an order fixed by the reduction length alone: a row's result
   never depends on the other rows, their number or the thread count (continuous batching). */
/* y [M, N] = x [M, K] · Wᵀ, W [N, K] row-major; threads split the N columns. */
void kn_bi_matmul_f32(const float *x, int64_t M, int64_t K, const float *w, int64_t N, float *y);
/* y [M, N] = x [M, K] · W, W [K, N] row-major (GPT-2's Conv1D layout), each element one chain of fused
   multiply-adds over k in order (bi_matmul_kn.cpp); threads split the N columns. */
void kn_bi_matmul_kn_f32(const float *x, int64_t M, int64_t K, const float *w, int64_t N, float *y);
/* y [M, C] = x / √(mean(x²) + eps) · w, row by row. */
void kn_bi_rms_norm_f32(const float *x, int64_t M, int64_t C, const float *w, float eps, float *y);
/* x [M, C] += r (when r is not null: the residual add), then y = rms_norm(x) · w, row by row. */
void kn_bi_add_rms_norm_f32(float *x, const float *r, int64_t M, int64_t C, const float *w, float eps, float *y);
/* Rotates q [R, H, D] and k [R, KVH, D] in place at positions[r] (cos, sin [·, D/2]; rotate-half pairs),
   then stores row r's key and value heads at its position in the pools [blocks, KVH, block, D]: f32, or
   IEEE half (rounded to nearest even) when kv_f16. */
void kn_bi_rope_kv_f32(float *q, float *k, const float *v, int64_t R, int64_t H, int64_t KVH, int64_t D,
                       const float *cos, const float *sin, const int32_t *positions, void *kpool, void *vpool,
                       int kv_f16, int64_t block, const int32_t *tables, int64_t table_stride);
/* kn_bi_rope_kv_f32 without the rotation (models with learned positions, GPT-2): stores row r's key and
   value heads k, v [R, KVH, D] at positions[r] in the pools. */
void kn_bi_store_kv_f32(const float *k, const float *v, int64_t R, int64_t KVH, int64_t D, const int32_t *positions,
                        void *kpool, void *vpool, int kv_f16, int64_t block, const int32_t *tables,
                        int64_t table_stride);
/* out [R, H, D]: row r, head h attends to its own lens[r] cached positions. kpool/vpool are
   [blocks, KVH, block, D] of f32, or of IEEE half when kv_f16; position t of row r is in block
   tables[r·table_stride + t / block]; query head h reads key/value head h / (H / KVH). */
void kn_bi_paged_attention_f32(const float *q, int64_t R, int64_t H, int64_t D, const void *kpool,
                               const void *vpool, int kv_f16, int64_t KVH, int64_t block, const int32_t *tables,
                               int64_t table_stride, const int32_t *lens, float scale, float *out);
/* y [M, N] = x [M, K] · Wᵀ on W's packed q8_0 / q4_0 layout (kn_qrepack): the same bits per row as
   kn_qmatmul_packed_f32, but each weight vector loaded once for a tile of up to 4 rows; threads split
   groups of 16 (x16) or 8 (x8) columns. */
void kn_bi_qmatmul_packed_f32(int type, const float *x, int64_t M, int64_t K, const uint8_t *packed, int64_t N,
                              float *y);
/* out = silu(gate) · up, elementwise. */
void kn_bi_swiglu_f32(const float *gate, const float *up, int64_t n, float *out);
/* ---- one decode step of one sequence (decode.cpp) ------------------------------------------- */

/* y [N] = W [N, K] · x [K], W row-major; threads split rows, a row's result is the same whatever their number. */
void kn_gemv_f32(const float *x, const float *W, int64_t N, int64_t K, float *y);
/* x [C] += r (when r is not null), then y = rms_norm(x) · w, as kn_rms_norm_f32 on one row. */
void kn_add_rms_norm_f32(float *x, const float *r, const float *w, int64_t C, float eps, float *y);
/* out [n] = silu(g) · u. */
void kn_swiglu_f32(const float *g, const float *u, int64_t n, float *out);
/*
 * Attention of one new position `pos` of one sequence: rotary (cos/sin [D], "half" pairs) applied
 * in place to q [H·D] and k [KV·D], k and v [KV·D] written to the caches [KV, max_len, D] at pos,
 * then for each query head h (served by key/value head h / (H/KV)) softmax(q·kᵀ·scale) · v over
 * positions 0…pos into y [H·D].
 */
void kn_decode_attention_f32(float *q, float *k, const float *v, const float *cos, const float *sin, float *keys,
                             float *values, int64_t H, int64_t KV, int64_t D, int64_t max_len, int64_t pos,
                             float scale, float *y);

#ifdef __cplusplus
}
#endif
#endif
