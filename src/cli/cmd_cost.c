/* thermoe cost: show a cost model file as a table, or merge several into one. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "thermoe/cost.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: thermoe cost show FILE\n"
            "       thermoe cost merge OUT IN...\n\n"
            "show   print the cost model's device, shape and every entry as a table\n"
            "       (unknown values print as '-'; 'thr' marks a throttled measurement).\n"
            "merge  load IN files in order and write OUT; an entry for the same\n"
            "       (op, expert_type, impl, tokens) in a later file replaces the earlier one.\n\n"
            "flags:\n"
            "  -v, --verbose   more log output (default: warnings; merge also logs replacements)\n"
            "  -h, --help      this text\n");
}

/* v with prec decimals, or "-" when unknown. */
static const char *num(char *buf, size_t cap, double v, int prec) {
    if (isnan(v))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.*f", prec, v);
    return buf;
}

static int show(const char *path) {
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    if (tmoe_cost_load(path, &cm, &err)) return cli_fail_err("cost", &err);
    tmoe_cost_meta m = tmoe_cost_get_meta(cm);
    char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32];
    printf("cost model %s: schema %s, %d entries, checksum %016" PRIx64 "\n", path,
           TMOE_COST_SCHEMA, tmoe_cost_count(cm), tmoe_cost_checksum(cm));
    printf("device: %s (uuid %s, driver %s, telemetry %s, power limit %s W)\n",
           m.device_name[0] ? m.device_name : "-", m.device_uuid[0] ? m.device_uuid : "-",
           m.device_driver[0] ? m.device_driver : "-",
           m.device_telemetry[0] ? m.device_telemetry : "-", num(a, sizeof a, m.power_limit_w, 0));
    printf("created: %s; tool: %s\n", m.created[0] ? m.created : "-", m.tool[0] ? m.tool : "-");
    if (m.d_model)
        printf("shape: d_model %d, d_ff %d, group_size %d; ", m.d_model, m.d_ff, m.group_size);
    else
        printf("shape: -; ");
    printf("idle power: %s W\n\n", num(a, sizeof a, m.idle_power_w, 1));
    printf("%-15s %-5s %-8s %6s %10s %10s %10s %10s %8s %8s %7s %3s %7s %9s\n", "op", "type",
           "impl", "tokens", "median_ms", "p90_ms", "board_J", "dynamic_J", "power_W", "dT_C/s",
           "samples", "thr", "kernels", "ncu_o/d%");
    for (int i = 0; i < tmoe_cost_count(cm); i++) {
        const tmoe_cost_entry *x = tmoe_cost_entry_at(cm, i);
        char ncu[72];
        if (x->has_ncu)
            snprintf(ncu, sizeof ncu, "%s/%s", num(g, sizeof g, x->ncu_occupancy_pct, 0),
                     num(h, sizeof h, x->ncu_dram_pct, 0));
        else
            snprintf(ncu, sizeof ncu, "-");
        printf("%-15s %-5s %-8s %6d %10s %10s %10s %10s %8s %8s %7" PRId64 " %3s %7d %9s\n",
               tmoe_op_name(x->op), tmoe_etype_name(x->expert_type), tmoe_impl_name(x->impl),
               x->tokens, num(a, sizeof a, x->latency_median_ms, 5),
               num(b, sizeof b, x->latency_p90_ms, 5), num(c, sizeof c, x->energy_board_j, 5),
               num(d, sizeof d, x->energy_dynamic_j, 5), num(e, sizeof e, x->avg_power_w, 1),
               num(f, sizeof f, x->temp_impact_c_per_s, 3), x->samples, x->throttled ? "yes" : "",
               x->n_kernels, ncu);
    }
    tmoe_cost_free(cm);
    return 0;
}

static int merge(const char *out, int n, char **in) {
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    if (tmoe_cost_merge_files((const char *const *)in, n, &cm, &err))
        return cli_fail_err("cost", &err);
    int rc = tmoe_cost_save(cm, out, &err);
    if (rc == 0) printf("wrote %s: %d entries from %d files\n", out, tmoe_cost_count(cm), n);
    tmoe_cost_free(cm);
    return rc ? cli_fail_err("cost", &err) : 0;
}

int cmd_cost(int argc, char **argv) {
    static const struct option longopts[] = {
        {"help", no_argument, 0, 'h'}, {"verbose", no_argument, 0, 'v'}, {0, 0, 0, 0}};
    int verbose = 0;
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "hv", longopts, NULL)) != -1;) {
        if (ch == 'h') {
            usage(stdout);
            return 0;
        }
        if (ch == 'v') {
            verbose++;
            continue;
        }
        return cli_usage_error("cost");
    }
    if (verbose) cli_log_init(verbose);
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs < 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(args[0], "show") == 0) {
        if (nargs != 2) {
            fprintf(stderr, "thermoe cost show: expected one FILE\n");
            return 2;
        }
        return show(args[1]);
    }
    if (strcmp(args[0], "merge") == 0) {
        if (nargs < 3) {
            fprintf(stderr, "thermoe cost merge: expected OUT and at least one IN\n");
            return 2;
        }
        cli_log_init(verbose > 1 ? verbose : 1); /* say which entries were replaced */
        return merge(args[1], nargs - 2, args + 2);
    }
    fprintf(stderr, "thermoe cost: unknown action '%s' (show or merge)\n", args[0]);
    return 2;
}
