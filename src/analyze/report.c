/* report.html and the one-call entry point tmoe_analyze_run: read run directories, analyse,
 * write tables, figures and a single page with metadata, a plain-language summary computed
 * from the data, every table and every figure. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analyze/internal.h"

static const struct {
    const char *prefix, *how;
} fig_help[] = {
    {"power_", "Average board power per batch (mean over runs at each batch index), one line per "
               "strategy. Flat lines after warm-up are steady state; a falling TTHA line shows it "
               "learning to cut power."},
    {"temperature_", "Peak GPU (solid) and HBM (dashed) temperature per batch. Compare slopes: a "
                     "strategy that spreads or skips hot experts heats more slowly."},
    {"latency_cdf_",
     "Fraction of batches at or below a latency. Curves to the left are faster; the "
     "top of the curve is the tail."},
    {"latency_pct_", "p50/p90/p99 batch latency (type 7 percentiles over all batches)."},
    {"expert_usage_",
     "Share of token copies sent to each expert, per strategy. Cost-aware strategies "
     "shift load away from expensive or hot experts."},
    {"expert_time_", "Total time spent in each expert over the whole run."},
    {"ttha_loss_", "TTHA loss terms over batches: convergence shows as the total flattening."},
    {"biases_", "Routing biases the adapter learned, per batch (rows) and expert (columns); blue "
                "discourages an expert, orange favours it."},
    {"pareto_latency_", "Energy per token against latency, one point per strategy; the dashed line "
                        "joins the strategies no other beats on both."},
    {"pareto_fidelity_", "Energy per token against routing disagreement with the unbiased router; "
                         "lower-left is better."},
    {"energy_per_token",
     "Mean energy per token per workload and strategy with 95% CIs over repeats."},
    {"power_peak", "Peak power per workload and strategy (each repeat's max over its batches) with "
                   "95% CIs over repeats."},
    {"throughput", "Tokens per second with 95% CIs over repeats."},
    {"overhead", "Time spent in the router (and TTHA update) as a share of step time."},
};

/* The help of the longest matching prefix ("power_peak" is not a "power_" time series). */
static const char *how_to_read(const char *name) {
    const char *how = "";
    size_t best = 0;
    for (size_t i = 0; i < sizeof fig_help / sizeof *fig_help; i++) {
        size_t n = strlen(fig_help[i].prefix);
        if (n > best && strncmp(name, fig_help[i].prefix, n) == 0) {
            best = n;
            how = fig_help[i].how;
        }
    }
    return how;
}

static void summary_sentences(const tmoe_analysis *a, FILE *f) {
    fputs("<h2>Summary</h2>\n<ul>\n", f);
    int any = 0;
    for (int i = 0; i < a->ng; i++) {
        const tmoe_group_result *g = &a->g[i].r;
        const tmoe_metric_result *e = &g->m[TMOE_M_ENERGY_PER_TOKEN];
        const tmoe_group_result *b = tmoe_analysis_find(a, g->workload, a->cfg.baseline);
        if (!b || b == g) continue;
        if (g->routing_unchanged) {
            any = 1;
            fputs("<li>", f);
            put_html(f, g->strategy);
            fputs(" on ", f);
            put_html(f, g->workload);
            fputs(": routing unchanged (its selections equal ", f);
            put_html(f, a->cfg.baseline);
            fputs("'s on every batch), so any change in energy, power or temperature is run "
                  "to run variation, not an effect; not compared.</li>\n",
                  f);
            continue;
        }
        if (!isfinite(e->pct)) continue;
        any = 1;
        char why[96];
        analysis_no_p_reason(why, sizeof why, b, g, TMOE_M_ENERGY_PER_TOKEN);
        fputs("<li>", f);
        put_html(f, g->strategy);
        fprintf(f, " used %.1f%% %s energy per token than ", fabs(e->pct),
                e->pct <= 0 ? "less" : "more");
        put_html(f, a->cfg.baseline);
        fputs(" on ", f);
        put_html(f, g->workload);
        if (isfinite(e->pct_lo))
            fprintf(f, " (95%% CI %+.1f%% to %+.1f%%", e->pct_lo, e->pct_hi);
        else
            fputs(" (no CI", f);
        if (e->paired)
            fprintf(f, ", paired by repeat, %d pair(s)", e->n_pairs);
        else
            fprintf(f, ", n = %d vs %d repeats", b->m[TMOE_M_ENERGY_PER_TOKEN].n, e->n);
        if (isfinite(e->hedges_g)) fprintf(f, ", Hedges' g = %.2f", e->hedges_g);
        if (why[0]) {
            fputs("; ", f);
            put_html(f, why);
        } else if (isfinite(e->p))
            fprintf(f, ", %s p = %.2g, Holm-adjusted p = %.2g", e->paired ? "paired t" : "Welch",
                    e->p, e->p_holm);
        fputs(")", f);
        if (!why[0] && isfinite(e->p_holm))
            fputs(e->p_holm < 0.05 ? "; the difference is significant at 5% after Holm correction"
                                   : "; not significant at 5% after Holm correction",
                  f);
        const tmoe_metric_result *t = &g->m[TMOE_M_GPU_TEMP_PEAK], *l = &g->m[TMOE_M_LATENCY_MEAN];
        if (isfinite(t->diff)) fprintf(f, ". Peak GPU temperature %+.1f C", t->diff);
        if (isfinite(l->pct)) fprintf(f, ", mean latency %+.1f%%", l->pct);
        const tmoe_metric_result *k = &g->m[TMOE_M_TOPK_AGREEMENT];
        if (isfinite(k->mean))
            fprintf(f, ", top-k agreement with the unbiased router %.3f", k->mean);
        fputs(".</li>\n", f);
    }
    if (!any)
        fputs("<li>No strategy could be compared with the baseline (no baseline rows for the same "
              "workload, or no energy values).</li>\n",
              f);
    fputs("</ul>\n", f);
}

static int file_exists(const char *p) {
    return access(p, R_OK) == 0;
}

static int write_html(const tmoe_analysis *a, const tmoe_analyze_config *cfg, char **names,
                      int nnames, const tmoe_figures_result *fr, const char *path,
                      tmoe_error *err) {
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) return rc;
    FILE *f = af.f;
    const tmoe_dataset *ds = a->ds;
    int sim = tmoe_dataset_simulated(ds);
    fputs(
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n<title>thermoe "
        "analysis</title>\n"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 "
        "1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}caption{text-align:left;"
        "font-weight:bold;margin-bottom:.3em}td,th{border-bottom:1px solid #ccc;padding:.2em .5em;"
        "text-align:right}td.l{text-align:left}th{background:#f3f3f3}.banner{background:#F0E442;"
        "border:2px solid #000;padding:.8em;font-weight:bold;font-size:115%}.note{font-size:85%;"
        "color:#555}figure{display:inline-block;width:48%;margin:.5%;vertical-align:top}"
        "figure img{width:100%}figcaption{font-size:85%}.problems li{color:#a33}"
        "pre{background:#f6f6f6;padding:.5em}</style>\n</head><body>\n",
        f);
    if (sim)
        fputs("<div class=banner>SIMULATED TELEMETRY: at least one input was measured on the "
              "simulated H100 (telemetry_source = sim). Its power, energy and temperature are "
              "model outputs, "
              "not measurements; figures from it are labelled simulated.</div>\n",
              f);
    fputs("<h1>thermoe analysis</h1>\n<h2>Runs</h2>\n<table><tr><th>directory</th><th>device</th>"
          "<th>driver</th><th>telemetry</th><th>commit</th><th>cost model</th><th>start</th>"
          "<th>end</th><th>status</th><th>rows</th></tr>\n",
          f);
    for (int i = 0; i < tmoe_dataset_nruns(ds); i++) {
        const tmoe_analyze_meta *m = tmoe_dataset_run(ds, i);
        const char *cells[] = {
            m->dir,        m->device_name,         m->driver,     m->telemetry_source,
            m->git_commit, m->cost_model_checksum, m->start_time, m->end_time,
            m->status};
        fputs("<tr>", f);
        for (size_t k = 0; k < sizeof cells / sizeof *cells; k++) {
            fputs(k == 0 ? "<td class=l>" : "<td>", f);
            put_html(f, *cells[k] ? cells[k] : (m->has_metadata ? "" : "unknown"));
            fputs("</td>", f);
        }
        fprintf(f, "<td>%d</td></tr>\n", m->rows);
    }
    fputs("</table>\n", f);
    if (tmoe_dataset_nproblems(ds)) {
        fputs("<h2>Input problems</h2>\n<ul class=problems>\n", f);
        for (int i = 0; i < tmoe_dataset_nproblems(ds); i++) {
            fputs("<li>", f);
            put_html(f, tmoe_dataset_problem(ds, i));
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }
    summary_sentences(a, f);
    fputs("<h2>Tables</h2>\n<p class=note>Also as Markdown, CSV and LaTeX (booktabs): summary.*, "
          "comparisons.*. Percentiles: linear interpolation between order statistics (R type 7, "
          "numpy default).</p>\n",
          f);
    analysis_tables_html(a, f);
    fputs("<h2>Figures</h2>\n", f);
    if (a->nworkloads > TMOE_ANALYZE_MAX_FIG_NAMES || a->nstrategies > TMOE_ANALYZE_MAX_FIG_NAMES)
        fprintf(f,
                "<p class=note>%d workloads and %d strategies: the figures show the first %d of "
                "each (the tables above have every workload and strategy).</p>\n",
                a->nworkloads, a->nstrategies, TMOE_ANALYZE_MAX_FIG_NAMES);
    const char *ext = (cfg->formats & TMOE_FMT_PNG)   ? "png"
                      : (cfg->formats & TMOE_FMT_SVG) ? "svg"
                      : (cfg->formats & TMOE_FMT_PDF) ? "pdf"
                                                      : "png";
    int as_link = strcmp(ext, "pdf") == 0; /* browsers do not show a PDF in <img> */
    int missing = 0;
    for (int i = 0; i < nnames; i++) {
        char img[4400], rel[600];
        snprintf(rel, sizeof rel, "figures/%s.%s", names[i], ext);
        snprintf(img, sizeof img, "%s/%s", cfg->out_dir, rel);
        fputs("<figure>", f);
        if (file_exists(img) && as_link) {
            fputs("<a href=\"", f);
            put_html(f, rel);
            fputs("\">", f);
            put_html(f, rel);
            fputs("</a>", f);
        } else if (file_exists(img)) {
            fputs("<img src=\"", f);
            put_html(f, rel);
            fputs("\" alt=\"", f);
            put_html(f, names[i]);
            fputs("\">", f);
        } else {
            missing++;
            fputs("<pre>not rendered: figures/", f);
            put_html(f, names[i]);
            fputs(".gp</pre>", f);
        }
        fputs("<figcaption><b>", f);
        put_html(f, names[i]);
        fputs(sim ? " (simulated telemetry).</b> " : ".</b> ", f);
        put_html(f, how_to_read(names[i]));
        fputs("</figcaption></figure>\n", f);
    }
    if (missing) {
        fprintf(f, "<p><b>%d figure(s) were not rendered</b>", missing);
        if (!fr->gnuplot_found)
            fputs(" because gnuplot could not be run", f);
        else if (fr->first_failure[0]) {
            fputs(" (first failure: ", f);
            put_html(f, fr->first_failure);
            fputs(")", f);
        }
        fputs(". The data and scripts are in figures/; to render them, install gnuplot (5.x, with "
              "the cairo terminals) and run:</p>\n<pre>cd figures &amp;&amp; for f in *.gp; do "
              "gnuplot "
              "-e \"fmt='png'\" \"$f\"; done</pre>\n<p>(fmt may be png, pdf or svg.)</p>\n",
              f);
    }
    fputs("<p class=note>Generated by thermoe analyze " TMOE_VERSION
          ". Each figure's data (.dat) and "
          "gnuplot script (.gp) lie beside it in figures/.</p>\n</body></html>\n",
          f);
    return tmoe_atomic_commit(&af, err);
}

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* A run directory, or a directory of run directories (each child holding batches.csv, taken
 * in name order): results/ with one subdirectory per run works as well as the runs. */
static int add_dir_or_children(tmoe_dataset *ds, const char *dir, tmoe_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_CSV);
    DIR *d = access(path, F_OK) == 0 ? NULL : opendir(dir);
    if (!d) {
        tmoe_error e = {0};
        int rc = tmoe_dataset_add_dir(ds, dir, &e);
        if (rc == TMOE_ENOMEM) tmoe_errorf(err, rc, "%s", e.msg);
        return rc == TMOE_ENOMEM ? rc : TMOE_OK;
    }
    char **names = NULL;
    int n = 0, rc = TMOE_OK;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s/%s", dir, de->d_name, TMOE_RUNLOG_CSV);
        if (access(path, F_OK) != 0) continue;
        char **q = realloc(names, sizeof *q * (size_t)(n + 1));
        char *c = strdup(de->d_name);
        if (!q || !c) {
            free(c);
            if (q) names = q;
            rc = tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory listing run directories", dir);
            break;
        }
        names = q;
        names[n++] = c;
    }
    closedir(d);
    if (!rc && n == 0) {
        tmoe_error e = {0};
        rc = tmoe_dataset_add_dir(ds, dir, &e); /* records "no batches.csv" as a problem */
        rc = rc == TMOE_ENOMEM ? tmoe_errorf(err, rc, "%s", e.msg) : TMOE_OK;
    }
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        if (!rc) {
            tmoe_error e = {0};
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (tmoe_dataset_add_dir(ds, path, &e) == TMOE_ENOMEM)
                rc = tmoe_errorf(err, TMOE_ENOMEM, "%s", e.msg);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int tmoe_analyze_run_ex(const char *const *dirs, int n, const tmoe_analyze_config *cfg,
                        tmoe_analyze_summary *out, tmoe_error *err) {
    tmoe_analyze_config c = cfg ? *cfg : tmoe_analyze_config_default();
    tmoe_analyze_config d = tmoe_analyze_config_default();
    if (!c.out_dir) c.out_dir = d.out_dir;
    if (!c.baseline) c.baseline = d.baseline;
    if (!(c.level > 0.0 && c.level < 1.0)) c.level = d.level;
    tmoe_analyze_summary local;
    if (!out) out = &local;
    memset(out, 0, sizeof *out);
    if (n <= 0) return tmoe_errorf(err, TMOE_EINVAL, "no run directories given");
    tmoe_dataset *ds = tmoe_dataset_create(err);
    if (!ds) return TMOE_ENOMEM;
    for (int i = 0; i < n; i++) {
        int rc = add_dir_or_children(ds, dirs[i], err);
        if (rc == TMOE_ENOMEM) {
            tmoe_dataset_free(ds);
            return rc;
        }
    }
    tmoe_analysis *a = tmoe_analysis_create(ds, &c, err);
    out->n_rows = tmoe_dataset_nrows(ds);
    out->n_problems = tmoe_dataset_nproblems(ds);
    out->simulated = tmoe_dataset_simulated(ds);
    if (!a) {
        if (err && tmoe_dataset_nproblems(ds))
            tmoe_error_prefix(err, err->code, "%s", tmoe_dataset_problem(ds, 0));
        tmoe_dataset_free(ds);
        return err ? err->code : TMOE_EFORMAT;
    }
    out->n_groups = tmoe_analysis_ngroups(a);
    out->n_problems = tmoe_dataset_nproblems(ds);
    char **names = NULL;
    int nnames = 0;
    int rc = ensure_dir(c.out_dir, err);
    if (!rc) rc = tmoe_analysis_write_tables(a, c.out_dir, err);
    if (!rc) rc = analysis_figures(a, &c, &out->figures, &names, &nnames, err);
    if (!rc) {
        join_path(out->report_path, sizeof out->report_path, c.out_dir, "report.html");
        rc = write_html(a, &c, names, nnames, &out->figures, out->report_path, err);
    }
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);
    return rc;
}

int tmoe_analyze_run(const char *const *dirs, int n, const tmoe_analyze_config *cfg,
                     tmoe_error *err) {
    return tmoe_analyze_run_ex(dirs, n, cfg, NULL, err);
}
