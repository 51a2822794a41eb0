/* bench_ep: the expert-parallel MoE layer over NCCL against one GPU, started with
 *   mpirun -np N bench_ep [--type fp16|q4|q2] [--tokens 16,1024] [--iters N] [shape flags]
 * For each token count every rank takes its own random tokens and
 *   1. runs the whole layer (all experts) on its own GPU: the single-GPU reference output
 *      and step time (MoE layer step: gate top-k to combine, CUDA events);
 *   2. runs the expert-parallel layer (its experts only, tokens over NCCL) on the same
 *      tokens: output, step time, all-to-all time and bytes.
 * The ranks pass a barrier after uploading their tokens, so a step starts together on all.
 * Checks on every rank: the chosen experts are the same, and the expert-parallel output
 * equals the reference within TOL_EP relative to the MoE part of the output (returned
 * expert outputs travel as fp16; the reference keeps them in fp32). The output buffers are
 * poisoned with NaN first. Prints one markdown row per token count on rank 0 (medians over
 * --iters steps, the slowest rank's median, the largest error of any rank) and exits 1 when
 * a check fails. */
#include "thermoe/backend.h"
#include "thermoe/ep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* |y_ep - y_ref| / |y_ref - x| over the batch: fp16 rounding of the returned rows is
 * 2^-11 relative per value; allow a few of those plus the order of the fp32 sums. */
#define TOL_EP 2e-3

static tmoe_ep *g_ep;

static void die(const char *what, const tmoe_error *err) {
    fprintf(stderr, "bench_ep: %s: %s\n", what, err ? err->msg : "");
    tmoe_ep_abort(g_ep, 1);
    exit(1);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct timing {
    double step_ms, a2a_ms, a2a_bytes;
    double op_ms[TMOE_OP_COUNT]; /* medians per op (--breakdown) */
} timing;

static int g_breakdown;

/* Warm up, then iters timed forwards of x (T tokens); y and idx of the last one. */
static timing run_engine(tmoe_engine *e, const float *x, int T, int iters, float *y, int32_t *idx,
                         int ep) {
    tmoe_error err = {0};
    tmoe_moe_metrics m;
    double *st = calloc((size_t)iters, sizeof *st), *a2 = calloc((size_t)iters, sizeof *a2);
    double *ops = calloc((size_t)iters * TMOE_OP_COUNT, sizeof *ops);
    double bytes = NAN;
    if (!st || !a2 || !ops) die("out of memory", NULL);
    for (int it = -3; it < iters; it++) {
        memset(&m, 0, sizeof m);
        tmoe_moe_metrics_reset(&m);
        m.topk_idx = idx;
        for (size_t i = 0; i < (size_t)T * tmoe_engine_block(e)->cfg.d_model; i++) y[i] = NAN;
        /* the ranks start the MoE step together: host work between steps (poisoning,
         * uploads) differs between ranks and would be billed to the first exchange */
        if (tmoe_engine_begin(e, x, T, 1, &err)) die("begin", &err);
        if (tmoe_ep_barrier(g_ep, &err)) die("barrier", &err);
        if (tmoe_engine_moe(e, NULL, &m, &err) || tmoe_engine_output(e, y, &err)) die("moe", &err);
        if (it < 0) continue;
        st[it] = m.step_ms;
        for (int o = 0; o < TMOE_OP_COUNT; o++) ops[(size_t)o * iters + it] = m.op_ms[o];
        a2[it] = NAN;
        if (ep) {
            tmoe_ep_stats s;
            if (tmoe_engine_ep_stats(e, &s, &err)) die("ep stats", &err);
            a2[it] = s.a2a_ms;
            bytes = s.a2a_bytes;
        }
    }
    timing t = {median(st, iters), ep ? median(a2, iters) : NAN, bytes, {0}};
    for (int o = 0; o < TMOE_OP_COUNT; o++) t.op_ms[o] = median(ops + (size_t)o * iters, iters);
    free(ops);
    free(st);
    free(a2);
    return t;
}

static int parse_list(const char *s, int *v, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1) return -1;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

int main(int argc, char **argv) {
    tmoe_error err = {0};
    setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 0);
    if (tmoe_ep_init(&argc, &argv, &g_ep, &err)) die("starting the process group", &err);
    int rank = tmoe_ep_rank(g_ep), N = tmoe_ep_size(g_ep);
    tmoe_block_config bc = tmoe_block_config_default();
    bc.d_model = 4096;
    bc.n_heads = 32;
    bc.d_ff = 14336;
    bc.num_experts = 8;
    bc.top_k = 2;
    bc.group_size = 128;
    bc.act = TMOE_ACT_SWIGLU;
    bc.expert_type = TMOE_ET_FP16;
    bc.seed = 7;
    int tokens[16] = {16, 1024}, nt = 2, iters = 50;
    int overlap_min = tmoe_engine_config_default().ep_overlap_min_copies;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--type") && v) {
            if (tmoe_etype_parse(v, &bc.expert_type)) die("--type: expected fp16, q4 or q2", NULL);
        } else if (!strcmp(a, "--tokens") && v) {
            if ((nt = parse_list(v, tokens, 16)) < 1) die("--tokens: expected N[,N...]", NULL);
        } else if (!strcmp(a, "--overlap-min") && v) {
            overlap_min = atoi(v);
        } else if (!strcmp(a, "--breakdown")) {
            g_breakdown = 1;
            i--;
        } else if (!strcmp(a, "--iters") && v) {
            iters = atoi(v);
        } else if (!strcmp(a, "--d-model") && v) {
            bc.d_model = atoi(v);
        } else if (!strcmp(a, "--d-ff") && v) {
            bc.d_ff = atoi(v);
        } else if (!strcmp(a, "--num-experts") && v) {
            bc.num_experts = atoi(v);
        } else if (!strcmp(a, "--top-k") && v) {
            bc.top_k = atoi(v);
        } else {
            fprintf(stderr,
                    "usage: mpirun -np N bench_ep [--type fp16|q4|q2] [--tokens 16,1024] "
                    "[--iters N] [--overlap-min COPIES] [--d-model N] [--d-ff N] [--num-experts N] "
                    "[--top-k N]\n");
            tmoe_ep_finalize(g_ep);
            return 2;
        }
        i++;
    }
    if (iters < 1) die("--iters: must be positive", NULL);
    int Tmax = 1;
    for (int i = 0; i < nt; i++) Tmax = tokens[i] > Tmax ? tokens[i] : Tmax;
    bc.seq_len = Tmax;
    tmoe_block *blk = NULL;
    if (tmoe_block_create(&bc, &blk, &err)) die("building the block", &err);
    size_t D = (size_t)bc.d_model, k = (size_t)bc.top_k;
    float *x = malloc(sizeof(float) * Tmax * D), *y0 = malloc(sizeof(float) * Tmax * D),
          *y1 = malloc(sizeof(float) * Tmax * D);
    int32_t *i0 = malloc(sizeof(int32_t) * Tmax * k), *i1 = malloc(sizeof(int32_t) * Tmax * k);
    if (!x || !y0 || !y1 || !i0 || !i1) die("out of memory", NULL);
    if (rank == 0)
        printf("| type | tokens/rank | ranks | 1 GPU step ms | EP step ms | overlap | EP "
               "all-to-all ms | "
               "all-to-all GB/s in step | link GB/s (calibrated) | max rel err | top-k same |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|\n");
    int failed = 0;
    for (int ti = 0; ti < nt; ti++) {
        int T = tokens[ti];
        tmoe_rng rng;
        tmoe_rng_seed_stream(&rng, 1000 + (uint64_t)T, (uint64_t)rank);
        for (size_t i = 0; i < (size_t)T * D; i++)
            x[i] = (float)(tmoe_rng_uniform(&rng) * 2.0 - 1.0);

        tmoe_engine_config ec = tmoe_engine_config_default();
        ec.backend = TMOE_BACKEND_CUDA;
        ec.device_id = tmoe_ep_local_rank(g_ep);
        ec.max_tokens = T;
        ec.use_graphs = 0;
        tmoe_engine *one = NULL;
        if (tmoe_engine_create(blk, &ec, &one, &err)) die("single-GPU engine", &err);
        timing t1 = run_engine(one, x, T, iters, y0, i0, 0);
        tmoe_engine_free(one);

        ec.ep = g_ep;
        ec.ep_overlap_min_copies = overlap_min;
        tmoe_engine *epe = NULL;
        if (tmoe_engine_create(blk, &ec, &epe, &err)) die("expert-parallel engine", &err);
        timing t2 = run_engine(epe, x, T, iters, y1, i1, 1);
        tmoe_ep_stats es;
        if (tmoe_engine_ep_stats(epe, &es, &err)) die("ep stats", &err);
        tmoe_engine_free(epe);

        if (g_breakdown) {
            const timing *tt[2] = {&t1, &t2};
            for (int w = 0; w < 2; w++) {
                printf("rank %d T %d %s: step %.4f a2a %.4f |", rank, T, w ? "EP" : "1GPU",
                       tt[w]->step_ms, tt[w]->a2a_ms);
                for (int o = 0; o < TMOE_OP_COUNT; o++)
                    if (!isnan(tt[w]->op_ms[o]))
                        printf(" %s %.4f", tmoe_op_name((tmoe_op)o), tt[w]->op_ms[o]);
                printf("\n");
            }
            fflush(stdout);
        }
        double num = 0.0, den = 0.0, same = 1.0;
        for (size_t i = 0; i < (size_t)T * D; i++) {
            double d = (double)y1[i] - y0[i], m = (double)y0[i] - x[i];
            num += isfinite(d) ? d * d : INFINITY;
            den += m * m;
        }
        for (size_t i = 0; i < (size_t)T * k; i++)
            if (i0[i] != i1[i]) same = 0.0;
        double rel = den > 0.0 ? sqrt(num / den) : (num > 0.0 ? INFINITY : 0.0);
        if (!(rel <= TOL_EP)) rel = isfinite(rel) ? rel : 1e30;
        double s1 = t1.step_ms, s2 = t2.step_ms, a2 = t2.a2a_ms,
               gb = t2.a2a_bytes / (a2 * 1e-3) / 1e9;
        if (tmoe_ep_allreduce_max(g_ep, &rel, &err) || tmoe_ep_allreduce_max(g_ep, &s1, &err) ||
            tmoe_ep_allreduce_max(g_ep, &s2, &err) || tmoe_ep_allreduce_max(g_ep, &a2, &err))
            die("reduce", &err);
        same = -same;
        if (tmoe_ep_allreduce_max(g_ep, &same, &err)) die("reduce", &err); /* min of same */
        same = -same;
        if (tmoe_ep_allreduce_sum(g_ep, &gb, &err)) die("reduce", &err);
        int ok = rel <= TOL_EP && same == 1.0;
        failed |= !ok;
        if (rank == 0)
            printf("| %s | %d | %d | %.4f | %.4f | %s | %.4f | %.1f | %.1f | %.2e | %s |\n",
                   tmoe_etype_name(bc.expert_type), T, N, s1, s2, es.overlapped ? "yes" : "no", a2,
                   gb / N, es.link_gbps, rel, same == 1.0 ? "yes" : "NO");
        fflush(stdout);
    }
    if (rank == 0)
        printf("\ntolerance %.0e on |y_ep - y_1gpu| / |y_1gpu - x| (the MoE part); %s\n", TOL_EP,
               failed ? "FAILED" : "all within tolerance");
    tmoe_block_free(blk);
    free(x);
    free(y0);
    free(y1);
    free(i0);
    free(i1);
    tmoe_ep_finalize(g_ep);
    return failed;
}
