/* Shared between the analysis sources: the analysis object, strategy order and colours. */
#ifndef THERMOE_ANALYZE_INTERNAL_H
#define THERMOE_ANALYZE_INTERNAL_H

#include <stdio.h>

#include "thermoe/analyze.h"

typedef struct {
    tmoe_group_result r;
    int *rows; /* dataset row indices, sorted by (unit, batch_idx) */
    int nrows;
    int *unit_of_row; /* unit index of each entry of rows */
} analysis_group;

struct tmoe_analysis {
    tmoe_dataset *ds;
    tmoe_analyze_config cfg;
    analysis_group *g; /* workload-major, strategies in canonical order */
    int ng;
    const char **workloads;
    int nworkloads;
    const char **strategies;
    int nstrategies;
    int *by_name;            /* group indices sorted by (workload, strategy) names, for lookups */
    const char *widest_type; /* runs at several expert types: the widest (names "s@type") */
    char baseline_name[128]; /* cfg.baseline with the widest type appended, when it lacked one */
};

/* The group of (workload, strategy), or NULL; O(log groups). */
const analysis_group *analysis_group_find(const tmoe_analysis *a, const char *workload,
                                          const char *strategy);

/* Why metric m of g has no p-value against base ("routing unchanged", "N repeat(s): effect
 * sizes only"), or "" when it has one; returns b. */
const char *analysis_no_p_reason(char *b, size_t n, const tmoe_group_result *base,
                                 const tmoe_group_result *g, tmoe_metric m);

/* Canonical strategy order and its Okabe-Ito colour (same in every figure). */
int strategy_rank(const char *s);
const char *strategy_color(const char *s);

/* Write a string with HTML / LaTeX / Markdown special characters escaped; names from the
 * logs reach every output through these. LaTeX and Markdown replace control characters with
 * spaces. */
void put_html(FILE *f, const char *s);
void put_latex(FILE *f, const char *s);
void put_md(FILE *f, const char *s);

/* "dir/name" into buf; returns buf. */
const char *join_path(char *buf, size_t n, const char *dir, const char *name);
/* mkdir -p (tmoe_mkdir_p): parents too; ok when it exists, an error when it is a file. */
int ensure_dir(const char *dir, tmoe_error *err);

/* ---- serving replays (serve.c) --------------------------------------------------------- */

enum {
    SERVE_REQ_ARRIVAL,
    SERVE_REQ_TTFT,
    SERVE_REQ_TPOT,
    SERVE_REQ_PROMPT,
    SERVE_REQ_ENERGY,
    SERVE_REQ_FINISH, /* nan: unfinished when an interrupted replay stopped */
    SERVE_REQ_NCOLS
};
enum {
    SERVE_TL_T0,
    SERVE_TL_T1,
    SERVE_TL_RATE,
    SERVE_TL_POWER,
    SERVE_TL_GPU,
    SERVE_TL_MEM,
    SERVE_TL_NCOLS
};
enum {
    SERVE_W_TTFT_P50,
    SERVE_W_TTFT_P99,
    SERVE_W_TPOT_P50,
    SERVE_W_TPOT_P99,
    SERVE_W_GOODPUT,
    SERVE_W_GOODSHARE,
    SERVE_W_JPR,
    SERVE_W_JPT,
    SERVE_W_POWER_AVG,
    SERVE_W_POWER_PEAK,
    SERVE_W_GPU_PEAK,
    SERVE_W_MEM_PEAK,
    SERVE_W_GPU_ABOVE,
    SERVE_W_ACTIVE, /* experts a MoE layer step ran (NAN in summaries from before it) */
    SERVE_W_NCOLS
};

/* One `thermoe serve` run directory. */
typedef struct serve_run {
    char *dir, *strategy, *trace, *source;
    char *expert_type;             /* metadata; fp16 where absent (replays before the flag) */
    int steady;                    /* summary.json steady_state.detected */
    double win_start_s, win_end_s; /* the window its summary is over */
    double slo_ttft_s, slo_tpot_s; /* metadata */
    double w[SERVE_W_NCOLS];       /* the window's figures (NAN when absent) */
    int n;                         /* requests */
    double *req[SERVE_REQ_NCOLS];  /* (n) columns of requests.csv */
    int nbins;                     /* rows of timeline.csv */
    double *tl[SERVE_TL_NCOLS];    /* (nbins) columns of timeline.csv */
} serve_run;

typedef struct serve_set {
    serve_run *r;
    int n;
    int simulated; /* a run whose source is not nvml */
    char **problems;
    int nproblems;
} serve_set;

/* Whether dir holds a serve run (summary.json with schema thermoe.serve/1). */
int serve_is_run(const char *dir);
/* Read one serve run into s; a bad file is recorded as a problem (file:line, column) and
 * the run skipped; only out of memory is an error. */
int serve_add(serve_set *s, const char *dir, tmoe_error *err);
void serve_set_free(serve_set *s);
/* The run's name in legends: its strategy (strategy@type where the runs hold several expert
 * types), with the directory's name when two runs share one, into buf; returns buf. */
const char *serve_label(const serve_set *s, int i, char *buf, size_t n);
/* The runs' table for report.html. */
void serve_html(const serve_set *s, FILE *f);

/* tmoe_analysis_write_figures that also hands back the figure names (caller frees each
 * and the array; NULL names = discard). */
int analysis_figures(const tmoe_analysis *a, const tmoe_analyze_config *cfg,
                     tmoe_figures_result *out, char ***names, int *nnames, tmoe_error *err);
/* The same over the run logs (a, may be NULL) and the serve runs (sv, may be NULL or empty). */
int analysis_figures_ex(const tmoe_analysis *a, const serve_set *sv, const tmoe_analyze_config *cfg,
                        tmoe_figures_result *out, char ***names, int *nnames, tmoe_error *err);
/* Both tables as HTML (for report.html), each folded in a <details> element. */
void analysis_tables_html(const tmoe_analysis *a, FILE *f);

#endif
