/* ep_check: the expert-parallel CPU engine under mpirun (tests/cli_ep.sh runs it with 2 and 3
 * processes) against the single-process CPU engine, on every rank:
 *   - fp16 / q4 / mixed expert types, relu and swiglu, the MoE layer alone and the whole
 *     block, round robin and random placements (some ranks may hold no expert), routing
 *     biases, a different token count on every rank (1..max_tokens);
 *   - output bit-identical (the outputs travel back in fp32 and every sum runs in the
 *     single-device order), the same experts chosen, the same per-expert counts;
 *   - the engine's link statistics: copies sent sum to T x k, a measured bandwidth.
 * Output buffers are poisoned with NaN first. Exit 0 when every rank passed, 1 otherwise;
 * rank 0 prints one line per case. */
#include "thermoe/backend.h"
#include "thermoe/ep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tmoe_ep *g;

static void die(const char *what, const tmoe_error *err) {
    fprintf(stderr, "ep_check rank %d: %s: %s\n", g ? tmoe_ep_rank(g) : -1, what,
            err ? err->msg : "");
    tmoe_ep_abort(g, 1);
    exit(1);
}

typedef struct ep_case {
    const char *name;
    tmoe_etype type;
    int mixed; /* per-expert types fp16/q4/q2 in turn */
    tmoe_act act;
    int moe_only;
    int random_place;
    int num_experts;
} ep_case;

/* One case on this rank: 0 when it matched. */
static int run_case(const ep_case *c, int ci, char *why, size_t nwhy) {
    tmoe_error err = {0};
    int rank = tmoe_ep_rank(g), N = tmoe_ep_size(g);
    tmoe_block_config bc = tmoe_block_config_default();
    bc.d_model = 64;
    bc.n_heads = 4;
    bc.d_ff = 128;
    bc.num_experts = c->num_experts;
    bc.top_k = 2;
    bc.group_size = 64;
    bc.seq_len = 8;
    bc.act = c->act;
    bc.expert_type = c->type;
    bc.seed = 100 + (uint64_t)ci; /* the same weights on every rank */
    tmoe_etype types[TMOE_MAX_EXPERTS];
    if (c->mixed) {
        for (int e = 0; e < c->num_experts; e++) types[e] = (tmoe_etype)(e % TMOE_ET_COUNT);
        bc.expert_types = types;
    }
    tmoe_block *blk = NULL;
    if (tmoe_block_create(&bc, &blk, &err)) die("block", &err);
    tmoe_placement pl;
    tmoe_rng rng;
    tmoe_rng_seed_stream(&rng, 7 + (uint64_t)ci, 0); /* the same placement on every rank */
    if (c->random_place) {
        int32_t dev[TMOE_MAX_EXPERTS];
        for (int e = 0; e < c->num_experts; e++)
            dev[e] = (int32_t)tmoe_rng_below(&rng, (uint32_t)N);
        if (tmoe_placement_from_array(dev, c->num_experts, N, &pl, &err)) die("placement", &err);
    } else if (tmoe_placement_round_robin(c->num_experts, N, &pl, &err)) {
        die("placement", &err);
    }
    const int Tmax = 24;
    int T = 1 + (rank * 7 + ci * 5) % Tmax;
    size_t D = (size_t)bc.d_model, k = (size_t)bc.top_k, E = (size_t)bc.num_experts;
    float *x = malloc(sizeof(float) * Tmax * D), *y0 = malloc(sizeof(float) * Tmax * D),
          *y1 = malloc(sizeof(float) * Tmax * D), *bias = malloc(sizeof(float) * E);
    int32_t *i0 = malloc(sizeof(int32_t) * Tmax * k), *i1 = malloc(sizeof(int32_t) * Tmax * k);
    if (!x || !y0 || !y1 || !bias || !i0 || !i1) die("out of memory", NULL);
    tmoe_rng_seed_stream(&rng, 1000 + (uint64_t)ci, 1 + (uint64_t)rank); /* each rank its tokens */
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] = tmoe_rng_uniform_sym(&rng, 1.0f);
    for (size_t e = 0; e < E; e++) bias[e] = tmoe_rng_uniform_sym(&rng, 0.5f);

    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = Tmax;
    tmoe_moe_metrics m0, m1;
    memset(&m0, 0, sizeof m0);
    memset(&m1, 0, sizeof m1);
    m0.topk_idx = i0;
    m1.topk_idx = i1;
    tmoe_engine *one = NULL, *epe = NULL;
    if (tmoe_engine_create(blk, &ec, &one, &err)) die("single engine", &err);
    for (size_t i = 0; i < (size_t)T * D; i++) y0[i] = y1[i] = NAN;
    if (tmoe_engine_forward(one, x, T, c->moe_only, bias, y0, &m0, &err)) die("forward", &err);
    ec.ep = g;
    ec.placement = &pl;
    if (tmoe_engine_create(blk, &ec, &epe, &err)) die("expert-parallel engine", &err);
    if (strcmp(tmoe_engine_backend_name(epe), N > 1 ? "cpu-ep" : "cpu") != 0)
        die("wrong backend", NULL);
    if (tmoe_engine_forward(epe, x, T, c->moe_only, bias, y1, &m1, &err)) die("ep forward", &err);
    int bad = 0;
    if (memcmp(y0, y1, sizeof(float) * (size_t)T * D) != 0) {
        size_t i = 0;
        while (i + 1 < (size_t)T * D && y0[i] == y1[i]) i++;
        snprintf(why, nwhy, "output differs at %zu: %.9g vs %.9g", i, y0[i], y1[i]);
        bad = 1;
    } else if (memcmp(i0, i1, sizeof(int32_t) * (size_t)T * k) != 0) {
        snprintf(why, nwhy, "chosen experts differ");
        bad = 1;
    } else if (memcmp(m0.tokens_per_expert, m1.tokens_per_expert, sizeof(int32_t) * E) != 0) {
        snprintf(why, nwhy, "per-expert counts differ");
        bad = 1;
    }
    if (!bad && N > 1) {
        tmoe_ep_stats es;
        if (tmoe_engine_ep_stats(epe, &es, &err)) die("ep stats", &err);
        long sent = 0;
        for (int q = 0; q < N; q++) sent += es.copies_to[q];
        if (sent != (long)T * (long)k || es.ranks != N || es.rank != rank ||
            !(es.link_gbps > 0.0) || !(es.step_ms >= 0.0)) {
            snprintf(why, nwhy, "stats: %ld copies sent (want %ld), ranks %d, link %g GB/s", sent,
                     (long)T * (long)k, es.ranks, es.link_gbps);
            bad = 1;
        }
    }
    tmoe_engine_free(epe);
    tmoe_engine_free(one);
    tmoe_block_free(blk);
    free(x);
    free(y0);
    free(y1);
    free(bias);
    free(i0);
    free(i1);
    return bad;
}

int main(int argc, char **argv) {
    tmoe_error err = {0};
    if (tmoe_ep_init(&argc, &argv, &g, &err)) die("process group", &err);
    static const ep_case cases[] = {
        {"fp16 relu moe-only round-robin", TMOE_ET_FP16, 0, TMOE_ACT_RELU, 1, 0, 8},
        {"q4 swiglu block round-robin", TMOE_ET_Q4, 0, TMOE_ACT_SWIGLU, 0, 0, 8},
        {"mixed swiglu moe-only random placement", TMOE_ET_FP16, 1, TMOE_ACT_SWIGLU, 1, 1, 6},
        {"q2 relu block random placement", TMOE_ET_Q2, 0, TMOE_ACT_RELU, 0, 1, 5},
    };
    int failed = 0;
    for (int ci = 0; ci < (int)(sizeof cases / sizeof *cases); ci++) {
        char why[256] = "";
        double bad = run_case(&cases[ci], ci, why, sizeof why);
        if (bad)
            fprintf(stderr, "ep_check rank %d, %s: %s\n", tmoe_ep_rank(g), cases[ci].name, why);
        if (tmoe_ep_allreduce_max(g, &bad, &err)) die("reduce", &err);
        failed |= bad > 0.0;
        if (tmoe_ep_rank(g) == 0)
            printf("%s: %s on %d ranks\n", bad > 0.0 ? "FAIL" : "ok", cases[ci].name,
                   tmoe_ep_size(g));
    }
    tmoe_ep_finalize(g);
    return failed;
}
