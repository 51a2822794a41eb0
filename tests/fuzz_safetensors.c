/* Fuzz target: the safetensors reader (header length, JSON header, dtypes, shapes, data
 * offsets, metadata). Any input must be refused with a message naming it, or give tensors
 * whose bytes lie inside the input and whose length is numel x dtype size (a shape such as
 * [2147483648, 2147483648] over 8 bytes is refused); float tensors convert; a parsed file
 * then goes through the block-config reader of checkpoint.c. Seeds: a small block saved
 * here, plus the headers in tests/fuzz/corpus/fuzz_safetensors/. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_driver.h"
#include "thermoe/model.h"

static char g_path[256];

static const char *tmp_path(void) {
    if (!g_path[0])
        snprintf(g_path, sizeof g_path, "/tmp/thermoe-fuzz-st-%ld.safetensors", (long)getpid());
    return g_path;
}

/* The same bytes through the file path: block config detection (thermoe or mixtral layout). */
static void check_block_config(const uint8_t *data, size_t size) {
    const char *path = tmp_path();
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    size_t w = fwrite(data, 1, size, fp);
    if (fclose(fp) != 0 || w != size) {
        remove(path);
        return;
    }
    tmoe_error err = {0};
    tmoe_block_config c = tmoe_block_config_default();
    tmoe_etype types[TMOE_MAX_EXPERTS];
    tmoe_layout found;
    if (tmoe_block_file_config(path, TMOE_LAYOUT_AUTO, 0, &c, types, &found, &err) != TMOE_OK)
        TMOE_ASSERT(err.msg[0] && strstr(err.msg, path));
    remove(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tmoe_error err = {0};
    tmoe_st_file *f = (tmoe_st_file *)&err;
    if (tmoe_st_open_buffer(data, size, "fuzz.safetensors", &f, &err) != TMOE_OK) {
        TMOE_ASSERT(f == NULL && strstr(err.msg, "fuzz.safetensors"));
        return 0;
    }
    static float f32[4096];
    static tmoe_f16 f16[4096];
    volatile uint8_t sink = 0;
    for (int i = 0; i < tmoe_st_count(f); i++) {
        const tmoe_st_tensor *t = tmoe_st_at(f, i);
        TMOE_ASSERT(t->ndim >= 0 && t->ndim <= TMOE_ST_MAX_DIMS);
        uint64_t numel = 1, nbytes;
        for (int d = 0; d < t->ndim; d++) {
            TMOE_ASSERT(t->shape[d] >= 0);
            TMOE_ASSERT(!__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel));
        }
        uint64_t esize = tmoe_st_dtype_size(t->dtype);
        TMOE_ASSERT(!__builtin_mul_overflow(numel, esize, &nbytes));
        TMOE_ASSERT(nbytes == t->nbytes && t->nbytes <= size);
        const uint8_t *p = t->data; /* every byte, so ASan sees one outside the copy */
        for (size_t b = 0; b < t->nbytes; b++) sink ^= p[b];
        TMOE_ASSERT(tmoe_st_find(f, t->name) == t);
        tmoe_st_dtype dt = t->dtype;
        if ((dt == TMOE_ST_F32 || dt == TMOE_ST_F16 || dt == TMOE_ST_BF16) && numel <= 4096) {
            TMOE_ASSERT(tmoe_st_read_f32(f, t->name, t->ndim, t->shape, f32, &err) == TMOE_OK);
            TMOE_ASSERT(tmoe_st_read_f16(f, t->name, t->ndim, t->shape, f16, &err) == TMOE_OK);
        }
    }
    for (int i = 0; i < tmoe_st_meta_count(f); i++)
        TMOE_ASSERT(tmoe_st_meta(f, tmoe_st_meta_key(f, i)) != NULL);
    (void)sink;
    tmoe_st_close(f);
    check_block_config(data, size);
    return 0;
}

#ifndef THERMOE_LIBFUZZER
static const char *const *fuzz_tokens(void) {
    static const char *const t[] = {"\"",
                                    "{",
                                    "}",
                                    "[",
                                    "]",
                                    ",",
                                    ":",
                                    "0",
                                    "-1",
                                    "2147483648",
                                    "9223372036854775807",
                                    "18446744073709551616",
                                    "1e3",
                                    "null",
                                    "\"dtype\": \"F16\"",
                                    "\"BF16\"",
                                    "\"U8\"",
                                    "\"F64\"",
                                    "\"shape\": []",
                                    "\"data_offsets\": [0, 0]",
                                    "\"__metadata__\": {}",
                                    "\\u0000",
                                    "    ",
                                    NULL};
    return t;
}

/* A block of the thermoe layout (mixed fp16 / q4 / q2 experts), as tmoe_block_save writes it. */
static fuzz_seed block_seed(void) {
    fuzz_seed s = {0};
    tmoe_error err = {0};
    tmoe_block_config c = tmoe_block_config_default();
    c.d_model = 16;
    c.n_heads = 2;
    c.d_ff = 32;
    c.num_experts = 3;
    c.top_k = 2;
    c.group_size = 8;
    c.seq_len = 4;
    tmoe_etype types[3] = {TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2};
    c.expert_types = types;
    tmoe_block *b = NULL;
    const char *path = tmp_path();
    if (tmoe_block_create(&c, &b, &err) == TMOE_OK && tmoe_block_save(b, path, &err) == TMOE_OK)
        s = fuzz_read_file(path, 1 << 16);
    else
        fprintf(stderr, "fuzz_safetensors: block seed: %s\n", err.msg);
    tmoe_block_free(b);
    remove(path);
    return s;
}

/* 8-byte little-endian header length, the header, then n_data bytes 0, 1, 2, ... */
static fuzz_seed header_seed(const char *hdr, size_t n_data) {
    fuzz_seed s = {0};
    size_t h = strlen(hdr);
    s.len = 8 + h + n_data;
    s.data = malloc(s.len);
    if (!s.data) return (fuzz_seed){0};
    for (int i = 0; i < 8; i++) s.data[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(s.data + 8, hdr, h);
    for (size_t i = 0; i < n_data; i++) s.data[8 + h + i] = (uint8_t)i;
    return s;
}

static int fuzz_seeds(fuzz_seed *seeds, int max) {
    int n = 0;
    seeds[n] = block_seed();
    if (seeds[n].data) n++;
    if (n < max)
        seeds[n++] = header_seed(
            "{\"a\": {\"dtype\": \"F16\", \"shape\": [2, 3], \"data_offsets\": [0, 12]}, "
            "\"b\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [12, 20]}, "
            "\"__metadata__\": {\"format\": \"pt\"}}",
            20);
    return n;
}

int main(void) {
    return fuzz_main("fuzz_safetensors");
}
#endif
