/* thermoe profile: measure every op of the chosen model alone (latency, energy, heat,
 * kernels) and write the kernel cost model; optionally run each op under nsys or ncu too,
 * or write the scripts that do so. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "thermoe/profile.h"

enum {
    O_OPS = 1,
    O_TOKENS,
    O_ETYPES,
    O_IMPLS,
    O_MINSEC,
    O_MINCALLS,
    O_WARMUP,
    O_REST,
    O_WS,
    O_OUT,
    O_BACKEND,
    O_TELEMETRY,
    O_DEVICE,
    O_MOE_ONLY,
    O_WITH,
    O_EMIT,
    O_TIMEOUT,
    O_LOGDIR,
    O_SEED,
    O_HELP,
    O_VERBOSE,
    O_CHECK
};

static volatile int stop_flag;
static void on_sigint(int sig) {
    (void)sig;
    stop_flag = 1;
    signal(SIGINT, SIG_DFL);
}

static const char *op_name_i(int i) {
    return tmoe_op_name((tmoe_op)i);
}
static const char *et_name_i(int i) {
    return tmoe_etype_name((tmoe_etype)i);
}
static const char *impl_name_i(int i) {
    return tmoe_impl_name((tmoe_impl)i);
}

static void progress(void *user, int done, int total, const char *what, double eta) {
    int tty = *(int *)user;
    if (tty) {
        int width = 30, fill = total ? done * width / total : width;
        fprintf(stderr, "\r[%.*s%*s] %d/%d %-40.40s ETA %4.0fs ", fill,
                "##############################", width - fill, "", done, total, what, eta);
        if (done == total) fputc('\n', stderr);
    } else if (done % 10 == 0 || done == total) {
        fprintf(stderr, "profile: %d/%d %s (ETA %.0f s)\n", done, total, what, eta);
    }
}

/* The `thermoe op` command line for one item (argv strings in buf). */
static int op_argv(const char *self, const tmoe_profile_config *c, const tmoe_profile_item *it,
                   char buf[][64], char **argv) {
    int n = 0;
#define A(...) (snprintf(buf[n], 64, __VA_ARGS__), argv[n] = buf[n], n++)
    A("%s", self);
    A("op");
    A("--op=%s", tmoe_op_name(it->op));
    A("--tokens=%d", it->tokens);
    A("--expert-type=%s", tmoe_etype_name(it->et));
    A("--impl=%s", tmoe_impl_name(it->impl));
    A("--iters=5");
    A("--warmup=2");
    A("--backend=cuda");
    A("--device-id=%d", c->device_id);
    A("--d-model=%d", c->block.d_model);
    A("--d-ff=%d", c->block.d_ff);
    A("--num-experts=%d", c->block.num_experts);
    A("--top-k=%d", c->block.top_k);
    A("--n-heads=%d", c->block.n_heads);
    A("--group-size=%d", c->block.group_size);
    A("--act=%s", tmoe_act_name(c->block.act));
    A("--seq-len=%d", c->block.seq_len);
#undef A
    argv[n] = NULL;
    return n;
}

static const char *ncu_metrics =
    "gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,"
    "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed";

/* Run one item under ncu and merge its metrics into cm. */
static int with_ncu(const char *ncu, const char *self, const tmoe_profile_config *c,
                    const tmoe_profile_item *it, const char *dir, double timeout,
                    tmoe_cost_model *cm, tmoe_error *err) {
    char tag[128], csv[4200], log[4200], filter[80], abuf[24][64], *oargv[24];
    snprintf(tag, sizeof tag, "%s_%s_%s_%d", tmoe_op_name(it->op), tmoe_etype_name(it->et),
             tmoe_impl_name(it->impl), it->tokens);
    snprintf(csv, sizeof csv, "%s/%s.ncu.csv", dir, tag);
    snprintf(log, sizeof log, "%s/%s.ncu.log", dir, tag);
    snprintf(filter, sizeof filter, "%s/", tmoe_op_name(it->op));
    int no = op_argv(self, c, it, abuf, oargv);
    char *argv[48] = {(char *)ncu,  "--csv",     "--page",
                      "raw",        "--nvtx",    "--nvtx-include",
                      filter,       "--metrics", (char *)ncu_metrics,
                      "--log-file", csv};
    int n = 11;
    for (int i = 0; i < no; i++) argv[n++] = oargv[i];
    argv[n] = NULL;
    unlink(csv);
    tmoe_tool_result res;
    int rc = tmoe_tool_run("ncu", argv, log, timeout, &res, err);
    if (rc) return rc;
    tmoe_ncu_result *r = NULL;
    if ((rc = tmoe_import_ncu(csv, &r, err)))
        return tmoe_error_prefix(err, rc, "importing ncu output");
    int matched = 0;
    rc = tmoe_ncu_merge_cost(r, cm, &matched, err);
    tmoe_ncu_free(r);
    if (!rc)
        tmoe_log(TMOE_LOG_INFO, "ncu %s: %d cost entries got occupancy and DRAM throughput", tag,
                 matched);
    return rc;
}

/* Run one item under nsys, export SQLite, import it into nsys_cm. */
static int with_nsys(const char *nsys, const char *self, const tmoe_profile_config *c,
                     const tmoe_profile_item *it, const char *dir, double timeout,
                     tmoe_cost_model *nsys_cm, tmoe_error *err) {
    char tag[128], rep[4400], base[4200], sq[4400], log[4400], dev[32], abuf[24][64], *oargv[24];
    snprintf(tag, sizeof tag, "%s_%s_%s_%d", tmoe_op_name(it->op), tmoe_etype_name(it->et),
             tmoe_impl_name(it->impl), it->tokens);
    snprintf(base, sizeof base, "%s/%s", dir, tag);
    snprintf(rep, sizeof rep, "%s.nsys-rep", base);
    snprintf(sq, sizeof sq, "%s.sqlite", base);
    snprintf(log, sizeof log, "%s.nsys.log", base);
    snprintf(dev, sizeof dev, "--gpu-metrics-devices=%d", c->device_id);
    int no = op_argv(self, c, it, abuf, oargv);
    char *argv[48] = {(char *)nsys, "profile", "--trace=cuda,nvtx", "--force-overwrite=true", dev,
                      "-o",         base};
    int n = 7;
    for (int i = 0; i < no; i++) argv[n++] = oargv[i];
    argv[n] = NULL;
    tmoe_tool_result res;
    int rc = tmoe_tool_run("nsys profile", argv, log, timeout, &res, err);
    if (rc) return rc;
    char *eargv[] = {(char *)nsys, "export", "--type", "sqlite", "--force-overwrite=true",
                     "-o",         sq,       rep,      NULL};
    if ((rc = tmoe_tool_run("nsys export", eargv, log, timeout, &res, err))) return rc;
    tmoe_nsys_result *r = NULL;
    if ((rc = tmoe_import_nsys(sq, &r, err))) return tmoe_error_prefix(err, rc, "importing %s", sq);
    rc = tmoe_nsys_to_cost(r, it->et, it->impl, it->tokens, nsys_cm, NULL, err);
    tmoe_nsys_free(r);
    return rc;
}

/* Write one script per item and tool into dir. The program's own path is the only value
 * from outside that enters them: it is written as one single-quoted shell word, and refused
 * when it holds a control character. Each script is written whole or not at all. */
static int emit_scripts(const char *dir, const char *self, const tmoe_profile_config *c,
                        const tmoe_profile_item *items, int n, int want_ncu, int want_nsys) {
    tmoe_error err = {0};
    if (!cli_script_value_ok("profile", "this program's path", self)) return 1;
    if (tmoe_mkdir_p(dir, &err)) return cli_fail("profile", "--emit-scripts: %s", err.msg);
    int written = 0;
    for (int i = 0; i < n; i++) {
        const tmoe_profile_item *it = &items[i];
        char tag[128], abuf[24][64], *oargv[24], cmdline[2048] = "";
        snprintf(tag, sizeof tag, "%s_%s_%s_%d", tmoe_op_name(it->op), tmoe_etype_name(it->et),
                 tmoe_impl_name(it->impl), it->tokens);
        int no = op_argv("\"$THERMOE\"", c, it, abuf, oargv);
        for (int a = 0; a < no; a++) {
            strncat(cmdline, a ? " " : "", sizeof cmdline - strlen(cmdline) - 1);
            strncat(cmdline, oargv[a], sizeof cmdline - strlen(cmdline) - 1);
        }
        for (int t = 0; t < 2; t++) {
            if ((t == 0 && !want_ncu) || (t == 1 && !want_nsys)) continue;
            char path[4300];
            snprintf(path, sizeof path, "%s/%s_%s.sh", dir, tag, t ? "nsys" : "ncu");
            tmoe_atomic_file af;
            if (tmoe_atomic_open(&af, path, &err)) return cli_fail_err("profile", &err);
            FILE *f = af.f;
            fprintf(f,
                    "#!/usr/bin/env bash\n# %s of %s under %s; written by thermoe profile "
                    "--emit-scripts\n"
                    "set -euo pipefail\nTHERMOE=${THERMOE:-",
                    tmoe_op_name(it->op), tag, t ? "Nsight Systems" : "Nsight Compute");
            int bad = cli_shell_quote(f, self) != 0;
            fprintf(f, "}\ncd \"$(dirname \"$0\")\"\n");
            if (t == 0)
                fprintf(f,
                        "ncu --csv --page raw --nvtx --nvtx-include \"%s/\" --metrics %s \\\n"
                        "    --log-file %s.ncu.csv %s\n"
                        "\"$THERMOE\" import ncu %s.ncu.csv\n",
                        tmoe_op_name(it->op), ncu_metrics, tag, cmdline, tag);
            else
                fprintf(
                    f,
                    "nsys profile --trace=cuda,nvtx --force-overwrite=true "
                    "--gpu-metrics-devices=%d "
                    "-o %s %s\n"
                    "nsys export --type sqlite --force-overwrite=true -o %s.sqlite %s.nsys-rep\n"
                    "\"$THERMOE\" import nsys %s.sqlite\n",
                    c->device_id, tag, cmdline, tag, tag, tag);
            if (bad && !ferror(f)) {
                tmoe_atomic_abort(&af);
                return cli_fail("profile",
                                "%s: the program's path could not be quoted (not written)", path);
            }
            if (tmoe_atomic_commit(&af, &err)) return cli_fail_err("profile", &err);
            if (chmod(path, 0755) != 0)
                return cli_fail("profile", "cannot make %s executable: %s", path, strerror(errno));
            written++;
        }
    }
    printf("wrote %d scripts to %s (THERMOE=/path/to/thermoe overrides the program)\n", written,
           dir);
    return 0;
}

int cmd_profile(int argc, char **argv) {
    static const struct option longopts[] = {
        {"ops", required_argument, 0, O_OPS},
        {"tokens", required_argument, 0, O_TOKENS},
        {"expert-types", required_argument, 0, O_ETYPES},
        {"impls", required_argument, 0, O_IMPLS},
        {"min-seconds", required_argument, 0, O_MINSEC},
        {"min-calls", required_argument, 0, O_MINCALLS},
        {"warmup", required_argument, 0, O_WARMUP},
        {"rest-max", required_argument, 0, O_REST},
        {"working-set-mb", required_argument, 0, O_WS},
        {"out", required_argument, 0, O_OUT},
        {"backend", required_argument, 0, O_BACKEND},
        {"telemetry", required_argument, 0, O_TELEMETRY},
        {"device-id", required_argument, 0, O_DEVICE},
        {"moe-only", no_argument, 0, O_MOE_ONLY},
        {"with", required_argument, 0, O_WITH},
        {"emit-scripts", required_argument, 0, O_EMIT},
        {"tool-timeout", required_argument, 0, O_TIMEOUT},
        {"log-dir", required_argument, 0, O_LOGDIR},
        {"seed", required_argument, 0, O_SEED},
        {"help", no_argument, 0, O_HELP},
        {"verbose", no_argument, 0, O_VERBOSE},
        {"check-expert-sum", required_argument, 0, O_CHECK},
        CLI_SHAPE_OPTIONS,
        {0, 0, 0, 0},
    };
    tmoe_profile_config c = tmoe_profile_config_default();
    const char *out = "cost_model.json", *emit = NULL, *logdir = "profile-logs";
    int want_ncu = 0, want_nsys = 0, verbosity = 0, n;
    double timeout = 600.0;
    long v;
    optind = 1;
    for (int o; (o = getopt_long(argc, argv, "hv", longopts, NULL)) != -1;) {
        int sh = cli_shape_flag("profile", o, optarg, &c.block);
        if (sh == 1) return 2;
        if (sh == 0) continue;
        switch (o) {
        case O_OPS:
            if (cli_name_list("profile", "ops", optarg, c.ops, TMOE_OP_COUNT, op_name_i)) return 2;
            break;
        case O_ETYPES:
            if (cli_name_list("profile", "expert-types", optarg, c.etypes, TMOE_ET_COUNT,
                              et_name_i))
                return 2;
            break;
        case O_IMPLS:
            if (cli_name_list("profile", "impls", optarg, c.impls, TMOE_IMPL_COUNT, impl_name_i))
                return 2;
            break;
        case O_TOKENS:
            if ((n = cli_int_list("profile", "tokens", optarg, 1, 1 << 20, c.tokens,
                                  TMOE_PROFILE_MAX_TOKENS)) < 0)
                return 2;
            c.ntokens = n;
            break;
        case O_MINSEC:
            if (cli_double("profile", "min-seconds", optarg, 0, 3600, &c.min_seconds)) return 2;
            break;
        case O_MINCALLS:
            if (cli_int("profile", "min-calls", optarg, 1, 100000000, &v)) return 2;
            c.min_calls = (int)v;
            break;
        case O_WARMUP:
            if (cli_int("profile", "warmup", optarg, 0, 64, &v)) return 2;
            c.warmup_calls = (int)v;
            break;
        case O_REST:
            if (cli_double("profile", "rest-max", optarg, 0, 3600, &c.rest_max_s)) return 2;
            break;
        case O_WS:
            if (cli_double("profile", "working-set-mb", optarg, 0, 1e6, &c.min_working_set_mb))
                return 2;
            break;
        case O_OUT: out = optarg; break;
        case O_BACKEND:
            if (cli_backend_flag("profile", optarg, &c.backend)) return 2;
            break;
        case O_TELEMETRY:
            if (cli_telemetry_flag("profile", optarg, &c.telemetry)) return 2;
            break;
        case O_DEVICE:
            if (cli_int("profile", "device-id", optarg, 0, 1024, &v)) return 2;
            c.device_id = (int)v;
            break;
        case O_MOE_ONLY: c.moe_only = 1; break;
        case O_WITH:
            if (!strcmp(optarg, "ncu"))
                want_ncu = 1;
            else if (!strcmp(optarg, "nsys"))
                want_nsys = 1;
            else
                return cli_usage_fail("profile", "--with: expected nsys or ncu, not '%s'", optarg);
            break;
        case O_EMIT: emit = optarg; break;
        case O_TIMEOUT:
            if (cli_double("profile", "tool-timeout", optarg, 1, 86400, &timeout)) return 2;
            break;
        case O_LOGDIR: logdir = optarg; break;
        case O_SEED:
            if (cli_u64("profile", "seed", optarg, &c.seed)) return 2;
            break;
        case O_CHECK: c.check_path = optarg; break;
        case 'v':
        case O_VERBOSE: verbosity++; break;
        case 'h':
        case O_HELP:
            printf(
                "usage: thermoe profile [flags]\n\n"
                "Measure every op the model uses, alone: warm-up, then back to back until\n"
                "--min-seconds and --min-calls; latency median/p90 from per-call device times;\n"
                "energy per call from the NVML energy counter (board, and dynamic = board - idle\n"
                "power x time); temperature change per second; throttling flagged; rest between\n"
                "ops; weights rotated over copies larger than the L2. Writes the cost model.\n\n"
                "  --ops LIST            ops to profile, or all (default all)\n"
                "  --expert-types LIST   fp16,q4,q2,bf16 or all (default fp16,q4,q2: bf16 moves\n"
                "                        the bytes of fp16, and lookups fall back to fp16)\n"
                "  --impls LIST          fused,unfused or all (default all)\n"
                "  --tokens LIST         token counts (default 1,2,4,8,16,32,64,128,256,512,1024)\n"
                "  --min-seconds S       per op (default %g)\n"
                "  --min-calls N         per op (default %d)\n"
                "  --warmup N            unmeasured calls first (default %d)\n"
                "  --rest-max S          rest until within 1 C of idle, at most S (default %g)\n"
                "  --working-set-mb M    weights rotated per op (default %g)\n"
                "  --moe-only            skip the attention ops\n"
                "  --out FILE            cost model to write (default cost_model.json)\n"
                "  --backend B           auto, cpu or cuda (default auto; energy needs cuda + "
                "nvml)\n"
                "  --telemetry S         auto, nvml or sim (default auto)\n"
                "  --device-id N         (default 0)\n"
                "  --with nsys|ncu       also run each op under that tool (repeatable); ncu adds\n"
                "                        occupancy and DRAM throughput to the entries, nsys "
                "writes\n"
                "                        FILE.nsys.json; a tool that is not installed is skipped\n"
                "  --emit-scripts DIR    write one script per op and tool instead of measuring\n"
                "  --tool-timeout S      per tool run (default 600)\n"
                "  --log-dir DIR         tool logs and outputs (default profile-logs)\n"
                "  --seed N              weights and inputs (default 1)\n"
                "  --check-expert-sum F  also measure each whole expert forward (as the engine\n"
                "                        runs it) and write a Markdown table to F: the sum of\n"
                "                        its ops' latency and energy against the whole\n",
                c.min_seconds, c.min_calls, c.warmup_calls, c.rest_max_s, c.min_working_set_mb);
            cli_shape_help(&c.block);
            return 0;
        default: return cli_usage_error("profile");
        }
    }
    if (optind < argc) return cli_usage_fail("profile", "unexpected argument '%s'", argv[optind]);
    cli_log_init(verbosity);
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        snprintf(self, sizeof self, "thermoe");
    else
        self[sl] = '\0';
    int cap = tmoe_profile_plan_cap(&c);
    tmoe_profile_item *items = calloc((size_t)cap, sizeof *items);
    if (!items) return cli_fail("profile", "out of memory");
    int nitems = tmoe_profile_plan(&c, items, cap);
    if (emit) {
        int r = emit_scripts(emit, self, &c, items, nitems, want_ncu || !want_nsys,
                             want_nsys || !want_ncu);
        free(items);
        return r;
    }
    int tty = isatty(STDERR_FILENO);
    c.progress = progress;
    c.progress_user = &tty;
    c.stop = &stop_flag;
    signal(SIGINT, on_sigint);
    tmoe_error err = {0};
    tmoe_cost_model *cm = NULL;
    int rc = tmoe_profile_run(&c, &cm, &err);
    signal(SIGINT, SIG_DFL);
    int ret = 0;
    if (rc && !cm) {
        free(items);
        return cli_fail_err("profile", &err);
    }
    if (rc) {
        cli_fail_err("profile", &err);
        fprintf(stderr, "thermoe profile: saving the %d entries measured so far\n",
                tmoe_cost_count(cm));
        ret = rc == TMOE_EINTR ? 130 : 1;
    }
    char tool[4096];
    if (!rc && (want_ncu || want_nsys)) {
        if (mkdir(logdir, 0777) && errno != EEXIST) {
            cli_fail("profile", "--log-dir: cannot create %s: %s", logdir, strerror(errno));
            ret = 1;
        }
        tmoe_cost_model *nsys_cm = NULL;
        if (want_nsys && tmoe_cost_create(&nsys_cm, &err) == TMOE_OK)
            tmoe_cost_set_meta(nsys_cm, &(tmoe_cost_meta){0});
        for (int t = 0; t < 2 && !ret; t++) {
            int want = t == 0 ? want_ncu : want_nsys;
            const char *name = t == 0 ? "ncu" : "nsys";
            if (!want) continue;
            if (!tmoe_tool_find(name, tool, sizeof tool)) {
                printf("--with %s: %s is not installed here; skipped\n", name, name);
                continue;
            }
            for (int i = 0; i < nitems && !stop_flag; i++) {
                tmoe_error te = {0};
                int r = t == 0
                            ? with_ncu(tool, self, &c, &items[i], logdir, timeout, cm, &te)
                            : with_nsys(tool, self, &c, &items[i], logdir, timeout, nsys_cm, &te);
                if (r) {
                    cli_fail("profile", "--with %s: %s", name, te.msg);
                    ret = 1;
                    break;
                }
            }
        }
        if (nsys_cm && tmoe_cost_count(nsys_cm) > 0) {
            char p2[4200];
            snprintf(p2, sizeof p2, "%s.nsys.json", out);
            if (tmoe_cost_save(nsys_cm, p2, &err))
                ret = cli_fail_err("profile", &err);
            else
                printf("nsys entries: %s\n", p2);
        }
        tmoe_cost_free(nsys_cm);
    }
    if (tmoe_cost_save(cm, out, &err))
        ret = cli_fail_err("profile", &err);
    else
        printf("cost model: %s (%d entries)\n", out, tmoe_cost_count(cm));
    tmoe_cost_free(cm);
    free(items);
    return ret;
}
