/* The summary table printed at the end of a run, computed from batches.csv as written
 * (so a resumed run summarises every row, not only those of the last process). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exp/runner_internal.h"

typedef struct agg {
    char wl[64], st[64];
    long n;
    double energy, tokens, tpeak, mpeak, agree, relerr;
    long nagree, nrel;
    double *lat;
    long nlat, cap;
} agg;

/* Percentile of sorted v (tmoe_percentile_sorted, as the analysis: R type 7). */
static double pct(const double *v, long n, double p) {
    return n == 0 ? NAN : tmoe_percentile_sorted(v, (int)n, p);
}

/* Table order: workloads, then strategies, in the order of their enums. */
static int rank(const agg *g) {
    tmoe_workload_kind w = TMOE_WL_COUNT;
    tmoe_route_strategy s = TMOE_ROUTE_STRATEGY_COUNT;
    tmoe_workload_parse(g->wl, &w);
    tmoe_route_strategy_parse(g->st, &s);
    return (int)w * 100 + (int)s;
}

static int cmp_agg(const void *a, const void *b) { return rank(a) - rank(b); }

static double cell(char **f, int c) {
    const char *s = f[c];
    if (!*s || !strcmp(s, "nan")) return NAN;
    return strtod(s, NULL);
}

int run_print_summary(run_ctx *r, tmoe_error *err) {
    FILE *f = fopen(r->csv_path, "r");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "cannot read back %s", r->csv_path);
    agg *a = NULL;
    int na = 0, cap = 0, rc = TMOE_OK;
    char *line = NULL, *buf = NULL, *fields[TMOE_RL_NCOLS + 1];
    size_t lcap = 0;
    ssize_t len;
    long lineno = 0;
    while ((len = getline(&line, &lcap, f)) > 0) {
        if (++lineno == 1) continue;
        line[strcspn(line, "\n")] = '\0';
        char *nb = realloc(buf, (size_t)len + 1);
        if (!nb) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
            break;
        }
        buf = nb;
        if (tmoe_runlog_split(line, buf, fields, TMOE_RL_NCOLS) != TMOE_RL_NCOLS) continue;
        int i;
        for (i = 0; i < na; i++)
            if (!strcmp(a[i].wl, fields[TMOE_RL_WORKLOAD]) && !strcmp(a[i].st, fields[TMOE_RL_STRATEGY]))
                break;
        if (i == na) {
            if (na == cap) {
                cap = cap ? 2 * cap : 32;
                agg *n2 = realloc(a, sizeof *a * (size_t)cap);
                if (!n2) {
                    rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                    break;
                }
                a = n2;
            }
            memset(&a[na], 0, sizeof a[na]);
            snprintf(a[na].wl, sizeof a[na].wl, "%s", fields[TMOE_RL_WORKLOAD]);
            snprintf(a[na].st, sizeof a[na].st, "%s", fields[TMOE_RL_STRATEGY]);
            a[na].tpeak = a[na].mpeak = NAN;
            na++;
        }
        agg *g = &a[i];
        g->n++;
        double e = cell(fields, TMOE_RL_ENERGY_J), lat = cell(fields, TMOE_RL_LATENCY_MS);
        if (!isnan(e)) {
            g->energy += e;
            g->tokens += cell(fields, TMOE_RL_TOKENS);
        }
        double tp = cell(fields, TMOE_RL_GPU_TEMP_PEAK_C), mp = cell(fields, TMOE_RL_MEM_TEMP_C);
        if (!isnan(tp) && !(g->tpeak >= tp)) g->tpeak = tp;
        if (!isnan(mp) && !(g->mpeak >= mp)) g->mpeak = mp;
        double ag = cell(fields, TMOE_RL_TOPK_AGREEMENT), re = cell(fields, TMOE_RL_OUTPUT_REL_ERROR);
        if (!isnan(ag)) g->agree += ag, g->nagree++;
        if (!isnan(re)) g->relerr += re, g->nrel++;
        if (!isnan(lat)) {
            if (g->nlat == g->cap) {
                g->cap = g->cap ? 2 * g->cap : 256;
                double *nl = realloc(g->lat, sizeof(double) * (size_t)g->cap);
                if (!nl) {
                    rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
                    break;
                }
                g->lat = nl;
            }
            g->lat[g->nlat++] = lat;
        }
    }
    free(line);
    free(buf);
    fclose(f);
    if (!rc) {
        qsort(a, (size_t)na, sizeof *a, cmp_agg);
        FILE *o = r->out;
        fprintf(o, "\nsummary (%s telemetry%s; energy per token over all batches of a "
                   "combination, temperatures are peaks):\n",
                tmoe_telemetry_source_name(r->tel), r->sim ? ": SIMULATED H100, not a measurement" : "");
        fprintf(o, "%-16s %-22s %7s %12s %8s %9s %9s %7s %7s %7s %9s\n", "workload", "strategy",
                "batches", "mJ/token", "vs base", "p50 ms", "p99 ms", "GPU C", "HBM C", "top-k",
                "out err");
        for (int i = 0; i < na; i++) {
            agg *g = &a[i];
            qsort(g->lat, (size_t)g->nlat, sizeof(double), tmoe_cmp_double);
            double ept = g->tokens > 0 ? g->energy / g->tokens * 1e3 : NAN, base = NAN;
            for (int j = 0; j < na; j++)
                if (!strcmp(a[j].wl, g->wl) && !strcmp(a[j].st, "baseline") && a[j].tokens > 0)
                    base = a[j].energy / a[j].tokens * 1e3;
            char vs[16] = "-";
            if (!isnan(base) && strcmp(g->st, "baseline")) snprintf(vs, sizeof vs, "%+.1f%%", 100.0 * (ept / base - 1.0));
            fprintf(o, "%-16s %-22s %7ld %12.4f %8s %9.4f %9.4f %7.1f %7.1f %7.3f %9.2e\n", g->wl,
                    g->st, g->n, ept, vs, pct(g->lat, g->nlat, 50), pct(g->lat, g->nlat, 99), g->tpeak,
                    g->mpeak, g->nagree ? g->agree / g->nagree : NAN,
                    g->nrel ? g->relerr / g->nrel : NAN);
        }
        if (r->tel_faults)
            fprintf(o,
                    "\nTELEMETRY FAULTS: %ld of %ld batches were not measured (first at repeat %d "
                    "%s %s batch %d: %s); their energy and power are nan and left out of the "
                    "table above\n",
                    r->tel_faults, r->rows_logged, r->fault_combo.repeat,
                    tmoe_workload_name(r->fault_combo.wl),
                    tmoe_route_strategy_name(r->fault_combo.st), r->fault_batch, r->fault_reason);
        if (r->ndev_found > r->ndev)
            fprintf(o,
                    "\ntelemetry: %d devices found, devices 0-%d followed, %d-%d left out (at most "
                    "%d)\n",
                    r->ndev_found, r->ndev - 1, r->ndev, r->ndev_found - 1, r->ndev);
        fprintf(o, "\nfiles: %s (one row per batch), %s/%s, traces in %s/traces/ (open in "
                   "ui.perfetto.dev)\n",
                r->csv_path, r->dir, TMOE_RUNLOG_METADATA, r->dir);
    }
    for (int i = 0; i < na; i++) free(a[i].lat);
    free(a);
    return rc;
}
