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

static int cmp_agg(const void *a, const void *b) {
    return rank(a) - rank(b);
}

static double cell(const tmoe_csv *c, int col) {
    const char *s = tmoe_csv_field(c, col);
    if (!*s || !strcmp(s, "nan")) return NAN;
    return strtod(s, NULL);
}

int run_print_summary(run_ctx *r, tmoe_error *err) {
    tmoe_csv c;
    if (tmoe_csv_open_file(&c, r->csv_path, TMOE_RUNLOG_MAX_BYTES, err))
        return tmoe_error_prefix(err, TMOE_EIO, "cannot read back the rows for the summary");
    agg *a = NULL;
    int na = 0, cap = 0, rc = TMOE_OK;
    long nrec = 0;
    tmoe_error cerr = {0};
    for (;;) {
        int st = tmoe_csv_next(&c, &cerr);
        if (st == TMOE_ENOMEM) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "out of memory");
            break;
        }
        if (st) { /* not what the writer writes: the summary stops there */
            tmoe_log(TMOE_LOG_WARN, "%s: %s; the summary counts the rows before it", r->csv_path,
                     cerr.msg);
            break;
        }
        if (c.nfields == 0) break;
        if (++nrec == 1 || c.nfields != TMOE_RL_NCOLS) continue; /* the header; no row */
        const char *wl = tmoe_csv_field(&c, TMOE_RL_WORKLOAD);
        const char *st_name = tmoe_csv_field(&c, TMOE_RL_STRATEGY);
        int i;
        for (i = 0; i < na; i++)
            if (!strcmp(a[i].wl, wl) && !strcmp(a[i].st, st_name)) break;
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
            snprintf(a[na].wl, sizeof a[na].wl, "%s", wl);
            snprintf(a[na].st, sizeof a[na].st, "%s", st_name);
            a[na].tpeak = a[na].mpeak = NAN;
            na++;
        }
        agg *g = &a[i];
        g->n++;
        double e = cell(&c, TMOE_RL_ENERGY_J), lat = cell(&c, TMOE_RL_LATENCY_MS);
        if (!isnan(e)) {
            g->energy += e;
            g->tokens += cell(&c, TMOE_RL_TOKENS);
        }
        double tp = cell(&c, TMOE_RL_GPU_TEMP_PEAK_C), mp = cell(&c, TMOE_RL_MEM_TEMP_C);
        if (!isnan(tp) && !(g->tpeak >= tp)) g->tpeak = tp;
        if (!isnan(mp) && !(g->mpeak >= mp)) g->mpeak = mp;
        double ag = cell(&c, TMOE_RL_TOPK_AGREEMENT), re = cell(&c, TMOE_RL_OUTPUT_REL_ERROR);
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
    tmoe_csv_free(&c);
    if (!rc) {
        qsort(a, (size_t)na, sizeof *a, cmp_agg);
        FILE *o = r->out;
        fprintf(o,
                "\nsummary (%s telemetry%s; energy per token over all batches of a "
                "combination, temperatures are peaks):\n",
                tmoe_telemetry_source_name(r->tel),
                r->sim ? ": SIMULATED H100, not a measurement" : "");
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
            if (!isnan(base) && strcmp(g->st, "baseline"))
                snprintf(vs, sizeof vs, "%+.1f%%", 100.0 * (ept / base - 1.0));
            fprintf(o, "%-16s %-22s %7ld %12.4f %8s %9.4f %9.4f %7.1f %7.1f %7.3f %9.2e\n", g->wl,
                    g->st, g->n, ept, vs, pct(g->lat, g->nlat, 50), pct(g->lat, g->nlat, 99),
                    g->tpeak, g->mpeak, g->nagree ? g->agree / g->nagree : NAN,
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
        fprintf(o,
                "\nfiles: %s (one row per batch), %s/%s, traces in %s/traces/ (open in "
                "ui.perfetto.dev)\n",
                r->csv_path, r->dir, TMOE_RUNLOG_METADATA, r->dir);
    }
    for (int i = 0; i < na; i++) free(a[i].lat);
    free(a);
    return rc;
}
