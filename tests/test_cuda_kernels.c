/* CUDA kernels against the CPU reference (include/thermoe/backend.h): fresh random inputs
 * (THERMOE_TEST_SEED replays a run), outputs poisoned with NaN before every launch and
 * checked to be fully written, every element compared with atol * rms(ref) + rtol * |ref|
 * (tolerances of testutil.h), tokens 1, 3, 17 and 1000, experts with no tokens and all tokens
 * on one expert. Skips when no CUDA device answers (CI has none). */
#include "testutil.h"

#ifdef THERMOE_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#include "thermoe/backend.h"
#include "thermoe/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_seed = 0x5eed;

static void need_gpu(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        print_message("[  SKIPPED ] no CUDA device: CUDA kernel tests not run\n");
        skip();
    }
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t ce_ = (call);                                                                  \
        if (ce_ != cudaSuccess) fail_msg("%s: %s", #call, cudaGetErrorString(ce_));                \
    } while (0)

static void *dmalloc(size_t n) {
    void *p = NULL;
    CK(cudaMalloc(&p, n ? n : 1));
    CK(cudaMemset(p, 0xff, n ? n : 1)); /* poison: NaN for fp16 and fp32, -1 for int32 */
    return p;
}
static void *dup_to(const void *h, size_t n) {
    void *p = dmalloc(n);
    CK(cudaMemcpy(p, h, n, cudaMemcpyHostToDevice));
    return p;
}
static void from_dev(void *h, const void *d, size_t n) {
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}

static void rand_f16(tmoe_rng *r, tmoe_f16 *x, size_t n, float a) {
    for (size_t i = 0; i < n; i++) x[i] = tmoe_f32_to_f16(tmoe_rng_uniform_sym(r, a));
}

static void f16_to_f32(const tmoe_f16 *h, float *f, size_t n) {
    for (size_t i = 0; i < n; i++) f[i] = tmoe_f16_to_f32(h[i]);
}

/* GPU output against the CPU's, element by element: every element written (no NaN poison
 * left) and |got - ref| <= atol * rms(ref) + rtol * |ref| (testutil.h). */
static void check_gpu(const char *what, const float *got, const float *ref, size_t n, double atol,
                      double rtol) {
    tu_assert_finite(what, got, n);
    tu_assert_close_f(what, got, ref, n, atol * tu_rms_f(ref, n), rtol);
}

/* ---- gate_topk ----------------------------------------------------------------------- */
/* ties: few distinct logits. nans: NaN logits by row (t % 4): 0 about a quarter NaN, 1 all
 * NaN, 2 only k / 2 finite (the rest NaN or -inf), 3 none; and NaN biases on experts
 * e % 7 == 3 (the NaN rule of tmoe_gate_topk). */
static void topk_case(int T, int E, int k, int renorm, int biw, int ties, int nans) {
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed,
                         (uint64_t)T * 1000 + E * 10 + renorm * 2 + biw + (uint64_t)nans * 7919);
    float *lg = malloc(sizeof(float) * T * E), *bias = malloc(sizeof(float) * E);
    int32_t *ci = malloc(sizeof(int32_t) * T * k), *gi = malloc(sizeof(int32_t) * T * k);
    float *cw = malloc(sizeof(float) * T * k), *gw = malloc(sizeof(float) * T * k);
    for (int i = 0; i < T * E; i++) {
        float v = tmoe_rng_uniform_sym(&r, 4.0f);
        lg[i] = ties ? floorf(v) : v; /* few distinct values: many ties */
    }
    for (int e = 0; e < E; e++) bias[e] = ties ? 0.0f : tmoe_rng_uniform_sym(&r, 0.5f);
    if (nans) {
        for (int t = 0; t < T; t++) {
            float *z = lg + (size_t)t * E;
            int kind = t % 4, finite = 0;
            for (int e = 0; e < E; e++) {
                int keep = kind == 0   ? tmoe_rng_below(&r, 4) != 0
                           : kind == 1 ? 0
                           : kind == 2 ? finite < k / 2 && tmoe_rng_below(&r, 2) == 0
                                       : 1;
                finite += keep;
                if (!keep) z[e] = kind == 2 && (e & 1) ? -INFINITY : NAN;
            }
        }
        for (int e = 3; e < E; e += 7) bias[e] = NAN;
    }
    tmoe_gate_topk(lg, bias, T, E, k, renorm, biw, ci, cw);
    float *dl = dup_to(lg, sizeof(float) * T * E), *db = dup_to(bias, sizeof(float) * E);
    int32_t *di = dmalloc(sizeof(int32_t) * T * k);
    float *dw = dmalloc(sizeof(float) * T * k);
    tmoe_error err = {0};
    ASSERT_OK(tmoe_cuda_gate_topk(dl, db, T, E, k, renorm, biw, di, dw, NULL, NULL, 0, &err), &err);
    from_dev(gi, di, sizeof(int32_t) * T * k);
    from_dev(gw, dw, sizeof(float) * T * k);
    char what[128];
    snprintf(what, sizeof what, "gate_topk T=%d E=%d k=%d renorm=%d biw=%d ties=%d nans=%d", T, E,
             k, renorm, biw, ties, nans);
    for (int i = 0; i < T * k; i++)
        if (gi[i] != ci[i])
            fail_msg("%s: idx[%d] (token %d slot %d) = %d, cpu %d", what, i, i / k, i % k, gi[i],
                     ci[i]);
    tu_assert_finite(what, cw, (size_t)T * k); /* the NaN rule: weights always finite */
    /* weights: fp32 softmax on both sides (expf and a float sum against double) */
    tu_assert_finite(what, gw, (size_t)T * k);
    tu_assert_close_f(what, gw, cw, (size_t)T * k, TOL_F32, TOL_F32);
    cudaFree(dl), cudaFree(db), cudaFree(di), cudaFree(dw);
    free(lg), free(bias), free(ci), free(gi), free(cw), free(gw);
}

static void test_gate_topk(void **state) {
    (void)state;
    need_gpu();
    int Ts[] = {1, 3, 17, 1000};
    for (int i = 0; i < 4; i++)
        for (int nans = 0; nans < 2; nans++) {
            topk_case(Ts[i], 8, 2, 0, 0, 0, nans);
            topk_case(Ts[i], 8, 2, 1, 1, 0, nans);
            topk_case(Ts[i], 128, 8, 1, 0, 0, nans);
            topk_case(Ts[i], 128, 8, 0, 1, 1, nans);
            topk_case(Ts[i], 256, 16, 0, 0, 1, nans);
            topk_case(Ts[i], 256, 16, 1, 1, 0, nans);
            topk_case(Ts[i], 5, 5, 1, 0, 1, nans);
        }
}

/* ---- permute + combine ------------------------------------------------------------------ */
/* mode 0: random experts; 1: all tokens on expert 0 (k=1) or experts 0..k-1; 2: random among
 * the odd experts (even experts get none). */
static void permute_case(int T, int E, int k, int mode) {
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed, 77 + (uint64_t)T * 10 + mode);
    int N = T * k, D = 136;
    int32_t *idx = malloc(sizeof(int32_t) * N);
    for (int t = 0; t < T; t++) {
        unsigned char used[TMOE_MAX_EXPERTS] = {0};
        for (int j = 0; j < k; j++) {
            int e;
            do {
                e = mode == 1 ? j : (int)tmoe_rng_below(&r, (uint32_t)E);
                if (mode == 2) e |= 1;
            } while (used[e] && mode != 1);
            used[e] = 1;
            idx[t * k + j] = e;
        }
    }
    int32_t *cc = malloc(4 * E), *co = malloc(4 * (E + 1)), *cs = malloc(4 * N),
            *cd = malloc(4 * N);
    int32_t *gc = malloc(4 * E), *go = malloc(4 * (E + 1)), *gs = malloc(4 * N),
            *gd = malloc(4 * N);
    tmoe_cpu_permute(idx, T, k, E, cc, co, cs, cd);
    int32_t *didx = dup_to(idx, 4 * N), *dc = dmalloc(4 * E), *dof = dmalloc(4 * (E + 1));
    int32_t *ds = dmalloc(4 * N), *dd = dmalloc(4 * N);
    tmoe_error err = {0};
    int32_t *dact = dmalloc(4 * (E + 1)), *gact = malloc(4 * (E + 1));
    ASSERT_OK(tmoe_cuda_permute(didx, T, k, E, dc, dof, ds, dd, dact, NULL, 0, &err), &err);
    from_dev(gact, dact, 4 * (E + 1));
    {
        int na = 0;
        for (int e = 0; e < E; e++)
            if (cc[e] > 0) {
                if (gact[1 + na] != e)
                    fail_msg("active[%d] = %d, expected %d", 1 + na, gact[1 + na], e);
                na++;
            }
        assert_int_equal(gact[0], na);
    }
    cudaFree(dact);
    free(gact);
    from_dev(gc, dc, 4 * E);
    from_dev(go, dof, 4 * (E + 1));
    from_dev(gs, ds, 4 * N);
    from_dev(gd, dd, 4 * N);
    assert_memory_equal(gc, cc, 4 * E);
    assert_memory_equal(go, co, 4 * (E + 1));
    assert_memory_equal(gs, cs, 4 * N);
    assert_memory_equal(gd, cd, 4 * N);

    /* gather and combine on the same routing */
    tmoe_f16 *x = malloc(2 * (size_t)T * D), *xg = malloc(2 * (size_t)N * D);
    float *ye = malloc(4 * (size_t)N * D), *w = malloc(4 * N), *res = malloc(4 * (size_t)T * D);
    float *cy = malloc(4 * (size_t)T * D), *gy = malloc(4 * (size_t)T * D);
    rand_f16(&r, x, (size_t)T * D, 1.0f);
    for (size_t i = 0; i < (size_t)N * D; i++) ye[i] = tmoe_rng_uniform_sym(&r, 1.0f);
    for (int i = 0; i < N; i++) w[i] = (float)tmoe_rng_uniform(&r);
    for (size_t i = 0; i < (size_t)T * D; i++) res[i] = tmoe_rng_uniform_sym(&r, 1.0f);
    tmoe_cpu_gather(x, cs, N, k, D, xg);
    tmoe_f16 *dx = dup_to(x, 2 * (size_t)T * D), *dxg = dmalloc(2 * (size_t)N * D);
    ASSERT_OK(tmoe_cuda_gather(dx, ds, N, k, D, dxg, 0, &err), &err);
    tmoe_f16 *gxg = malloc(2 * (size_t)N * D);
    from_dev(gxg, dxg, 2 * (size_t)N * D);
    assert_memory_equal(gxg, xg, 2 * (size_t)N * D);
    tmoe_cpu_combine(ye, cd, w, T, k, D, cy);
    for (size_t i = 0; i < (size_t)T * D; i++) cy[i] += res[i];
    float *dye = dup_to(ye, 4 * (size_t)N * D), *dw = dup_to(w, 4 * N);
    float *dres = dup_to(res, 4 * (size_t)T * D), *dy = dmalloc(4 * (size_t)T * D);
    ASSERT_OK(tmoe_cuda_combine(dye, dd, dw, dres, T, k, D, dy, 0, &err), &err);
    from_dev(gy, dy, 4 * (size_t)T * D);
    char what[96];
    snprintf(what, sizeof what, "combine T=%d E=%d k=%d mode %d", T, E, k, mode);
    /* fp32 on both sides, k products summed in the same order (the GPU may fuse them) */
    check_gpu(what, gy, cy, (size_t)T * D, TOL_F32, TOL_F32);

    cudaFree(didx), cudaFree(dc), cudaFree(dof), cudaFree(ds), cudaFree(dd), cudaFree(dx);
    cudaFree(dxg), cudaFree(dye), cudaFree(dw), cudaFree(dres), cudaFree(dy);
    free(idx), free(cc), free(co), free(cs), free(cd), free(gc), free(go), free(gs), free(gd);
    free(x), free(xg), free(ye), free(w), free(res), free(cy), free(gy), free(gxg);
}

static void test_permute_combine(void **state) {
    (void)state;
    need_gpu();
    int Ts[] = {1, 3, 17, 1000};
    for (int i = 0; i < 4; i++) {
        permute_case(Ts[i], 8, 2, 0);
        permute_case(Ts[i], 8, 1, 1);
        permute_case(Ts[i], 8, 2, 1);
        permute_case(Ts[i], 128, 8, 0);
        permute_case(Ts[i], 128, 8, 2);
        permute_case(Ts[i], 256, 16, 0);
    }
}

/* ---- dequant_unpack ---------------------------------------------------------------------- */
static void dequant_case(tmoe_etype t, int out, int in, int group) {
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed, 500 + (uint64_t)t * 7 + group);
    int slots = 3;
    tmoe_linear l[3];
    tmoe_error err = {0};
    size_t wb = tmoe_quant_weight_bytes(t, out, in), sc = tmoe_quant_scale_count(out, in, group);
    uint8_t *q = malloc(wb * slots);
    tmoe_f16 *s = malloc(2 * sc * slots);
    for (int i = 0; i < slots; i++) {
        ASSERT_OK(tmoe_linear_alloc(&l[i], t, out, in, group, &err), &err);
        ASSERT_OK(tmoe_linear_init_random(&l[i], &r, &err), &err);
        memcpy(q + wb * i, l[i].q, wb);
        memcpy(s + sc * i, l[i].scales, 2 * sc);
    }
    int32_t experts[3] = {2, 0, 1}, counts[3] = {5, 0, 1}; /* slot 2 = expert 1: no tokens */
    tmoe_cuda_lin L = {.type = t,
                       .out = out,
                       .in = in,
                       .group = group,
                       .w = dup_to(q, wb * slots),
                       .scales = dup_to(s, 2 * sc * slots),
                       .w_stride = wb,
                       .s_stride = sc};
    int32_t *de = dup_to(experts, sizeof experts), *dc = dup_to(counts, sizeof counts);
    size_t nw = (size_t)out * in;
    tmoe_f16 *dw = dmalloc(2 * nw * slots), *gw = malloc(2 * nw * slots), *cw = malloc(2 * nw);
    ASSERT_OK(tmoe_cuda_dequant_unpack(&L, slots, de, dc, dw, 0, &err), &err);
    from_dev(gw, dw, 2 * nw * slots);
    for (int i = 0; i < slots; i++) {
        if (counts[experts[i]] == 0) {
            for (size_t j = 0; j < nw; j++)
                if (gw[nw * i + j] != 0xffff) fail_msg("dequant wrote an expert without tokens");
            continue;
        }
        tmoe_cpu_dequant_unpack(&l[i], cw);
        size_t bad = 0, first = 0;
        for (size_t j = 0; j < nw; j++)
            if (gw[nw * i + j] != cw[j]) {
                if (bad < TU_SHOW_MISMATCHES)
                    print_error("dequant slot %d: [%zu] got 0x%04x (%g) cpu 0x%04x (%g)\n", i, j,
                                gw[nw * i + j], (double)tmoe_f16_to_f32(gw[nw * i + j]), cw[j],
                                (double)tmoe_f16_to_f32(cw[j]));
                if (!bad++) first = j;
            }
        if (bad)
            fail_msg("dequant %s %dx%d g%d slot %d: %zu of %zu weights differ from the CPU "
                     "(bitwise), the first at %zu",
                     tmoe_etype_name(t), out, in, group, i, bad, nw, first);
    }
    for (int i = 0; i < slots; i++) tmoe_linear_free(&l[i]);
    cudaFree((void *)L.w), cudaFree((void *)L.scales), cudaFree(de), cudaFree(dc), cudaFree(dw);
    free(q), free(s), free(gw), free(cw);
}

static void test_dequant(void **state) {
    (void)state;
    need_gpu();
    dequant_case(TMOE_ET_Q4, 96, 256, 128);
    dequant_case(TMOE_ET_Q4, 64, 128, 8);
    dequant_case(TMOE_ET_Q2, 96, 512, 128);
    dequant_case(TMOE_ET_Q2, 64, 256, 4);
}

/* ---- expert linear ------------------------------------------------------------------------ */
/* 3 experts of type t (ids 0..2 in slots 2, 0, 1); tokens routed: expert 0 gets n0, 1 none,
 * 2 gets n2, reading x through src (token order) as the engine's fc1 does. q4 / q2 with at most
 * 4 tokens also run the int8 path (tmoe_cuda_act8) against its own reference. */
static void linear_case(tmoe_etype t, tmoe_cuda_epi epi, int out, int in, int n0, int n2,
                        int group) {
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed,
                         900 + (uint64_t)t * 100 + epi * 10 + (uint64_t)n0 * 7 + n2 + group * 1000);
    const int slots = 3, k = 2;
    int32_t experts[3] = {1, 2, 0}; /* slot -> expert */
    int32_t counts[3] = {n0, 0, n2}, offsets[4] = {0, n0, n0, n0 + n2};
    int N = n0 + n2, T = N; /* N grouped rows; token copies t*k+j with src[r] = 2 r */
    tmoe_error err = {0};
    tmoe_linear l[3];
    size_t wb = tmoe_quant_weight_bytes(t, out, in), sc = tmoe_quant_scale_count(out, in, group);
    uint8_t *wh = malloc(wb * slots);
    tmoe_f16 *sh = malloc(2 * sc * slots + 2);
    for (int i = 0; i < slots; i++) {
        ASSERT_OK(tmoe_linear_alloc(&l[i], t, out, in, group, &err), &err);
        ASSERT_OK(tmoe_linear_init_random(&l[i], &r, &err), &err);
        int quant = tmoe_etype_is_quant(t);
        memcpy(wh + wb * i, quant ? (void *)l[i].q : (void *)l[i].w, wb);
        if (quant) memcpy(sh + sc * i, l[i].scales, 2 * sc);
    }
    tmoe_f16 *x = malloc(2 * (size_t)T * in);
    rand_f16(&r, x, (size_t)T * in, 1.0f);
    int32_t *src = malloc(4 * (size_t)N);
    for (int i = 0; i < N; i++) src[i] = (N - 1 - i) * k + (i & 1); /* reversed token order */
    int rows = epi == TMOE_CUDA_EPI_SWIGLU ? out / 2 : out;
    float *ref = malloc(4 * (size_t)N * rows), *h = malloc(4 * (size_t)N * out);
    float *ref8 = malloc(4 * (size_t)N * rows); /* the int8 path's reference */
    const int act8 = tmoe_etype_is_quant(t) && N <= 4;
    tmoe_f16 *xg = malloc(2 * (size_t)N * in), *a = malloc(2 * (size_t)N * rows);
    tmoe_cpu_gather(x, src, N, k, in, xg);
    for (int e = 0; e < 3; e++) {
        int n = counts[e], s = -1;
        for (int i = 0; i < slots; i++)
            if (experts[i] == e) s = i;
        if (!n) continue;
        for (int a8 = 0; a8 <= act8; a8++) {
            const tmoe_f16 *xe = xg + (size_t)offsets[e] * in;
            float *re = (a8 ? ref8 : ref) + (size_t)offsets[e] * rows;
            if (a8)
                tmoe_cpu_linear_q_act8(t, xe, l[s].q, l[s].scales, group, n, in, out, h);
            else
                tmoe_cpu_linear(&l[s], TMOE_IMPL_FUSED, NULL, xe, n, h);
            if (epi == TMOE_CUDA_EPI_NONE) {
                memcpy(re, h, 4 * (size_t)n * rows);
            } else {
                tmoe_cpu_act(epi == TMOE_CUDA_EPI_RELU ? TMOE_ACT_RELU : TMOE_ACT_SWIGLU, h, n,
                             rows, a);
                for (size_t i = 0; i < (size_t)n * rows; i++) re[i] = tmoe_f16_to_f32(a[i]);
            }
        }
    }
    tmoe_cuda_lin L = {.type = t,
                       .out = out,
                       .in = in,
                       .group = group,
                       .w = dup_to(wh, wb * slots),
                       .scales = tmoe_etype_is_quant(t) ? dup_to(sh, 2 * sc * slots) : NULL,
                       .w_stride = wb,
                       .s_stride = tmoe_etype_is_quant(t) ? sc : 0};
    int sms = 0;
    ASSERT_OK(tmoe_cuda_sm_count(0, &sms, &err), &err);
    int32_t *de = dup_to(experts, sizeof experts), *dc = dup_to(counts, sizeof counts);
    int32_t *dof = dup_to(offsets, sizeof offsets), *dsrc = dup_to(src, 4 * (size_t)N);
    tmoe_f16 *dx = dup_to(x, 2 * (size_t)T * in);
    float *dy = dmalloc(4 * (size_t)N * rows + 1);
    tmoe_f16 *dy16 = dmalloc(2 * (size_t)N * rows + 1);
    /* second variant: tiled weights, active list from the counts, expert -> slot map */
    void *wt = dmalloc(wb * slots);
    ASSERT_OK(tmoe_cuda_tile_weights(L.w, wt, out, wb / out, slots, 0, &err), &err);
    int32_t active[4] = {0}, slot_of[3];
    for (int e = 0; e < 3; e++)
        if (counts[e]) active[1 + active[0]++] = e;
    for (int i = 0; i < slots; i++) slot_of[experts[i]] = i;
    int32_t *dact = dup_to(active, sizeof active), *dso = dup_to(slot_of, sizeof slot_of);
    float *got = malloc(4 * (size_t)N * rows);
    /* variants: bit 0 tiled weights + active list; bit 1 the 8-warp blocks of a device with
     * many SMs (sm_count 1) instead of the 16-warp blocks these few row blocks get, and the
     * token tile sized for max_n */
    /* and every depth of the weight ring (0: the register pipeline), or only
     * THERMOE_EXPERT_STAGES when set (a sanitizer run of one variant) */
    const char *st_env = getenv("THERMOE_EXPERT_STAGES");
    int st_list[] = {0, 3, 4, 6}, n_st = 4;
    if (st_env && *st_env) st_list[0] = atoi(st_env), n_st = 1;
    /* and split-K over 1, 2 and 3 blocks (fp16 / bf16 where the row blocks are few: those
     * of sm_count 1 never split), or only THERMOE_EXPERT_SPLITK when set */
    const char *sk_env = getenv("THERMOE_EXPERT_SPLITK");
    int sk_list[] = {1, 2, 3}, n_sk = t == TMOE_ET_FP16 || t == TMOE_ET_BF16 ? 3 : 1;
    if (sk_env && *sk_env) sk_list[0] = atoi(sk_env), n_sk = 1;
    /* then all of it again on the int8 path where it applies */
    for (int v = 0; v < 4 * n_st * n_sk * (1 + act8); v++) {
        int variant = v & 1, a8 = v >= 4 * n_st * n_sk;
        tmoe_cuda_act8 = a8;
        tmoe_cuda_act8_tokens = 4; /* every tile the path has (the default takes 1) */
        tmoe_cuda_expert_stages = st_list[(v / 4) % n_st];
        tmoe_cuda_expert_splitk = sk_list[(v / (4 * n_st)) % n_sk];
        tmoe_cuda_lin LV = L;
        if (variant) {
            LV.w = wt;
            LV.tiled = 1;
        }
        LV.sm_count = v & 2 ? 1 : sms;
        /* and the token tile sized for max_n instead of twice the average */
        tmoe_cuda_expert_tile_from_average = !(v & 2);
        CK(cudaMemset(dy, 0xff, 4 * (size_t)N * rows + 1));
        CK(cudaMemset(dy16, 0xff, 2 * (size_t)N * rows + 1));
        ASSERT_OK(tmoe_cuda_expert_linear(&LV, epi, slots, de, variant ? dact : NULL,
                                          variant ? dso : NULL, dc, dof, dx, dsrc, k, N, N, 3, dy,
                                          dy16, 0, &err),
                  &err);
        if (epi == TMOE_CUDA_EPI_NONE) {
            from_dev(got, dy, 4 * (size_t)N * rows);
        } else {
            from_dev(a, dy16, 2 * (size_t)N * rows);
            f16_to_f32(a, got, (size_t)N * rows);
        }
        char what[128];
        snprintf(what, sizeof what,
                 "expert_linear %s%s group %d epi %d %dx%d tokens %d+%d %s sm_count %d stages %d "
                 "split-K %d",
                 tmoe_etype_name(t), a8 ? " int8 activations" : "", group, (int)epi, out, in, n0,
                 n2, variant ? "tiled" : "row-major", LV.sm_count, tmoe_cuda_expert_stages,
                 tmoe_cuda_expert_splitk);
        double atol, rtol;
        tu_gpu_tol(t, &atol, &rtol);
        if (a8) atol = TOL_GPU_ACT8_ATOL, rtol = TOL_GPU_ACT8_RTOL;
        check_gpu(what, got, a8 ? ref8 : ref, (size_t)N * rows, atol, rtol);
    }
    tmoe_cuda_expert_tile_from_average = 1;
    tmoe_cuda_expert_stages = -1;
    tmoe_cuda_expert_splitk = -1;
    tmoe_cuda_act8 = 0;
    tmoe_cuda_act8_tokens = 1;
    cudaFree(wt), cudaFree(dact), cudaFree(dso);
    for (int i = 0; i < slots; i++) tmoe_linear_free(&l[i]);
    cudaFree((void *)L.w), cudaFree((void *)L.scales), cudaFree(de), cudaFree(dc), cudaFree(dof);
    cudaFree(dsrc), cudaFree(dx), cudaFree(dy), cudaFree(dy16);
    free(wh), free(sh), free(x), free(src), free(ref), free(ref8), free(h), free(xg), free(a);
    free(got);
}

static void test_expert_linear(void **state) {
    (void)state;
    need_gpu();
    int ns[][2] = {{1, 0}, {0, 1}, {3, 1}, {17, 0}, {9, 8}, {0, 1000}, {400, 600}};
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        for (int i = 0; i < 7; i++) {
            linear_case((tmoe_etype)t, TMOE_CUDA_EPI_NONE, 256, 512, ns[i][0], ns[i][1], 128);
            linear_case((tmoe_etype)t, TMOE_CUDA_EPI_RELU, 512, 256, ns[i][0], ns[i][1], 128);
            linear_case((tmoe_etype)t, TMOE_CUDA_EPI_SWIGLU, 1024, 256, ns[i][0], ns[i][1], 128);
        }
    /* other group sizes: q4 scaled before the mma (32, 64), q2's scale index (64, 256) */
    int gq4[] = {32, 64, 256}, gq2[] = {64, 256};
    for (int i = 0; i < 3; i++) {
        linear_case(TMOE_ET_Q4, TMOE_CUDA_EPI_NONE, 256, 512, 9, 8, gq4[i]);
        linear_case(TMOE_ET_Q4, TMOE_CUDA_EPI_SWIGLU, 1024, 256, 1, 17, gq4[i]);
        linear_case(TMOE_ET_Q4, TMOE_CUDA_EPI_NONE, 256, 512, 1, 2, gq4[i]); /* int8 path */
    }
    /* the int8 path at the Mixtral expert's widths: 16 warps with 7 k-blocks each (q4's fc2) */
    linear_case(TMOE_ET_Q4, TMOE_CUDA_EPI_NONE, 256, 14336, 1, 1, 32);
    linear_case(TMOE_ET_Q4, TMOE_CUDA_EPI_SWIGLU, 512, 4096, 2, 2, 32);
    for (int i = 0; i < 2; i++) {
        linear_case(TMOE_ET_Q2, TMOE_CUDA_EPI_NONE, 256, 512, 9, 8, gq2[i]);
        linear_case(TMOE_ET_Q2, TMOE_CUDA_EPI_SWIGLU, 1024, 512, 3, 1, gq2[i]);
        linear_case(TMOE_ET_Q2, TMOE_CUDA_EPI_NONE, 256, 512, 1, 2, gq2[i]); /* int8 path */
    }
    linear_case(TMOE_ET_Q2, TMOE_CUDA_EPI_NONE, 256, 14336, 1, 1, 64);
    linear_case(TMOE_ET_Q2, TMOE_CUDA_EPI_SWIGLU, 512, 4096, 2, 2, 64);
    /* split-K at the Mixtral widths: 448 k-blocks over 2 or 3 blocks of 16 warps */
    for (int t = TMOE_ET_FP16; t <= TMOE_ET_BF16; t += TMOE_ET_BF16 - TMOE_ET_FP16) {
        linear_case((tmoe_etype)t, TMOE_CUDA_EPI_NONE, 256, 14336, 1, 1, 128);
        linear_case((tmoe_etype)t, TMOE_CUDA_EPI_SWIGLU, 512, 4096, 9, 4, 128);
    }
}

/* ---- fp16 -> bf16 (the activations of bf16 experts on cuBLAS) ----------------------------- */
static void test_f16_to_bf16(void **state) {
    (void)state;
    need_gpu();
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed, 4343);
    tmoe_error err = {0};
    const size_t ns[] = {1, 2, 1001, 65536 + 3};
    for (int c = 0; c < 4; c++) {
        size_t n = ns[c];
        tmoe_f16 *x = malloc(2 * n);
        uint16_t *got = malloc(2 * n);
        rand_f16(&r, x, n, 4.0f);
        if (n > 8) { /* every rounding case: subnormal, ties, largest fp16, inf, NaN */
            x[0] = 0x0001, x[1] = 0x8201, x[2] = 0x3c01, x[3] = 0x7bff, x[4] = 0x7c00,
            x[5] = 0x7e00;
        }
        tmoe_f16 *dx = dup_to(x, 2 * n);
        uint16_t *dy = dmalloc(2 * n + 2);
        CK(cudaMemset(dy, 0xff, 2 * n + 2));
        ASSERT_OK(tmoe_cuda_f16_to_bf16(dx, n, dy, 0, &err), &err);
        from_dev(got, dy, 2 * n);
        for (size_t i = 0; i < n; i++) {
            uint16_t want = tmoe_f32_to_bf16(tmoe_f16_to_f32(x[i]));
            int both_nan = (want & 0x7fff) > 0x7f80 && (got[i] & 0x7fff) > 0x7f80;
            if (got[i] != want && !both_nan)
                fail_msg("f16_to_bf16 n=%zu [%zu]: fp16 0x%04x -> got 0x%04x, cpu 0x%04x", n, i,
                         x[i], got[i], want);
        }
        cudaFree(dx), cudaFree(dy);
        free(x), free(got);
    }
}

/* ---- act, rmsnorm, causal softmax --------------------------------------------------------- */
static void test_small_ops(void **state) {
    (void)state;
    need_gpu();
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, g_seed, 4242);
    tmoe_error err = {0};
    int Ts[] = {1, 3, 17, 1000}, D = 200, F = 96;
    for (int i = 0; i < 4; i++) {
        int T = Ts[i];
        for (int act = 0; act < 2; act++) {
            int F1 = act ? 2 * F : F;
            float *h = malloc(4 * (size_t)T * F1);
            for (size_t j = 0; j < (size_t)T * F1; j++) h[j] = tmoe_rng_uniform_sym(&r, 3.0f);
            tmoe_f16 *ca = malloc(2 * (size_t)T * F), *ga = malloc(2 * (size_t)T * F);
            tmoe_cpu_act((tmoe_act)act, h, T, F, ca);
            float *dh = dup_to(h, 4 * (size_t)T * F1);
            tmoe_f16 *da = dmalloc(2 * (size_t)T * F);
            ASSERT_OK(tmoe_cuda_act((tmoe_act)act, dh, T, F, da, 0, &err), &err);
            from_dev(ga, da, 2 * (size_t)T * F);
            float *g32 = malloc(4 * (size_t)T * F), *c32 = malloc(4 * (size_t)T * F);
            f16_to_f32(ga, g32, (size_t)T * F);
            f16_to_f32(ca, c32, (size_t)T * F);
            char what[64];
            snprintf(what, sizeof what, "act %s T=%d", tmoe_act_name((tmoe_act)act), T);
            /* the same fp32 math rounded once to fp16: at most one fp16 ulp (<= 2^-10 |ref|) */
            check_gpu(what, g32, c32, (size_t)T * F, TOL_F16_ROUND, TOL_F16_ROUND);
            cudaFree(dh), cudaFree(da), free(h), free(ca), free(ga), free(g32), free(c32);
        }
        float *x = malloc(4 * (size_t)T * D), *w = malloc(4 * (size_t)D);
        for (size_t j = 0; j < (size_t)T * D; j++) x[j] = tmoe_rng_uniform_sym(&r, 2.0f);
        for (int j = 0; j < D; j++) w[j] = 0.5f + (float)tmoe_rng_uniform(&r);
        tmoe_f16 *cy = malloc(2 * (size_t)T * D), *gy = malloc(2 * (size_t)T * D);
        tmoe_cpu_rmsnorm(x, w, T, D, 1e-5f, cy);
        float *dx = dup_to(x, 4 * (size_t)T * D), *dw = dup_to(w, 4 * (size_t)D);
        tmoe_f16 *dy = dmalloc(2 * (size_t)T * D);
        ASSERT_OK(tmoe_cuda_rmsnorm(dx, dw, T, D, 1e-5f, dy, 0, &err), &err);
        from_dev(gy, dy, 2 * (size_t)T * D);
        float *g32 = malloc(4 * (size_t)T * D), *c32 = malloc(4 * (size_t)T * D);
        f16_to_f32(gy, g32, (size_t)T * D);
        f16_to_f32(cy, c32, (size_t)T * D);
        char what[64];
        snprintf(what, sizeof what, "rmsnorm T=%d", T);
        /* the sum of squares in fp32 (GPU) or float64 (CPU), then one rounding to fp16 */
        check_gpu(what, g32, c32, (size_t)T * D, TOL_F16_ROUND, TOL_F16_ROUND);
        cudaFree(dx), cudaFree(dw), cudaFree(dy);
        free(x), free(w), free(cy), free(gy), free(g32), free(c32);
    }
    /* causal softmax against a direct computation */
    int H = 3, T = 37;
    float *S = malloc(4 * (size_t)H * T * T), *ref = malloc(4 * (size_t)H * T * T);
    float *got = malloc(4 * (size_t)H * T * T);
    for (size_t j = 0; j < (size_t)H * T * T; j++) S[j] = tmoe_rng_uniform_sym(&r, 8.0f);
    float sc = 0.125f;
    for (int row = 0; row < H * T; row++) {
        int t = row % T;
        float mx = -INFINITY, den = 0.0f;
        for (int s = 0; s <= t; s++) mx = fmaxf(mx, S[row * T + s] * sc);
        for (int s = 0; s <= t; s++) den += expf(S[row * T + s] * sc - mx);
        for (int s = 0; s < T; s++)
            ref[row * T + s] = s <= t ? expf(S[row * T + s] * sc - mx) / den : 0.0f;
    }
    float *dS = dup_to(S, 4 * (size_t)H * T * T);
    tmoe_f16 *dP = dmalloc(2 * (size_t)H * T * T), *P = malloc(2 * (size_t)H * T * T);
    ASSERT_OK(tmoe_cuda_causal_softmax(dS, H, T, sc, dP, 0, &err), &err);
    from_dev(P, dP, 2 * (size_t)H * T * T);
    f16_to_f32(P, got, (size_t)H * T * T);
    /* ref in fp32 (not rounded): one fp16 rounding (half an ulp) plus the GPU's sum order */
    check_gpu("causal_softmax", got, ref, (size_t)H * T * T, TOL_F16_ROUND, TOL_F16_ROUND);
    cudaFree(dS), cudaFree(dP), free(S), free(ref), free(got), free(P);
}

int main(void) {
    g_seed = tu_seed(); /* fresh inputs every run, printed for a replay */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gate_topk), cmocka_unit_test(test_permute_combine),
        cmocka_unit_test(test_dequant),   cmocka_unit_test(test_expert_linear),
        cmocka_unit_test(test_small_ops), cmocka_unit_test(test_f16_to_bf16),
    };
    /* THERMOE_TEST_FILTER=name (a cmocka pattern) runs only the matching tests, e.g. one
     * test under compute-sanitizer */
    const char *filter = getenv("THERMOE_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tu_close_summary();
    return rc;
}

#else /* no CUDA in this build */

static void test_no_cuda(void **state) {
    (void)state;
    print_message("[  SKIPPED ] built without CUDA (THERMOE_CUDA=OFF or no nvcc)\n");
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
