/* thermoe serve: replay request arrivals against the decoder LM with continuous batching,
 * on the CPU with the simulated GPU billed in simulated time (default), or on the CUDA
 * backend measured by NVML in wall-clock time (docs/serve.md). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "thermoe/exp.h"

enum {
    O_TRACE = 1,
    O_FORMAT,
    O_SYNTH,
    O_REQUESTS,
    O_MAX_REQ,
    O_TIME_SCALE,
    O_CTX_SCALE,
    O_MAX_CTX,
    O_MAX_GEN,
    O_MODEL,
    O_TOKENS,
    O_STRATEGY,
    O_CHUNK,
    O_BATCH_TOKENS,
    O_MAX_SEQS,
    O_KV,
    O_SHAPE,
    O_ETYPE,
    O_GROUP,
    O_ACT8,
    O_COPY,
    O_COST,
    O_SEED,
    O_OUT,
    O_SLO_TTFT,
    O_SLO_TPOT,
    O_TEMP_TARGET,
    O_DURATION,
    O_BACKEND,
    O_TELEMETRY,
    O_DEVICE,
    O_QUIET,
    O_VERBOSE,
    O_HELP
};

static const struct option longopts[] = {{"trace", required_argument, 0, O_TRACE},
                                         {"format", required_argument, 0, O_FORMAT},
                                         {"synthetic", required_argument, 0, O_SYNTH},
                                         {"requests", required_argument, 0, O_REQUESTS},
                                         {"max-requests", required_argument, 0, O_MAX_REQ},
                                         {"time-scale", required_argument, 0, O_TIME_SCALE},
                                         {"context-scale", required_argument, 0, O_CTX_SCALE},
                                         {"max-context", required_argument, 0, O_MAX_CTX},
                                         {"max-generated", required_argument, 0, O_MAX_GEN},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"tokens", required_argument, 0, O_TOKENS},
                                         {"routing-strategy", required_argument, 0, O_STRATEGY},
                                         CLI_ROUTER_OPTIONS,
                                         {"prefill-chunk", required_argument, 0, O_CHUNK},
                                         {"max-batch-tokens", required_argument, 0, O_BATCH_TOKENS},
                                         {"max-seqs", required_argument, 0, O_MAX_SEQS},
                                         {"kv-tokens", required_argument, 0, O_KV},
                                         {"expert-shape", required_argument, 0, O_SHAPE},
                                         {"expert-type", required_argument, 0, O_ETYPE},
                                         {"group-size", required_argument, 0, O_GROUP},
                                         {"expert-activations", required_argument, 0, O_ACT8},
                                         {"expert-copy", required_argument, 0, O_COPY},
                                         {"kernel-cost-model-json", required_argument, 0, O_COST},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"out", required_argument, 0, O_OUT},
                                         {"slo-ttft-ms", required_argument, 0, O_SLO_TTFT},
                                         {"slo-tpot-ms", required_argument, 0, O_SLO_TPOT},
                                         {"temp-target", required_argument, 0, O_TEMP_TARGET},
                                         {"duration", required_argument, 0, O_DURATION},
                                         {"backend", required_argument, 0, O_BACKEND},
                                         {"telemetry", required_argument, 0, O_TELEMETRY},
                                         {"device", required_argument, 0, O_DEVICE},
                                         {"quiet", no_argument, 0, O_QUIET},
                                         {"verbose", no_argument, 0, O_VERBOSE},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};

static void help(void) {
    tmoe_serve_config d = tmoe_serve_config_default();
    printf("usage: thermoe serve [--trace FILE [--format auto|azure|mooncake]] [flags]\n"
           "Replay request arrivals against the decoder LM with continuous batching. By default\n"
           "on the CPU, each step billed to the simulated GPU (SIMULATED figures) at the expert\n"
           "shape, its billed time advancing the simulated clock arrivals are compared against,\n"
           "so a replay is the same on any machine. With --backend cuda --telemetry nvml the\n"
           "replay runs on the GPU in wall-clock time and NVML measures every step.\n"
           "Without --trace, a synthetic trace fitted to a real one is replayed (docs/serve.md).\n"
           "\n"
           "trace\n"
           "  --trace FILE           Azure CSV or Mooncake JSONL (auto: .jsonl is mooncake)\n"
           "  --format F             auto (default), azure or mooncake\n"
           "  --synthetic NAME       without --trace: azure_conv (default), azure_code, mooncake\n"
           "  --requests N           synthetic requests (default 2000; with --duration, as many\n"
           "                         as arrive within it)\n"
           "  --max-requests N       replay the first N requests of the trace, synthetic or not\n"
           "                         (0 = all)\n"
           "  --time-scale X         arrival gaps divided by X (default 1; 2 = twice the rate)\n"
           "  --duration S           only requests arriving in the first S seconds (after the\n"
           "                         time scale; default 0 = all)\n"
           "  --context-scale X      prompt and generated lengths times X, in (0, 1] (default 1)\n"
           "  --max-context N        cap prompts at N tokens (default 96; 0 = no cap)\n"
           "  --max-generated N      cap generated lengths at N tokens (default 32; 0 = no cap)\n"
           "                         the defaults keep 2000 requests near 2 minutes (Release\n"
           "                         build, 2 CPU cores; docs/serve.md);\n"
           "                         requests.csv keeps the trace's own lengths too\n"
           "engine\n"
           "  --model DIR            decoder LM (default models/default)\n"
           "  --tokens FILE          token ids of the prompts (default data/corpus/test.tokens)\n"
           "  --routing-strategy S   one strategy (default baseline)\n"
           "  --prefill-chunk N      most prompt tokens a request adds per step (default 64)\n"
           "  --max-batch-tokens N   most new tokens per step, decode first (default 256)\n"
           "  --max-seqs N           requests running at once (default 32)\n"
           "  --kv-tokens N          KV limit in positions over running requests; a request\n"
           "                         waits until its prompt + generated fit (default: max-seqs x\n"
           "                         the longest request)\n"
           "  --expert-shape S       experts billed: mixtral (default), trained or DxF\n"
           "  --expert-type T        fp16 (default), q4 or q2 (bf16 on the CPU backend): the\n"
           "                         LM's experts load as T, and the production-shape experts\n"
           "                         beside them (CUDA) or billed (simulated GPU) are T too\n"
           "  --group-size N         quantization group of q4 / q2 (default %d)\n"
           "  --expert-activations A q4/q2 experts: fp16 (default) or int8 activations\n"
           "                         (docs/cuda.md \"int8 activations\")\n"
           "  --expert-copy T[:LIST] the experts in LIST (all, or indices and ranges such as\n"
           "                         0,3,5-7; default all) also load as T (fp16, q4 or q2);\n"
           "                         hierarchical_adaptive and kernel_aware_ttha run copies\n"
           "                         in the experts' place under pressure\n"
           "                         (docs/strategies.md \"Lower-precision copies\")\n"
           "                         (default: no copies)\n"
           "  --kernel-cost-model-json F  the cost model the simulated GPU bills from\n"
           "  --backend B            cpu (default), cuda or auto (cuda when a device answers)\n"
           "  --telemetry S          sim (default: the simulated GPU, simulated time), nvml (the\n"
           "                         GPU measured, wall-clock time) or auto (nvml when a device\n"
           "                         answers, else sim)\n"
           "  --device N             CUDA and NVML device (default 0)\n"
           "  --seed N               routers, synthetic trace, text offsets, simulated GPU (42)\n"
           "summary (over the steady state the replay detects, else the whole run, flagged)\n"
           "  --slo-ttft-ms X        SLO on time to first token for goodput (default 1000)\n"
           "  --slo-tpot-ms X        SLO on time per output token for goodput (default 100)\n"
           "  --temp-target C        time with GPU / HBM temperature above C is reported\n"
           "                         (default: the routers' target, --ttha-target-temp)\n"
           "routing (the strategy's knobs, as for thermoe run; docs/strategies.md)\n",
           d.group_size);
    cli_router_help(&d.router);
    printf("output\n"
           "  --out DIR              requests.csv, steps.csv, timeline.csv, summary.json\n"
           "                         (default results/serve); thermoe analyze DIR draws them\n"
           "  --quiet                no progress line (it goes to stderr every ~10 s of host time\n"
           "                         when stderr is a terminal)\n"
           "  --verbose              library messages\n"
           "Ctrl-C (SIGINT), SIGTERM or SIGHUP stop the replay after the step in progress; the\n"
           "files are written over what ran (summary.json \"interrupted\": true).\n"
           "Exit: 0 done, 1 failure, 2 bad flags, 130 interrupted.\n");
}

/* The progress line on stderr (a terminal), redrawn in place. */
static void print_progress(const tmoe_serve_progress *p, void *user) {
    (void)user;
    fprintf(stderr,
            "\r%d/%d requests done, %d arrived (%d running, %d waiting), %d steps, %.1f s %s, "
            "%.0f s on the host ",
            p->done, p->requests, p->arrived, p->running, p->waiting, p->steps, p->replay_s,
            strcmp(p->source, "sim") ? "wall" : "simulated", p->wall_s);
    fflush(stderr);
}

int cmd_serve(int argc, char **argv) {
    tmoe_serve_config c = tmoe_serve_config_default();
    tmoe_arrivals_opts ao = tmoe_arrivals_opts_default();
    ao.max_context = 96;
    ao.max_generated = 32;
    const char *trace = NULL, *synth = "azure_conv", *shape = NULL;
    long n_synth = 2000, v;
    double d;
    int verbose = 0, quiet = 0, requests_given = 0, temp_given = 0, opt;
    c.model_dir = tmoe_run_default_model();
    c.out_dir = "results/serve";
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int rt = cli_router_flag("serve", opt, optarg, &c.router);
        if (rt >= 0) {
            if (rt) return 2;
            continue;
        }
        switch (opt) {
        case O_TRACE: trace = optarg; break;
        case O_FORMAT:
            if (!strcmp(optarg, "auto"))
                ao.format = TMOE_ARR_AUTO;
            else if (!strcmp(optarg, "azure"))
                ao.format = TMOE_ARR_AZURE;
            else if (!strcmp(optarg, "mooncake"))
                ao.format = TMOE_ARR_MOONCAKE;
            else
                return cli_usage_fail(
                    "serve", "--format: expected auto, azure or mooncake, got '%s'", optarg);
            break;
        case O_SYNTH:
            if (!tmoe_arrivals_synth_find(optarg))
                return cli_usage_fail(
                    "serve", "--synthetic: expected azure_conv, azure_code or mooncake, got '%s'",
                    optarg);
            synth = optarg;
            break;
        case O_REQUESTS:
            if (cli_int("serve", "requests", optarg, 1, 10000000, &n_synth)) return 2;
            requests_given = 1;
            break;
        case O_MAX_REQ:
            if (cli_int("serve", "max-requests", optarg, 0, 100000000, &v)) return 2;
            ao.max_requests = (int)v;
            break;
        case O_TIME_SCALE:
            if (cli_double("serve", "time-scale", optarg, 1e-6, 1e6, &d)) return 2;
            ao.time_scale = d;
            break;
        case O_CTX_SCALE:
            if (cli_double("serve", "context-scale", optarg, 1e-6, 1.0, &d)) return 2;
            ao.context_scale = d;
            break;
        case O_MAX_CTX:
            if (cli_int("serve", "max-context", optarg, 0, 1 << 20, &v)) return 2;
            ao.max_context = (int)v;
            break;
        case O_MAX_GEN:
            if (cli_int("serve", "max-generated", optarg, 0, 1 << 20, &v)) return 2;
            ao.max_generated = (int)v;
            break;
        case O_MODEL: c.model_dir = optarg; break;
        case O_TOKENS: c.tokens_path = optarg; break;
        case O_STRATEGY:
            if (tmoe_route_strategy_parse(optarg, &c.strategy))
                return cli_usage_fail("serve", "--routing-strategy: unknown strategy '%s'", optarg);
            break;
        case O_CHUNK:
            if (cli_int("serve", "prefill-chunk", optarg, 1, 1 << 16, &v)) return 2;
            c.prefill_chunk = (int)v;
            break;
        case O_BATCH_TOKENS:
            if (cli_int("serve", "max-batch-tokens", optarg, 1, 1 << 16, &v)) return 2;
            c.max_batch_tokens = (int)v;
            break;
        case O_MAX_SEQS:
            if (cli_int("serve", "max-seqs", optarg, 1, 4096, &v)) return 2;
            c.max_seqs = (int)v;
            break;
        case O_KV:
            if (cli_int("serve", "kv-tokens", optarg, 1, 1L << 40, &v)) return 2;
            c.kv_tokens = v;
            break;
        case O_SHAPE: shape = optarg; break;
        case O_ETYPE:
            if (strchr(optarg, ','))
                return cli_usage_fail("serve",
                                      "--expert-type: one type for every expert (a list of one "
                                      "type per expert is for run, eval and generate), got '%s'",
                                      optarg);
            if (tmoe_etype_parse(optarg, &c.expert_type))
                return cli_usage_fail(
                    "serve", "--expert-type: expected fp16, bf16, q4 or q2, got '%s'", optarg);
            break;
        case O_GROUP:
            if (cli_int("serve", "group-size", optarg, 1, 1 << 16, &v)) return 2;
            c.group_size = (int)v;
            break;
        case O_ACT8:
            if (cli_act8_flag("serve", optarg, &c.act8)) return 2;
            break;
        case O_COPY:
            if (cli_expert_copy("serve", optarg, &c.copy_type, &c.copy_all, c.copy)) return 2;
            c.copy_given = 1;
            break;
        case O_COST: c.cost_model_path = optarg; break;
        case O_SEED:
            if (cli_u64("serve", "seed", optarg, &c.seed)) return 2;
            break;
        case O_OUT: c.out_dir = optarg; break;
        case O_SLO_TTFT:
            if (cli_double("serve", "slo-ttft-ms", optarg, 1e-6, 1e9, &d)) return 2;
            c.slo_ttft_s = d / 1e3;
            break;
        case O_SLO_TPOT:
            if (cli_double("serve", "slo-tpot-ms", optarg, 1e-6, 1e9, &d)) return 2;
            c.slo_tpot_s = d / 1e3;
            break;
        case O_TEMP_TARGET:
            if (cli_double("serve", "temp-target", optarg, -50.0, 200.0, &d)) return 2;
            c.temp_target_c = d;
            temp_given = 1;
            break;
        case O_DURATION:
            if (cli_double("serve", "duration", optarg, 0.0, 1e9, &d)) return 2;
            ao.duration_s = d;
            break;
        case O_BACKEND:
            if (cli_backend_flag("serve", optarg, &c.backend)) return 2;
            break;
        case O_TELEMETRY:
            if (cli_telemetry_flag("serve", optarg, &c.telemetry)) return 2;
            break;
        case O_DEVICE:
            if (cli_int("serve", "device", optarg, 0, 1024, &v)) return 2;
            c.device_id = (int)v;
            break;
        case O_QUIET: quiet = 1; break;
        case O_VERBOSE: verbose = 1; break;
        case O_HELP: help(); return 0;
        default: return cli_usage_error("serve");
        }
    }
    if (optind < argc) return cli_usage_fail("serve", "unexpected argument '%s'", argv[optind]);
    if (cli_router_check("serve", &c.router)) return 2;
    if (!temp_given) c.temp_target_c = c.router.temp_target_c;
    tmoe_error err = {0};
    if (shape && tmoe_expert_shape_parse(shape, &c.expert_shape, &err))
        return cli_usage_fail("serve", "--expert-shape: %s", err.msg);
    c.expert_shape_given = shape != NULL;
    if (c.max_batch_tokens < c.max_seqs)
        return cli_usage_fail("serve",
                              "--max-batch-tokens %d is below --max-seqs %d: every running "
                              "request decodes one token per step",
                              c.max_batch_tokens, c.max_seqs);
    cli_log_init(verbose);
    c.trace_time_scale = ao.time_scale;
    c.trace_context_scale = ao.context_scale;
    c.trace_max_context = ao.max_context;
    c.trace_max_generated = ao.max_generated;
    c.trace_duration_s = ao.duration_s;
    char line[4096];
    cli_command_line(line, sizeof line, argc, argv);
    c.argv_line = line;
    /* a synthetic trace with --duration and no --requests fills the duration */
    int n_gen = ao.duration_s > 0.0 && !requests_given ? 0 : (int)n_synth;
    tmoe_arrivals a;
    int rc = trace ? tmoe_arrivals_read(trace, &ao, &a, &err)
                   : tmoe_arrivals_generate(tmoe_arrivals_synth_find(synth), n_gen, c.seed, &ao, &a,
                                            &err);
    if (rc) return cli_fail_err("serve", &err);
    if (a.capped)
        fprintf(stderr,
                "thermoe serve: %d of %d requests have lengths scaled or capped (context scale "
                "%g, max context %d, max generated %d) to fit the model's positions and time\n",
                a.capped, a.n, ao.context_scale, ao.max_context, ao.max_generated);
    int bar = !quiet && isatty(STDERR_FILENO);
    if (bar) {
        c.on_progress = print_progress;
        c.progress_every_s = 10.0;
    }
    tmoe_serve_summary s;
    cli_stop_signals(1);
    rc = tmoe_serve_run(&c, &a, &s, NULL, &err);
    cli_stop_signals(0);
    if (bar) fputc('\n', stderr); /* after the progress line */
    if (rc && rc != TMOE_EINTR) {
        tmoe_arrivals_free(&a);
        return cli_fail_err("serve", &err);
    }
    int sim = !strcmp(s.source, "sim");
    printf("trace: %s\n", a.source);
    printf("strategy %s, %s experts, %d requests, %d steps, %ld prompt + %ld generated "
           "tokens, %.2f s %s (%.1f s on the host)\n",
           tmoe_route_strategy_name(c.strategy), tmoe_etype_name(c.expert_type), s.requests,
           s.steps, s.prompt_tokens, s.generated_tokens, s.duration_s,
           sim ? "simulated" : "wall clock", s.wall_s);
    const tmoe_serve_stats *w = &s.window;
    printf("%s\n", s.steady_note);
    printf("%s, over %s %.2f..%.2f s (%d requests arrived, %d finished):\n",
           sim ? "SIMULATED GPU (source sim)" : "MEASURED by NVML (source nvml)",
           s.steady ? "the steady state" : "the WHOLE RUN (no steady state)", w->start_s, w->end_s,
           w->requests, w->finished);
    printf("  TTFT  p50 %.4f s  p90 %.4f s  p99 %.4f s\n", w->ttft_p50_s, w->ttft_p90_s,
           w->ttft_p99_s);
    printf("  TPOT  p50 %.5f s  p90 %.5f s  p99 %.5f s\n", w->tpot_p50_s, w->tpot_p90_s,
           w->tpot_p99_s);
    printf("  goodput %.3f requests/s (%d of %d, %.1f%%) under TTFT <= %g ms and TPOT <= %g ms\n",
           w->goodput_rps, w->slo_met, w->requests, 100.0 * w->goodput_share, c.slo_ttft_s * 1e3,
           c.slo_tpot_s * 1e3);
    printf("  energy %.4g J (steps and idle); %.4g J per request, %.4g J per generated token\n",
           w->energy_j, w->j_per_request, w->j_per_generated_token);
    printf("  power avg %.1f W, peak %.1f W; GPU peak %.1f C, HBM peak %.1f C\n", w->power_avg_w,
           w->power_peak_w, w->gpu_temp_peak_c, w->mem_temp_peak_c);
    printf("  above %g C: GPU %.2f s, HBM %.2f s\n", c.temp_target_c, w->gpu_above_target_s,
           w->mem_above_target_s);
    printf("  experts a MoE layer step ran: %.2f (mean over steps)\n", w->active_experts);
    printf("whole run (%s): %.4g J in steps + %.4g J idle, %.4g J per generated token, TTFT "
           "p99 %.4f s, TPOT p99 %.5f s\n",
           s.source, s.energy_j, s.idle_energy_j, s.run.j_per_generated_token, s.run.ttft_p99_s,
           s.run.tpot_p99_s);
    printf("  running at most %d, waiting at most %d\n", s.max_running, s.max_waiting);
    if (c.out_dir)
        printf("wrote %s/requests.csv, steps.csv, timeline.csv, summary.json\n", c.out_dir);
    tmoe_arrivals_free(&a);
    if (rc == TMOE_EINTR) {
        cli_fail("serve", "%s", err.msg);
        return 130;
    }
    return 0;
}
