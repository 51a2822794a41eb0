/* Per workload x strategy statistics over independent repeats and the comparisons against
 * the baseline strategy (paired by repeat where possible, p-values only from 3+ repeats),
 * Holm-adjusted per metric over all workloads x strategies. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gsl/gsl_sort.h>

#include "analyze/internal.h"

static const struct {
    const char *name, *label;
    int tested, absolute, peak;
    double scale; /* 0 = 1 */
} metrics[TMOE_M_COUNT] = {
    [TMOE_M_ENERGY_PER_TOKEN] = {"energy_per_token", "energy per token (mJ)", 1, 0, 0, 1e3},
    [TMOE_M_POWER_AVG] = {"power_avg", "average power (W)", 1},
    [TMOE_M_POWER_PEAK] = {"power_peak", "peak power (W)", 1, 0, 1},
    [TMOE_M_GPU_TEMP_PEAK] = {"gpu_temp_peak", "peak GPU temperature (C)", 1, 1, 1},
    [TMOE_M_MEM_TEMP_PEAK] = {"mem_temp_peak", "peak memory temperature (C)", 1, 1, 1},
    [TMOE_M_LATENCY_MEAN] = {"latency_mean", "latency mean (ms)", 1},
    [TMOE_M_LATENCY_P99] = {"latency_p99", "latency p99 (ms)", 1},
    [TMOE_M_THROUGHPUT] = {"throughput", "throughput (tokens/s)", 1},
    [TMOE_M_NLL] = {"nll", "next-token NLL (nats/token)", 1},
    [TMOE_M_THROTTLED_PCT] = {"throttled_pct", "throttled time (%)", 0},
    [TMOE_M_TOPK_AGREEMENT] = {"topk_agreement", "top-k agreement", 0},
    [TMOE_M_OUTPUT_REL_ERR] = {"output_rel_err", "output relative error", 0},
    [TMOE_M_OVERHEAD_PCT] = {"overhead_pct", "router host time (% of measured step)", 0},
    [TMOE_M_ROUTER_MS] = {"router_ms", "router host time per batch (ms)", 0},
    [TMOE_M_ACTIVE_EXPERTS] = {"active_experts", "active experts per layer step", 0},
};

const char *tmoe_metric_name(tmoe_metric m) {
    return metrics[m].name;
}
const char *tmoe_metric_label(tmoe_metric m) {
    return metrics[m].label;
}
int tmoe_metric_tested(tmoe_metric m) {
    return metrics[m].tested;
}
int tmoe_metric_absolute(tmoe_metric m) {
    return metrics[m].absolute;
}
int tmoe_metric_is_peak(tmoe_metric m) {
    return metrics[m].peak;
}
double tmoe_metric_scale(tmoe_metric m) {
    return metrics[m].scale > 0.0 ? metrics[m].scale : 1.0;
}

/* The six strategies, then the comparisons (docs/strategies.md), in their enum order. */
static const char *const canon[] = {
    "baseline",           "static_optimal",  "kernel_aware_ttha", "hierarchical_adaptive",
    "predictive_thermal", "multi_gpu_aware", "topk_minus_one",    "top_p",
    "expert_prune",       "capacity"};
/* Okabe-Ito: black, orange, blue, bluish green, vermillion, reddish purple for the six, sky
 * blue, yellow and grey for comparisons, Tol's wine; Tol's teal and indigo for strategies
 * outside the list. */
static const char *const canon_color[] = {"#000000", "#E69F00", "#0072B2", "#009E73", "#D55E00",
                                          "#CC79A7", "#56B4E9", "#F0E442", "#999999", "#882255"};
static const char *const extra_color[] = {"#44AA99", "#332288"};
#define NCANON ((int)(sizeof canon / sizeof *canon))

/* A name labelled by expert type ("predictive_thermal@q4") ranks as its strategy. */
int strategy_rank(const char *s) {
    const char *at = strrchr(s, '@');
    size_t n = at ? (size_t)(at - s) : strlen(s);
    for (int i = 0; i < NCANON; i++)
        if (strlen(canon[i]) == n && strncmp(canon[i], s, n) == 0) return i;
    return NCANON;
}

const char *strategy_color(const char *s) {
    int r = strategy_rank(s);
    if (r < NCANON) return canon_color[r];
    unsigned h = 0;
    for (const char *p = s; *p; p++) h = h * 31u + (unsigned char)*p;
    return extra_color[h % 2];
}

const char *join_path(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

int ensure_dir(const char *dir, tmoe_error *err) {
    return tmoe_mkdir_p(dir, err);
}

tmoe_analyze_config tmoe_analyze_config_default(void) {
    return (tmoe_analyze_config){.out_dir = "report",
                                 .formats = TMOE_FMT_PNG,
                                 .bootstrap = 2000,
                                 .seed = 1,
                                 .level = 0.95,
                                 .gnuplot = "gnuplot",
                                 .baseline = "baseline"};
}

/* qsort has no context argument: the dataset being sorted (analysis is single-threaded). */
static const tmoe_dataset *sort_ds;
static int row_cmp(const void *x, const void *y) {
    const tmoe_analyze_row *a = tmoe_dataset_row(sort_ds, *(const int *)x);
    const tmoe_analyze_row *b = tmoe_dataset_row(sort_ds, *(const int *)y);
    if (a->source != b->source) return a->source - b->source;
    int c = strcmp(a->str[TMOE_RL_RUN_ID], b->str[TMOE_RL_RUN_ID]);
    if (c) return c;
    double ra = a->num[TMOE_RL_REPEAT], rb = b->num[TMOE_RL_REPEAT];
    if (ra != rb && !(isnan(ra) && isnan(rb)))
        return isnan(ra) ? -1 : isnan(rb) ? 1 : (ra > rb) - (ra < rb);
    double ia = a->num[TMOE_RL_BATCH_IDX], ib = b->num[TMOE_RL_BATCH_IDX];
    if (ia != ib) return (ia > ib) - (ia < ib);
    return (*(const int *)x > *(const int *)y) - (*(const int *)x < *(const int *)y);
}

static int same_unit(const tmoe_analyze_row *a, const tmoe_analyze_row *b) {
    if (a->source != b->source || strcmp(a->str[TMOE_RL_RUN_ID], b->str[TMOE_RL_RUN_ID])) return 0;
    double ra = a->num[TMOE_RL_REPEAT], rb = b->num[TMOE_RL_REPEAT];
    return ra == rb || (isnan(ra) && isnan(rb));
}

/* A row measured on the simulated GPU (its telemetry_source, or else its run's metadata). */
static int row_simulated(const tmoe_dataset *ds, const tmoe_analyze_row *r) {
    const char *s = r->str[TMOE_RL_TELEMETRY_SOURCE];
    if (!*s && r->source >= 0 && r->source < tmoe_dataset_nruns(ds))
        s = tmoe_dataset_run(ds, r->source)->telemetry_source;
    return strcmp(s, "sim") == 0;
}

/* Token-weighted mean over rows[lo, hi) of nll, over the rows that have it; NAN when none.
 * The weight is tokens_scored where known and positive, else 1. (compare_nll pairs rows by
 * text on its own.) */
static double unit_nll(const tmoe_dataset *ds, const int *rows, int lo, int hi) {
    double sum = 0.0, wsum = 0.0;
    for (int k = lo; k < hi; k++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, rows[k]);
        double v = r->num[TMOE_RL_NLL];
        if (!isfinite(v)) continue;
        double w = r->num[TMOE_RL_TOKENS_SCORED];
        if (!(w > 0.0)) w = 1.0;
        sum += w * v;
        wsum += w;
    }
    return wsum > 0.0 ? sum / wsum : NAN;
}

/* p99 (type 7) of the latencies of rows[lo, hi); NAN when none (or out of memory). */
static double unit_p99(const tmoe_dataset *ds, const int *rows, int lo, int hi) {
    double *v = malloc(sizeof *v * (size_t)(hi - lo + 1));
    if (!v) return NAN;
    int n = 0;
    for (int k = lo; k < hi; k++) {
        double x = tmoe_dataset_row(ds, rows[k])->num[TMOE_RL_LATENCY_MS];
        if (isfinite(x)) v[n++] = x;
    }
    double p = NAN;
    if (n) {
        gsl_sort(v, 1, (size_t)n);
        p = tmoe_percentile_sorted(v, n, 99);
    }
    free(v);
    return p;
}

/* Value of metric m over rows[lo, hi) of group g; NAN when no row has it. */
static double unit_value(const tmoe_dataset *ds, const int *rows, int lo, int hi, tmoe_metric m) {
    if (m == TMOE_M_NLL) return unit_nll(ds, rows, lo, hi);
    if (m == TMOE_M_LATENCY_P99) return unit_p99(ds, rows, lo, hi);
    double mean = 0.0, mx = -INFINITY, tot = 0.0, part = 0.0;
    int n = 0;
    for (int k = lo; k < hi; k++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, rows[k]);
        double lat = r->num[TMOE_RL_LATENCY_MS];
        double v = NAN;
        switch (m) {
        case TMOE_M_ENERGY_PER_TOKEN: v = r->num[TMOE_RL_ENERGY_J_PER_TOKEN]; break;
        case TMOE_M_POWER_AVG: v = r->num[TMOE_RL_POWER_AVG_W]; break;
        case TMOE_M_POWER_PEAK: v = r->num[TMOE_RL_POWER_PEAK_W]; break;
        case TMOE_M_GPU_TEMP_PEAK: v = r->num[TMOE_RL_GPU_TEMP_PEAK_C]; break;
        case TMOE_M_MEM_TEMP_PEAK: v = r->num[TMOE_RL_MEM_TEMP_C]; break;
        case TMOE_M_LATENCY_MEAN: v = lat; break;
        case TMOE_M_THROUGHPUT: v = r->num[TMOE_RL_THROUGHPUT]; break;
        case TMOE_M_TOPK_AGREEMENT: v = r->num[TMOE_RL_TOPK_AGREEMENT]; break;
        case TMOE_M_OUTPUT_REL_ERR: v = r->num[TMOE_RL_OUTPUT_REL_ERROR]; break;
        case TMOE_M_ROUTER_MS: v = r->num[TMOE_RL_ROUTER_OVERHEAD_MS]; break;
        case TMOE_M_ACTIVE_EXPERTS: v = r->num[TMOE_RL_ACTIVE_EXPERTS]; break;
        case TMOE_M_NLL:
        case TMOE_M_LATENCY_P99: TMOE_ASSERT(0); /* handled above */
        case TMOE_M_THROTTLED_PCT: {
            double t = r->num[TMOE_RL_THROTTLE_REASONS];
            /* the reader keeps throttle_reasons in [0, 2^53]: the conversion is exact */
            if (isfinite(t) && t >= 0.0 && t <= 9007199254740992.0 && isfinite(lat)) {
                tot += lat;
                if (((unsigned long long)t & ~1ull) != 0) part += lat;
                n++;
            }
            continue;
        }
        case TMOE_M_OVERHEAD_PCT: {
            double o = r->num[TMOE_RL_ROUTER_OVERHEAD_MS];
            /* host time over simulated time is no overhead: only measured rows */
            if (isfinite(o) && isfinite(lat) && !row_simulated(ds, r)) {
                tot += lat;
                part += o;
                n++;
            }
            continue;
        }
        case TMOE_M_COUNT: TMOE_ASSERT(0);
        }
        if (!isfinite(v)) continue;
        n++;
        mean += v / n - mean / n; /* running mean: a sum of huge values could overflow */
        if (v > mx) mx = v;
    }
    if (n == 0) return NAN;
    switch (m) {
    case TMOE_M_POWER_PEAK:
    case TMOE_M_GPU_TEMP_PEAK:
    case TMOE_M_MEM_TEMP_PEAK: return mx;
    case TMOE_M_THROTTLED_PCT:
    case TMOE_M_OVERHEAD_PCT: return tot > 0.0 ? 100.0 * part / tot : NAN;
    default: return mean;
    }
}

/* Unit values of metric m for group g into out (finite only); returns the count. first
 * (may be NULL) gets the dataset index of each unit's first row, which names its repeat. */
static int unit_values(const tmoe_analysis *a, const analysis_group *g, tmoe_metric m, double *out,
                       int *first) {
    int n = 0;
    /* unit_of_row never decreases along the rows: each unit is one contiguous range */
    for (int lo = 0, hi; lo < g->nrows; lo = hi) {
        for (hi = lo + 1; hi < g->nrows && g->unit_of_row[hi] == g->unit_of_row[lo]; hi++)
            ;
        double v = unit_value(a->ds, g->rows, lo, hi, m);
        if (!isfinite(v)) continue;
        if (first) first[n] = g->rows[lo];
        out[n++] = v;
    }
    return n;
}

/* A row whose routing equals the baseline's: output error against the baseline exactly 0,
 * or, where the log does not have it, top-k agreement 1 and no non-zero bias. -1 when the
 * row says neither. */
static int row_unchanged(const tmoe_analyze_row *r) {
    double e = r->num[TMOE_RL_OUTPUT_REL_ERROR], k = r->num[TMOE_RL_TOPK_AGREEMENT];
    if (isfinite(e)) return e == 0.0;
    /* the decoder LM: a score that differs from the baseline's on the same tokens changed
     * something the selection does not show (an expert run as its lower-precision copy) */
    double nll = r->num[TMOE_RL_NLL], nb = r->num[TMOE_RL_NLL_BASELINE];
    if (isfinite(nll) && isfinite(nb) && nll != nb) return 0;
    if (!isfinite(k)) return -1;
    if (k != 1.0) return 0;
    const double *b = r->list[TMOE_RL_BIASES];
    for (int i = 0; b && i < r->nlist[TMOE_RL_BIASES]; i++)
        if (b[i] != 0.0) return 0; /* a NAN bias is not known to be zero either */
    return 1;
}

/* Whether strategy name s is labelled with another expert type than the baseline's (runs at
 * several types merged: names are "strategy@type"). */
static int other_type(const tmoe_analysis *a, const char *s) {
    const char *at = strrchr(s, '@'), *bat = strrchr(a->cfg.baseline, '@');
    return a->widest_type && at && bat && strcmp(at, bat) != 0;
}

static int build_group(tmoe_analysis *a, analysis_group *g, tmoe_error *err) {
    const tmoe_dataset *ds = a->ds;
    sort_ds = ds;
    qsort(g->rows, (size_t)g->nrows, sizeof *g->rows, row_cmp);
    g->unit_of_row = tmoe_malloc(sizeof(int) * (size_t)(g->nrows ? g->nrows : 1), err);
    if (!g->unit_of_row) return TMOE_ENOMEM;
    int u = 0;
    for (int k = 0; k < g->nrows; k++) {
        if (k > 0 &&
            !same_unit(tmoe_dataset_row(ds, g->rows[k - 1]), tmoe_dataset_row(ds, g->rows[k])))
            u++;
        g->unit_of_row[k] = u;
    }
    g->r.n_units = g->nrows ? u + 1 : 0;
    g->r.n_batches = g->nrows;
    /* routing unchanged: every row says so (a row that says nothing leaves it unknown), at
     * the baseline's expert type (a row's agreement is with its own run's baseline) */
    g->r.routing_unchanged = g->nrows > 0 && strcmp(g->r.strategy, a->cfg.baseline) != 0 &&
                             !other_type(a, g->r.strategy);
    for (int k = 0; k < g->nrows && g->r.routing_unchanged; k++)
        g->r.routing_unchanged = row_unchanged(tmoe_dataset_row(ds, g->rows[k])) == 1;
    /* pooled latency percentiles */
    double *lat = tmoe_malloc(sizeof *lat * (size_t)(g->nrows ? g->nrows : 1), err);
    if (!lat) return TMOE_ENOMEM;
    int nl = 0;
    for (int k = 0; k < g->nrows; k++) {
        double v = tmoe_dataset_row(ds, g->rows[k])->num[TMOE_RL_LATENCY_MS];
        if (isfinite(v)) lat[nl++] = v;
    }
    g->r.lat_p50 = g->r.lat_p90 = g->r.lat_p99 = NAN;
    if (nl > 0) {
        gsl_sort(lat, 1, (size_t)nl);
        g->r.lat_p50 = tmoe_percentile_sorted(lat, nl, 50);
        g->r.lat_p90 = tmoe_percentile_sorted(lat, nl, 90);
        g->r.lat_p99 = tmoe_percentile_sorted(lat, nl, 99);
    }
    free(lat);
    /* summaries */
    double *v = tmoe_malloc(sizeof *v * (size_t)(g->r.n_units + 1), err);
    if (!v) return TMOE_ENOMEM;
    for (int m = 0; m < TMOE_M_COUNT; m++) {
        tmoe_metric_result *mr = &g->r.m[m];
        *mr = (tmoe_metric_result){.mean = NAN,
                                   .sd = NAN,
                                   .peak = NAN,
                                   .ci_lo = NAN,
                                   .ci_hi = NAN,
                                   .pct = NAN,
                                   .pct_lo = NAN,
                                   .pct_hi = NAN,
                                   .diff = NAN,
                                   .diff_lo = NAN,
                                   .diff_hi = NAN,
                                   .t = NAN,
                                   .df = NAN,
                                   .p = NAN,
                                   .p_holm = NAN,
                                   .cohen_d = NAN,
                                   .hedges_g = NAN};
        int n = unit_values(a, g, (tmoe_metric)m, v, NULL);
        mr->n = n;
        if (n == 0) continue;
        if (metrics[m].peak) /* the peak of the whole group: the max over its repeats' peaks */
            for (int i = 0; i < n; i++)
                if (!(v[i] <= mr->peak)) mr->peak = v[i];
        tmoe_stats_summary s = tmoe_stats_summarize(v, n, a->cfg.level);
        mr->mean = s.mean;
        mr->sd = s.sd;
        mr->ci_lo = s.ci_lo;
        mr->ci_hi = s.ci_hi;
        double sk = tmoe_stats_skewness(v, n);
        if (n >= 3 && isfinite(sk) && fabs(sk) > 1.0 && a->cfg.bootstrap >= 10) {
            int rc = tmoe_stats_bootstrap_mean_ci(v, n, a->cfg.bootstrap, a->cfg.seed + (uint64_t)m,
                                                  a->cfg.level, &mr->ci_lo, &mr->ci_hi, err);
            if (rc) {
                free(v);
                return rc;
            }
            mr->ci_bootstrap = 1;
        }
    }
    free(v);
    return TMOE_OK;
}

/* Strategy g against the baseline of its workload, metric by metric. The units are
 * repeats. Where 2+ repeats ran both (same run directory, run_id and repeat) the comparison
 * is paired by repeat; otherwise the two groups' repeats are compared as independent
 * samples (Welch). A p-value needs TMOE_ANALYZE_MIN_REPEATS units on each side (pairs when
 * paired); with fewer, only the effect (difference, % change, Hedges' g) is given. */
static int compare(tmoe_analysis *a, analysis_group *base, analysis_group *g, uint64_t seed,
                   tmoe_error *err) {
    if (g->r.routing_unchanged) return TMOE_OK; /* no effect to estimate or test */
    int cap = base->r.n_units + g->r.n_units + 2;
    double *x = tmoe_malloc(sizeof *x * (size_t)cap, err),
           *y = tmoe_malloc(sizeof *y * (size_t)cap, err),
           *px = tmoe_malloc(sizeof *px * (size_t)cap, err),
           *py = tmoe_malloc(sizeof *py * (size_t)cap, err);
    int *fx = tmoe_malloc(sizeof *fx * (size_t)cap, err),
        *fy = tmoe_malloc(sizeof *fy * (size_t)cap, err);
    int rc = TMOE_OK;
    if (!x || !y || !px || !py || !fx || !fy) {
        rc = TMOE_ENOMEM;
        goto out;
    }
    for (int m = 0; m < TMOE_M_COUNT; m++) {
        if (!metrics[m].tested || m == TMOE_M_NLL) continue; /* NLL: compare_nll */
        int nx = unit_values(a, base, (tmoe_metric)m, x, fx),
            ny = unit_values(a, g, (tmoe_metric)m, y, fy);
        tmoe_metric_result *mr = &g->r.m[m];
        if (nx < 1 || ny < 1) continue;
        /* pairs: the strategy's repeat and the baseline's of the same repeat */
        int np = 0;
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++)
                if (same_unit(tmoe_dataset_row(a->ds, fx[i]), tmoe_dataset_row(a->ds, fy[j]))) {
                    px[np] = x[i];
                    py[np++] = y[j];
                    break;
                }
        mr->n_pairs = np;
        mr->paired = np >= 2;
        double mb = base->r.m[m].mean;
        mr->diff = mr->mean - mb;
        if (mr->paired) {
            mr->diff = 0.0;
            for (int k = 0; k < np; k++) mr->diff += (py[k] - px[k]) / np;
        }
        if (!metrics[m].absolute && mb != 0.0) mr->pct = 100.0 * (mr->mean / mb - 1.0);
        if (nx >= 2 && ny >= 2) {
            mr->cohen_d = tmoe_stats_cohen_d(x, nx, y, ny);
            mr->hedges_g = tmoe_stats_hedges_g(x, nx, y, ny);
        }
        int enough = mr->paired ? np >= TMOE_ANALYZE_MIN_REPEATS
                                : nx >= TMOE_ANALYZE_MIN_REPEATS && ny >= TMOE_ANALYZE_MIN_REPEATS;
        if (!enough) continue; /* effect sizes only */
        tmoe_welch w;
        int ok = mr->paired ? tmoe_stats_paired_t(px, py, np, a->cfg.level, &w, NULL)
                            : tmoe_stats_welch(x, nx, y, ny, a->cfg.level, &w, NULL);
        if (ok != TMOE_OK) continue;
        mr->t = w.t;
        mr->df = w.df;
        mr->p = w.p;
        if (isfinite(w.t)) {
            mr->diff_lo = w.ci_lo;
            mr->diff_hi = w.ci_hi;
        }
        if (metrics[m].absolute || mb == 0.0) continue;
        if (mr->paired) {
            /* the CI of the mean paired difference, relative to the baseline mean */
            if (isfinite(mr->diff_lo)) {
                mr->pct_lo = 100.0 * mr->diff_lo / mb;
                mr->pct_hi = 100.0 * mr->diff_hi / mb;
                if (mb < 0.0) {
                    double tmp = mr->pct_lo;
                    mr->pct_lo = mr->pct_hi;
                    mr->pct_hi = tmp;
                }
            }
        } else if (a->cfg.bootstrap >= 10)
            tmoe_stats_bootstrap_pct_ci(x, nx, y, ny, a->cfg.bootstrap, seed * 131u + (uint64_t)m,
                                        a->cfg.level, &mr->pct_lo, &mr->pct_hi, NULL);
    }
out:
    free(x);
    free(y);
    free(px);
    free(py);
    free(fx);
    free(fy);
    return rc;
}

/* The text a row scored: its run's seed (a run without one is its own text), repeat and
 * batch_idx name the windows (tmoe_text_batch), whatever the run's expert type. */
typedef struct {
    uint64_t id;          /* the run's seed, or its source index */
    int seeded;           /* id is a seed */
    double repeat, batch; /* -1 when unknown */
} text_key;

typedef struct {
    text_key k;
    double w, d, ref; /* tokens_scored weight; w (nll - ref); w ref */
} text_entry;

static text_key row_text(const tmoe_dataset *ds, const tmoe_analyze_row *r) {
    const tmoe_analyze_meta *m = r->source >= 0 && r->source < tmoe_dataset_nruns(ds)
                                     ? tmoe_dataset_run(ds, r->source)
                                     : NULL;
    text_key k = {.seeded = m && m->has_seed};
    k.id = k.seeded ? m->seed : (uint64_t)r->source;
    k.repeat = isfinite(r->num[TMOE_RL_REPEAT]) ? r->num[TMOE_RL_REPEAT] : -1.0;
    k.batch = isfinite(r->num[TMOE_RL_BATCH_IDX]) ? r->num[TMOE_RL_BATCH_IDX] : -1.0;
    return k;
}

/* Order by (seeded, id, repeat) and, unless text_only, batch. */
static int text_cmp_(const text_key *a, const text_key *b, int text_only) {
    if (a->seeded != b->seeded) return a->seeded - b->seeded;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    if (a->repeat != b->repeat) return a->repeat < b->repeat ? -1 : 1;
    if (text_only || a->batch == b->batch) return 0;
    return a->batch < b->batch ? -1 : 1;
}
static int entry_cmp(const void *x, const void *y) {
    return text_cmp_(&((const text_entry *)x)->k, &((const text_entry *)y)->k, 0);
}

/* The perplexity change of g, paired on the same tokens. The reference NLL of a row is its own
 * nll_baseline, or, when g runs at another expert type than the baseline (runs at several
 * types merged), the baseline group's nll on the same text (same seed, repeat and batch_idx,
 * the same tokens_scored). The unit is one text (a run's seed and repeat): a run's repeats
 * score windows of their own, while runs that share a seed score the same windows, so their
 * repeats are averaged into one pair rather than counted as independent. A p-value and CIs
 * need TMOE_ANALYZE_MIN_REPEATS texts. */
static int compare_nll(tmoe_analysis *a, analysis_group *g, tmoe_error *err) {
    if (g->r.routing_unchanged) return TMOE_OK;
    tmoe_metric_result *mr = &g->r.m[TMOE_M_NLL];
    int other = other_type(a, g->r.strategy);
    const analysis_group *base =
        other ? analysis_group_find(a, g->r.workload, a->cfg.baseline) : NULL;
    if (other && !base) return TMOE_OK; /* nothing on the same text */
    int nb = base ? base->nrows : 0;
    text_entry *e = tmoe_malloc(sizeof *e * (size_t)(g->nrows + nb + 1), err);
    double *x = tmoe_malloc(sizeof *x * (size_t)(g->nrows + 1), err),
           *y = tmoe_malloc(sizeof *y * (size_t)(g->nrows + 1), err);
    if (!e || !x || !y) {
        free(e);
        free(x);
        free(y);
        return TMOE_ENOMEM;
    }
    text_entry *ref = e + g->nrows; /* the baseline's rows by text, when another type */
    int nr = 0;
    for (int k = 0; k < nb; k++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(a->ds, base->rows[k]);
        if (!isfinite(r->num[TMOE_RL_NLL])) continue;
        ref[nr++] = (text_entry){.k = row_text(a->ds, r),
                                 .w = r->num[TMOE_RL_TOKENS_SCORED],
                                 .ref = r->num[TMOE_RL_NLL]};
    }
    qsort(ref, (size_t)nr, sizeof *ref, entry_cmp);
    int ne = 0;
    for (int k = 0; k < g->nrows; k++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(a->ds, g->rows[k]);
        double v = r->num[TMOE_RL_NLL], b = r->num[TMOE_RL_NLL_BASELINE],
               w = r->num[TMOE_RL_TOKENS_SCORED];
        text_entry t = {.k = row_text(a->ds, r)};
        if (base) {
            const text_entry *hit = bsearch(&t, ref, (size_t)nr, sizeof *ref, entry_cmp);
            /* the same windows score the same number of tokens; NAN = NAN fails too */
            b = hit && (hit->w == w || (isnan(hit->w) && isnan(w))) ? hit->ref : NAN;
        }
        if (!isfinite(v) || !isfinite(b)) continue;
        if (!(w > 0.0)) w = 1.0;
        t.w = w;
        t.d = w * (v - b);
        t.ref = w * b;
        e[ne++] = t;
    }
    qsort(e, (size_t)ne, sizeof *e, entry_cmp);
    int np = 0;
    for (int lo = 0, hi; lo < ne; lo = hi) {
        double w = 0.0, d = 0.0, b = 0.0;
        for (hi = lo; hi < ne && text_cmp_(&e[lo].k, &e[hi].k, 1) == 0; hi++) {
            w += e[hi].w;
            d += e[hi].d;
            b += e[hi].ref;
        }
        x[np] = b / w;
        y[np++] = (b + d) / w; /* the strategy's NLL on the rows that have both */
    }
    mr->n_pairs = np;
    mr->paired = 1;
    if (np >= 1) {
        mr->diff = 0.0;
        for (int k = 0; k < np; k++) mr->diff += (y[k] - x[k]) / np;
        mr->pct = 100.0 * expm1(mr->diff);
    }
    tmoe_welch w;
    if (np >= TMOE_ANALYZE_MIN_REPEATS &&
        tmoe_stats_paired_t(x, y, np, a->cfg.level, &w, NULL) == TMOE_OK) {
        mr->t = w.t;
        mr->df = w.df;
        mr->p = w.p;
        if (isfinite(w.t)) {
            mr->diff_lo = w.ci_lo;
            mr->diff_hi = w.ci_hi;
            mr->pct_lo = 100.0 * expm1(w.ci_lo);
            mr->pct_hi = 100.0 * expm1(w.ci_hi);
        }
    }
    free(e);
    free(x);
    free(y);
    return TMOE_OK;
}

static int workload_rank(const char *w) {
    static const char *const order[] = {"standard", "high_complexity", "small_batch", "large_batch",
                                        "skewed"};
    for (int i = 0; i < 5; i++)
        if (strcmp(order[i], w) == 0) return i;
    return 5;
}

static int workload_cmp(const void *x, const void *y) {
    const char *a = *(const char *const *)x, *b = *(const char *const *)y;
    int ra = workload_rank(a), rb = workload_rank(b);
    return ra != rb ? ra - rb : strcmp(a, b);
}

static int strategy_cmp(const void *x, const void *y) {
    const char *a = *(const char *const *)x, *b = *(const char *const *)y;
    int ra = strategy_rank(a), rb = strategy_rank(b);
    return ra != rb ? ra - rb : strcmp(a, b);
}

/* Groups in canonical order: by workload, then by strategy (both as in the tables). */
static int group_cmp(const void *x, const void *y) {
    const analysis_group *a = x, *b = y;
    int c = workload_cmp(&a->r.workload, &b->r.workload);
    return c ? c : strategy_cmp(&a->r.strategy, &b->r.strategy);
}

static int str_cmp(const void *x, const void *y) {
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Row indices by (workload, strategy) by name (sort_ds: the dataset being sorted). */
static int row_name_cmp(const void *x, const void *y) {
    const tmoe_analyze_row *a = tmoe_dataset_row(sort_ds, *(const int *)x);
    const tmoe_analyze_row *b = tmoe_dataset_row(sort_ds, *(const int *)y);
    int c = strcmp(a->str[TMOE_RL_WORKLOAD], b->str[TMOE_RL_WORKLOAD]);
    return c ? c : strcmp(a->str[TMOE_RL_STRATEGY], b->str[TMOE_RL_STRATEGY]);
}

static int name_cmp(const char *w1, const char *s1, const char *w2, const char *s2) {
    int c = strcmp(w1, w2);
    return c ? c : strcmp(s1, s2);
}

/* Group indices by (workload, strategy) by name (sort_a: the analysis being indexed). */
static const tmoe_analysis *sort_a;
static int by_name_cmp(const void *x, const void *y) {
    const tmoe_group_result *a = &sort_a->g[*(const int *)x].r, *b = &sort_a->g[*(const int *)y].r;
    return name_cmp(a->workload, a->strategy, b->workload, b->strategy);
}

const analysis_group *analysis_group_find(const tmoe_analysis *a, const char *workload,
                                          const char *strategy) {
    int lo = 0, hi = a->ng;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const tmoe_group_result *g = &a->g[a->by_name[mid]].r;
        int c = name_cmp(g->workload, g->strategy, workload, strategy);
        if (c == 0) return &a->g[a->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

tmoe_analysis *tmoe_analysis_create(tmoe_dataset *ds, const tmoe_analyze_config *cfg,
                                    tmoe_error *err) {
    tmoe_analysis *a = tmoe_calloc(1, sizeof *a, err);
    if (!a) return NULL;
    a->ds = ds;
    a->cfg = cfg ? *cfg : tmoe_analyze_config_default();
    if (!a->cfg.baseline) a->cfg.baseline = "baseline";
    if (!(a->cfg.level > 0.0 && a->cfg.level < 1.0)) a->cfg.level = 0.95;
    tmoe_dataset_check_consistency(ds);
    /* runs at several expert types: names are "strategy@type"; a baseline named without a
     * type is the one at the widest type */
    a->widest_type = tmoe_dataset_widest_type(ds);
    if (a->widest_type && !strchr(a->cfg.baseline, '@')) {
        snprintf(a->baseline_name, sizeof a->baseline_name, "%s@%s", a->cfg.baseline,
                 a->widest_type);
        a->cfg.baseline = a->baseline_name;
    }
    int nrows = tmoe_dataset_nrows(ds);
    if (nrows == 0) {
        tmoe_errorf(err, TMOE_EFORMAT, "no usable rows in any input (%d problems reported)",
                    tmoe_dataset_nproblems(ds));
        goto fail;
    }
    /* groups: rows sorted by (workload, strategy) by name, one group per run of equal names
     * (sorting keeps this O(n log n) however many names a log holds) */
    int *ord = tmoe_malloc(sizeof *ord * (size_t)nrows, err);
    if (!ord) goto fail;
    for (int i = 0; i < nrows; i++) ord[i] = i;
    sort_ds = ds;
    qsort(ord, (size_t)nrows, sizeof *ord, row_name_cmp);
    int ng = 0;
    for (int i = 0; i < nrows; i++) ng += i == 0 || row_name_cmp(&ord[i - 1], &ord[i]) != 0;
    a->g = tmoe_calloc((size_t)ng, sizeof *a->g, err);
    a->workloads = tmoe_malloc(sizeof *a->workloads * (size_t)ng, err);
    a->strategies = tmoe_malloc(sizeof *a->strategies * (size_t)ng, err);
    a->by_name = tmoe_malloc(sizeof *a->by_name * (size_t)ng, err);
    if (!a->g || !a->workloads || !a->strategies || !a->by_name) {
        free(ord);
        goto fail;
    }
    for (int i = 0, j; i < nrows; i = j) {
        for (j = i + 1; j < nrows && row_name_cmp(&ord[i], &ord[j]) == 0; j++)
            ;
        analysis_group *g = &a->g[a->ng];
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, ord[i]);
        g->rows = tmoe_malloc(sizeof(int) * (size_t)(j - i), err);
        if (!g->rows) {
            free(ord);
            goto fail;
        }
        memcpy(g->rows, ord + i, sizeof(int) * (size_t)(j - i));
        g->nrows = j - i;
        g->r.workload = r->str[TMOE_RL_WORKLOAD];
        g->r.strategy = r->str[TMOE_RL_STRATEGY];
        if (a->nworkloads == 0 || strcmp(a->workloads[a->nworkloads - 1], g->r.workload) != 0)
            a->workloads[a->nworkloads++] = g->r.workload;
        a->strategies[a->nstrategies++] = g->r.strategy;
        a->ng++;
    }
    free(ord);
    /* distinct strategies; both name lists and the groups in canonical order (workloads as
     * the paper lists them, strategies by rank: the harness runs them in random order) */
    qsort(a->strategies, (size_t)a->nstrategies, sizeof *a->strategies, str_cmp);
    int ns = 0;
    for (int i = 0; i < a->nstrategies; i++)
        if (ns == 0 || strcmp(a->strategies[ns - 1], a->strategies[i]) != 0)
            a->strategies[ns++] = a->strategies[i];
    a->nstrategies = ns;
    qsort(a->workloads, (size_t)a->nworkloads, sizeof *a->workloads, workload_cmp);
    qsort(a->strategies, (size_t)a->nstrategies, sizeof *a->strategies, strategy_cmp);
    qsort(a->g, (size_t)a->ng, sizeof *a->g, group_cmp);
    /* an index of the groups by name, for analysis_group_find */
    for (int i = 0; i < a->ng; i++) a->by_name[i] = i;
    sort_a = a;
    qsort(a->by_name, (size_t)a->ng, sizeof *a->by_name, by_name_cmp);
    for (int i = 0; i < a->ng; i++)
        if (build_group(a, &a->g[i], err)) goto fail;
    /* tests against the baseline of the same workload */
    for (int i = 0; i < a->ng; i++) {
        analysis_group *g = &a->g[i];
        if (strcmp(g->r.strategy, a->cfg.baseline) == 0) continue;
        if (compare_nll(a, g, err)) goto fail;
        analysis_group *base =
            (analysis_group *)analysis_group_find(a, g->r.workload, a->cfg.baseline);
        if (base && compare(a, base, g, a->cfg.seed + (uint64_t)i, err)) goto fail;
    }
    /* Holm per metric: the family of one metric is its comparisons over every workload and
     * strategy (testing 7 metrics is 7 questions, each corrected for its comparisons). */
    double *p = tmoe_malloc(sizeof *p * (size_t)a->ng, err),
           *padj = tmoe_malloc(sizeof *p * (size_t)a->ng, err);
    if (!p || !padj) {
        free(p);
        free(padj);
        goto fail;
    }
    for (int m = 0; m < TMOE_M_COUNT; m++) {
        for (int i = 0; i < a->ng; i++) p[i] = a->g[i].r.m[m].p;
        tmoe_stats_holm(p, a->ng, padj);
        for (int i = 0; i < a->ng; i++) a->g[i].r.m[m].p_holm = padj[i];
    }
    free(p);
    free(padj);
    return a;
fail:
    tmoe_analysis_free(a);
    return NULL;
}

void tmoe_analysis_free(tmoe_analysis *a) {
    if (!a) return;
    for (int i = 0; i < a->ng; i++) {
        free(a->g[i].rows);
        free(a->g[i].unit_of_row);
    }
    free(a->g);
    free(a->by_name);
    free(a->workloads);
    free(a->strategies);
    free(a);
}

int tmoe_analysis_ngroups(const tmoe_analysis *a) {
    return a->ng;
}
const tmoe_group_result *tmoe_analysis_group(const tmoe_analysis *a, int i) {
    TMOE_ASSERT(i >= 0 && i < a->ng);
    return &a->g[i].r;
}
const tmoe_group_result *tmoe_analysis_find(const tmoe_analysis *a, const char *workload,
                                            const char *strategy) {
    const analysis_group *g = analysis_group_find(a, workload, strategy);
    return g ? &g->r : NULL;
}
