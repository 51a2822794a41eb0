/* thermoe forward: build a block from flags, run it once on random tokens and print a
 * summary of the routing and the time of every op. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "thermoe/backend.h"
#include "thermoe/model.h"

typedef struct forward_opts {
    tmoe_block_config blk;
    tmoe_engine_config eng;
    int tokens;
    int moe_only;
    char *types_list; /* comma list of per-expert types, owned by argv */
    const char *save; /* write the block here after the run, or NULL */
    const char *load; /* build the block from this safetensors file, or NULL */
    tmoe_layout layout;
    int layer;
    unsigned set;        /* SET_* bits: model flags given on the command line */
    uint64_t input_seed; /* --load: seed of the random input tokens */
} forward_opts;

enum {
    SET_DMODEL = 1u << 0,
    SET_HEADS = 1u << 1,
    SET_DFF = 1u << 2,
    SET_E = 1u << 3,
    SET_K = 1u << 4,
    SET_TYPE = 1u << 5,
    SET_GROUP = 1u << 6,
    SET_ACT = 1u << 7,
    SET_RENORM = 1u << 8,
    SET_SEQ = 1u << 9,
    SET_SEED = 1u << 10,
};

static void forward_help(const forward_opts *d) {
    printf("usage: thermoe forward [flags]\n\n"
           "Build a transformer block (attention + MoE FFN) with random weights from --seed,\n"
           "run it once on random tokens and print the routing and the time of every op.\n\n"
           "model:\n"
           "  --d-model N        hidden size (default %d)\n"
           "  --n-heads N        attention heads, must divide d-model (default %d)\n"
           "  --d-ff N           expert hidden size (default %d)\n"
           "  --num-experts N    experts E, 1..%d (default %d)\n"
           "  --top-k N          experts per token, 1..min(E, %d) (default %d)\n"
           "  --expert-type T    fp16, bf16, q4 or q2; or a comma list with one type per expert\n"
           "                     (default %s)\n"
           "  --group-size G     quantization group along the input dim (default %d)\n"
           "  --act A            relu or swiglu (default %s)\n"
           "  --no-renorm        combine weights = full softmax at the chosen experts\n"
           "                     (default: renormalised over the chosen experts)\n"
           "  --seq-len N        tokens per sequence; attention is causal within one (default %d)\n"
           "  --seed N           weights and inputs are a function of the seed (default %llu)\n"
           "weights:\n"
           "  --load FILE        build the block from a safetensors file instead of the seed;\n"
           "                     a thermoe file carries its config (model flags that differ\n"
           "                     from it are an error; --seed then seeds only the inputs)\n"
           "  --layout L         auto, thermoe or mixtral (default auto; docs/safetensors.md)\n"
           "  --layer N          mixtral layout: which model.layers.N to load (default 0)\n"
           "  --save FILE        write the block as safetensors (thermoe layout) after the run\n"
           "run:\n"
           "  --tokens N         tokens in the batch: sequences of seq-len tokens, the last may\n"
           "                     be shorter (default: seq-len)\n"
           "  --moe-only         run the MoE layer alone, no attention\n"
           "  --backend B        auto, cpu or cuda (default %s)\n"
           "  --impl I           quantized experts: fused or unfused (default %s)\n"
           "  -v, --verbose      more messages (repeat for debug)\n"
           "  -h, --help         this text\n",
           d->blk.d_model, d->blk.n_heads, d->blk.d_ff, TMOE_MAX_EXPERTS, d->blk.num_experts,
           TMOE_MAX_TOPK, d->blk.top_k, tmoe_etype_name(d->blk.expert_type), d->blk.group_size,
           tmoe_act_name(d->blk.act), d->blk.seq_len, (unsigned long long)d->blk.seed,
           tmoe_backend_kind_name(d->eng.backend), tmoe_impl_name(d->eng.impl));
}

/* A model flag given on the command line must agree with the file's value. */
static int conflict(const forward_opts *o, unsigned bit, const char *flag, long long given,
                    long long in_file) {
    if (!(o->set & bit) || given == in_file) return 0;
    return cli_fail("forward", "--%s %lld conflicts with %s, which has %lld (drop the flag)", flag,
                    given, o->load, in_file);
}

/* --load: take the config from the file (thermoe layout) or the tensor shapes (mixtral
 * layout, where the flags give the rest); flags that disagree with the file are an error. */
static int load_config(forward_opts *o, tmoe_etype *types) {
    tmoe_block_config fc = o->blk;
    tmoe_etype ftypes[TMOE_MAX_EXPERTS];
    tmoe_error err = {0};
    tmoe_layout found;
    if (tmoe_block_file_config(o->load, o->layout, o->layer, &fc, ftypes, &found, &err))
        return cli_fail_err("forward", &err);
    o->layout = found;
    if (conflict(o, SET_DMODEL, "d-model", o->blk.d_model, fc.d_model) ||
        conflict(o, SET_DFF, "d-ff", o->blk.d_ff, fc.d_ff) ||
        conflict(o, SET_E, "num-experts", o->blk.num_experts, fc.num_experts))
        return 1;
    if ((o->set & SET_ACT) && o->blk.act != fc.act)
        return cli_fail("forward", "--act %s conflicts with %s, which has %s (drop the flag)",
                        tmoe_act_name(o->blk.act), o->load, tmoe_act_name(fc.act));
    if (found == TMOE_LAYOUT_THERMOE &&
        (conflict(o, SET_HEADS, "n-heads", o->blk.n_heads, fc.n_heads) ||
         conflict(o, SET_K, "top-k", o->blk.top_k, fc.top_k) ||
         conflict(o, SET_GROUP, "group-size", o->blk.group_size, fc.group_size) ||
         conflict(o, SET_SEQ, "seq-len", o->blk.seq_len, fc.seq_len) ||
         conflict(o, SET_RENORM, "no-renorm", !o->blk.renormalize, !fc.renormalize)))
        return 1;
    o->input_seed = o->set & SET_SEED ? o->blk.seed : fc.seed;
    o->blk = fc; /* keeps the file's seed, so a --save records where the weights came from */
    if (found == TMOE_LAYOUT_THERMOE) {
        memcpy(types, ftypes, sizeof(tmoe_etype) * (size_t)fc.num_experts);
        o->blk.expert_types = types;
        if (o->types_list) {
            tmoe_block_config tc = o->blk;
            tmoe_etype given[TMOE_MAX_EXPERTS];
            if (cli_expert_types("forward", o->types_list, &tc, given)) return 2;
            for (int e = 0; e < fc.num_experts; e++) {
                tmoe_etype g = tc.expert_types ? given[e] : tc.expert_type;
                if (g != types[e])
                    return cli_fail("forward",
                                    "--expert-type: expert %d is %s in %s, not %s "
                                    "(drop the flag)",
                                    e, tmoe_etype_name(types[e]), o->load, tmoe_etype_name(g));
            }
        }
    } else if (o->types_list && cli_expert_types("forward", o->types_list, &o->blk, types)) {
        return 2;
    }
    return 0;
}

int cmd_forward(int argc, char **argv) {
    forward_opts o = {.blk = tmoe_block_config_default(), .eng = tmoe_engine_config_default()};
    o.tokens = -1;
    static const struct option longopts[] = {
        CLI_SHAPE_OPTIONS,
        {"expert-type", required_argument, 0, 't'},
        {"no-renorm", no_argument, 0, 'R'},
        {"seed", required_argument, 0, 's'},
        {"tokens", required_argument, 0, 'T'},
        {"moe-only", no_argument, 0, 'M'},
        {"backend", required_argument, 0, 'b'},
        {"impl", required_argument, 0, 'i'},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {"save", required_argument, 0, 'S'},
        {"load", required_argument, 0, 'l'},
        {"layout", required_argument, 0, 'Y'},
        {"layer", required_argument, 0, 'y'},
        {0, 0, 0, 0},
    };
    long v;
    int verbosity = 0;
    optind = 1;
    opterr = 1;
    for (int c; (c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1;) {
        /* model shape flags (shared with run, profile, op); remember which were given */
        static const unsigned shape_set[CLI_SHAPE_END - CLI_SHAPE_BASE] = {
            [CLI_D_MODEL - CLI_SHAPE_BASE] = SET_DMODEL, [CLI_N_HEADS - CLI_SHAPE_BASE] = SET_HEADS,
            [CLI_D_FF - CLI_SHAPE_BASE] = SET_DFF,       [CLI_NUM_EXPERTS - CLI_SHAPE_BASE] = SET_E,
            [CLI_TOP_K - CLI_SHAPE_BASE] = SET_K,        [CLI_GROUP - CLI_SHAPE_BASE] = SET_GROUP,
            [CLI_ACT - CLI_SHAPE_BASE] = SET_ACT,        [CLI_SEQ_LEN - CLI_SHAPE_BASE] = SET_SEQ,
        };
        int sh = cli_shape_flag("forward", c, optarg, &o.blk);
        if (sh == 1) return 2;
        if (sh == 0) {
            o.set |= shape_set[c - CLI_SHAPE_BASE];
            continue;
        }
        switch (c) {
        case 't':
            o.types_list = optarg;
            o.set |= SET_TYPE;
            break;
        case 'S': o.save = optarg; break;
        case 'l': o.load = optarg; break;
        case 'Y':
            if (tmoe_layout_parse(optarg, &o.layout))
                return cli_usage_fail(
                    "forward", "--layout: unknown layout '%s' (expected auto, thermoe or mixtral)",
                    optarg);
            break;
        case 'y':
            if (cli_int("forward", "layer", optarg, 0, 1 << 20, &v)) return 2;
            o.layer = (int)v;
            break;
        case 'R':
            o.blk.renormalize = 0;
            o.set |= SET_RENORM;
            break;
        case 's':
            if (cli_u64("forward", "seed", optarg, &o.blk.seed)) return 2;
            o.set |= SET_SEED;
            break;
        case 'T':
            if (cli_int("forward", "tokens", optarg, 1, 1 << 20, &v)) return 2;
            o.tokens = (int)v;
            break;
        case 'M': o.moe_only = 1; break;
        case 'b':
            if (cli_backend_flag("forward", optarg, &o.eng.backend)) return 2;
            break;
        case 'i':
            if (tmoe_impl_parse(optarg, &o.eng.impl))
                return cli_usage_fail(
                    "forward", "--impl: unknown impl '%s' (expected fused or unfused)", optarg);
            break;
        case 'v': verbosity++; break;
        case 'h': forward_help(&o); return 0;
        default: return cli_usage_error("forward");
        }
    }
    if (optind < argc) return cli_usage_fail("forward", "unexpected argument '%s'", argv[optind]);
    if (!o.load && (o.layout != TMOE_LAYOUT_AUTO || o.layer != 0))
        return cli_usage_fail("forward",
                              "--layout and --layer apply to --load FILE, which is missing");
    cli_log_init(verbosity);
    tmoe_etype types[TMOE_MAX_EXPERTS];
    int lc = o.load ? load_config(&o, types) : 0;
    if (lc)
        return lc; /* 2: a bad --expert-type list; 1: the file, or flags that disagree with it */
    if (!o.load && o.types_list && cli_expert_types("forward", o.types_list, &o.blk, types))
        return 2;
    uint64_t input_seed = o.load ? o.input_seed : o.blk.seed;
    if (o.tokens < 0) o.tokens = o.blk.seq_len;

    tmoe_error err = {0};
    /* --save: refuse a device, FIFO or directory now, not after the run */
    if (o.save && tmoe_file_check_writable(o.save, &err)) return cli_fail_err("forward", &err);
    tmoe_block *blk = NULL;
    tmoe_engine *eng = NULL;
    float *x = NULL, *y = NULL;
    int32_t *idx = NULL;
    float *w = NULL;
    int rc = 1;
    int64_t t_build = tmoe_now_ns();
    if (o.load ? tmoe_block_load(o.load, o.layout, o.layer, &o.blk, &blk, &err)
               : tmoe_block_create(&o.blk, &blk, &err)) {
        cli_fail_err("forward", &err);
        goto done;
    }
    double build_ms = (double)(tmoe_now_ns() - t_build) / 1e6;
    o.eng.max_tokens = o.tokens;
    if (tmoe_engine_create(blk, &o.eng, &eng, &err)) {
        cli_fail_err("forward", &err);
        goto done;
    }
    int T = o.tokens, D = o.blk.d_model, E = o.blk.num_experts, k = o.blk.top_k;
    x = tmoe_malloc(sizeof(float) * (size_t)T * D, &err);
    y = tmoe_malloc(sizeof(float) * (size_t)T * D, &err);
    idx = tmoe_malloc(sizeof(int32_t) * (size_t)T * k, &err);
    w = tmoe_malloc(sizeof(float) * (size_t)T * k, &err);
    if (!x || !y || !idx || !w) {
        cli_fail_err("forward", &err);
        goto done;
    }
    tmoe_rng rng;
    tmoe_rng_seed_stream(&rng, input_seed, 7);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] = tmoe_rng_uniform_sym(&rng, 1.0f);
    tmoe_moe_metrics m = {.topk_idx = idx, .topk_w = w};
    int64_t t0 = tmoe_now_ns();
    if (tmoe_engine_forward(eng, x, T, o.moe_only, NULL, y, &m, &err)) {
        cli_fail_err("forward", &err);
        goto done;
    }
    double fwd_ms = (double)(tmoe_now_ns() - t0) / 1e6;

    size_t wbytes = 0;
    for (int e = 0; e < E; e++) wbytes += tmoe_expert_weight_bytes(&blk->moe.experts[e]);
    printf("thermoe forward: backend %s, %s%s\n", tmoe_engine_backend_name(eng),
           o.moe_only ? "MoE layer only" : "attention + MoE block",
           o.blk.expert_types ? ", mixed expert types" : "");
    printf(
        "shape: d_model %d, heads %d, d_ff %d, experts %d, top-%d, act %s, group %d, %d tokens\n",
        D, o.blk.n_heads, o.blk.d_ff, E, k, tmoe_act_name(o.blk.act), o.blk.group_size, T);
    printf("expert weights: %.2f MB in all; build %.1f ms\n\n", (double)wbytes / 1e6, build_ms);
    printf("routing (tokens per expert, CPU-clock time per expert):\n");
    printf("  %-7s %-5s %-8s %s\n", "expert", "type", "tokens", "ms");
    for (int e = 0; e < E; e++)
        printf("  %-7d %-5s %-8d %.3f\n", e, tmoe_etype_name(blk->types[e]), m.tokens_per_expert[e],
               m.expert_ms[e]);
    int used = 0, maxload = 0;
    for (int e = 0; e < E; e++) {
        used += m.tokens_per_expert[e] > 0;
        if (m.tokens_per_expert[e] > maxload) maxload = m.tokens_per_expert[e];
    }
    printf("  %d of %d experts used; max/mean load %.2f\n\n", used, E,
           (double)maxload / ((double)T * k / E));
    printf("time per op (ms):\n");
    for (int op = 0; op < TMOE_OP_COUNT; op++)
        if (!isnan(m.op_ms[op])) printf("  %-15s %.3f\n", tmoe_op_name((tmoe_op)op), m.op_ms[op]);
    double sum = 0.0;
    for (size_t i = 0; i < (size_t)T * D; i++) sum += fabs(y[i]);
    printf("\nforward %.2f ms (MoE step %.2f ms); output mean |y| %.6f\n", fwd_ms, m.step_ms,
           sum / ((double)T * D));
    if (o.save) {
        if (tmoe_block_save(blk, o.save, &err)) {
            cli_fail_err("forward", &err);
            goto done;
        }
        printf("saved the block to %s\n", o.save);
    }
    rc = 0;
done:
    free(x);
    free(y);
    free(idx);
    free(w);
    tmoe_engine_free(eng);
    tmoe_block_free(blk);
    return rc;
}
