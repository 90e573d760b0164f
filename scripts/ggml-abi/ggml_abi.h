/*
 * The few ggml / llama.cpp entry points scripts/ggml_quant_fixtures.c calls, declared by hand from
 * the ABI of the prebuilt libraries node-llama-cpp 3.21.1 ships
 * (node_modules/@node-llama-cpp/linux-x64/bins/linux-x64: libggml-base.so, libllama.v0.4.0.so).
 *
 * Source of these declarations: llama.cpp release v0.4.0 as node-llama-cpp bundles it
 * (node_modules/node-llama-cpp/llama/gitRelease.bundle, squashed commit
 * 80fb11ac73e66d89eae2c6a91d8a77428fa733ed): ggml/include/ggml.h, ggml/include/gguf.h,
 * ggml/src/ggml-quants.h and include/llama.h. Only what the program needs is declared; block
 * structs are passed as opaque bytes (their layouts are documented in src/formats/gguf-quants.ts).
 */
#ifndef KNOBS_GGML_ABI_H
#define KNOBS_GGML_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml.h: enum ggml_type (the values are the GGUF type ids). */
enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
};
typedef uint16_t ggml_fp16_t;
int64_t ggml_blck_size(enum ggml_type type);
size_t ggml_type_size(enum ggml_type type);
const char *ggml_type_name(enum ggml_type type);
void ggml_fp16_to_fp32_row(const ggml_fp16_t *x, float *y, int64_t n);
void ggml_bf16_to_fp32_row(const uint16_t *x, float *y, int64_t n);

/* ggml-quants.h: reference quantizers and the dequantizers (y and x are arrays of blocks). */
void quantize_row_q8_0_ref(const float *x, void *y, int64_t k);
void quantize_row_q4_0_ref(const float *x, void *y, int64_t k);
void quantize_row_q4_1_ref(const float *x, void *y, int64_t k);
void quantize_row_q5_0_ref(const float *x, void *y, int64_t k);
void quantize_row_q5_1_ref(const float *x, void *y, int64_t k);
void quantize_row_q4_K_ref(const float *x, void *y, int64_t k);
void quantize_row_q5_K_ref(const float *x, void *y, int64_t k);
void quantize_row_q6_K_ref(const float *x, void *y, int64_t k);
void dequantize_row_q8_0(const void *x, float *y, int64_t k);
void dequantize_row_q4_0(const void *x, float *y, int64_t k);
void dequantize_row_q4_1(const void *x, float *y, int64_t k);
void dequantize_row_q5_0(const void *x, float *y, int64_t k);
void dequantize_row_q5_1(const void *x, float *y, int64_t k);
void dequantize_row_q4_K(const void *x, float *y, int64_t k);
void dequantize_row_q5_K(const void *x, float *y, int64_t k);
void dequantize_row_q6_K(const void *x, float *y, int64_t k);

/* gguf.h */
struct gguf_context;
struct ggml_context;
struct gguf_init_params {
    bool no_alloc;
    struct ggml_context **ctx;
};
struct gguf_context *gguf_init_from_file(const char *fname, struct gguf_init_params params);
void gguf_free(struct gguf_context *ctx);
size_t gguf_get_data_offset(const struct gguf_context *ctx);
int64_t gguf_get_n_tensors(const struct gguf_context *ctx);
const char *gguf_get_tensor_name(const struct gguf_context *ctx, int64_t tensor_id);
enum ggml_type gguf_get_tensor_type(const struct gguf_context *ctx, int64_t tensor_id);
size_t gguf_get_tensor_offset(const struct gguf_context *ctx, int64_t tensor_id);
size_t gguf_get_tensor_size(const struct gguf_context *ctx, int64_t tensor_id);

/* llama.h: enum llama_ftype (the values used here) and the quantizer. */
enum llama_ftype {
    LLAMA_FTYPE_MOSTLY_Q4_K_M = 15,
    LLAMA_FTYPE_MOSTLY_Q5_K_M = 17,
    LLAMA_FTYPE_MOSTLY_Q6_K = 18,
};
typedef struct llama_model_quantize_params {
    int32_t nthread;
    enum llama_ftype ftype;
    enum ggml_type output_tensor_type;
    enum ggml_type token_embedding_type;
    bool allow_requantize;
    bool quantize_output_tensor;
    bool only_copy;
    bool pure;
    bool keep_split;
    bool dry_run;
    const void *imatrix;
    const void *kv_overrides;
    const void *tt_overrides;
    const int32_t *prune_layers;
    size_t max_buf_size;
} llama_model_quantize_params;
void llama_backend_init(void);
void llama_backend_free(void);
llama_model_quantize_params llama_model_quantize_default_params(void);
uint32_t llama_model_quantize(const char *fname_inp, const char *fname_out, const llama_model_quantize_params *params);

#endif
