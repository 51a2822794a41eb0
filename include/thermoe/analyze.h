/* Analysis of experiment run logs: read batches.csv + metadata.json from run directories,
 * merge them, compute per-run statistics and tests against the baseline strategy, and
 * write tables (Markdown, CSV, LaTeX), gnuplot figures and one report.html.
 *
 * Statistical unit: an independent repeat, one value per (run directory, run_id, repeat)
 * of a workload x strategy (the mean of its batches, or their max for peaks). Batches of
 * one repeat are correlated and are never treated as independent. A strategy is compared
 * with the baseline paired by repeat where both ran in the same repeat, else with Welch's
 * test; with fewer than TMOE_ANALYZE_MIN_REPEATS repeats no p-value is computed (effect
 * sizes only). Temperatures are compared as differences in degrees C. A strategy whose
 * routing never differed from the baseline's is flagged (routing_unchanged) and not
 * compared. */
#ifndef THERMOE_ANALYZE_H
#define THERMOE_ANALYZE_H

#include <stdint.h>

#include "thermoe/core.h"
#include "thermoe/exp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- statistics (GSL) ---------------------------------------------------------------- */

/* Mean, sample sd (n - 1) and a two-sided t confidence interval for the mean at `level`
 * (e.g. 0.95). n >= 1; with n == 1 sd and the CI are NAN. NAN inputs are not allowed. */
typedef struct tmoe_stats_summary {
    int n;
    double mean, sd;
    double ci_lo, ci_hi; /* t interval: mean -+ t_{(1+level)/2, n-1} sd / sqrt(n) */
} tmoe_stats_summary;
tmoe_stats_summary tmoe_stats_summarize(const double *x, int n, double level);

/* Sample skewness g1 = m3 / m2^1.5 (biased moments); NAN when n < 3 or sd == 0. */
double tmoe_stats_skewness(const double *x, int n);

/* Welch's unequal-variance t-test of mean(b) - mean(a), two-sided. Needs na, nb >= 2.
 * When both groups have zero variance, t, df and p are NAN (the test is undefined). */
typedef struct tmoe_welch {
    double diff;         /* mean(b) - mean(a) */
    double t, df, p;     /* statistic, Welch-Satterthwaite df, two-sided p (gsl_cdf_tdist) */
    double ci_lo, ci_hi; /* CI of diff at `level` */
} tmoe_welch;
int tmoe_stats_welch(const double *a, int na, const double *b, int nb, double level,
                     tmoe_welch *out, tmoe_error *err);

/* Paired t-test of the mean of b[i] - a[i] (n pairs), two-sided, df = n - 1; the result in
 * the same struct (diff = mean difference, CI of it). Needs n >= 2. When every difference is
 * the same, t and p are NAN. */
int tmoe_stats_paired_t(const double *a, const double *b, int n, double level, tmoe_welch *out,
                        tmoe_error *err);

/* Holm step-down adjustment of n p-values (NAN entries are left NAN and not counted). */
void tmoe_stats_holm(const double *p, int n, double *p_adj);

/* Cohen's d = (mean(b) - mean(a)) / pooled sd, and Hedges' g = d * (1 - 3 / (4 (na + nb) - 9)). */
double tmoe_stats_cohen_d(const double *a, int na, const double *b, int nb);
double tmoe_stats_hedges_g(const double *a, int na, const double *b, int nb);

/* Percentile-bootstrap CI at `level` of the mean of x (B resamples, seeded). */
int tmoe_stats_bootstrap_mean_ci(const double *x, int n, int B, uint64_t seed, double level,
                                 double *lo, double *hi, tmoe_error *err);
/* Percentile-bootstrap CI of 100 (mean(b) / mean(a) - 1): a and b resampled independently. */
int tmoe_stats_bootstrap_pct_ci(const double *a, int na, const double *b, int nb, int B,
                                uint64_t seed, double level, double *lo, double *hi,
                                tmoe_error *err);

/* ---- run logs ------------------------------------------------------------------------ */

#define TMOE_ANALYZE_MAX_LIST 4096                   /* entries of a list cell (experts, devices) */
#define TMOE_ANALYZE_MAX_CSV_BYTES ((size_t)1 << 30) /* a batches.csv larger is refused */
#define TMOE_ANALYZE_MAX_META_BYTES ((size_t)16 << 20) /* a metadata.json larger is refused */

typedef struct tmoe_dataset tmoe_dataset; /* rows merged from several run directories */

/* One row of batches.csv. Numbers are NAN when unknown; strings are never NULL ("" when
 * empty); list columns have their own arrays. Owned by the dataset. */
typedef struct tmoe_analyze_row {
    double num[TMOE_RL_NCOLS];         /* numeric columns (TMOE_COL_INT / DOUBLE); NAN else */
    const char *str[TMOE_RL_NCOLS];    /* string columns; NULL for non-string columns */
    const double *list[TMOE_RL_NCOLS]; /* list columns; NULL for non-list columns */
    int nlist[TMOE_RL_NCOLS];          /* entries in list[c] (0 = empty/unknown) */
    int source;                        /* index of the run directory (tmoe_dataset_run) */
} tmoe_analyze_row;

/* What metadata.json of one run directory said (strings "" when absent). Accepts flat keys
 * (telemetry_source, cost_model_checksum) and the harness's nested form (telemetry.source,
 * telemetry.simulated, cost_model.checksum); device is {name, driver} or a string. */
typedef struct tmoe_analyze_meta {
    const char *dir;
    const char *device_name, *driver, *telemetry_source, *git_commit;
    const char *cost_model_checksum, *start_time, *end_time;
    const char *status; /* e.g. "complete" or "interrupted", when the writer says */
    int has_metadata;   /* 0 when metadata.json was missing or unreadable */
    int ep_rank;        /* expert-parallel rank that wrote the log (metadata ep.rank), else 0 */
    int rows;           /* rows read from this directory */
    int has_seed;       /* 1 when metadata config.seed was read */
    uint64_t seed;      /* config.seed: with repeat and batch_idx it names the scored text */
} tmoe_analyze_meta;

tmoe_dataset *tmoe_dataset_create(tmoe_error *err);
void tmoe_dataset_free(tmoe_dataset *ds); /* NULL is a no-op */

/* Read DIR/batches.csv and DIR/metadata.json. Problems a user can fix (empty, truncated or
 * mixed-schema file, bad cell, missing metadata) are recorded as messages naming file:line
 * and the bad parts are skipped; the call returns TMOE_OK unless nothing at all could be
 * read from the directory (then the code and err say why, and the problem is recorded too).
 * A row is bad, and skipped with a message naming file:line and the column, when a numeric
 * cell is not a number, is infinite, is not an integer in an integer column, is outside its
 * column's range (integers 0..INT_MAX for repeat, batch_idx and tokens, 0..2^53 for
 * throttle_reasons and counts; times, energies, powers, clocks, rates and errors >= 0;
 * top-k agreement in [0, 1]; nll and nll_baseline >= 0, tokens_scored an integer
 * 0..INT_MAX) or a list has more than TMOE_ANALYZE_MAX_LIST entries. So every known number
 * in a row is finite and in range. A header that is runlog.h's followed by more columns is a
 * newer writer's (columns are only appended): not a problem; the extra columns are ignored. */
int tmoe_dataset_add_dir(tmoe_dataset *ds, const char *dir, tmoe_error *err);
/* Read one CSV file as if it were a run directory's batches.csv (no metadata). */
int tmoe_dataset_add_csv(tmoe_dataset *ds, const char *path, tmoe_error *err);
/* The same for CSV text in memory: data (len bytes, not necessarily NUL-terminated; not
 * kept) is read as a batches.csv called name in messages. */
int tmoe_dataset_add_csv_buffer(tmoe_dataset *ds, const char *data, size_t len, const char *name,
                                tmoe_error *err);
/* After adding everything: record cross-run problems (different devices, schemas,
 * telemetry sources or commits). Called by tmoe_analysis_create; idempotent. */
void tmoe_dataset_check_consistency(tmoe_dataset *ds);
/* Rows at more than one expert type (runs at fp16 and q4 merged): the check names each row's
 * strategy "strategy@type" (rows without a type keep theirs) and this returns the widest
 * type present (fp32, fp16, bf16, q4, q2 in that order); NULL when there is one type or
 * none. Runs the check first. */
const char *tmoe_dataset_widest_type(tmoe_dataset *ds);

int tmoe_dataset_nrows(const tmoe_dataset *ds);
const tmoe_analyze_row *tmoe_dataset_row(const tmoe_dataset *ds, int i);
int tmoe_dataset_nruns(const tmoe_dataset *ds);
const tmoe_analyze_meta *tmoe_dataset_run(const tmoe_dataset *ds, int i);
int tmoe_dataset_nproblems(const tmoe_dataset *ds);
const char *tmoe_dataset_problem(const tmoe_dataset *ds, int i);
int tmoe_dataset_simulated(const tmoe_dataset *ds); /* any row or metadata said "sim" */

/* ---- analysis ------------------------------------------------------------------------ */

#define TMOE_ANALYZE_MIN_REPEATS 3 /* fewer repeats: effect sizes only, no p-value */

typedef enum {
    TMOE_M_ENERGY_PER_TOKEN, /* J/token: per-run mean of energy_j_per_token (shown in mJ) */
    TMOE_M_POWER_AVG,        /* W: per-run mean of power_avg_w */
    TMOE_M_POWER_PEAK,       /* W: per-repeat max of power_peak_w */
    TMOE_M_GPU_TEMP_PEAK,    /* C: per-repeat max of gpu_temp_peak_c */
    TMOE_M_MEM_TEMP_PEAK,    /* C: per-repeat max of mem_temp_c */
    TMOE_M_LATENCY_MEAN,     /* ms: per-run mean of latency_ms */
    TMOE_M_LATENCY_P99,      /* ms: per-repeat p99 (type 7) of its batches' latency_ms */
    TMOE_M_THROUGHPUT,       /* tokens/s: per-run mean of throughput_tokens_s */
    TMOE_M_NLL,              /* nats/token: per-repeat mean of nll (weighted by tokens_scored).
                                Compared paired on the same tokens: the strategy's nll against
                                its own nll_baseline column; a group at another expert type
                                than the baseline's (labelled runs, below) against the
                                baseline group's nll on the same text (same seed, repeat and
                                batch_idx). The unit is one text (seed, repeat): repeats of
                                runs that share a seed score the same text and count once.
                                diff = mean per-text NLL change (nats), pct = perplexity
                                change 100 (exp(diff) - 1), its CI the exp of the diff's CI */
    TMOE_M_THROTTLED_PCT,    /* %: latency-weighted share of batches with a throttle bit other
                                than GPU idle (0x1) */
    TMOE_M_TOPK_AGREEMENT,   /* fraction: per-run mean of topk_agreement_with_baseline */
    TMOE_M_OUTPUT_REL_ERR,   /* per-run mean of output_rel_error_vs_baseline */
    TMOE_M_OVERHEAD_PCT,     /* %: 100 sum(router_overhead_ms) / sum(latency_ms), measured
                                rows only: on the simulated GPU latency is simulated time and
                                router time is host time, so the ratio is not formed (NAN) */
    TMOE_M_ROUTER_MS,        /* ms: per-run mean of router_overhead_ms (host time) */
    TMOE_M_ACTIVE_EXPERTS,   /* experts: per-run mean of active_experts (distinct experts a
                                step's layers ran) */
    TMOE_M_COUNT
} tmoe_metric;

const char *tmoe_metric_name(tmoe_metric m);  /* short id, e.g. "energy_per_token" */
const char *tmoe_metric_label(tmoe_metric m); /* with unit, e.g. "energy per token (mJ)" */
/* Factor from the metric's values (mean, ci, diff, peak) to the unit its label names: 1000
 * for energy per token (J -> mJ), 1 for the others. Percent changes need none. */
double tmoe_metric_scale(tmoe_metric m);
int tmoe_metric_tested(tmoe_metric m); /* compared against baseline with a test */
/* 1 for temperatures: compared as a difference in the metric's unit (C), never in percent */
int tmoe_metric_absolute(tmoe_metric m);
/* 1 for peaks: a repeat's value is the max over its batches; the group's `peak` is the max
 * over every batch of the workload x strategy */
int tmoe_metric_is_peak(tmoe_metric m);

typedef struct tmoe_metric_result {
    int n;               /* repeats with a finite value */
    double mean, sd;     /* over repeats */
    double peak;         /* peak metrics: max over all batches of the group; NAN otherwise */
    double ci_lo, ci_hi; /* 95% CI of the mean: t interval, or bootstrap when skewed */
    int ci_bootstrap;    /* 1 when |skewness| > 1 and the percentile bootstrap was used */
    /* against the baseline of the same workload (tested metrics only; NAN otherwise) */
    double pct, pct_lo, pct_hi;    /* % change of the mean; NAN for absolute metrics */
    double diff, diff_lo, diff_hi; /* mean - baseline mean in the metric's unit (paired:
                                      mean of per-repeat differences); CI when n >= 3 */
    int paired;                    /* 1: test paired by repeat, 0: Welch */
    int n_pairs;                   /* repeats in which both ran */
    double t, df, p, p_holm;       /* only with >= TMOE_ANALYZE_MIN_REPEATS repeats (pairs
                                      when paired); Holm over this metric's comparisons */
    double cohen_d, hedges_g;
} tmoe_metric_result;

typedef struct tmoe_group_result {
    const char *workload, *strategy;
    int n_units;   /* independent repeats (statistical units) */
    int n_batches; /* batches over all repeats */
    /* 1 when the group's routing equals the baseline's on every batch (each row has
     * output_rel_error_vs_baseline == 0, or, where that is unknown, top-k agreement 1 and
     * no non-zero bias); such a group is not compared */
    int routing_unchanged;
    double lat_p50, lat_p90, lat_p99; /* ms, over all batches pooled (type 7 percentiles) */
    tmoe_metric_result m[TMOE_M_COUNT];
} tmoe_group_result;

typedef enum { TMOE_FMT_PNG = 1, TMOE_FMT_PDF = 2, TMOE_FMT_SVG = 4 } tmoe_fig_format;

/* Figures are drawn for the first this many workloads and strategies (canonical order);
 * the tables and tests cover every group. */
#define TMOE_ANALYZE_MAX_FIG_NAMES 64

typedef struct tmoe_analyze_config {
    const char *out_dir;  /* report directory; default "report" */
    unsigned formats;     /* tmoe_fig_format bits; default PNG */
    int bootstrap;        /* resamples for bootstrap CIs; default 2000 */
    uint64_t seed;        /* bootstrap seed; default 1 */
    double level;         /* CI level; default 0.95 */
    const char *gnuplot;  /* program to render with; default "gnuplot"; "" = do not render */
    const char *baseline; /* strategy compared against; default "baseline", or with runs
                             at several expert types "baseline@T", T the widest type present
                             (fp32, fp16, bf16, q4, q2 in that order) */
} tmoe_analyze_config;

tmoe_analyze_config tmoe_analyze_config_default(void);

typedef struct tmoe_analysis tmoe_analysis;

/* Compute every group's statistics and tests. The dataset must outlive the analysis. */
tmoe_analysis *tmoe_analysis_create(tmoe_dataset *ds, const tmoe_analyze_config *cfg,
                                    tmoe_error *err);
void tmoe_analysis_free(tmoe_analysis *a); /* NULL is a no-op */
int tmoe_analysis_ngroups(const tmoe_analysis *a);
const tmoe_group_result *tmoe_analysis_group(const tmoe_analysis *a, int i);
/* The group of (workload, strategy), or NULL. */
const tmoe_group_result *tmoe_analysis_find(const tmoe_analysis *a, const char *workload,
                                            const char *strategy);

/* ---- outputs ------------------------------------------------------------------------- */

/* Write summary.{md,csv,tex} and comparisons.{md,csv,tex} into dir. */
int tmoe_analysis_write_tables(const tmoe_analysis *a, const char *dir, tmoe_error *err);

/* Figures: for each, NAME.dat and NAME.gp beside it in dir/figures; when cfg->gnuplot is
 * set and runs, NAME.png/pdf/svg. A render counts as failed when gnuplot exits non-zero or
 * writes anything to stderr (warnings included); the message is recorded. */
typedef struct tmoe_figures_result {
    int n_figures;     /* scripts written */
    int n_rendered;    /* figure x format renders that succeeded */
    int n_failed;      /* renders that failed or warned */
    int gnuplot_found; /* 0 when the program could not be run */
    char first_failure[1024];
} tmoe_figures_result;
int tmoe_analysis_write_figures(const tmoe_analysis *a, const tmoe_analyze_config *cfg,
                                tmoe_figures_result *out, tmoe_error *err);

/* What tmoe_analyze_run_ex did. */
typedef struct tmoe_analyze_summary {
    int n_rows, n_groups, n_problems, simulated;
    int n_serve_runs;         /* `thermoe serve` run directories read (docs/serve.md) */
    char typed_baseline[128]; /* runs at several expert types (groups named strategy@type):
                                 the group they are compared with; "" otherwise */
    tmoe_figures_result figures;
    char report_path[1024]; /* out_dir/report.html */
} tmoe_analyze_summary;

/* Read the run directories, analyse them and write tables, figures and report.html into
 * cfg->out_dir (cfg NULL = defaults). A `thermoe serve` run directory (summary.json of
 * schema thermoe.serve/1) adds its latency CDFs, energy per request and timeline figures and
 * a row of the serving table; with serve runs only, the run-log tables are not written. Bad files
 * are reported (log warnings + report) and skipped; fails only when no rows could be read or the
 * outputs cannot be written. */
int tmoe_analyze_run(const char *const *dirs, int n, const tmoe_analyze_config *cfg,
                     tmoe_error *err);
int tmoe_analyze_run_ex(const char *const *dirs, int n, const tmoe_analyze_config *cfg,
                        tmoe_analyze_summary *out, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
