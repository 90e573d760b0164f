/*
 * Quantization fixtures made by ggml itself, for test/gguf-ggml.test.ts. Linked against the prebuilt
 * libggml-base.so and libllama.v0.4.0.so of node-llama-cpp 3.21.1; compiled and run by
 * scripts/gen_ggml_fixtures.mjs (see there). Three commands:
 *
 *   rows IN.f32 OUTDIR            quantizes the f32 values in IN.f32 with ggml's reference quantizers
 *                                 (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and writes, per type, the blocks
 *                                 (OUTDIR/<type>.blocks) and their dequantization (<type>.dequant.f32)
 *   quantize IN.gguf OUT.gguf FT  llama_model_quantize with ftype FT (Q4_K_M, Q5_K_M or Q6_K)
 *   dequant IN.gguf OUTDIR        every tensor of IN.gguf, dequantized by ggml, as OUTDIR/<i>.f32;
 *                                 prints "i name type elements" per tensor
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-abi/ggml_abi.h"

typedef void (*quantize_fn)(const float *, void *, int64_t);
typedef void (*dequantize_fn)(const void *, float *, int64_t);

static const struct {
    const char *name;
    enum ggml_type type;
    quantize_fn quantize;
    dequantize_fn dequantize;
} TYPES[] = {
    {"Q8_0", GGML_TYPE_Q8_0, quantize_row_q8_0_ref, dequantize_row_q8_0},
    {"Q4_0", GGML_TYPE_Q4_0, quantize_row_q4_0_ref, dequantize_row_q4_0},
    {"Q4_1", GGML_TYPE_Q4_1, quantize_row_q4_1_ref, dequantize_row_q4_1},
    {"Q5_0", GGML_TYPE_Q5_0, quantize_row_q5_0_ref, dequantize_row_q5_0},
    {"Q5_1", GGML_TYPE_Q5_1, quantize_row_q5_1_ref, dequantize_row_q5_1},
    {"Q4_K", GGML_TYPE_Q4_K, quantize_row_q4_K_ref, dequantize_row_q4_K},
    {"Q5_K", GGML_TYPE_Q5_K, quantize_row_q5_K_ref, dequantize_row_q5_K},
    {"Q6_K", GGML_TYPE_Q6_K, quantize_row_q6_K_ref, dequantize_row_q6_K},
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

static void die(const char *what, const char *arg) {
    fprintf(stderr, "ggml_quant_fixtures: %s %s\n", what, arg ? arg : "");
    exit(1);
}

static void *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(*size ? *size : 1);
    if (!buf || fread(buf, 1, *size, f) != *size) die("cannot read", path);
    fclose(f);
    return buf;
}

static void write_all(const char *dir, const char *name, const char *suffix, const void *buf, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, suffix);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, size, f) != size || fclose(f) != 0) die("cannot write", path);
}

static int rows(const char *in, const char *outdir) {
    size_t size;
    float *x = read_all(in, &size);
    int64_t n = (int64_t)(size / sizeof(float));
    if (n % 256 != 0) die("the number of values must be a multiple of 256:", in);
    for (size_t t = 0; t < N_TYPES; t++) {
        size_t bytes = (size_t)(n / ggml_blck_size(TYPES[t].type)) * ggml_type_size(TYPES[t].type);
        void *blocks = calloc(1, bytes);
        float *y = calloc((size_t)n, sizeof(float));
        TYPES[t].quantize(x, blocks, n);
        TYPES[t].dequantize(blocks, y, n);
        write_all(outdir, TYPES[t].name, ".blocks", blocks, bytes);
        write_all(outdir, TYPES[t].name, ".dequant.f32", y, (size_t)n * sizeof(float));
        free(blocks);
        free(y);
    }
    free(x);
    return 0;
}

static int quantize(const char *in, const char *out, const char *ftype) {
    llama_model_quantize_params params = llama_model_quantize_default_params();
    if (strcmp(ftype, "Q4_K_M") == 0) params.ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M;
    else if (strcmp(ftype, "Q5_K_M") == 0) params.ftype = LLAMA_FTYPE_MOSTLY_Q5_K_M;
    else if (strcmp(ftype, "Q6_K") == 0) params.ftype = LLAMA_FTYPE_MOSTLY_Q6_K;
    else die("unknown ftype", ftype);
    params.nthread = 1;
    llama_backend_init();
    uint32_t rc = llama_model_quantize(in, out, &params);
    llama_backend_free();
    if (rc != 0) die("llama_model_quantize failed for", in);
    return 0;
}

static int dequant(const char *in, const char *outdir) {
    struct gguf_init_params init = {true, NULL};
    struct gguf_context *ctx = gguf_init_from_file(in, init);
    if (!ctx) die("gguf_init_from_file failed for", in);
    size_t size;
    unsigned char *file = read_all(in, &size);
    size_t data = gguf_get_data_offset(ctx);
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); i++) {
        enum ggml_type type = gguf_get_tensor_type(ctx, i);
        size_t bytes = gguf_get_tensor_size(ctx, i);
        const unsigned char *src = file + data + gguf_get_tensor_offset(ctx, i);
        if (data + gguf_get_tensor_offset(ctx, i) + bytes > size) die("tensor past the end of", in);
        int64_t n = (int64_t)(bytes / ggml_type_size(type)) * ggml_blck_size(type);
        float *y = calloc((size_t)n, sizeof(float));
        switch (type) {
        case GGML_TYPE_F32: memcpy(y, src, bytes); break;
        case GGML_TYPE_F16: ggml_fp16_to_fp32_row((const ggml_fp16_t *)src, y, n); break;
        case GGML_TYPE_BF16: ggml_bf16_to_fp32_row((const uint16_t *)src, y, n); break;
        default: {
            size_t t = 0;
            while (t < N_TYPES && TYPES[t].type != type) t++;
            if (t == N_TYPES) die("no dequantizer here for type", ggml_type_name(type));
            TYPES[t].dequantize(src, y, n);
        }
        }
        char name[32];
        snprintf(name, sizeof name, "%lld", (long long)i);
        write_all(outdir, name, ".f32", y, (size_t)n * sizeof(float));
        printf("%lld %s %s %lld\n", (long long)i, gguf_get_tensor_name(ctx, i), ggml_type_name(type), (long long)n);
        free(y);
    }
    free(file);
    gguf_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "rows") == 0) return rows(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "quantize") == 0) return quantize(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "dequant") == 0) return dequant(argv[2], argv[3]);
    fprintf(stderr, "usage: ggml_quant_fixtures rows IN.f32 OUTDIR | quantize IN.gguf OUT.gguf Q4_K_M|Q5_K_M|Q6_K | dequant IN.gguf OUTDIR\n");
    return 2;
}
