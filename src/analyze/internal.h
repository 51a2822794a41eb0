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
    int *by_name; /* group indices sorted by (workload, strategy) names, for lookups */
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

/* tmoe_analysis_write_figures that also hands back the figure names (caller frees each
 * and the array; NULL names = discard). */
int analysis_figures(const tmoe_analysis *a, const tmoe_analyze_config *cfg,
                     tmoe_figures_result *out, char ***names, int *nnames, tmoe_error *err);
/* Both tables as HTML (for report.html), each folded in a <details> element. */
void analysis_tables_html(const tmoe_analysis *a, FILE *f);

#endif
