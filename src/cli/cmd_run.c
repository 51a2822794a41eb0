/* thermoe run: sweep routing strategies x workloads and log every batch (the main job).
 * Flags may also come from a config file (--config FILE, JSON or INI, keys = long flag
 * names); flags on the command line override it. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "thermoe/analyze.h"
#include "thermoe/ep.h"
#include "thermoe/exp.h"

enum {
    O_STRATEGY = 256,
    O_EXPERT_TYPE,
    O_BATCH,
    O_SAMPLES,
    O_EPOCHS,
    O_WORKLOADS,
    O_PROFILE_DIR,
    O_LOG_FILE,
    O_OUT,
    O_DEVICE,
    O_COST,
    O_TELEMETRY,
    O_BACKEND,
    O_IMPL,
    O_SEED,
    O_WARMUP,
    O_TRACE,
    O_RATE,
    O_REPEATS,
    O_COOLDOWN,
    O_STEADY,
    O_RESUME,
    O_NO_ANALYZE,
    O_CONFIG,
    O_MOE_ONLY,
    O_EP,
    O_SIM_DEV,
    O_LB,
    O_FID_EVERY,
    O_ENERGY_CTR,
    O_WARM,
    O_QUIET,
    O_HELP,
    O_VERBOSE,
    O_FIRST_REPEAT,
    O_PLACEMENT,
    O_PLACEMENT_FILE,
    O_MODEL,
    O_TOKENS,
    O_EXPERT_SHAPE,
    O_LM_STEPS,
    O_ACT8,
    O_EXPERT_COPY
};

static const struct option longopts[] = {
    {"routing-strategy", required_argument, 0, O_STRATEGY},
    CLI_ROUTER_OPTIONS,
    {"expert-type", required_argument, 0, O_EXPERT_TYPE},
    {"expert-copy", required_argument, 0, O_EXPERT_COPY},
    {"batch-size", required_argument, 0, O_BATCH},
    {"num-samples-per-workload", required_argument, 0, O_SAMPLES},
    {"epochs", required_argument, 0, O_EPOCHS},
    {"workloads", required_argument, 0, O_WORKLOADS},
    {"profile-dir", required_argument, 0, O_PROFILE_DIR},
    {"log-file", required_argument, 0, O_LOG_FILE},
    {"out", required_argument, 0, O_OUT},
    {"device-id", required_argument, 0, O_DEVICE},
    {"kernel-cost-model-json", required_argument, 0, O_COST},
    {"telemetry", required_argument, 0, O_TELEMETRY},
    {"energy-counter-ms", required_argument, 0, O_ENERGY_CTR},
    {"backend", required_argument, 0, O_BACKEND},
    {"impl", required_argument, 0, O_IMPL},
    {"seed", required_argument, 0, O_SEED},
    {"warmup-batches", required_argument, 0, O_WARMUP},
    {"ttha-warm-start", required_argument, 0, O_WARM},
    {"load-balancer", no_argument, 0, O_LB},
    {"trace-batches", required_argument, 0, O_TRACE},
    {"arrival-rate", required_argument, 0, O_RATE},
    {"repeats", required_argument, 0, O_REPEATS},
    {"first-repeat", required_argument, 0, O_FIRST_REPEAT},
    {"cooldown", required_argument, 0, O_COOLDOWN},
    {"warmup-steady", required_argument, 0, O_STEADY},
    {"fidelity-every", required_argument, 0, O_FID_EVERY},
    {"sim-devices", required_argument, 0, O_SIM_DEV},
    {"placement", required_argument, 0, O_PLACEMENT},
    {"placement-file", required_argument, 0, O_PLACEMENT_FILE},
    {"moe-only", no_argument, 0, O_MOE_ONLY},
    {"model", required_argument, 0, O_MODEL},
    {"tokens", required_argument, 0, O_TOKENS},
    {"expert-shape", required_argument, 0, O_EXPERT_SHAPE},
    {"lm-steps", required_argument, 0, O_LM_STEPS},
    {"expert-activations", required_argument, 0, O_ACT8},
    {"expert-parallel", no_argument, 0, O_EP},
    {"resume", no_argument, 0, O_RESUME},
    {"no-analyze", no_argument, 0, O_NO_ANALYZE},
    {"config", required_argument, 0, O_CONFIG},
    {"quiet", no_argument, 0, O_QUIET},
    {"verbose", no_argument, 0, O_VERBOSE},
    {"help", no_argument, 0, O_HELP},
    CLI_SHAPE_OPTIONS,
    {0, 0, 0, 0},
};

/* The decoder LM's defaults, chosen so that the default sweep (6 strategies x 5 workloads,
 * a second forward for baseline routing) on the trained default model ends in about a
 * minute on 2 CPU cores with the simulated GPU (docs/harness.md). */
#define LM_SEQ_LEN 32
#define LM_BATCH 4
#define LM_SAMPLES 4

/* What the command line said about the model, for choosing between the LM and the block. */
typedef struct model_flags {
    const char *model;           /* --model, or NULL */
    const char *block_flag;      /* the first block-only flag given, or NULL */
    int seq_len, batch, samples; /* given on the command line */
    int lm_steps;                /* --lm-steps given */
} model_flags;
static model_flags mflags;

static void run_help(const tmoe_run_config *d) {
    const tmoe_router_config *r = &d->router;
    printf(
        "usage: thermoe run [flags]\n\n"
        "Sweep routing strategies x workloads over repeats (order shuffled per repeat), one CSV\n"
        "row per batch, a metadata JSON, Perfetto traces of the first batches, a summary table.\n"
        "With no flags: the six strategies x every workload on the trained default model\n"
        "scoring the committed test split (the random block at a small shape when the model is\n"
        "not there), on the GPU when one answers, else the CPU backend with a simulated H100\n"
        "driven by the measured cost model.\n\n"
        "sweep:\n"
        "  --routing-strategy LIST   comma list or 'all' (default all): baseline, static_optimal,\n"
        "                            kernel_aware_ttha, hierarchical_adaptive, "
        "predictive_thermal,\n"
        "                            multi_gpu_aware; and the comparisons, which 'all' leaves\n"
        "                            out: topk_minus_one, top_p, expert_prune, capacity (the\n"
        "                            decoder LM only; docs/strategies.md \"Comparisons\")\n"
        "  --workloads LIST          comma list or 'all' (default all): standard, "
        "high_complexity,\n"
        "                            small_batch, large_batch, skewed\n"
        "  --repeats N               passes over every combination (default %d)\n"
        "  --first-repeat N          number of the first pass, logged in the repeat column and\n"
        "                            seeding the order and routers (default 0; set by sweeps)\n"
        "  --num-samples-per-workload N  distinct batches per workload (default %d, LM %d)\n"
        "  --epochs N                passes over those batches per combination (default %d)\n"
        "  --warmup-batches N        unlogged batches before each combination (default %d)\n"
        "  --arrival-rate R          open loop: Poisson arrivals, tokens/s (default: closed loop)\n"
        "  --cooldown S              rest up to S s before each combination until the GPU is\n"
        "                            within 1 C of its starting temperature (default %g; 0: none)\n"
        "  --warmup-steady S         before the first combination, baseline load until the 1 s\n"
        "                            power changes < 2%% over 3 s, at most S s (default %g; 0: "
        "none)\n"
        "  --seed N                  weights, inputs, arrivals and routers (default %llu)\n"
        "model:\n"
        "  --model DIR|random        the decoder LM of a Hugging Face checkpoint directory\n"
        "                            (docs/models.md) on windows of real text, or 'random': the\n"
        "                            random block (default: %s when it exists, else random;\n"
        "                            the block-only flags --d-model --n-heads --d-ff\n"
        "                            --num-experts --top-k --act --moe-only --expert-parallel\n"
        "                            select random when --model is not given)\n"
        "  --tokens FILE             the LM's text, a token file (default %s; domains from\n"
        "                            FILE's .domains.tsv beside it, else its two halves)\n"
        "  --expert-shape S          LM: the experts that time and energy belong to: mixtral\n"
        "                            (4096x14336), trained (the checkpoint's) or DxF; the\n"
        "                            simulated GPU bills the cost model, which must be measured\n"
        "                            at S; on a CUDA GPU experts of shape S (random weights)\n"
        "                            run beside the trained ones with the same selections,\n"
        "                            their outputs unused (default mixtral)\n"
        "  --lm-steps prefill|decode LM: a batch is one forward of its windows (prefill), or\n"
        "                            one position of every window a step over the KV cache\n"
        "                            (decode: seq-len steps of batch-size tokens, each routed\n"
        "                            and billed on its own) (default prefill)\n"
        "  --expert-type T           fp16, bf16, q4 or q2; the LM's experts load as T (bf16:\n"
        "                            --backend cpu for a decoder LM) (default %s); or one\n"
        "                            type per expert (q4,q4,fp16,...: the tiers\n"
        "                            hierarchical_adaptive and the cost biases act on; fp16,\n"
        "                            q4, q2): the random block's (--num-experts of them; the\n"
        "                            random block when no --model is given), or with --model\n"
        "                            DIR every MoE layer's, as many as the model has (decoder\n"
        "                            on --backend cpu)\n"
        "  --expert-activations A    LM, q4/q2 experts: fp16 (default) or int8 activations\n"
        "                            (docs/cuda.md \"int8 activations\")\n"
        "  --expert-copy T[:LIST]    LM: the experts in LIST (all, or indices and ranges such\n"
        "                            as 0,3,5-7; default all) also load as T (fp16, q4 or q2),\n"
        "                            and hierarchical_adaptive and kernel_aware_ttha run\n"
        "                            copies in the experts' place under pressure\n"
        "                            (docs/strategies.md \"Lower-precision copies\")\n"
        "                            (default: no copies)\n"
        "  --impl I                  fused or unfused, for q4/q2: every step (default: the\n"
        "                            cost model's measured crossover per step where it was\n"
        "                            measured at the block's shape, else %s)\n"
        "  --d-model N  --n-heads N  --d-ff N  (defaults %d, %d, %d)\n"
        "  --num-experts N  --top-k N  --group-size N  (defaults %d, %d, %d)\n"
        "  --act A                   relu or swiglu (default %s)\n"
        "  --batch-size N            sequences per batch (default %d, LM %d; workloads scale it)\n"
        "  --seq-len N               tokens per sequence, the LM's window (default %d, LM %d)\n"
        "  --moe-only                run the MoE layer alone, without attention\n"
        "hardware:\n"
        "  --backend B               auto, cpu or cuda (default %s)\n"
        "  --device-id N             CUDA device (default %d)\n"
        "  --telemetry S             auto, nvml or sim (default %s)\n"
        "  --energy-counter-ms N     NVML: read the energy counter at most every N ms (default\n"
        "                            %d; a batch window holding two reads takes its energy from\n"
        "                            the counter, else integrates power; 0: every sample)\n"
        "  --sim-devices N           simulated GPUs (default 1)\n"
        "  --placement P             round_robin (expert e on device e mod N) or file (default\n"
        "                            round_robin): where experts live, for the simulated GPUs'\n"
        "                            billing and multi_gpu_aware\n"
        "  --placement-file F        the map for --placement file: one \"expert device\" line\n"
        "                            per expert, '#' comments (implies --placement file)\n"
        "  --expert-parallel         one process per GPU, started with mpirun -np N: each rank\n"
        "                            holds the experts the placement puts on it, tokens move\n"
        "                            over NCCL; rank r writes DIR/rank<r> (cuda backend)\n"
        "  --kernel-cost-model-json F  cost model (default %s)\n"
        "  --profile-dir DIR         directory of a 'thermoe profile' run: its cost_model.json\n"
        "routing:\n"
        "  --load-balancer           add the load balancer to every strategy\n"
        "  --ttha-warm-start FILE    adapter weights saved by an earlier run (ttha_*.bin)\n",
        d->repeats, d->num_samples, LM_SAMPLES, d->epochs, d->warmup_batches, d->cooldown_s,
        d->steady_s, (unsigned long long)d->seed, tmoe_run_default_model(),
        tmoe_run_default_tokens(), tmoe_etype_name(d->block.expert_type), tmoe_impl_name(d->impl),
        d->block.d_model, d->block.n_heads, d->block.d_ff, d->block.num_experts, d->block.top_k,
        d->block.group_size, tmoe_act_name(d->block.act), d->batch_size, LM_BATCH, d->block.seq_len,
        LM_SEQ_LEN, tmoe_backend_kind_name(d->backend), d->device_id,
        tmoe_telemetry_kind_name(d->telemetry), d->energy_counter_ms,
        tmoe_run_default_cost_model());
    cli_router_help(r);
    printf("output:\n"
           "  --out DIR                 run directory (default results/<UTC time>)\n"
           "  --log-file FILE           batches.csv path (default DIR/batches.csv)\n"
           "  --trace-batches N         batches traced per combination (default %d)\n"
           "  --fidelity-every N        output error vs unbiased routing every N batches (default "
           "%d)\n"
           "  --resume                  continue a killed run in --out without duplicating rows\n"
           "  --no-analyze              do not run 'thermoe analyze' on the results\n"
           "  --config FILE             flags from a JSON object or INI file (key = long flag "
           "name)\n"
           "  --quiet, -v/--verbose, -h/--help\n",
           d->trace_batches, d->fidelity_every);
}

static const char *strategy_name(int i) {
    return tmoe_route_strategy_name((tmoe_route_strategy)i);
}
static const char *workload_name(int i) {
    return tmoe_workload_name((tmoe_workload_kind)i);
}

static const struct option *find_opt(const char *name) {
    for (const struct option *o = longopts; o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

/* Config file -> extra argv entries "--key=value" (or "--key"), which are parsed before the
 * command line so that flags override them. Strings are appended to *args (caller frees). */
typedef struct argbuf {
    char **v;
    int n, cap;
} argbuf;

static int push_arg(argbuf *a, const char *key, const char *val) {
    if (a->n + 1 >= a->cap) {
        a->cap = a->cap ? 2 * a->cap : 32;
        char **nv = realloc(a->v, sizeof(char *) * (size_t)a->cap);
        if (!nv) return -1;
        a->v = nv;
    }
    size_t len = strlen(key) + (val ? strlen(val) : 0) + 4;
    char *s = malloc(len);
    if (!s) return -1;
    snprintf(s, len, "--%s%s%s", key, val ? "=" : "", val ? val : "");
    a->v[a->n++] = s;
    return 0;
}

/* Read the config file at path into a's "--key=value" entries. */
static int load_config(const char *path, argbuf *a) {
    tmoe_run_config_key keys[sizeof longopts / sizeof *longopts];
    int nk = 0;
    for (const struct option *o = longopts; o->name; o++)
        keys[nk++] = (tmoe_run_config_key){o->name, o->has_arg != no_argument};
    tmoe_run_config_entry *e = NULL;
    int n = 0;
    tmoe_error err = {0};
    if (tmoe_run_config_read(path, keys, nk, &e, &n, &err))
        return cli_fail("run", "--config: %s", err.msg);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (!strcmp(e[i].key, "config") && e[i].line > 0)
            rc = cli_fail("run", "--config: %s:%d: 'config' cannot appear inside a config file",
                          path, e[i].line);
        else if (!strcmp(e[i].key, "config"))
            rc = cli_fail("run", "--config: %s: 'config' cannot appear inside a config file", path);
        else if (push_arg(a, e[i].key, e[i].value))
            rc = cli_fail("run", "out of memory");
    }
    tmoe_run_config_entries_free(e, n);
    return rc;
}

int cmd_run_flag_arity(const char *name) {
    const struct option *o = find_opt(name);
    if (!o) return -1;
    return o->has_arg == no_argument ? 0 : 1;
}

/* What the run says as it goes: the start (and resume) lines on stdout; on stderr a
 * progress bar redrawn after every batch when stderr is a terminal, else one line per
 * combination. --quiet installs none of it. */
typedef struct progress_printer {
    int bar;   /* 1: stderr is a terminal */
    FILE *out; /* the start and resume lines */
} progress_printer;

static void print_progress(const tmoe_run_progress *p, void *user) {
    const progress_printer *pp = user;
    switch (p->event) {
    case TMOE_RUN_EV_RESUME:
        fprintf(pp->out,
                "resuming %s: %d of %d combinations already complete (%ld rows kept, "
                "%ld dropped)\n",
                p->run_id, p->combos_kept, p->combos, p->rows_kept, p->rows_dropped);
        break;
    case TMOE_RUN_EV_START:
        fprintf(pp->out,
                "thermoe run %s: %d strategies x %d workloads x %d repeats, %d batches "
                "each; backend %s; %s\n",
                p->run_id, p->strategies, p->workloads, p->repeats, p->batches, p->backend,
                p->telemetry);
        if (p->simulated)
            fprintf(pp->out,
                    "simulated GPU: time, energy, power and temperature are a "
                    "simulated H100 driven by the measured cost model %s; values are "
                    "computed on the %s backend\n",
                    p->cost_model, p->backend);
        fflush(pp->out);
        break;
    case TMOE_RUN_EV_BATCH:
        if (!pp->bar) break;
        fprintf(stderr, "\r[%d/%d] r%d %-15s %-21s batch %4d/%-4d ETA %3.0fs  %s %5.0f W %4.1f C ",
                p->combo + 1, p->combos, p->repeat, tmoe_workload_name(p->workload),
                tmoe_route_strategy_name(p->strategy), p->batch, p->batches, p->eta_s, p->source,
                p->power_w, p->temp_c);
        fflush(stderr);
        break;
    case TMOE_RUN_EV_COMBO_DONE:
        if (pp->bar) break;
        fprintf(stderr, "[%d/%d] repeat %d %s %s: %d batches (%s %.0f W, %.1f C; %.0f s elapsed)\n",
                p->combo + 1, p->combos, p->repeat, tmoe_workload_name(p->workload),
                tmoe_route_strategy_name(p->strategy), p->batches, p->source, p->power_w, p->temp_c,
                p->elapsed_s);
        break;
    case TMOE_RUN_EV_END:
        if (pp->bar) fputc('\n', stderr); /* after the bar's last \r line */
        break;
    }
}

#define INT_FLAG(name, lo, hi, dst)                                                                \
    do {                                                                                           \
        if (cli_int("run", name, optarg, lo, hi, &lv)) return 2;                                   \
        dst = (int)lv;                                                                             \
    } while (0)
#define DBL_FLAG(name, lo, hi, dst)                                                                \
    do {                                                                                           \
        if (cli_double("run", name, optarg, lo, hi, &dv)) return 2;                                \
        dst = dv;                                                                                  \
    } while (0)

/* Parse argv into c (argv[0] is skipped, as by getopt). Returns 0, 1 (error), 2 (usage error:
 * an unknown flag or a bad flag value, message printed), or -1 (help). */
static int want_ep;                            /* --expert-parallel */
static tmoe_etype run_types[TMOE_MAX_EXPERTS]; /* --expert-type LIST: one type per expert */

static int parse_args(int argc, char **argv, tmoe_run_config *c, int *verbosity, int *quiet,
                      char **profile_dir) {
    long lv;
    double dv;
    int placement_file_wanted = 0;
    const char *types_list = NULL;
    mflags = (model_flags){0};
    optind = 1;
    opterr = 1;
    for (int o; (o = getopt_long(argc, argv, "hv", longopts, NULL)) != -1;) {
        int sh = cli_shape_flag("run", o, optarg, &c->block);
        if (sh == 1) return 2;
        if (sh == 0) {
            if (o == CLI_SEQ_LEN)
                mflags.seq_len = 1;
            else if (o != CLI_GROUP && !mflags.block_flag)
                for (const struct option *x = longopts; x->name; x++)
                    if (x->val == o) mflags.block_flag = x->name;
            continue;
        }
        int rt = cli_router_flag("run", o, optarg, &c->router);
        if (rt >= 0) {
            if (rt) return 2;
            continue;
        }
        switch (o) {
        case O_STRATEGY:
            if (cli_name_list("run", "routing-strategy", optarg, c->strategies,
                              TMOE_ROUTE_STRATEGY_COUNT, strategy_name))
                return 2;
            if (!strcmp(optarg, "all")) /* the six; the comparisons by name */
                for (int s = TMOE_ROUTE_FIRST_COMPARISON; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
                    c->strategies[s] = 0;
            break;
        case O_WORKLOADS:
            if (cli_name_list("run", "workloads", optarg, c->workloads, TMOE_WL_COUNT,
                              workload_name))
                return 2;
            break;
        case O_EXPERT_TYPE: /* parsed after the loop: a list needs the expert count */
            types_list = optarg;
            break;
        case O_EXPERT_COPY:
            if (cli_expert_copy("run", optarg, &c->copy_type, &c->copy_all, c->copy)) return 2;
            c->copy_given = 1;
            break;
        case O_IMPL:
            if (tmoe_impl_parse(optarg, &c->impl))
                return cli_usage_fail(
                    "run", "--impl: unknown impl '%s' (expected fused or unfused)", optarg);
            c->impl_given = 1;
            break;
        case O_BATCH:
            INT_FLAG("batch-size", 1, 4096, c->batch_size);
            mflags.batch = 1;
            break;
        case O_SAMPLES:
            INT_FLAG("num-samples-per-workload", 1, 1000000, c->num_samples);
            mflags.samples = 1;
            break;
        case O_MODEL: mflags.model = optarg; break;
        case O_TOKENS: c->tokens_path = optarg; break;
        case O_EXPERT_SHAPE: {
            tmoe_error err = {0};
            if (tmoe_expert_shape_parse(optarg, &c->expert_shape, &err))
                return cli_usage_fail("run", "--expert-shape: %s", err.msg);
            c->expert_shape_given = 1;
            break;
        }
        case O_LM_STEPS:
            if (strcmp(optarg, "prefill") && strcmp(optarg, "decode"))
                return cli_usage_fail("run", "--lm-steps: '%s' is not prefill or decode", optarg);
            c->lm_decode = strcmp(optarg, "decode") == 0;
            mflags.lm_steps = 1;
            break;
        case O_ACT8:
            if (cli_act8_flag("run", optarg, &c->act8)) return 2;
            break;
        case O_EPOCHS: INT_FLAG("epochs", 1, 100000, c->epochs); break;
        case O_WARMUP: INT_FLAG("warmup-batches", 0, 100000, c->warmup_batches); break;
        case O_TRACE: INT_FLAG("trace-batches", 0, 100000, c->trace_batches); break;
        case O_REPEATS: INT_FLAG("repeats", 1, 10000, c->repeats); break;
        case O_FIRST_REPEAT: INT_FLAG("first-repeat", 0, 1000000, c->repeat_first); break;
        case O_DEVICE: INT_FLAG("device-id", 0, 1024, c->device_id); break;
        case O_SIM_DEV: INT_FLAG("sim-devices", 1, TMOE_ROUTE_MAX_DEVICES, c->sim_devices); break;
        case O_PLACEMENT: {
            tmoe_placement_kind pk;
            if (tmoe_placement_kind_parse(optarg, &pk))
                return cli_usage_fail(
                    "run", "--placement: unknown placement '%s' (expected round_robin or file)",
                    optarg);
            placement_file_wanted = pk == TMOE_PLACE_FILE;
            if (!placement_file_wanted) c->placement_file = NULL;
            break;
        }
        case O_PLACEMENT_FILE:
            c->placement_file = optarg;
            placement_file_wanted = 1;
            break;
        case O_FID_EVERY: INT_FLAG("fidelity-every", 0, 1000000, c->fidelity_every); break;
        case O_ENERGY_CTR: INT_FLAG("energy-counter-ms", 0, 60000, c->energy_counter_ms); break;
        case O_SEED:
            if (cli_u64("run", "seed", optarg, &c->seed)) return 2;
            break;
        case O_RATE: DBL_FLAG("arrival-rate", 1e-3, 1e12, c->arrival_rate); break;
        case O_COOLDOWN: DBL_FLAG("cooldown", 0, 86400, c->cooldown_s); break;
        case O_STEADY: DBL_FLAG("warmup-steady", 0, 86400, c->steady_s); break;
        case O_WARM: c->ttha_warm_start = optarg; break;
        case O_LB: c->load_balancer = 1; break;
        case O_MOE_ONLY:
            c->moe_only = 1;
            if (!mflags.block_flag) mflags.block_flag = "moe-only";
            break;
        case O_EP:
            want_ep = 1;
            if (!mflags.block_flag) mflags.block_flag = "expert-parallel";
            break;
        case O_TELEMETRY:
            if (cli_telemetry_flag("run", optarg, &c->telemetry)) return 2;
            break;
        case O_BACKEND:
            if (cli_backend_flag("run", optarg, &c->backend)) return 2;
            break;
        case O_COST: c->cost_model_path = optarg; break;
        case O_PROFILE_DIR: *profile_dir = optarg; break;
        case O_LOG_FILE: c->log_file = optarg; break;
        case O_OUT: c->out_dir = optarg; break;
        case O_RESUME: c->resume = 1; break;
        case O_NO_ANALYZE: c->analyze = 0; break;
        case O_QUIET: *quiet = 1; break;
        case O_CONFIG: break; /* read before this pass */
        case 'v':
        case O_VERBOSE: (*verbosity)++; break;
        case 'h':
        case O_HELP: return -1;
        default: return 2;
        }
    }
    if (optind < argc) return cli_usage_fail("run", "unexpected argument '%s'", argv[optind]);
    /* a list without --model runs the random block (its --num-experts) */
    if (types_list && strchr(types_list, ',') && !mflags.model && !mflags.block_flag)
        mflags.block_flag = "expert-type LIST";
    /* a decoder LM's expert count comes from its checkpoint: a list of types is checked
     * against it when the model loads */
    if (types_list && mflags.model && strcmp(mflags.model, "random") && strchr(types_list, ',')) {
        if (cli_expert_type_list("run", types_list, run_types, &c->block.num_experts)) return 2;
        c->block.expert_types = run_types;
    } else if (types_list && cli_expert_types("run", types_list, &c->block, run_types)) {
        return 2;
    }
    if (cli_router_check("run", &c->router)) return 2;
    if (placement_file_wanted && !c->placement_file)
        return cli_usage_fail("run", "--placement file needs --placement-file F");
    if (mflags.model && strcmp(mflags.model, "random") && mflags.block_flag)
        return cli_usage_fail("run",
                              "--%s applies to the random block (--model random); the "
                              "checkpoint %s fixes its own shape",
                              mflags.block_flag, mflags.model);
    int lm = mflags.model ? strcmp(mflags.model, "random") != 0 : !mflags.block_flag;
    if (!lm &&
        (c->tokens_path || c->expert_shape_given || mflags.lm_steps || c->act8 || c->copy_given))
        return cli_usage_fail("run", "--%s applies to a decoder LM (--model DIR)",
                              c->tokens_path          ? "tokens"
                              : c->expert_shape_given ? "expert-shape"
                              : mflags.lm_steps       ? "lm-steps"
                              : c->act8               ? "expert-activations"
                                                      : "expert-copy");
    return 0;
}

/* Which model runs: --model DIR, --model random, or the default (the trained model when it
 * is there and no block-only flag was given, else the random block, said in one line), with
 * the LM's batch defaults where the command line left them. */
static void choose_model(tmoe_run_config *c, int quiet) {
    const char *m = mflags.model;
    if (!m && !mflags.block_flag) {
        char cfgp[4200];
        snprintf(cfgp, sizeof cfgp, "%s/config.json", tmoe_run_default_model());
        if (access(cfgp, R_OK) == 0) {
            m = tmoe_run_default_model();
        } else if (!quiet) {
            printf("no trained model at %s: running the random block (--model random)\n",
                   tmoe_run_default_model());
        }
    }
    if (!m || !strcmp(m, "random")) return;
    c->model_dir = m;
    if (!mflags.seq_len) c->block.seq_len = LM_SEQ_LEN;
    if (!mflags.batch) c->batch_size = LM_BATCH;
    if (!mflags.samples) c->num_samples = LM_SAMPLES;
}

int cmd_run_check(int argc, char **argv) {
    tmoe_run_config c = tmoe_run_config_default();
    int verbosity = 0, quiet = 0;
    char *profile_dir = NULL;
    int pr = parse_args(argc, argv, &c, &verbosity, &quiet, &profile_dir);
    if (pr == 2) return cli_usage_error("run");
    return pr == -1 ? 0 : pr;
}

int cmd_run(int argc, char **argv) {
    tmoe_run_config c = tmoe_run_config_default();
    c.analyze = 1;
    int verbosity = 0, quiet = 0, rc = 1;
    char *profile_dir = NULL;
    tmoe_ep *ep = NULL;
    argbuf a = {0};
    char **av = NULL;
    /* the config file's entries go first so that command-line flags override them */
    if (push_arg(&a, "run", NULL)) return cli_fail("run", "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[i + 1];
        if (path && load_config(path, &a)) goto done;
    }
    av = malloc(sizeof(char *) * (size_t)(a.n + argc + 1));
    if (!av) {
        cli_fail("run", "out of memory");
        goto done;
    }
    int n = 0;
    for (int i = 0; i < a.n; i++) av[n++] = a.v[i];
    for (int i = 1; i < argc; i++) av[n++] = argv[i];
    av[n] = NULL;
    int pr = parse_args(n, av, &c, &verbosity, &quiet, &profile_dir);
    if (pr == -1) {
        run_help(&c);
        rc = 0;
        goto done;
    }
    if (pr) {
        rc = pr == 2 ? cli_usage_error("run") : 1;
        goto done;
    }
    cli_log_init(verbosity);
    choose_model(&c, quiet);
    char cost_buf[4096], out_buf[256], rank_buf[4200], line[4096];
    if (profile_dir && !c.cost_model_path) {
        snprintf(cost_buf, sizeof cost_buf, "%s/cost_model.json", profile_dir);
        c.cost_model_path = cost_buf;
    }
    if (!strcmp(c.out_dir, tmoe_run_config_default().out_dir) && !c.resume) {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(out_buf, sizeof out_buf, "results/%Y%m%dT%H%M%SZ", &tm);
        c.out_dir = out_buf;
    }
    cli_command_line(line, sizeof line, argc, argv);
    c.argv_line = line;
    tmoe_error err = {0};
    if (want_ep) {
        /* NVML numbers GPUs in PCI order; CUDA must too, so that rank d's GPU is device d */
        setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 0);
        if (tmoe_ep_init(NULL, NULL, &ep, &err)) {
            cli_fail_err("run", &err);
            goto done;
        }
        c.ep = ep;
        if (tmoe_ep_size(ep) > 1 && c.out_dir == out_buf &&
            tmoe_ep_bcast(ep, out_buf, sizeof out_buf, 0, &err)) { /* rank 0's time stamp */
            cli_fail_err("run", &err);
            goto done;
        }
        if (tmoe_ep_size(ep) > 1) {
            if (c.log_file) {
                cli_fail("run", "--log-file with --expert-parallel: each rank writes "
                                "DIR/rank<r>/batches.csv");
                goto done;
            }
            snprintf(rank_buf, sizeof rank_buf, "%s/rank%d", c.out_dir, tmoe_ep_rank(ep));
            c.out_dir = rank_buf;
            if (tmoe_ep_rank(ep) > 0) {
                quiet = 1;
                c.analyze = 0;
            }
        }
    }
    progress_printer pp = {.bar = isatty(STDERR_FILENO), .out = stdout};
    if (!quiet) {
        c.on_progress = print_progress;
        c.progress_user = &pp;
    }
    /* SIGINT / SIGTERM / SIGHUP: stop after the batch in progress, metadata "interrupted" */
    cli_stop_signals(1);
    /* rank 0 prints the summary for the group */
    tmoe_run_report report;
    int r = tmoe_run_ex(&c, ep && tmoe_ep_rank(ep) > 0 ? NULL : stdout, &report, &err);
    cli_stop_signals(0);
    if (r == TMOE_EINTR) {
        cli_fail("run", "%s", err.msg);
        rc = 130;
        goto done;
    }
    /* telemetry faults: every batch ran (the ranks are in step, none waits); the analysis of
     * what was measured is still made, and the exit status says the run is not clean */
    int faulted = r && report.outcome == TMOE_RUN_TELEMETRY_FAULTS;
    if (r) {
        cli_fail_err("run", &err);
        if (!faulted && ep && tmoe_ep_size(ep) > 1)
            tmoe_ep_abort(ep, 1); /* the others wait in a collective */
        if (!faulted) goto done;
    }
    rc = faulted ? 1 : 0;
    if (c.analyze) {
        /* the analysis of what the run wrote: tables, figures, report.html in DIR/report */
        char rep[4200];
        snprintf(rep, sizeof rep, "%s/report", c.out_dir);
        tmoe_analyze_config ac = tmoe_analyze_config_default();
        ac.out_dir = rep;
        tmoe_analyze_summary sum;
        const char *dirs[1] = {c.out_dir};
        if (tmoe_analyze_run_ex(dirs, 1, &ac, &sum, &err)) {
            cli_fail("run",
                     "the run is complete, but its analysis failed: %s (retry with "
                     "'thermoe analyze %s')",
                     err.msg, c.out_dir);
            rc = 1;
            goto done;
        }
        printf("report: %s (%d figures rendered%s)\n", sum.report_path, sum.figures.n_rendered,
               sum.figures.gnuplot_found ? ""
                                         : "; gnuplot not found: scripts written, see the report");
    }
done:
    tmoe_ep_finalize(ep);
    for (int i = 0; i < a.n; i++) free(a.v[i]);
    free(a.v);
    free(av);
    return rc;
}
