/* safetensors: bit-exact block round trip, files in another tool's layout (Mixtral names,
 * BF16, extra tensors and metadata, space-padded header), and corrupt or truncated files. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thermoe/backend.h"
#include "thermoe/model.h"

static tmoe_rng rng;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* Write a file byte by byte as another tool would: length, header text padded with spaces
 * to pad_to bytes (0: none), data. */
static void write_raw(const char *path, const char *hdr, size_t pad_to, const void *data,
                      size_t n) {
    size_t h = strlen(hdr), hl = pad_to > h ? pad_to : h;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr, 1, h, f), h);
    for (size_t i = h; i < hl; i++) assert_int_equal(fputc(' ', f), ' ');
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    assert_true(sz >= 0);
    rewind(f);
    uint8_t *b = xmalloc((size_t)sz);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void assert_linear_equal(const tmoe_linear *a, const tmoe_linear *b) {
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->out, b->out);
    assert_int_equal(a->in, b->in);
    if (a->type == TMOE_ET_FP16) {
        assert_memory_equal(a->w, b->w, sizeof(tmoe_f16) * (size_t)a->out * a->in);
        return;
    }
    assert_int_equal(a->group, b->group);
    assert_memory_equal(a->q, b->q, tmoe_quant_weight_bytes(a->type, a->out, a->in));
    assert_memory_equal(a->scales, b->scales,
                        sizeof(tmoe_f16) * tmoe_quant_scale_count(a->out, a->in, a->group));
}

static void assert_block_equal(const tmoe_block *a, const tmoe_block *b) {
    const tmoe_block_config *x = &a->cfg, *y = &b->cfg;
    assert_int_equal(x->d_model, y->d_model);
    assert_int_equal(x->n_heads, y->n_heads);
    assert_int_equal(x->d_ff, y->d_ff);
    assert_int_equal(x->num_experts, y->num_experts);
    assert_int_equal(x->top_k, y->top_k);
    assert_int_equal(x->group_size, y->group_size);
    assert_int_equal(x->seq_len, y->seq_len);
    assert_int_equal(x->act, y->act);
    assert_int_equal(x->renormalize, y->renormalize);
    assert_true(x->norm_eps == y->norm_eps);
    assert_true(x->seed == y->seed);
    assert_memory_equal(a->norm1, b->norm1, sizeof(float) * (size_t)x->d_model);
    assert_memory_equal(a->norm2, b->norm2, sizeof(float) * (size_t)x->d_model);
    assert_linear_equal(&a->wqkv, &b->wqkv);
    assert_linear_equal(&a->wo, &b->wo);
    assert_linear_equal(&a->moe.gate, &b->moe.gate);
    for (int e = 0; e < x->num_experts; e++) {
        assert_int_equal(a->types[e], b->types[e]);
        assert_linear_equal(&a->moe.experts[e].fc1, &b->moe.experts[e].fc1);
        assert_linear_equal(&a->moe.experts[e].fc2, &b->moe.experts[e].fc2);
    }
}

static tmoe_block *load_path(const char *path, tmoe_error *err) {
    tmoe_block_config c = tmoe_block_config_default();
    tmoe_etype types[TMOE_MAX_EXPERTS];
    tmoe_layout found;
    tmoe_block *b = NULL;
    if (tmoe_block_file_config(path, TMOE_LAYOUT_AUTO, 0, &c, types, &found, err)) return NULL;
    assert_int_equal(found, TMOE_LAYOUT_THERMOE);
    if (tmoe_block_load(path, found, 0, &c, &b, err)) return NULL;
    return b;
}

static void test_block_round_trip(void **state) {
    (void)state;
    tmoe_etype types[6] = {TMOE_ET_Q4, TMOE_ET_FP16, TMOE_ET_Q2,
                           TMOE_ET_Q2, TMOE_ET_FP16, TMOE_ET_Q4};
    for (int act = 0; act < TMOE_ACT_COUNT; act++) {
        tmoe_block_config c = tmoe_block_config_default();
        c.d_model = 64;
        c.n_heads = 8;
        c.d_ff = 96;
        c.num_experts = 6;
        c.top_k = 3;
        c.group_size = 32;
        c.seq_len = 9;
        c.act = (tmoe_act)act;
        c.renormalize = act;
        c.norm_eps = 3.3e-6f;
        c.seed = 0xfedcba9876543210ull;
        c.expert_types = types;
        tmoe_error err = {0};
        tmoe_block *b, *l1, *l2;
        ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
        for (int i = 0; i < c.d_model; i++) {
            b->norm1[i] = tmoe_rng_uniform_sym(&rng, 2.0f);
            b->norm2[i] = tmoe_rng_uniform_sym(&rng, 2.0f);
        }
        b->norm1[0] = -0.0f;
        const char *p1 = tu_tmppath("rt1.safetensors"), *p2 = tu_tmppath("rt2.safetensors");
        ASSERT_OK(tmoe_block_save(b, p1, &err), &err);
        l1 = load_path(p1, &err);
        if (!l1) fail_msg("%s", err.msg);
        assert_block_equal(b, l1);
        /* the reader hands out the same bytes, and a second save is the same file */
        tmoe_st_file *f;
        ASSERT_OK(tmoe_st_open(p1, &f, &err), &err);
        const tmoe_st_tensor *t = tmoe_st_find(f, "moe.experts.0.fc1.qweight");
        assert_non_null(t);
        assert_int_equal(t->dtype, TMOE_ST_U8);
        assert_memory_equal(t->data, b->moe.experts[0].fc1.q, t->nbytes);
        assert_non_null(tmoe_st_find(f, "moe.experts.1.fc2.weight"));
        assert_null(tmoe_st_find(f, "moe.experts.1.fc2.qweight"));
        assert_string_equal(tmoe_st_meta(f, "expert_types"), "q4,fp16,q2,q2,fp16,q4");
        assert_string_equal(tmoe_st_meta(f, "format"), TMOE_BLOCK_FORMAT);
        tmoe_st_close(f);
        ASSERT_OK(tmoe_block_save(l1, p2, &err), &err);
        size_t n1, n2;
        uint8_t *a1 = read_all(p1, &n1), *a2 = read_all(p2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(a1, a2, n1);
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | a1[i];
        assert_int_equal(hl % 8, 0); /* padded so the buffer is 8-aligned */
        free(a1);
        free(a2);
        /* same forward output from the loaded block */
        l2 = load_path(p2, &err);
        assert_non_null(l2);
        tmoe_engine_config ec = tmoe_engine_config_default();
        ec.backend = TMOE_BACKEND_CPU;
        ec.max_tokens = 9;
        tmoe_engine *e1, *e2;
        ASSERT_OK(tmoe_engine_create(b, &ec, &e1, &err), &err);
        ASSERT_OK(tmoe_engine_create(l2, &ec, &e2, &err), &err);
        float x[9 * 64], y1[9 * 64], y2[9 * 64];
        for (int i = 0; i < 9 * 64; i++) x[i] = tmoe_rng_uniform_sym(&rng, 1.0f);
        ASSERT_OK(tmoe_engine_forward(e1, x, 9, 0, NULL, y1, NULL, &err), &err);
        ASSERT_OK(tmoe_engine_forward(e2, x, 9, 0, NULL, y2, NULL, &err), &err);
        assert_memory_equal(y1, y2, sizeof y1);
        tmoe_engine_free(e1);
        tmoe_engine_free(e2);
        tmoe_block_free(b);
        tmoe_block_free(l1);
        tmoe_block_free(l2);
    }
}

static void test_writer_dtypes(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_st_writer *w;
    ASSERT_OK(tmoe_st_writer_create(&w, &err), &err);
    float f32[6] = {1.5f, -2.0f, 0.0f, -0.0f, 3e38f, 1e-40f};
    uint16_t f16[3] = {0x3c00, 0x7c00, 0x0001}, bf16[2] = {0x3f80, 0xff80};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    int8_t i8[2] = {-128, 127};
    int32_t i32[2] = {-2147483647 - 1, 7};
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s2[1] = {2}, s5[1] = {5}, s0[2] = {4, 0};
    ASSERT_OK(tmoe_st_writer_add(w, "f32", TMOE_ST_F32, 2, s23, f32, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "f16", TMOE_ST_F16, 1, s3, f16, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "bf16", TMOE_ST_BF16, 1, s2, bf16, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "u8", TMOE_ST_U8, 1, s5, u8, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "i8", TMOE_ST_I8, 1, s2, i8, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "scalar", TMOE_ST_I32, 0, NULL, i32 + 1, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "i32", TMOE_ST_I32, 1, s2, i32, &err), &err);
    ASSERT_OK(tmoe_st_writer_add(w, "empty", TMOE_ST_F32, 2, s0, NULL, &err), &err);
    assert_int_equal(tmoe_st_writer_add(w, "u8", TMOE_ST_U8, 1, s5, u8, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "'u8' added twice"));
    assert_int_equal(tmoe_st_writer_add(w, "__metadata__", TMOE_ST_U8, 1, s5, u8, &err),
                     TMOE_EINVAL);
    ASSERT_OK(tmoe_st_writer_meta(w, "note", "héllo \"quoted\"", &err), &err);
    const char *p = tu_tmppath("dtypes.safetensors");
    ASSERT_OK(tmoe_st_writer_write(w, p, &err), &err);
    tmoe_st_writer_free(w);
    tmoe_st_file *f;
    ASSERT_OK(tmoe_st_open(p, &f, &err), &err);
    assert_int_equal(tmoe_st_count(f), 8);
    assert_string_equal(tmoe_st_at(f, 0)->name, "f32");
    assert_string_equal(tmoe_st_meta(f, "note"), "héllo \"quoted\"");
    assert_int_equal(tmoe_st_meta_count(f), 1);
    struct {
        const char *n;
        const void *d;
        size_t b;
        tmoe_st_dtype t;
        int nd;
    } want[] = {
        {"f32", f32, 24, TMOE_ST_F32, 2},   {"f16", f16, 6, TMOE_ST_F16, 1},
        {"bf16", bf16, 4, TMOE_ST_BF16, 1}, {"u8", u8, 5, TMOE_ST_U8, 1},
        {"i8", i8, 2, TMOE_ST_I8, 1},       {"scalar", i32 + 1, 4, TMOE_ST_I32, 0},
        {"i32", i32, 8, TMOE_ST_I32, 1},    {"empty", NULL, 0, TMOE_ST_F32, 2},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const tmoe_st_tensor *t = tmoe_st_find(f, want[i].n);
        assert_non_null(t);
        assert_int_equal(t->dtype, want[i].t);
        assert_int_equal(t->ndim, want[i].nd);
        assert_int_equal(t->nbytes, want[i].b);
        if (want[i].b) assert_memory_equal(t->data, want[i].d, want[i].b);
    }
    /* conversions on read */
    float got[3];
    int64_t s3b[1] = {3};
    ASSERT_OK(tmoe_st_read_f32(f, "f16", 1, s3b, got, &err), &err);
    assert_true(got[0] == 1.0f && isinf(got[1]) && got[2] == 0x1p-24f);
    assert_int_equal(tmoe_st_read_f32(f, "u8", 1, s5, got, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "tensor 'u8': dtype U8, expected F32, F16 or BF16"));
    assert_int_equal(tmoe_st_read_f32(f, "f16", 1, s2, got, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "tensor 'f16': shape [3], expected [2]"));
    assert_non_null(strstr(err.msg, p));
    tmoe_st_close(f);
    tmoe_st_close(NULL);
    tmoe_st_writer_free(NULL);
}

static uint16_t bf16_of(float v) {
    return tmoe_f32_to_bf16(v);
}

/* A Mixtral-style file as Python's safetensors would write it: BF16, tensors in reverse
 * order, tensors we do not use, other metadata, header padded with spaces. */
static void test_mixtral_layout(void **state) {
    (void)state;
    enum { D = 64, H = 4, KV = 2, DH = D / H, F = 96, E = 4 };
    struct {
        char name[96];
        int rows, cols;
    } spec[64];
    int ns = 0;
#define ADD(r, c, ...)                                                                             \
    do {                                                                                           \
        snprintf(spec[ns].name, sizeof spec[ns].name, __VA_ARGS__);                                \
        spec[ns].rows = r;                                                                         \
        spec[ns].cols = c;                                                                         \
        ns++;                                                                                      \
    } while (0)
    ADD(11, D, "model.embed_tokens.weight");
    for (int L = 0; L < 2; L++) {
        ADD(1, D, "model.layers.%d.input_layernorm.weight", L);
        ADD(1, D, "model.layers.%d.post_attention_layernorm.weight", L);
        ADD(D, D, "model.layers.%d.self_attn.q_proj.weight", L);
        ADD(KV * DH, D, "model.layers.%d.self_attn.k_proj.weight", L);
        ADD(KV * DH, D, "model.layers.%d.self_attn.v_proj.weight", L);
        ADD(D, D, "model.layers.%d.self_attn.o_proj.weight", L);
        ADD(E, D, "model.layers.%d.block_sparse_moe.gate.weight", L);
        for (int e = 0; e < E; e++) {
            ADD(F, D, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", L, e);
            ADD(D, F, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", L, e);
            ADD(F, D, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", L, e);
        }
    }
    ADD(1, D, "model.norm.weight");
#undef ADD
    size_t total = 0, off[64];
    for (int i = ns - 1; i >= 0; i--) { /* data in reverse order */
        off[i] = total;
        total += (size_t)spec[i].rows * spec[i].cols * 2;
    }
    uint16_t *data = xmalloc(total);
    for (size_t i = 0; i < total / 2; i++) data[i] = bf16_of(tmoe_rng_uniform_sym(&rng, 0.5f));
    size_t cap = 64 * 1024, hl = 0;
    char *hdr = xmalloc(cap);
    hl += (size_t)snprintf(hdr, cap, "{");
    for (int i = ns - 1; i >= 0; i--) {
        int one = spec[i].rows == 1;
        char shape[32];
        if (one)
            snprintf(shape, sizeof shape, "[%d]", spec[i].cols);
        else
            snprintf(shape, sizeof shape, "[%d, %d]", spec[i].rows, spec[i].cols);
        hl += (size_t)snprintf(hdr + hl, cap - hl,
                               "\"%s\": {\"dtype\": \"BF16\", \"shape\": %s, \"data_offsets\": "
                               "[%zu, %zu]}, ",
                               spec[i].name, shape, off[i],
                               off[i] + (size_t)spec[i].rows * spec[i].cols * 2);
        if (i == ns / 2)
            hl += (size_t)snprintf(hdr + hl, cap - hl,
                                   "\"__metadata__\": {\"format\": \"pt\", \"producer\": \"x\"}, ");
    }
    hl += (size_t)snprintf(hdr + hl, cap - hl,
                           "\"rotary.inv_freq\": {\"dtype\": \"F64\", \"shape\": [0], "
                           "\"data_offsets\": [%zu, %zu]}}",
                           total, total);
    const char *p = tu_tmppath("mixtral.safetensors");
    write_raw(p, hdr, (hl + 7) & ~(size_t)7, data, total);
    free(hdr);

    tmoe_block_config c = tmoe_block_config_default();
    c.n_heads = H;
    c.top_k = 2;
    c.group_size = 32;
    tmoe_etype types[E] = {TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2, TMOE_ET_FP16};
    tmoe_error err = {0};
    tmoe_layout found;
    ASSERT_OK(tmoe_block_file_config(p, TMOE_LAYOUT_AUTO, 1, &c, NULL, &found, &err), &err);
    assert_int_equal(found, TMOE_LAYOUT_MIXTRAL);
    assert_int_equal(c.d_model, D);
    assert_int_equal(c.d_ff, F);
    assert_int_equal(c.num_experts, E);
    assert_int_equal(c.act, TMOE_ACT_SWIGLU);
    c.expert_types = types;
    tmoe_block *b;
    ASSERT_OK(tmoe_block_load(p, TMOE_LAYOUT_AUTO, 1, &c, &b, &err), &err);
    /* expected values, straight from the bytes we wrote */
    const uint16_t *src[64];
    for (int i = 0; i < ns; i++) src[i] = data + off[i] / 2;
    char name[128];
    for (int i = 0; i < ns; i++) {
        const char *s = spec[i].name;
        if (strncmp(s, "model.layers.1.", 15) != 0) continue;
        s += 15;
        size_t n = (size_t)spec[i].rows * spec[i].cols;
        if (!strcmp(s, "input_layernorm.weight") || !strcmp(s, "post_attention_layernorm.weight")) {
            const float *dst = s[0] == 'i' ? b->norm1 : b->norm2;
            for (size_t j = 0; j < n; j++) assert_true(dst[j] == tmoe_bf16_to_f32(src[i][j]));
        } else if (!strcmp(s, "self_attn.q_proj.weight") || !strcmp(s, "self_attn.o_proj.weight") ||
                   !strcmp(s, "block_sparse_moe.gate.weight")) {
            const tmoe_f16 *dst = s[10] == 'q' ? b->wqkv.w : s[10] == 'o' ? b->wo.w : b->moe.gate.w;
            for (size_t j = 0; j < n; j++)
                assert_int_equal(dst[j], tmoe_f32_to_f16(tmoe_bf16_to_f32(src[i][j])));
        } else if (!strcmp(s, "self_attn.k_proj.weight") || !strcmp(s, "self_attn.v_proj.weight")) {
            int part = s[10] == 'k' ? 1 : 2;
            for (int h = 0; h < H; h++) /* head h reads kv head h / (H / KV) */
                for (int r = 0; r < DH; r++)
                    for (int col = 0; col < D; col++)
                        assert_int_equal(
                            b->wqkv.w[((size_t)part * D + (size_t)h * DH + r) * D + col],
                            tmoe_f32_to_f16(tmoe_bf16_to_f32(
                                src[i][((size_t)(h / (H / KV)) * DH + r) * D + col])));
        }
    }
    for (int e = 0; e < E; e++) {
        int i1 = -1, i2 = -1, i3 = -1;
        for (int i = 0; i < ns; i++) {
            snprintf(name, sizeof name, "model.layers.1.block_sparse_moe.experts.%d.w1.weight", e);
            if (!strcmp(spec[i].name, name)) i1 = i;
            snprintf(name, sizeof name, "model.layers.1.block_sparse_moe.experts.%d.w2.weight", e);
            if (!strcmp(spec[i].name, name)) i2 = i;
            snprintf(name, sizeof name, "model.layers.1.block_sparse_moe.experts.%d.w3.weight", e);
            if (!strcmp(spec[i].name, name)) i3 = i;
        }
        assert_true(i1 >= 0 && i2 >= 0 && i3 >= 0);
        float *fc1 = xmalloc(sizeof(float) * 2 * F * D), *fc2 = xmalloc(sizeof(float) * D * F);
        for (int j = 0; j < F * D; j++) {
            fc1[j] = tmoe_bf16_to_f32(src[i1][j]); /* rows [w1; w3] */
            fc1[F * D + j] = tmoe_bf16_to_f32(src[i3][j]);
            fc2[j] = tmoe_bf16_to_f32(src[i2][j]);
        }
        tmoe_linear want1, want2;
        ASSERT_OK(tmoe_linear_alloc(&want1, types[e], 2 * F, D, 32, &err), &err);
        ASSERT_OK(tmoe_linear_alloc(&want2, types[e], D, F, 32, &err), &err);
        ASSERT_OK(tmoe_linear_set_f32(&want1, fc1, &err), &err);
        ASSERT_OK(tmoe_linear_set_f32(&want2, fc2, &err), &err);
        assert_linear_equal(&want1, &b->moe.experts[e].fc1); /* quantized on load for q4/q2 */
        assert_linear_equal(&want2, &b->moe.experts[e].fc2);
        tmoe_linear_free(&want1);
        tmoe_linear_free(&want2);
        free(fc1);
        free(fc2);
    }
    tmoe_block_free(b);
    /* one head of 64 cannot be served by k_proj's 32 rows */
    c.n_heads = 1;
    assert_int_not_equal(tmoe_block_load(p, TMOE_LAYOUT_MIXTRAL, 1, &c, &b, &err), 0);
    assert_null(b);
    assert_non_null(strstr(err.msg, "k_proj.weight"));
    c.n_heads = H;
    c.act = TMOE_ACT_RELU;
    assert_int_not_equal(tmoe_block_load(p, TMOE_LAYOUT_MIXTRAL, 1, &c, &b, &err), 0);
    assert_non_null(strstr(err.msg, "swiglu"));
    c.act = TMOE_ACT_SWIGLU;
    assert_int_not_equal(tmoe_block_load(p, TMOE_LAYOUT_AUTO, 5, &c, &b, &err), 0);
    assert_non_null(strstr(err.msg, "layer 5"));
    free(data);
}

/* A thermoe file written with extra tensors and metadata, tensors in another order. */
static void test_thermoe_extra(void **state) {
    (void)state;
    tmoe_block_config c = tmoe_block_config_default();
    c.d_model = 32;
    c.d_ff = 32;
    c.group_size = 32;
    c.num_experts = 2;
    c.top_k = 1;
    c.expert_type = TMOE_ET_Q2;
    tmoe_error err = {0};
    tmoe_block *b, *l;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    const char *p0 = tu_tmppath("plain.safetensors"), *p = tu_tmppath("extra.safetensors");
    ASSERT_OK(tmoe_block_save(b, p0, &err), &err);
    tmoe_st_file *f;
    ASSERT_OK(tmoe_st_open(p0, &f, &err), &err);
    tmoe_st_writer *w;
    ASSERT_OK(tmoe_st_writer_create(&w, &err), &err);
    double junk[3] = {1, 2, 3};
    int64_t s3[1] = {3};
    ASSERT_OK(tmoe_st_writer_add(w, "optimizer.step", TMOE_ST_F64, 1, s3, junk, &err), &err);
    for (int i = tmoe_st_count(f) - 1; i >= 0; i--) {
        const tmoe_st_tensor *t = tmoe_st_at(f, i);
        ASSERT_OK(tmoe_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), &err);
    }
    ASSERT_OK(tmoe_st_writer_meta(w, "producer", "another tool", &err), &err);
    for (int i = 0; i < tmoe_st_meta_count(f); i++) {
        const char *k = tmoe_st_meta_key(f, i);
        ASSERT_OK(tmoe_st_writer_meta(w, k, tmoe_st_meta(f, k), &err), &err);
    }
    ASSERT_OK(tmoe_st_writer_meta(w, "z_extra", "1", &err), &err);
    ASSERT_OK(tmoe_st_writer_write(w, p, &err), &err);
    tmoe_st_writer_free(w);
    tmoe_st_close(f);
    l = load_path(p, &err);
    if (!l) fail_msg("%s", err.msg);
    assert_block_equal(b, l);
    tmoe_block_free(l);
    /* a q2 file loaded as q4 and fp16: dequantized, then requantized / converted */
    tmoe_block_config c2 = c;
    c2.expert_type = TMOE_ET_FP16;
    ASSERT_OK(tmoe_block_load(p, TMOE_LAYOUT_THERMOE, 0, &c2, &l, &err), &err);
    float *w32 = xmalloc(sizeof(float) * 32 * 32);
    tmoe_linear_to_f32(&b->moe.experts[1].fc2, w32);
    for (int i = 0; i < 32 * 32; i++)
        assert_int_equal(l->moe.experts[1].fc2.w[i], tmoe_f32_to_f16(w32[i]));
    free(w32);
    tmoe_block_free(l);
    tmoe_block_free(b);
}

static void expect_open_fail(const char *path, const char *needle) {
    tmoe_error err = {0};
    tmoe_st_file *f = (tmoe_st_file *)&err;
    int rc = tmoe_st_open(path, &f, &err);
    if (rc == 0) fail_msg("%s opened, expected '%s'", path, needle);
    assert_null(f);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
    if (!strstr(err.msg, path)) fail_msg("message '%s' does not name the file", err.msg);
}

static void expect_load_fail(const char *path, const char *needle) {
    tmoe_error err = {0};
    tmoe_block_config c = tmoe_block_config_default();
    tmoe_etype types[TMOE_MAX_EXPERTS];
    tmoe_layout found;
    tmoe_block *b = (tmoe_block *)&err;
    int rc = tmoe_block_file_config(path, TMOE_LAYOUT_AUTO, 0, &c, types, &found, &err);
    if (!rc)
        rc = tmoe_block_load(path, found, 0, &c, &b, &err);
    else
        b = NULL;
    if (rc == 0) fail_msg("%s loaded, expected '%s'", path, needle);
    assert_null(b);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
    if (!strstr(err.msg, path)) fail_msg("message '%s' does not name the file", err.msg);
}

static void test_corrupt(void **state) {
    (void)state;
    const char *p = tu_tmppath("bad.safetensors");
    uint8_t zeros[64] = {0};
    /* truncated before and inside the header, and inside the data */
    write_bytes(p, zeros, 0);
    expect_open_fail(p, "truncated: 0 bytes");
    write_bytes(p, (const uint8_t *)"\x10\0\0", 3);
    expect_open_fail(p, "truncated: 3 bytes");
    write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 0,
              zeros, 16);
    size_t n;
    uint8_t *good = read_all(p, &n);
    write_bytes(p, good, 20);
    expect_open_fail(p, "exceeds the 12 bytes after it");
    write_bytes(p, good, n - 1);
    expect_open_fail(p,
                     "tensor 'a': data_offsets [0, 16] out of range (the data buffer has 15 bytes");
    free(good);
    /* header length absurd */
    uint8_t big[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
    write_bytes(p, big, 16);
    expect_open_fail(p, "header length 1099511627776 exceeds");
    struct {
        const char *hdr;
        size_t data;
        const char *needle;
    } cases[] = {
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]", 16,
         "not valid JSON"},
        {"[1, 2]", 0, "does not start with '{'"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [3, 4], \"data_offsets\": [0, 40]}}", 48,
         "tensor 'a': F32 x its shape needs 48 bytes but data_offsets [0, 40] hold 40"},
        {"{\"a\": {\"dtype\": \"F17\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 16,
         "tensor 'a': unknown dtype 'F17'"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}", 16,
         "tensor 'a': shape[0] is not a non-negative integer"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [16, 0]}}", 16,
         "tensor 'a': data_offsets [16, 0] out of range"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4]}}", 16,
         "tensor 'a': \"data_offsets\" must be"},
        {"{\"a\": {\"dtype\": \"U8\", \"shape\": [16], \"data_offsets\": [0, 16]}, "
         "\"b\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [8, 16]}}",
         16, "overlaps"},
        {"{\"__metadata__\": {\"x\": 3}}", 0, "__metadata__ value of 'x' is not a string"},
        {"{\"__metadata__\": [\"x\"]}", 0, "__metadata__ is not a JSON object"},
        {"{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, "
         "\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
         2, "duplicate"},
        {"{\"a\": {\"dtype\": \"U8\", \"shape\": [99999999999, 99999999999, 99999999999], "
         "\"data_offsets\": [0, 1]}}",
         1, "overflowing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_raw(p, cases[i].hdr, 0, zeros, cases[i].data);
        expect_open_fail(p, cases[i].needle);
    }
    /* valid safetensors, but not a block we can load */
    write_raw(p, "{\"__metadata__\": {\"format\": \"pt\"}}", 0, NULL, 0);
    expect_load_fail(p, "neither a thermoe block");
    tmoe_block_config c = tmoe_block_config_default();
    c.d_model = 32;
    c.d_ff = 64;
    c.group_size = 32;
    c.num_experts = 2;
    c.top_k = 1;
    c.expert_type = TMOE_ET_Q4;
    tmoe_error err = {0};
    tmoe_block *b;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    const char *ok = tu_tmppath("ok.safetensors");
    ASSERT_OK(tmoe_block_save(b, ok, &err), &err);
    tmoe_block_free(b);
    /* rewrite it with one tensor dropped, one reshaped, a metadata key dropped or broken */
    struct {
        const char *drop, *reshape, *meta_drop, *meta_key, *meta_val, *needle;
    } edits[] = {
        {"moe.experts.1.fc2.scales", NULL, NULL, NULL, NULL,
         "tensor 'moe.experts.1.fc2.scales' is missing"},
        {"moe.experts.0.fc1.qweight", NULL, NULL, NULL, NULL,
         "tensor 'moe.experts.0.fc1.weight' (or 'moe.experts.0.fc1.qweight' + "},
        {"attn.wo.weight", NULL, NULL, NULL, NULL, "tensor 'attn.wo.weight' (or"},
        {NULL, "norm2.weight", NULL, NULL, NULL,
         "tensor 'norm2.weight': shape [16], expected [32]"},
        {NULL, "moe.gate.weight", NULL, NULL, NULL,
         "tensor 'moe.gate.weight': shape [16], expected [2, 32]"},
        {NULL, NULL, "d_ff", NULL, NULL, "__metadata__ has no 'd_ff'"},
        {NULL, NULL, NULL, "top_k", "two", "__metadata__ 'top_k' = 'two'"},
        {NULL, NULL, NULL, "expert_types", "q4,q8", "expert_types entry 1 'q8'"},
        {NULL, NULL, NULL, "expert_types", "q4", "expert_types has 1 entries"},
        {NULL, NULL, NULL, "top_k", "3", "top_k = 3 is larger than num_experts = 2"},
        {NULL, NULL, NULL, "n_heads", "5", "not divisible by n_heads = 5"},
        {NULL, NULL, NULL, "act", "gelu", "'act' = 'gelu'"},
        {NULL, NULL, NULL, "d_model", "-32", "'d_model' = '-32'"},
        {NULL, NULL, NULL, "d_model", "100000", "the config needs"},
        {NULL, NULL, NULL, "num_experts", "200", "expert_types has 2 entries"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        tmoe_st_file *f;
        ASSERT_OK(tmoe_st_open(ok, &f, &err), &err);
        tmoe_st_writer *w;
        ASSERT_OK(tmoe_st_writer_create(&w, &err), &err);
        for (int j = 0; j < tmoe_st_count(f); j++) {
            const tmoe_st_tensor *t = tmoe_st_at(f, j);
            if (edits[i].drop && !strcmp(t->name, edits[i].drop)) continue;
            if (edits[i].reshape && !strcmp(t->name, edits[i].reshape)) {
                int64_t s[1] = {16}; /* same data, fewer elements */
                ASSERT_OK(tmoe_st_writer_add(w, t->name, t->dtype, 1, s, t->data, &err), &err);
                continue;
            }
            ASSERT_OK(tmoe_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err),
                      &err);
        }
        for (int j = 0; j < tmoe_st_meta_count(f); j++) {
            const char *k = tmoe_st_meta_key(f, j);
            if (edits[i].meta_drop && !strcmp(k, edits[i].meta_drop)) continue;
            const char *v = edits[i].meta_key && !strcmp(k, edits[i].meta_key) ? edits[i].meta_val
                                                                               : tmoe_st_meta(f, k);
            ASSERT_OK(tmoe_st_writer_meta(w, k, v, &err), &err);
        }
        ASSERT_OK(tmoe_st_writer_write(w, p, &err), &err);
        tmoe_st_writer_free(w);
        tmoe_st_close(f);
        expect_load_fail(p, edits[i].needle);
    }
    expect_open_fail(tu_tmppath("does-not-exist.safetensors"), "cannot open");
}

/* Random damage to a valid file's header and length: every outcome is either a clean load or
 * an error naming the file; never a crash or a leak (ASan / LSan watch this). */
static void test_mutations(void **state) {
    (void)state;
    tmoe_block_config c = tmoe_block_config_default();
    c.d_model = 32;
    c.d_ff = 32;
    c.group_size = 32;
    c.num_experts = 2;
    c.top_k = 1;
    c.seq_len = 4;
    tmoe_etype types[2] = {TMOE_ET_Q4, TMOE_ET_FP16};
    c.expert_types = types;
    tmoe_error err = {0};
    tmoe_block *b;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    const char *ok = tu_tmppath("mut0.safetensors"), *p = tu_tmppath("mut.safetensors");
    ASSERT_OK(tmoe_block_save(b, ok, &err), &err);
    tmoe_block_free(b);
    size_t n;
    uint8_t *good = read_all(ok, &n), *bad = xmalloc(n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | good[i];
    static const char alphabet[] = "{}[]\":,0123456789-e. FUBI";
    int opened = 0, loaded = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(bad, good, n);
        size_t len = n;
        int kind = (int)tmoe_rng_below(&rng, 4);
        int edits = 1 + (int)tmoe_rng_below(&rng, 3);
        for (int k = 0; k < edits; k++) {
            size_t at = 8 + tmoe_rng_below(&rng, (uint32_t)hl);
            if (kind == 0)
                bad[at] = (uint8_t)tmoe_rng_below(&rng, 256);
            else if (kind == 1)
                bad[at] = (uint8_t)alphabet[tmoe_rng_below(&rng, sizeof alphabet - 1)];
            else if (kind == 2)
                bad[tmoe_rng_below(&rng, 8)] = (uint8_t)tmoe_rng_below(&rng, 256);
            else
                len = tmoe_rng_below(&rng, (uint32_t)n);
        }
        write_bytes(p, bad, len);
        tmoe_st_file *f = NULL;
        if (tmoe_st_open(p, &f, &err) == 0) {
            opened++;
            tmoe_st_close(f);
        } else if (!strstr(err.msg, p)) {
            fail_msg("iteration %d: message '%s' does not name the file", it, err.msg);
        }
        tmoe_block_config lc = tmoe_block_config_default();
        tmoe_etype lt[TMOE_MAX_EXPERTS];
        tmoe_layout found;
        tmoe_block *l = NULL;
        if (tmoe_block_file_config(p, TMOE_LAYOUT_AUTO, 0, &lc, lt, &found, &err) == 0 &&
            tmoe_block_load(p, found, 0, &lc, &l, &err) == 0) {
            loaded++;
            tmoe_block_free(l);
        } else {
            assert_null(l);
            assert_true(err.msg[0] != '\0');
        }
    }
    assert_true(opened < 400); /* the damage was noticed at least sometimes */
    (void)loaded;
    free(good);
    free(bad);
}

/* A FIFO (no writer), /dev/zero and a directory are refused at once, before anything is
 * read or mapped; the alarm turns a regression (open blocking on the FIFO) into a failure. */
static void test_special_files(void **state) {
    (void)state;
    const char *fifo = tu_tmppath("pipe.safetensors");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    expect_open_fail(fifo, "is a FIFO; expected a regular file");
    expect_load_fail(fifo, "is a FIFO");
    expect_open_fail("/dev/zero", "is a character device");
    expect_open_fail(tu_tmpdir(), "is a directory");
    alarm(0);
    unlink(fifo);
}

int main(void) {
    tmoe_rng_seed(&rng, tu_seed());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_round_trip), cmocka_unit_test(test_writer_dtypes),
        cmocka_unit_test(test_mixtral_layout),   cmocka_unit_test(test_thermoe_extra),
        cmocka_unit_test(test_corrupt),          cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_special_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
