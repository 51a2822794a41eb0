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
    {"forest",
     "The headline: each strategy's change against the baseline of the same workload, "
     "one panel per metric (energy per token in mJ, perplexity in %, p99 latency in ms, "
     "peak GPU and HBM temperature as changes in C), the dashed line at no change. "
     "The unit is the independent repeat: the change is the mean per-repeat change "
     "(perplexity: each batch's NLL against baseline routing on the same "
     "tokens) and the bar its 95% t interval, drawn only with 3 or more repeats; with "
     "fewer the title says so and no interval is drawn. A CI that crosses the dashed line is no "
     "evidence of an effect. Strategies marked unchanged routed exactly as the "
     "baseline did."},
    {"timeline", "The whole run in seconds since its start: board power (top) and GPU (solid) and "
                 "HBM (dashed) peak temperature (bottom), each combination a segment in its "
                 "strategy's colour, a dotted line where the workload changes. A temperature that "
                 "climbs across segments regardless of strategy is carry-over from the run order, "
                 "not an effect of routing."},
    {"power_", "Average board power against time since the start of each combination (mean over "
               "repeats at each batch), one panel per strategy on the same axes. Flat lines after "
               "warm-up are steady state; a falling TTHA line shows it learning to cut power."},
    {"temperature_",
     "Peak GPU (solid) and HBM (dashed) temperature against time since the start "
     "of each combination, one panel per strategy on the same axes. Compare slopes: "
     "a strategy that spreads or skips hot experts heats more slowly."},
    {"latency_ccdf_",
     "Fraction of batches at least as slow as a latency, on a log scale so the tail reads as "
     "well as the median: the height at a latency is the share of batches that slow (0.01 is "
     "the p99). Curves lower and to the left are faster."},
    {"latency_pct_", "p50/p90/p99 batch latency (type 7 percentiles over all batches)."},
    {"expert_usage_",
     "Share of token copies sent to each expert, per strategy. Cost-aware strategies "
     "shift load away from expensive or hot experts."},
    {"expert_time_", "Total time spent in each expert over the whole run."},
    {"ttha_loss_", "TTHA loss terms against time, one panel per term (each on its own scale): "
                   "convergence shows as the total flattening."},
    {"ttha_adapter_", "The adapter over the run: every expert's learned routing bias against time "
                      "(one line per expert and repeat), and the gradient norm of each update and "
                      "the learning rate where the log has them. Bands that settle show a stable "
                      "policy."},
    {"pareto_latency_", "Energy per token (mJ) against latency, one point per strategy; the dashed "
                        "line joins the strategies no other beats on both."},
    {"pareto_fidelity_", "Energy per token (mJ) against routing disagreement with the unbiased "
                         "router; lower-left is better."},
    {"energy_per_token",
     "Mean energy per token (mJ) per workload and strategy with 95% CIs over repeats."},
    {"energy_pred_vs_meas",
     "Energy per batch in mJ: the cost model's prediction (predicted_energy_j) against what "
     "was measured (NVML) or simulated, as the axis says; points on the dashed line were "
     "predicted exactly. The prediction drives routing, so a scale error here is an error in "
     "every routing decision's energy estimate."},
    {"serve_ttft_cdf", "Serving replays: the share of requests whose time to first token (arrival "
                       "to the end of the step that fed its last prompt token) was at most x, one "
                       "line per replay in its strategy's colour; all requests of the run. Lines "
                       "further left are faster; the top of each line is its worst request."},
    {"serve_tpot_cdf", "Serving replays: the same for the time per output token ((finish - first "
                       "token) / (generated - 1), requests with more than one token)."},
    {"serve_energy_prompt",
     "Serving replays: each request's energy (its share of every step it was in, by tokens; idle "
     "energy not included) against its prompt length as replayed. Longer prompts cost more "
     "prefill; the spread at one length is the decode length and the batch it shared."},
    {"serve_timeline",
     "A serving replay over time in 200 bins: average power (top) and GPU (solid) and HBM "
     "(dashed) temperature (bottom), with the arrival rate of the trace in grey on the right "
     "axis. Shaded: the steady-state window the summary is over (blue), or the whole run when "
     "none was detected (orange). Power should follow the arrivals; temperature lags them."},
    {"power_peak", "Peak power per workload and strategy (each repeat's max over its batches) with "
                   "95% CIs over repeats."},
    {"throughput", "Tokens per second with 95% CIs over repeats."},
    {"overhead", "Router host time. On a measured GPU: as a share of the measured step time. On "
                 "the simulated GPU the step time is simulated while the router time is host "
                 "time, so no share is formed: the host time per batch is shown instead."},
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

/* How the cost model's predicted energy per batch compares with the measured (or simulated)
 * one: the median ratio over batches with both. */
static void energy_prediction_sentence(const tmoe_analysis *a, FILE *f) {
    const tmoe_dataset *ds = a->ds;
    int n = tmoe_dataset_nrows(ds), k = 0, sim = 0, meas = 0;
    double *r = malloc(sizeof *r * (size_t)(n + 1));
    if (!r) return;
    for (int i = 0; i < n; i++) {
        const tmoe_analyze_row *row = tmoe_dataset_row(ds, i);
        double p = row->num[TMOE_RL_PREDICTED_ENERGY_J], m = row->num[TMOE_RL_ENERGY_J];
        if (!(p > 0.0) || !isfinite(m) || !isfinite(m / p)) continue;
        r[k++] = m / p;
        const char *src = row->str[TMOE_RL_TELEMETRY_SOURCE];
        if (!*src) src = tmoe_dataset_run(ds, row->source)->telemetry_source;
        if (strcmp(src, "sim") == 0)
            sim = 1;
        else
            meas = 1;
    }
    if (k) {
        qsort(r, (size_t)k, sizeof *r, tmoe_cmp_double);
        double med = tmoe_percentile_sorted(r, k, 50), lo = tmoe_percentile_sorted(r, k, 10),
               hi = tmoe_percentile_sorted(r, k, 90);
        fprintf(f,
                "<li>Cost model: the %s energy per batch is %.3g times the predicted "
                "(predicted_energy_j) at the median over %d batches (10th to 90th percentile "
                "%.3g to %.3g); see energy_pred_vs_meas.</li>\n",
                sim && meas ? "measured or simulated (mixed)"
                : sim       ? "simulated"
                            : "measured",
                med, k, lo, hi);
    }
    free(r);
}

static void summary_sentences(const tmoe_analysis *a, FILE *f) {
    fputs("<h2 id=summary>Summary</h2>\n<ul>\n", f);
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
        const tmoe_metric_result *q = &g->m[TMOE_M_NLL], *l99 = &g->m[TMOE_M_LATENCY_P99];
        if (isfinite(t->diff)) fprintf(f, ". Peak GPU temperature %+.1f C", t->diff);
        if (isfinite(l->pct)) fprintf(f, ", mean latency %+.1f%%", l->pct);
        if (isfinite(l99->diff)) fprintf(f, ", p99 latency %+.2f ms", l99->diff);
        if (isfinite(q->pct)) {
            fprintf(f, ", perplexity %+.2f%%", q->pct);
            if (isfinite(q->pct_lo))
                fprintf(f, " (95%% CI %+.2f%% to %+.2f%%, paired on the same tokens)", q->pct_lo,
                        q->pct_hi);
            else
                fprintf(f, " (paired on the same tokens, %d text(s): no CI)", q->n_pairs);
        }
        const tmoe_metric_result *k = &g->m[TMOE_M_TOPK_AGREEMENT];
        if (isfinite(k->mean))
            fprintf(f, ", top-k agreement with the unbiased router %.3f", k->mean);
        fputs(".</li>\n", f);
    }
    if (!any)
        fputs("<li>No strategy could be compared with the baseline (no baseline rows for the same "
              "workload, or no energy values).</li>\n",
              f);
    energy_prediction_sentence(a, f);
    fputs("</ul>\n", f);
}

static int file_exists(const char *p) {
    return access(p, R_OK) == 0;
}

/* One figure: its render (or a note that it was not rendered) and its caption. */
static void figure_html(FILE *f, const tmoe_analyze_config *cfg, const char *name, const char *ext,
                        int sim, int wide, int *missing) {
    char img[4400], rel[600];
    snprintf(rel, sizeof rel, "figures/%s.%s", name, ext);
    snprintf(img, sizeof img, "%s/%s", cfg->out_dir, rel);
    fputs(wide ? "<figure class=wide>" : "<figure>", f);
    if (file_exists(img) && strcmp(ext, "pdf") == 0) { /* browsers do not show a PDF in <img> */
        fputs("<a href=\"", f);
        put_html(f, rel);
        fputs("\">", f);
        put_html(f, rel);
        fputs("</a>", f);
    } else if (file_exists(img)) {
        fputs("<img src=\"", f);
        put_html(f, rel);
        fputs("\" alt=\"", f);
        put_html(f, name);
        fputs("\">", f);
    } else {
        (*missing)++;
        fputs("<pre>not rendered: figures/", f);
        put_html(f, name);
        fputs(".gp</pre>", f);
    }
    fputs("<figcaption><b>", f);
    put_html(f, name);
    fputs(sim ? " (simulated telemetry).</b> " : ".</b> ", f);
    put_html(f, how_to_read(name));
    fputs("</figcaption></figure>\n", f);
}

/* Which section of the page a figure goes to: 0 headline, 1 whole run, 2 per workload,
 * 3 over all workloads, 4 serving replays. */
static int figure_section(const char *name) {
    if (strncmp(name, "serve_", 6) == 0) return 4;
    if (strcmp(name, "forest") == 0) return 0;
    if (strncmp(name, "timeline", 8) == 0) return 1;
    static const char *const overall[] = {"energy_per_token", "power_peak", "throughput",
                                          "overhead", "energy_pred_vs_meas"};
    for (size_t i = 0; i < sizeof overall / sizeof *overall; i++)
        if (strcmp(name, overall[i]) == 0) return 3;
    return 2;
}

/* report.html: the headline figure first, then the other figures, the summary in words,
 * the tables folded (<details>), the runs and the input problems; a table of contents at
 * the top links each part. */
static int write_html(const tmoe_analysis *a, const serve_set *sv, const tmoe_analyze_config *cfg,
                      char **names, int nnames, const tmoe_figures_result *fr, const char *path,
                      tmoe_error *err) {
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) return rc;
    FILE *f = af.f;
    const tmoe_dataset *ds = a ? a->ds : NULL;
    int sim = (ds && tmoe_dataset_simulated(ds)) || sv->simulated;
    int np = (ds ? tmoe_dataset_nproblems(ds) : 0) + sv->nproblems;
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
        "figure.wide{width:98%}figure img{width:100%}figcaption{font-size:85%}"
        ".problems li{color:#a33}pre{background:#f6f6f6;padding:.5em}details{margin:1em 0}"
        "summary{cursor:pointer;font-weight:bold}nav{background:#f6f6f6;padding:.3em 1em}"
        "</style>\n</head><body>\n",
        f);
    if (sim)
        fputs("<div class=banner>SIMULATED TELEMETRY: at least one input was measured on the "
              "simulated H100 (telemetry_source = sim). Its power, energy and temperature are "
              "model outputs, "
              "not measurements; figures from it are labelled simulated.</div>\n",
              f);
    fputs("<h1>thermoe analysis</h1>\n", f);
    if (np)
        fprintf(f,
                "<p class=problems><b>%d input problem(s)</b>: see <a href=\"#problems\">Input "
                "problems</a>.</p>\n",
                np);
    int in_sec[5] = {0, 0, 0, 0, 0};
    for (int i = 0; i < nnames; i++) in_sec[figure_section(names[i])]++;
    if (sv->n && !in_sec[4]) in_sec[4] = -1; /* the table without figures */
    static const char *const sec_id[] = {"headline", "timeline", "per-workload", "overall",
                                         "serve"};
    static const char *const sec_title[] = {
        "Headline: change against the baseline", "Whole run: power and temperature over time",
        "Per workload", "Over all workloads", "Serving replays"};
    fputs("<nav id=toc><h2>Contents</h2>\n<ol>\n", f);
    for (int k = 0; k < 5; k++)
        if (in_sec[k])
            fprintf(f, "<li><a href=\"#%s\">%s</a> (%d figure%s)</li>\n", sec_id[k], sec_title[k],
                    in_sec[k] > 0 ? in_sec[k] : 0, in_sec[k] == 1 ? "" : "s");
    if (a)
        fputs("<li><a href=\"#summary\">Summary</a></li>\n"
              "<li><a href=\"#tables\">Tables</a> (folded)</li>\n"
              "<li><a href=\"#runs\">Runs</a></li>\n",
              f);
    if (np) fprintf(f, "<li><a href=\"#problems\">Input problems</a> (%d)</li>\n", np);
    fputs("</ol>\n</nav>\n", f);
    if (a &&
        (a->nworkloads > TMOE_ANALYZE_MAX_FIG_NAMES || a->nstrategies > TMOE_ANALYZE_MAX_FIG_NAMES))
        fprintf(f,
                "<p class=note>%d workloads and %d strategies: the figures show the first %d of "
                "each (the tables below have every workload and strategy).</p>\n",
                a->nworkloads, a->nstrategies, TMOE_ANALYZE_MAX_FIG_NAMES);
    const char *ext = (cfg->formats & TMOE_FMT_PNG)   ? "png"
                      : (cfg->formats & TMOE_FMT_SVG) ? "svg"
                      : (cfg->formats & TMOE_FMT_PDF) ? "pdf"
                                                      : "png";
    int missing = 0;
    for (int k = 0; k < 5; k++) {
        if (!in_sec[k]) continue;
        fprintf(f, "<h2 id=\"%s\">%s</h2>\n", sec_id[k], sec_title[k]);
        if (k == 4) serve_html(sv, f);
        for (int i = 0; i < nnames; i++)
            if (figure_section(names[i]) == k)
                figure_html(f, cfg, names[i], ext, sim, k < 2, &missing);
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
    if (!a) goto problems;
    summary_sentences(a, f);
    fputs("<h2 id=tables>Tables</h2>\n<p class=note>Also as Markdown, CSV and LaTeX (booktabs): "
          "summary.*, comparisons.*. Percentiles: linear interpolation between order statistics "
          "(R type 7, numpy default). Click a title to unfold its table.</p>\n",
          f);
    analysis_tables_html(a, f);
    fputs("<h2 id=runs>Runs</h2>\n<table><tr><th>directory</th><th>device</th>"
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
problems:
    if (np) {
        fputs("<h2 id=problems>Input problems</h2>\n<ul class=problems>\n", f);
        for (int i = 0; i < np; i++) {
            fputs("<li>", f);
            put_html(f, i < sv->nproblems ? sv->problems[i]
                                          : tmoe_dataset_problem(ds, i - sv->nproblems));
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }
    fputs("<p class=note>Generated by thermoe analyze " TMOE_VERSION
          ". Each figure's data (.dat, with a header naming its columns) and "
          "gnuplot script (.gp) lie beside it in figures/.</p>\n</body></html>\n",
          f);
    return tmoe_atomic_commit(&af, err);
}

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* A run directory, a serve run directory, or a directory of them (each child holding
 * batches.csv or a serve run's summary.json, taken in name order): results/ with one
 * subdirectory per run works as well as the runs. */
static int add_dir_or_children(tmoe_dataset *ds, serve_set *sv, const char *dir, tmoe_error *err) {
    char path[4096];
    if (serve_is_run(dir)) return serve_add(sv, dir, err);
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_CSV);
    DIR *d = access(path, F_OK) == 0 ? NULL : opendir(dir);
    if (!d) {
        tmoe_error e = {0};
        int rc = tmoe_dataset_add_dir(ds, dir, &e);
        if (rc == TMOE_ENOMEM) tmoe_errorf(err, rc, "%s", e.msg);
        return rc == TMOE_ENOMEM ? rc : TMOE_OK;
    }
    char **names = NULL;
    int n = 0, rc = TMOE_OK, nserve = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s/%s", dir, de->d_name, TMOE_RUNLOG_CSV);
        if (access(path, F_OK) != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            if (!serve_is_run(path)) continue;
            nserve++;
        }
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
    if (!rc && n == 0 && nserve == 0) {
        tmoe_error e = {0};
        rc = tmoe_dataset_add_dir(ds, dir, &e); /* records "no batches.csv" as a problem */
        rc = rc == TMOE_ENOMEM ? tmoe_errorf(err, rc, "%s", e.msg) : TMOE_OK;
    }
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        if (!rc) {
            tmoe_error e = {0};
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (serve_is_run(path))
                rc = serve_add(sv, path, err);
            else if (tmoe_dataset_add_dir(ds, path, &e) == TMOE_ENOMEM)
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
    serve_set sv = {0};
    for (int i = 0; i < n; i++) {
        int rc = add_dir_or_children(ds, &sv, dirs[i], err);
        if (rc == TMOE_ENOMEM) {
            serve_set_free(&sv);
            tmoe_dataset_free(ds);
            return rc;
        }
    }
    out->n_serve_runs = sv.n;
    /* serve runs alone: no run-log analysis, their figures and table only */
    tmoe_analysis *a = NULL;
    if (tmoe_dataset_nrows(ds) > 0 || sv.n == 0) {
        a = tmoe_analysis_create(ds, &c, err);
        if (!a) {
            out->n_problems = tmoe_dataset_nproblems(ds) + sv.nproblems;
            if (err && tmoe_dataset_nproblems(ds))
                tmoe_error_prefix(err, err->code, "%s", tmoe_dataset_problem(ds, 0));
            serve_set_free(&sv);
            tmoe_dataset_free(ds);
            return err ? err->code : TMOE_EFORMAT;
        }
        out->n_groups = tmoe_analysis_ngroups(a);
        if (tmoe_dataset_widest_type(ds))
            snprintf(out->typed_baseline, sizeof out->typed_baseline, "%s", a->cfg.baseline);
    }
    out->n_rows = tmoe_dataset_nrows(ds);
    out->n_problems = (a ? tmoe_dataset_nproblems(ds) : 0) + sv.nproblems;
    out->simulated = (a && tmoe_dataset_simulated(ds)) || sv.simulated;
    char **names = NULL;
    int nnames = 0;
    int rc = ensure_dir(c.out_dir, err);
    if (!rc && a) rc = tmoe_analysis_write_tables(a, c.out_dir, err);
    if (!rc) rc = analysis_figures_ex(a, &sv, &c, &out->figures, &names, &nnames, err);
    if (!rc) {
        join_path(out->report_path, sizeof out->report_path, c.out_dir, "report.html");
        rc = write_html(a, &sv, &c, names, nnames, &out->figures, out->report_path, err);
    }
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    tmoe_analysis_free(a);
    serve_set_free(&sv);
    tmoe_dataset_free(ds);
    return rc;
}

int tmoe_analyze_run(const char *const *dirs, int n, const tmoe_analyze_config *cfg,
                     tmoe_error *err) {
    return tmoe_analyze_run_ex(dirs, n, cfg, NULL, err);
}
