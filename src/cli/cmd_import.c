/* thermoe import: read what Nsight Systems (SQLite export) or Nsight Compute (CSV)
 * measured, print a summary, and write or update cost-model entries. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "thermoe/cost.h"
#include "thermoe/profile.h"

typedef struct import_cfg {
    const char *out; /* --out: cost model to write; NULL = print only */
    const char
        *cost_model; /* --cost-model: existing model to update (ncu; nsys merges into it too) */
    tmoe_etype et;   /* --expert-type */
    tmoe_impl impl;  /* --impl */
    long tokens;     /* --tokens: 0 = not given */
} import_cfg;

static void usage(FILE *f) {
    fprintf(f,
            "usage: thermoe import nsys FILE.sqlite [--out COST.json --tokens N [--expert-type T] "
            "[--impl I]]\n"
            "       thermoe import ncu FILE.csv [--cost-model COST.json --out MERGED.json]\n\n"
            "nsys  kernels per device, NVTX ranges named after ops (e.g. 'linear_fc1' or\n"
            "      'thermoe:linear_fc1'), power samples integrated over kernels; with --out,\n"
            "      one cost entry per op found, keyed by --expert-type/--impl/--tokens.\n"
            "ncu   duration, achieved occupancy and DRAM throughput per kernel; with\n"
            "      --cost-model and --out, stored under \"ncu\" in entries whose kernels match.\n\n"
            "flags:\n"
            "  -o, --out FILE          cost model to write (default: none, print only)\n"
            "  -c, --cost-model FILE   cost model to start from (default: none; nsys: empty)\n"
            "  -t, --tokens N          token count the profiled ops ran at (nsys --out: required)\n"
            "  -e, --expert-type T     fp16, bf16, q4 or q2 (default: fp16)\n"
            "  -i, --impl I            unfused or fused (default: unfused)\n"
            "  -v, --verbose           more log output (default: warnings only)\n"
            "  -h, --help              this text\n");
}

static const char *fmt_j(char *buf, size_t cap, double j) {
    if (isnan(j))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.6f", j);
    return buf;
}

static const char *fmt_v(char *buf, size_t cap, double v, int prec) {
    if (isnan(v))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.*f", prec, v);
    return buf;
}

static int save_model(tmoe_cost_model *cm, const char *out) {
    tmoe_error err = {0};
    if (tmoe_cost_save(cm, out, &err)) return cli_fail_err("import", &err);
    printf("wrote %s: %d entries\n", out, tmoe_cost_count(cm));
    return 0;
}

static int import_nsys(const char *path, const import_cfg *cfg) {
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    if (tmoe_import_nsys(path, &r, &err)) return cli_fail_err("import", &err);
    char a[32];
    printf("nsys export %s\n", path);
    printf("kernels: %" PRId64 ", %" PRId64 " ns (%.3f ms), names from %s\n", r->n_kernels,
           r->kernel_ns, (double)r->kernel_ns * 1e-6, r->name_column);
    if (r->kernels_skipped)
        printf("kernel rows skipped: %" PRId64 " (end before start, or a duration past int64)\n",
               r->kernels_skipped);
    for (int i = 0; i < r->n_devices; i++)
        printf("device %d: %" PRId64 " kernels, %" PRId64 " ns, energy %s J\n",
               r->devices[i].device, r->devices[i].kernels, r->devices[i].kernel_ns,
               r->devices[i].kernels_with_energy ? fmt_j(a, sizeof a, r->devices[i].energy_j)
                                                 : "-");
    printf("nvtx ranges: %" PRId64 ", named after ops: %" PRId64 "; launches matched: %" PRId64
           "\n",
           r->nvtx_ranges, r->op_ranges, r->launches_matched);
    if (r->power_source[0])
        printf("power: %s, %" PRId64 " samples, kernel energy %s J\n", r->power_source,
               r->power_samples, fmt_j(a, sizeof a, r->energy_j));
    else
        printf("power: none (no GPU_METRICS power metric or NVML table)\n");
    if (r->missing[0]) printf("tables not present: %s\n", r->missing);
    if (r->op_ranges) {
        printf("\n%-15s %7s %8s %12s %12s\n", "op", "ranges", "kernels", "kernel_ms", "energy_J");
        for (int o = 0; o < TMOE_OP_COUNT; o++) {
            const tmoe_nsys_op *op = &r->ops[o];
            if (!op->ranges) continue;
            printf("%-15s %7" PRId64 " %8" PRId64 " %12.4f %12s\n", tmoe_op_name((tmoe_op)o),
                   op->ranges, op->kernels, (double)op->kernel_ns * 1e-6,
                   fmt_j(a, sizeof a, op->energy_j));
        }
    }
    int rc = 0;
    if (cfg->out) {
        tmoe_cost_model *cm = NULL;
        int n = 0;
        if (!r->op_ranges) {
            rc = cli_fail(
                "import",
                "%s: no NVTX range is named after an op (e.g. 'linear_fc1'); no cost entries "
                "to write to %s",
                path, cfg->out);
        } else if ((cfg->cost_model ? tmoe_cost_load(cfg->cost_model, &cm, &err)
                                    : tmoe_cost_create(&cm, &err)) ||
                   tmoe_nsys_to_cost(r, cfg->et, cfg->impl, (int)cfg->tokens, cm, &n, &err)) {
            rc = cli_fail_err("import", &err);
        } else {
            printf("cost entries: %d (%s/%s, tokens %ld)\n", n, tmoe_etype_name(cfg->et),
                   tmoe_impl_name(cfg->impl), cfg->tokens);
            rc = save_model(cm, cfg->out);
        }
        tmoe_cost_free(cm);
    }
    tmoe_nsys_free(r);
    return rc;
}

static int import_ncu(const char *path, const import_cfg *cfg) {
    tmoe_error err = {0};
    tmoe_ncu_result *r;
    if (tmoe_import_ncu(path, &r, &err)) return cli_fail_err("import", &err);
    printf("ncu %s (%s layout): %d kernels\n", path, r->details_layout ? "details" : "raw", r->n);
    printf("%5s %12s %8s %8s  %s\n", "id", "duration_ns", "occ_%", "dram_%", "kernel");
    for (int i = 0; i < r->n; i++) {
        const tmoe_ncu_kernel *k = &r->kernels[i];
        char d[32], o[32], m[32];
        printf("%5" PRId64 " %12s %8s %8s  %.70s\n", k->id, fmt_v(d, sizeof d, k->duration_ns, 0),
               fmt_v(o, sizeof o, k->occupancy_pct, 2), fmt_v(m, sizeof m, k->dram_pct, 2),
               k->name);
    }
    int rc = 0;
    if (cfg->cost_model) {
        tmoe_cost_model *cm;
        int matched = 0;
        if (tmoe_cost_load(cfg->cost_model, &cm, &err) ||
            tmoe_ncu_merge_cost(r, cm, &matched, &err)) {
            rc = cli_fail_err("import", &err);
        } else {
            printf("matched %d of %d cost entries by kernel name\n", matched, tmoe_cost_count(cm));
            if (cfg->out) rc = save_model(cm, cfg->out);
            tmoe_cost_free(cm);
        }
    }
    tmoe_ncu_free(r);
    return rc;
}

int cmd_import(int argc, char **argv) {
    static const struct option longopts[] = {
        {"out", required_argument, 0, 'o'},    {"cost-model", required_argument, 0, 'c'},
        {"tokens", required_argument, 0, 't'}, {"expert-type", required_argument, 0, 'e'},
        {"impl", required_argument, 0, 'i'},   {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    import_cfg cfg = {.et = TMOE_ET_FP16, .impl = TMOE_IMPL_UNFUSED};
    int verbose = 0;
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "o:c:t:e:i:vh", longopts, NULL)) != -1;) {
        switch (ch) {
        case 'o': cfg.out = optarg; break;
        case 'c': cfg.cost_model = optarg; break;
        case 't':
            if (cli_int("import", "tokens", optarg, 1, 1 << 20, &cfg.tokens)) return 2;
            break;
        case 'e':
            if (tmoe_etype_parse(optarg, &cfg.et)) {
                cli_fail("import", "--expert-type: '%s' is not fp16, bf16, q4 or q2", optarg);
                return 2;
            }
            break;
        case 'i':
            if (tmoe_impl_parse(optarg, &cfg.impl)) {
                cli_fail("import", "--impl: '%s' is not unfused or fused", optarg);
                return 2;
            }
            break;
        case 'v': verbose++; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("import");
        }
    }
    if (verbose) cli_log_init(verbose);
    if (argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    const char *kind = argv[optind], *file = argv[optind + 1];
    if (strcmp(kind, "nsys") == 0) {
        if (cfg.out && !cfg.tokens) {
            cli_fail("import", "nsys --out needs --tokens N (the token count the ops ran at)");
            return 2;
        }
        return import_nsys(file, &cfg);
    }
    if (strcmp(kind, "ncu") == 0) {
        if (cfg.out && !cfg.cost_model) {
            cli_fail("import",
                     "ncu --out needs --cost-model FILE (the entries to add ncu metrics to)");
            return 2;
        }
        return import_ncu(file, &cfg);
    }
    cli_fail("import", "unknown source '%s' (nsys or ncu)", kind);
    return 2;
}
