/* Tables of the analysis: summary and comparisons, each as Markdown, CSV and LaTeX
 * (booktabs). Unknown values print as "n/a" (Markdown, LaTeX) or "nan" (CSV). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "analyze/internal.h"

enum { MD, CSV, TEX, HTML };

static const char *fmt_num(char *b, size_t n, double v, int kind) {
    if (!isfinite(v))
        snprintf(b, n, "%s", kind == CSV ? "nan" : "n/a");
    else
        snprintf(b, n, kind == CSV ? "%.8g" : "%.4g", v);
    return b;
}

static const char *fmt_p(char *b, size_t n, double p, int kind) {
    if (!isfinite(p)) return fmt_num(b, n, p, kind);
    if (kind == CSV)
        snprintf(b, n, "%.6g", p);
    else if (p < 1e-4)
        snprintf(b, n, "<0.0001");
    else
        snprintf(b, n, "%.4f", p);
    return b;
}

static const char *fmt_ci(char *b, size_t n, double m, double lo, double hi, int kind) {
    char x[24], y[24], z[24];
    fmt_num(x, sizeof x, m, kind);
    if (!isfinite(lo) || !isfinite(hi))
        snprintf(b, n, "%s", x);
    else
        snprintf(b, n, "%s [%s, %s]", x, fmt_num(y, sizeof y, lo, kind),
                 fmt_num(z, sizeof z, hi, kind));
    return b;
}

static const char *fmt_pct(char *b, size_t n, double m, double lo, double hi, int kind) {
    if (!isfinite(m)) return fmt_num(b, n, m, kind);
    if (!isfinite(lo) || !isfinite(hi))
        snprintf(b, n, "%+.1f%%", m);
    else
        snprintf(b, n, "%+.1f%% [%+.1f, %+.1f]", m, lo, hi);
    return b;
}

static const char *fmt_n(char *b, size_t n, const tmoe_group_result *g) {
    snprintf(b, n, "%d %s", g->n_units, g->n_units == 1 ? "repeat" : "repeats");
    return b;
}

/* A difference in the metric's own unit (temperatures: degrees C). */
static const char *fmt_diff(char *b, size_t n, double m, double lo, double hi, const char *unit) {
    if (!isfinite(m))
        snprintf(b, n, "n/a");
    else if (!isfinite(lo) || !isfinite(hi))
        snprintf(b, n, "%+.2f %s", m, unit);
    else
        snprintf(b, n, "%+.2f %s [%+.2f, %+.2f]", m, unit, lo, hi);
    return b;
}

/* Why metric m of group g has no p-value against base, or "" when it has one (or is not
 * compared at all): "routing unchanged", or "N repeat(s): effect sizes only". */
const char *analysis_no_p_reason(char *b, size_t n, const tmoe_group_result *base,
                                 const tmoe_group_result *g, tmoe_metric m) {
    b[0] = '\0';
    if (!base || base == g) return b;
    const tmoe_metric_result *r = &g->m[m];
    if (g->routing_unchanged) {
        snprintf(b, n, "routing unchanged");
        return b;
    }
    int units = r->paired ? r->n_pairs : (r->n < base->m[m].n ? r->n : base->m[m].n);
    if (units < TMOE_ANALYZE_MIN_REPEATS) snprintf(b, n, "%d repeat(s): effect sizes only", units);
    return b;
}

/* One output row: cells already formatted. */
static void row_out(FILE *f, int kind, const char *const *cells, int n) {
    if (kind == HTML) {
        fputs("<tr>", f);
        for (int i = 0; i < n; i++) {
            fputs(i < 2 ? "<td class=l>" : "<td>", f);
            put_html(f, cells[i]);
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (kind == MD) {
            fputs(i ? " | " : "| ", f);
            put_md(f, cells[i]);
        } else if (kind == TEX) {
            if (i) fputs(" & ", f);
            put_latex(f, cells[i]);
        } else {
            if (i) fputc(',', f);
            if (strpbrk(cells[i], ",\"\r\n")) {
                fputc('"', f);
                for (const char *p = cells[i]; *p; p++) {
                    if (*p == '"') fputc('"', f);
                    fputc(*p, f);
                }
                fputc('"', f);
            } else
                fputs(cells[i], f);
        }
    }
    fputs(kind == MD ? " |\n" : kind == TEX ? " \\\\\n" : "\n", f);
}

static void header_out(FILE *f, int kind, const char *const *cells, int n, const char *caption) {
    if (kind == HTML) {
        fputs("<table>\n<caption>", f);
        put_html(f, caption);
        fputs("</caption>\n<tr>", f);
        for (int i = 0; i < n; i++) {
            fputs("<th>", f);
            put_html(f, cells[i]);
            fputs("</th>", f);
        }
        fputs("</tr>\n", f);
        return;
    }
    if (kind == TEX) {
        fprintf(f, "\\begin{table}[t]\n\\centering\\small\n\\caption{");
        put_latex(f, caption);
        fprintf(f, "}\n\\begin{tabular}{ll");
        for (int i = 2; i < n; i++) fputc('r', f);
        fprintf(f, "}\n\\toprule\n");
    } else if (kind == MD)
        fprintf(f, "%s\n\n", caption);
    row_out(f, kind, cells, n);
    if (kind == MD) {
        for (int i = 0; i < n; i++) fputs(i < 2 ? "|---" : "|--:", f);
        fputs("|\n", f);
    }
    if (kind == TEX) fputs("\\midrule\n", f);
}

static void footer_out(FILE *f, int kind, const char *note) {
    if (kind == HTML) {
        fputs("</table>\n<p class=note>", f);
        put_html(f, note);
        fputs("</p>\n", f);
    } else if (kind == TEX) {
        fputs("\\bottomrule\n\\end{tabular}\n\\par\\smallskip\\footnotesize ", f);
        put_latex(f, note);
        fputs("\n\\end{table}\n\n", f);
    } else if (kind == MD)
        fprintf(f, "\n%s\n\n", note);
}

#define C 32
static void write_summary(const tmoe_analysis *a, FILE *f, int kind) {
    const char *note =
        "n: independent repeats (the statistical unit; batches of one repeat are never "
        "treated as independent). CIs: 95%, t interval over repeats (bootstrap percentile "
        "where marked *). Change vs baseline: 95% CI; p: paired t-test by repeat (Welch's "
        "when the repeats do not pair), Holm-adjusted per metric over all workloads x "
        "strategies, only with 3+ repeats; g: Hedges' g. Peaks: the max over every batch. "
        "Latency percentiles pool all batches (type 7). Perplexity change: each batch's NLL "
        "against baseline routing on the same tokens, 100 (exp(mean NLL change) - 1). Router: "
        "host time per batch; overhead (%): router host time over measured step time, not "
        "formed on the simulated GPU (its step time is simulated). Active experts: the distinct "
        "experts a step's MoE layers ran, mean over layers and steps.";
    const double es = tmoe_metric_scale(TMOE_M_ENERGY_PER_TOKEN);
    char b[32][96];
    const char *cells[32];
    for (int i = 0; i < 32; i++) cells[i] = b[i];
    if (kind == CSV) {
        static const char *const h[] = {"workload",
                                        "strategy",
                                        "n_units",
                                        "unit",
                                        "n_batches",
                                        "energy_mj_per_token",
                                        "energy_ci_lo",
                                        "energy_ci_hi",
                                        "energy_pct_vs_baseline",
                                        "energy_pct_ci_lo",
                                        "energy_pct_ci_hi",
                                        "energy_p",
                                        "energy_p_holm",
                                        "energy_hedges_g",
                                        "power_avg_w",
                                        "power_peak_w",
                                        "gpu_temp_peak_c",
                                        "mem_temp_peak_c",
                                        "latency_mean_ms",
                                        "latency_p50_ms",
                                        "latency_p90_ms",
                                        "latency_p99_ms",
                                        "throughput_tokens_s",
                                        "throttled_pct",
                                        "router_host_ms",
                                        "overhead_pct",
                                        "nll",
                                        "ppl_change_pct",
                                        "ppl_change_ci_lo",
                                        "ppl_change_ci_hi",
                                        "active_experts",
                                        "note"};
        row_out(f, CSV, h, 32);
    }
    for (int pass = 0; pass < (kind == CSV ? 1 : 2); pass++) {
        if (kind != CSV) {
            static const char *const h1[] = {"workload",
                                             "strategy",
                                             "n",
                                             "energy/token (mJ) [95% CI]",
                                             "vs baseline [95% CI]",
                                             "p",
                                             "p (Holm)",
                                             "g",
                                             "avg power (W)",
                                             "peak power (W)",
                                             "GPU peak (C)",
                                             "HBM peak (C)",
                                             "perplexity [95% CI]"};
            static const char *const h2[] = {"workload",
                                             "strategy",
                                             "n",
                                             "latency mean (ms)",
                                             "p50",
                                             "p90",
                                             "p99",
                                             "tokens/s",
                                             "throttled (%)",
                                             "top-k agr.",
                                             "out. rel. err.",
                                             "router (ms)",
                                             "overhead (%)",
                                             "active experts"};
            header_out(
                f, kind, pass ? h2 : h1, pass ? 14 : 13,
                pass ? "Table 2: latency, throughput, fidelity and overhead per workload x strategy"
                     : "Table 1: energy, power and temperature per workload x strategy");
        }
        for (int i = 0; i < a->ng; i++) {
            const tmoe_group_result *g = &a->g[i].r;
            const tmoe_metric_result *m = g->m, *e = &m[TMOE_M_ENERGY_PER_TOKEN];
            const tmoe_group_result *base = tmoe_analysis_find(a, g->workload, a->cfg.baseline);
            char why[96];
            analysis_no_p_reason(why, sizeof why, base, g, TMOE_M_ENERGY_PER_TOKEN);
            int k = 0;
            snprintf(b[k++], C * 3, "%s", g->workload);
            snprintf(b[k++], C * 3, "%s", g->strategy);
            if (kind == CSV) {
                snprintf(b[k++], C, "%d", g->n_units);
                snprintf(b[k++], C, "repeat");
                snprintf(b[k++], C, "%d", g->n_batches);
                fmt_num(b[k++], C, es * e->mean, kind);
                fmt_num(b[k++], C, es * e->ci_lo, kind);
                fmt_num(b[k++], C, es * e->ci_hi, kind);
                fmt_num(b[k++], C, e->pct, kind);
                fmt_num(b[k++], C, e->pct_lo, kind);
                fmt_num(b[k++], C, e->pct_hi, kind);
                fmt_p(b[k++], C, e->p, kind);
                fmt_p(b[k++], C, e->p_holm, kind);
                fmt_num(b[k++], C, e->hedges_g, kind);
                fmt_num(b[k++], C, m[TMOE_M_POWER_AVG].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_POWER_PEAK].peak, kind);
                fmt_num(b[k++], C, m[TMOE_M_GPU_TEMP_PEAK].peak, kind);
                fmt_num(b[k++], C, m[TMOE_M_MEM_TEMP_PEAK].peak, kind);
                fmt_num(b[k++], C, m[TMOE_M_LATENCY_MEAN].mean, kind);
                fmt_num(b[k++], C, g->lat_p50, kind);
                fmt_num(b[k++], C, g->lat_p90, kind);
                fmt_num(b[k++], C, g->lat_p99, kind);
                fmt_num(b[k++], C, m[TMOE_M_THROUGHPUT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_THROTTLED_PCT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_ROUTER_MS].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_OVERHEAD_PCT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_NLL].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_NLL].pct, kind);
                fmt_num(b[k++], C, m[TMOE_M_NLL].pct_lo, kind);
                fmt_num(b[k++], C, m[TMOE_M_NLL].pct_hi, kind);
                fmt_num(b[k++], C, m[TMOE_M_ACTIVE_EXPERTS].mean, kind);
                snprintf(b[k++], 96, "%s", why);
                row_out(f, CSV, cells, k);
                continue;
            }
            fmt_n(b[k++], C, g);
            if (pass == 0) {
                fmt_ci(b[k], 96, es * e->mean, es * e->ci_lo, es * e->ci_hi, kind);
                if (e->ci_bootstrap) strcat(b[k], "*");
                k++;
                if (g->routing_unchanged)
                    snprintf(b[k++], 96, "routing unchanged");
                else
                    fmt_pct(b[k++], 96, e->pct, e->pct_lo, e->pct_hi, kind);
                if (why[0]) {
                    snprintf(b[k++], 96, "%s", why);
                    snprintf(b[k++], C, "-");
                } else {
                    fmt_p(b[k++], C, e->p, kind);
                    fmt_p(b[k++], C, e->p_holm, kind);
                }
                fmt_num(b[k++], C, e->hedges_g, kind);
                fmt_num(b[k++], C, m[TMOE_M_POWER_AVG].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_POWER_PEAK].peak, kind);
                fmt_num(b[k++], C, m[TMOE_M_GPU_TEMP_PEAK].peak, kind);
                fmt_num(b[k++], C, m[TMOE_M_MEM_TEMP_PEAK].peak, kind);
                const tmoe_metric_result *q = &m[TMOE_M_NLL];
                if (g->routing_unchanged && q->n)
                    snprintf(b[k++], 96, "routing unchanged");
                else
                    fmt_pct(b[k++], 96, q->pct, q->pct_lo, q->pct_hi, kind);
            } else {
                const tmoe_metric_result *l = &m[TMOE_M_LATENCY_MEAN];
                fmt_ci(b[k], 96, l->mean, l->ci_lo, l->ci_hi, kind);
                if (l->ci_bootstrap) strcat(b[k], "*");
                k++;
                fmt_num(b[k++], C, g->lat_p50, kind);
                fmt_num(b[k++], C, g->lat_p90, kind);
                fmt_num(b[k++], C, g->lat_p99, kind);
                fmt_num(b[k++], C, m[TMOE_M_THROUGHPUT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_THROTTLED_PCT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_TOPK_AGREEMENT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_OUTPUT_REL_ERR].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_ROUTER_MS].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_OVERHEAD_PCT].mean, kind);
                fmt_num(b[k++], C, m[TMOE_M_ACTIVE_EXPERTS].mean, kind);
            }
            row_out(f, kind, cells, k);
        }
        if (kind != CSV) footer_out(f, kind, note);
    }
}

static void write_comparisons(const tmoe_analysis *a, FILE *f, int kind) {
    static const char *const h[] = {"workload",
                                    "strategy",
                                    "metric",
                                    "n (base/strat.)",
                                    "baseline mean",
                                    "mean",
                                    "change [95% CI]",
                                    "t",
                                    "df",
                                    "p",
                                    "p (Holm)",
                                    "Hedges' g"};
    static const char *const hcsv[] = {
        "workload",   "strategy",   "metric",    "n_baseline", "n",    "baseline_mean",
        "mean",       "pct_change", "pct_ci_lo", "pct_ci_hi",  "t",    "df",
        "p",          "p_holm",     "hedges_g",  "cohen_d",    "diff", "diff_ci_lo",
        "diff_ci_hi", "test",       "n_pairs",   "note"};
    if (kind == CSV)
        row_out(f, CSV, hcsv, 22);
    else
        header_out(f, kind, h, 12,
                   "Comparisons against the baseline of the same workload (repeats as units: "
                   "paired t-test by repeat, or Welch's; p only with 3+ repeats)");
    char b[22][96];
    const char *cells[22];
    for (int i = 0; i < 22; i++) cells[i] = b[i];
    for (int i = 0; i < a->ng; i++) {
        const tmoe_group_result *g = &a->g[i].r;
        const tmoe_group_result *base = tmoe_analysis_find(a, g->workload, a->cfg.baseline);
        if (!base || base == g) continue;
        for (int m = 0; m < TMOE_M_COUNT; m++) {
            if (!tmoe_metric_tested((tmoe_metric)m)) continue;
            const tmoe_metric_result *r = &g->m[m];
            if (r->n == 0 && base->m[m].n == 0) continue; /* not in the log (e.g. no nll) */
            char why[96];
            analysis_no_p_reason(why, sizeof why, base, g, (tmoe_metric)m);
            int abs_m = tmoe_metric_absolute((tmoe_metric)m);
            double sc = tmoe_metric_scale((tmoe_metric)m);
            int k = 0;
            snprintf(b[k++], 96, "%s", g->workload);
            snprintf(b[k++], 96, "%s", g->strategy);
            snprintf(b[k++], 96, "%s",
                     kind == CSV ? tmoe_metric_name((tmoe_metric)m)
                                 : tmoe_metric_label((tmoe_metric)m));
            if (kind == CSV) {
                snprintf(b[k++], 96, "%d", base->m[m].n);
                snprintf(b[k++], 96, "%d", r->n);
            } else
                snprintf(b[k++], 96, "%d/%d", base->m[m].n, r->n);
            fmt_num(b[k++], 96, sc * base->m[m].mean, kind);
            fmt_num(b[k++], 96, sc * r->mean, kind);
            if (kind == CSV) {
                fmt_num(b[k++], 96, r->pct, kind);
                fmt_num(b[k++], 96, r->pct_lo, kind);
                fmt_num(b[k++], 96, r->pct_hi, kind);
            } else if (g->routing_unchanged)
                snprintf(b[k++], 96, "routing unchanged");
            else if (abs_m)
                fmt_diff(b[k++], 96, r->diff, r->diff_lo, r->diff_hi, "C");
            else
                fmt_pct(b[k++], 96, r->pct, r->pct_lo, r->pct_hi, kind);
            fmt_num(b[k++], 96, r->t, kind);
            fmt_num(b[k++], 96, r->df, kind);
            if (kind != CSV && why[0]) {
                snprintf(b[k++], 96, "%s", why);
                snprintf(b[k++], 96, "-");
            } else {
                fmt_p(b[k++], 96, r->p, kind);
                fmt_p(b[k++], 96, r->p_holm, kind);
            }
            fmt_num(b[k++], 96, r->hedges_g, kind);
            if (kind == CSV) {
                fmt_num(b[k++], 96, r->cohen_d, kind);
                fmt_num(b[k++], 96, sc * r->diff, kind);
                fmt_num(b[k++], 96, sc * r->diff_lo, kind);
                fmt_num(b[k++], 96, sc * r->diff_hi, kind);
                snprintf(b[k++], 96, "%s",
                         g->routing_unchanged ? "none"
                         : r->paired          ? "paired"
                                              : "welch");
                snprintf(b[k++], 96, "%d", r->n_pairs);
                snprintf(b[k++], 96, "%s", why);
            }
            row_out(f, kind, cells, k);
        }
    }
    if (kind != CSV)
        footer_out(f, kind,
                   "Change: 100 (mean/baseline mean - 1) with a 95% CI (paired: the CI of the "
                   "mean per-repeat change over the baseline mean; else percentile "
                   "bootstrap); temperatures: change in degrees C (paired: mean of per-repeat "
                   "peak deltas), never percent. p only with 3+ repeats (pairs when "
                   "paired); p (Holm): Holm step-down over the comparisons of the same metric "
                   "(all workloads x strategies). Routing unchanged: the strategy's selections "
                   "equal the baseline's on every batch; not compared. NLL: paired on the same "
                   "tokens (each batch's nll against its nll_baseline, or at another expert "
                   "type the baseline's nll on the same text), one pair per text (seed and "
                   "repeat); its change is the perplexity change 100 (exp(mean NLL change) - "
                   "1). Values in the units of the metric's label (energy in mJ).");
}

static int write_one(const tmoe_analysis *a, const char *dir, const char *name, int kind,
                     void (*fn)(const tmoe_analysis *, FILE *, int), tmoe_error *err) {
    char path[4096];
    join_path(path, sizeof path, dir, name);
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) return rc;
    fn(a, af.f, kind);
    return tmoe_atomic_commit(&af, err);
}

int tmoe_analysis_write_tables(const tmoe_analysis *a, const char *dir, tmoe_error *err) {
    int rc = ensure_dir(dir, err);
    static const char *const ext[] = {"md", "csv", "tex"};
    for (int k = 0; k < 3 && !rc; k++) {
        char name[64];
        snprintf(name, sizeof name, "summary.%s", ext[k]);
        rc = write_one(a, dir, name, k, write_summary, err);
        snprintf(name, sizeof name, "comparisons.%s", ext[k]);
        if (!rc) rc = write_one(a, dir, name, k, write_comparisons, err);
    }
    return rc;
}

void analysis_tables_html(const tmoe_analysis *a, FILE *f) {
    fprintf(f,
            "<details>\n<summary>Summary tables: energy, power, temperature, latency, "
            "fidelity and overhead per workload x strategy (%d rows)</summary>\n",
            a->ng);
    write_summary(a, f, HTML);
    fputs("</details>\n", f);
    int n = 0;
    for (int i = 0; i < a->ng; i++)
        if (strcmp(a->g[i].r.strategy, a->cfg.baseline) != 0) n++;
    fprintf(f,
            "<details>\n<summary>Comparisons against the baseline: every tested metric of "
            "every workload x strategy (%d groups besides the baseline)</summary>\n",
            n);
    write_comparisons(a, f, HTML);
    fputs("</details>\n", f);
}

void put_html(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

void put_latex(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '\\': fputs("\\textbackslash{}", f); break;
        case '{': fputs("\\{", f); break;
        case '}': fputs("\\}", f); break;
        case '^': fputs("\\textasciicircum{}", f); break;
        case '~': fputs("\\textasciitilde{}", f); break;
        case '_': fputs("\\_", f); break;
        case '%': fputs("\\%", f); break;
        case '&': fputs("\\&", f); break;
        case '#': fputs("\\#", f); break;
        case '$': fputs("\\$", f); break;
        case '<': fputs("$<$", f); break;
        case '>': fputs("$>$", f); break;
        case '|': fputs("\\textbar{}", f); break;
        /* "\\[" would take a cell that starts with '[' as its optional argument */
        case '[': fputs("{[}", f); break;
        case ']': fputs("{]}", f); break;
        default: fputc(c < 0x20 || c == 0x7f ? ' ' : c, f); /* a blank line ends a cell */
        }
    }
}

void put_md(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '|':
        case '\\':
        case '*':
        case '`':
        case '[':
        case ']':
            fputc('\\', f);
            fputc(c, f);
            break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        default: fputc(c < 0x20 || c == 0x7f ? ' ' : c, f); /* a newline would end the row */
        }
    }
}
