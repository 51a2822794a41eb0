/* thermoe eval: perplexity of a token file under a real MoE LM (DESIGN.md "Scoring text"),
 * with a 95% confidence interval over windows, the throughput and, on a GPU, the board energy
 * per token from NVML. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_lm.h"
#include "thermoe/exp.h"
#include "thermoe/telemetry.h"

typedef struct eval_opts {
    cli_lm_opts lm;
    const char *tokens;
    int seq_len;     /* 0 = min(512, max_position_embeddings) */
    int batch;       /* windows per forward */
    int max_windows; /* 0 = all */
    tmoe_route_strategy strategy;
    const char *cost_model;
    int json;
    int energy;              /* EV_ENERGY_*: --telemetry */
    const char *windows_csv; /* --windows-csv: each window's NLL, for paired comparisons */
} eval_opts;

/* --telemetry: auto measures the GPU's energy with NVML when the decoder runs on CUDA and
 * NVML answers (else no energy, said as such); nvml insists; none never measures. The
 * simulated GPU has no part here: eval's work is real, on the CPU or the GPU. */
enum { EV_ENERGY_AUTO, EV_ENERGY_NVML, EV_ENERGY_NONE };

enum {
    O_TOKENS = 3000,
    O_SEQ,
    O_BATCH,
    O_MAXWIN,
    O_STRATEGY,
    O_COST,
    O_JSON,
    O_TELEMETRY,
    O_WINCSV
};

static void eval_help(const eval_opts *d) {
    printf(
        "usage: thermoe eval --model DIR --tokens FILE [flags]\n\n"
        "Score a token file (tools/tokenize.py writes one): cut the ids into windows of\n"
        "--seq-len (a final partial window is dropped), predict every token after the first\n"
        "of each window from the ones before it, and print nll_mean, perplexity = exp(nll_mean)\n"
        "with its 95%% confidence interval over windows, bits per byte (when the file knows\n"
        "its text's bytes) and tokens/s.\n\n");
    cli_lm_help(&d->lm);
    printf("scoring:\n"
           "  --tokens FILE      token file (required)\n"
           "  --seq-len N        window length (default min(512, max_position_embeddings))\n"
           "  --batch N          windows run together, each in its own KV-cache slot (default %d)\n"
           "  --max-windows N    score only the first N windows (default 0 = all)\n"
           "  --windows-csv F    write each window's NLL to F (window,tokens,nll_mean): two\n"
           "                     runs on the same tokens compare window by window\n"
           "                     (bench/eval_paired.py)\n"
           "  --routing-strategy S  baseline, kernel_aware_ttha, hierarchical_adaptive,\n"
           "                     predictive_thermal or multi_gpu_aware: selection biases per MoE\n"
           "                     layer from the cost model (no hardware state on the CPU, no\n"
           "                     adapter updates); or a comparison at its default setting:\n"
           "                     topk_minus_one, top_p (0.9), expert_prune (E/4 experts, the\n"
           "                     first batch's least used) or capacity (factor 1, drop)\n"
           "                     (docs/strategies.md) (default %s)\n"
           "  --kernel-cost-model-json F  cost model for the strategies (default %s)\n"
           "  --telemetry S      energy of the scoring: auto (NVML when the decoder runs on\n"
           "                     CUDA and NVML answers, else none), nvml (required: fail\n"
           "                     without it), none (default auto). The energy is GPU 0's board\n"
           "                     energy over the scoring loop (NVML's counter, else its power\n"
           "                     integrated), per token run through the model\n"
           "  --json             print one JSON object instead of text\n"
           "  -v, --verbose      more messages (repeat for debug)\n"
           "  -h, --help         this text\n",
           d->batch, tmoe_route_strategy_name(d->strategy), tmoe_run_default_cost_model());
}

static int parse(int argc, char **argv, eval_opts *o, int *verbosity) {
    static const struct option longopts[] = {
        CLI_LM_OPTIONS,
        {"tokens", required_argument, 0, O_TOKENS},
        {"seq-len", required_argument, 0, O_SEQ},
        {"batch", required_argument, 0, O_BATCH},
        {"max-windows", required_argument, 0, O_MAXWIN},
        {"routing-strategy", required_argument, 0, O_STRATEGY},
        {"kernel-cost-model-json", required_argument, 0, O_COST},
        {"json", no_argument, 0, O_JSON},
        {"telemetry", required_argument, 0, O_TELEMETRY},
        {"windows-csv", required_argument, 0, O_WINCSV},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1;) {
        long v;
        int r = cli_lm_flag("eval", c, optarg, &o->lm);
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        switch (c) {
        case O_TOKENS: o->tokens = optarg; break;
        case O_SEQ:
            if (cli_int("eval", "seq-len", optarg, 2, 1 << 24, &v)) return 2;
            o->seq_len = (int)v;
            break;
        case O_BATCH:
            if (cli_int("eval", "batch", optarg, 1, 4096, &v)) return 2;
            o->batch = (int)v;
            break;
        case O_MAXWIN:
            if (cli_int("eval", "max-windows", optarg, 0, 1L << 30, &v)) return 2;
            o->max_windows = (int)v;
            break;
        case O_STRATEGY:
            if (tmoe_route_strategy_parse(optarg, &o->strategy))
                return cli_usage_fail("eval", "--routing-strategy: unknown strategy '%s'", optarg);
            break;
        case O_COST: o->cost_model = optarg; break;
        case O_JSON: o->json = 1; break;
        case O_WINCSV: o->windows_csv = optarg; break;
        case O_TELEMETRY:
            if (!strcmp(optarg, "auto"))
                o->energy = EV_ENERGY_AUTO;
            else if (!strcmp(optarg, "nvml"))
                o->energy = EV_ENERGY_NVML;
            else if (!strcmp(optarg, "none"))
                o->energy = EV_ENERGY_NONE;
            else
                return cli_usage_fail("eval",
                                      "--telemetry: '%s' is not auto, nvml or none (eval "
                                      "measures real work; there is no simulated GPU here)",
                                      optarg);
            break;
        case 'v': (*verbosity)++; break;
        case 'h': eval_help(o); return -1;
        default: return cli_usage_error("eval");
        }
    }
    if (optind < argc) return cli_usage_fail("eval", "unexpected argument '%s'", argv[optind]);
    if (!o->lm.model)
        return cli_usage_fail("eval", "--model DIR is required (a Hugging Face model directory)");
    if (!o->tokens) return cli_usage_fail("eval", "--tokens FILE is required");
    return 0;
}

typedef struct eval_run {
    tmoe_lm *m;
    tmoe_tokens tok;
    cli_lm_exec x;
    cli_lm_route *route;
    float *logits;
    double *nll;
    FILE *wcsv;          /* --windows-csv */
    tmoe_telemetry *tel; /* NVML, when the energy is measured */
    tmoe_monitor *mon;
    tmoe_energy energy; /* method NONE: not measured (why in energy_why) */
    const char *energy_why;
} eval_run;

static void eval_free(eval_run *e) {
    if (e->wcsv) fclose(e->wcsv);
    tmoe_monitor_free(e->mon);
    tmoe_telemetry_free(e->tel);
    free(e->logits);
    free(e->nll);
    cli_lm_route_free(e->route);
    cli_lm_exec_free(&e->x);
    tmoe_tokens_free(&e->tok);
    tmoe_lm_free(e->m);
}

/* Open NVML and its sampling thread when the energy is to be measured (see --telemetry);
 * TMOE_OK with e->mon NULL and e->energy_why set when it is not. */
static int energy_start(const eval_opts *o, eval_run *e, tmoe_error *err) {
    e->energy.method = TMOE_ENERGY_NONE;
    e->energy.joules = NAN;
    if (o->energy == EV_ENERGY_NONE) {
        e->energy_why = "--telemetry none";
        return TMOE_OK;
    }
    if (e->x.kind != TMOE_BACKEND_CUDA) {
        e->energy_why = "the decoder runs on the CPU";
        if (o->energy == EV_ENERGY_NVML)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "--telemetry nvml measures the GPU, but the decoder runs on the "
                               "CPU (--backend)");
        return TMOE_OK;
    }
    tmoe_telemetry_config tc = tmoe_telemetry_config_default();
    tc.kind = TMOE_TELEMETRY_NVML;
    tmoe_error sub = {0};
    int rc = tmoe_telemetry_open(&tc, &e->tel, &sub);
    if (rc) {
        if (o->energy == EV_ENERGY_NVML) {
            *err = sub;
            return rc;
        }
        tmoe_log(TMOE_LOG_WARN, "eval: no energy: NVML: %s", sub.msg);
        e->energy_why = "NVML did not answer";
        return TMOE_OK;
    }
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.mode = TMOE_MONITOR_THREAD;
    mc.energy_period_ns = 100 * 1000000LL; /* a measurement: the counter at its own pace */
    return tmoe_monitor_create(e->tel, &mc, &e->mon, err);
}

/* Run windows [w0, w0 + nb) together and add their NLL to the score. */
static int score_windows(eval_run *e, int L, int64_t w0, int nb, tmoe_lm_score *s,
                         tmoe_error *err) {
    int32_t slots[4096], n_new[4096];
    for (int i = 0; i < nb; i++) {
        int rc = cli_lm_exec_open(&e->x, &slots[i], err);
        if (rc) return rc;
        n_new[i] = L;
    }
    const uint32_t *ids = e->tok.ids + w0 * L;
    tmoe_lm_batch b = {nb, slots, n_new, ids, 1};
    int rc = cli_lm_exec_forward(&e->x, &b, e->logits, err);
    int V = e->m->cfg.vocab_size;
    for (int i = 0; i < nb; i++) {
        if (rc == TMOE_OK) {
            tmoe_lm_nll(e->logits + (size_t)i * L * V, ids + (size_t)i * L + 1, L - 1, V, e->nll);
            tmoe_lm_score_add_window(s, e->nll, L - 1);
            if (e->wcsv) {
                double sum = 0.0;
                for (int j = 0; j < L - 1; j++) sum += e->nll[j];
                fprintf(e->wcsv, "%lld,%d,%.17g\n", (long long)(w0 + i), L - 1, sum / (L - 1));
            }
        }
        cli_lm_exec_close(&e->x, slots[i]);
    }
    return rc;
}

/* "null" or the number, for JSON: unknown is never 0 */
static void json_num(const char *key, double v, const char *sep) {
    if (isnan(v))
        printf("\"%s\": null%s", key, sep);
    else
        printf("\"%s\": %.10g%s", key, v, sep);
}

static void print_result(const eval_opts *o, const eval_run *e, const tmoe_lm_score *s, int L,
                         double secs) {
    double nll, ppl, lo, hi;
    tmoe_lm_score_finish(s, &nll, &ppl, &lo, &hi);
    const double ntok = (double)s->windows * L, tps = ntok / secs;
    double bpb =
        e->tok.text_bytes > 0 ? nll / log(2.0) * (double)e->tok.n / (double)e->tok.text_bytes : NAN;
    char tbuf[8 * TMOE_MAX_EXPERTS];
    const char *et = cli_lm_type_text(e->m, tbuf, sizeof tbuf);
    const int measured = e->energy.method != TMOE_ENERGY_NONE;
    const double ej = measured ? e->energy.joules : NAN, mj_tok = ej / ntok * 1e3,
                 watts = measured ? ej / e->energy.seconds : NAN;
    if (o->json) {
        printf("{\"model\": \"%s\", \"family\": \"%s\", \"backend\": \"%s\", "
               "\"expert_type\": \"%s\", \"routing_strategy\": \"%s\", \"seq_len\": %d, "
               "\"windows\": %lld, \"tokens_scored\": %lld, \"nll_mean\": %.10g, "
               "\"perplexity\": %.10g, ",
               o->lm.model, tmoe_lm_family_name(e->m->cfg.family),
               tmoe_backend_kind_name(e->x.kind), et, tmoe_route_strategy_name(o->strategy), L,
               (long long)s->windows, (long long)s->tokens_scored, nll, ppl);
        if (isnan(lo))
            printf("\"perplexity_ci95\": null, ");
        else
            printf("\"perplexity_ci95\": [%.10g, %.10g], ", lo, hi);
        json_num("bits_per_byte", bpb, ", ");
        printf("\"tokens_per_s\": %.6g, \"seconds\": %.6g, ", tps, secs);
        json_num("energy_j", ej, ", ");
        json_num("energy_per_token_mj", mj_tok, ", ");
        json_num("avg_power_w", watts, ", ");
        if (measured)
            printf("\"energy_source\": \"nvml\", \"energy_method\": \"%s\"}\n",
                   tmoe_energy_method_name(e->energy.method));
        else
            printf("\"energy_source\": null, \"energy_method\": null, "
                   "\"energy_not_measured\": \"%s\"}\n",
                   e->energy_why ? e->energy_why : "unknown");
        return;
    }
    printf("thermoe eval: %s (%s), backend %s, experts %s, routing %s\n", o->lm.model,
           tmoe_lm_family_name(e->m->cfg.family), tmoe_backend_kind_name(e->x.kind), et,
           tmoe_route_strategy_name(o->strategy));
    printf("windows      %lld of %d tokens; %lld tokens scored\n", (long long)s->windows, L,
           (long long)s->tokens_scored);
    printf("nll_mean     %.6f nats/token\n", nll);
    if (isnan(lo))
        printf("perplexity   %.4f (95%% CI needs at least 2 windows)\n", ppl);
    else
        printf("perplexity   %.4f (95%% CI over windows %.4f .. %.4f)\n", ppl, lo, hi);
    if (!isnan(bpb)) printf("bits/byte    %.4f\n", bpb);
    printf("speed        %.1f tokens/s (%.2f s)\n", tps, secs);
    if (measured)
        printf("energy       %.2f J over %.2f s: %.4f mJ/token, %.1f W average (GPU 0 board, "
               "nvml, %s)\n",
               ej, e->energy.seconds, mj_tok, watts, tmoe_energy_method_name(e->energy.method));
    else
        printf("energy       not measured (%s)\n", e->energy_why ? e->energy_why : "unknown");
}

int cmd_eval(int argc, char **argv) {
    eval_opts o = {.lm = cli_lm_opts_default(),
                   .batch = 1,
                   .strategy = TMOE_ROUTE_BASELINE,
                   .cost_model = tmoe_run_default_cost_model()};
    int verbosity = 0, pr = parse(argc, argv, &o, &verbosity);
    if (pr) return pr < 0 ? 0 : pr;
    cli_log_init(verbosity);
    eval_run e = {0};
    tmoe_error err = {0};
    int rc = 1;
    if (tmoe_tokens_read(o.tokens, &e.tok, &err)) return cli_fail_err("eval", &err);
    if ((rc = cli_lm_load("eval", &o.lm, &e.m)) != 0) goto done;
    rc = 1;
    const tmoe_lm_config *c = &e.m->cfg;
    for (int64_t i = 0; i < e.tok.n; i++)
        if (e.tok.ids[i] >= (uint32_t)c->vocab_size) {
            cli_fail("eval",
                     "%s: token %lld has id %u, outside the model's vocabulary of %d "
                     "(tokenized for another model?)",
                     o.tokens, (long long)i, e.tok.ids[i], c->vocab_size);
            goto done;
        }
    int L = o.seq_len ? o.seq_len : (c->max_positions < 512 ? c->max_positions : 512);
    if (L > c->max_positions) {
        cli_fail("eval", "--seq-len %d is beyond the model's max_position_embeddings %d", L,
                 c->max_positions);
        goto done;
    }
    int64_t windows = e.tok.n / L;
    if (o.max_windows && windows > o.max_windows) windows = o.max_windows;
    if (windows < 1) {
        cli_fail("eval", "%s: %lld tokens, fewer than one window of --seq-len %d", o.tokens,
                 (long long)e.tok.n, L);
        goto done;
    }
    int nb = o.batch < windows ? o.batch : (int)windows;
    tmoe_lm_route_fn route = NULL;
    if (o.strategy != TMOE_ROUTE_BASELINE) {
        if (cli_lm_route_create(e.m, o.strategy, o.cost_model, o.lm.impl, nb * L, &e.route, &err)) {
            cli_fail_err("eval", &err);
            goto done;
        }
        route = cli_lm_route_fn;
    }
    e.logits = tmoe_malloc(sizeof(float) * (size_t)nb * L * c->vocab_size, &err);
    e.nll = tmoe_malloc(sizeof(double) * (size_t)L, &err);
    if (!e.logits || !e.nll ||
        cli_lm_exec_create(e.m, &o.lm, nb * L, nb, L, route, e.route, &e.x, &err)) {
        cli_fail_err("eval", &err);
        goto done;
    }
    if (o.windows_csv) {
        e.wcsv = fopen(o.windows_csv, "w");
        if (!e.wcsv) {
            cli_fail("eval", "--windows-csv %s: cannot write: %s", o.windows_csv, strerror(errno));
            goto done;
        }
        fprintf(e.wcsv, "window,tokens,nll_mean\n");
    }
    if (energy_start(&o, &e, &err)) {
        cli_fail_err("eval", &err);
        goto done;
    }
    tmoe_lm_score s = {0};
    int64_t etok = e.mon ? tmoe_monitor_energy_begin(e.mon, 0) : -1;
    int64_t t0 = tmoe_now_ns();
    for (int64_t w = 0; w < windows; w += nb) {
        int n = windows - w < nb ? (int)(windows - w) : nb;
        if (score_windows(&e, L, w, n, &s, &err)) {
            cli_fail_err("eval", &err);
            goto done;
        }
        tmoe_log(TMOE_LOG_INFO, "windows %lld..%lld scored", (long long)w, (long long)(w + n - 1));
    }
    double secs = (double)(tmoe_now_ns() - t0) / 1e9;
    if (e.wcsv) {
        int bad = ferror(e.wcsv) | fclose(e.wcsv);
        e.wcsv = NULL;
        if (bad) {
            cli_fail("eval", "--windows-csv %s: write failed", o.windows_csv);
            goto done;
        }
    }
    if (etok >= 0 && tmoe_monitor_energy_end(e.mon, etok, &e.energy, &err)) {
        cli_fail_err("eval", &err);
        goto done;
    }
    if (e.mon && e.energy.method == TMOE_ENERGY_NONE)
        e.energy_why = "no NVML sample inside the scoring (too short)";
    print_result(&o, &e, &s, L, secs);
    rc = 0;
done:
    eval_free(&e);
    return rc;
}
