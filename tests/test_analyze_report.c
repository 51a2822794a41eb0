/* End-to-end analysis of synthetic run logs: a known 20% energy difference is found
 * (p < 0.01), no difference gives a false-positive rate near 5% over a fixed seed list,
 * figures render without gnuplot warnings into non-blank PNGs, and without gnuplot the
 * tables and scripts are still written and the report says how to render. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef TEST_HAVE_ZLIB
#include <zlib.h>
#endif

#include "analyze_logs.h"
#include "testutil.h"
#include "thermoe/analyze.h"

static const char *const STRATS2[] = {"baseline", "kernel_aware_ttha"};
static const char *const STRATS_ALL[] = {"baseline",           "static_optimal",
                                         "kernel_aware_ttha",  "hierarchical_adaptive",
                                         "predictive_thermal", "multi_gpu_aware"};
static const char *const WL1[] = {"standard"};
static const char *const WL2[] = {"standard", "large_batch"};

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* A 20% lower energy per token with 5 repeats of 20 batches is detected. */
static void test_finds_20pct(void **state) {
    (void)state;
    const double mult[] = {1.0, 0.8};
    synth_cfg sc = {.strategies = STRATS2,
                    .energy_mult = mult,
                    .nstrategies = 2,
                    .workloads = WL1,
                    .nworkloads = 1,
                    .repeats = 5,
                    .batches = 20,
                    .experts = 8,
                    .run_sd = 0.04,
                    .batch_sd = 0.05,
                    .seed = 11,
                    .telemetry = "nvml"};
    const char *dir = tu_tmppath("run20");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_error err = {0};
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
    assert_int_equal(tmoe_dataset_nrows(ds), 5 * 2 * 20);
    assert_int_equal(tmoe_dataset_nproblems(ds), 0);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
    assert_non_null(a);
    const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
    assert_non_null(g);
    const tmoe_metric_result *e = &g->m[TMOE_M_ENERGY_PER_TOKEN];
    assert_int_equal(g->n_units, 5);
    assert_int_equal(e->paired, 1);
    assert_int_equal(e->n_pairs, 5);
    if (!(e->p < 0.01)) fail_msg("p = %g, want < 0.01", e->p);
    if (!(e->pct > -25.0 && e->pct < -15.0)) fail_msg("change %g%%, want near -20%%", e->pct);
    if (!(e->pct_lo < -20.0 + 5 && e->pct_hi > -20.0 - 5 && e->pct_lo < e->pct &&
          e->pct < e->pct_hi))
        fail_msg("CI [%g, %g] of %g", e->pct_lo, e->pct_hi, e->pct);
    assert_true(e->hedges_g < -2.0);
    assert_true(e->p_holm >= e->p);
    tmoe_analysis_free(a);
    tmoe_dataset_free(ds);

    /* the report says so in words */
    tmoe_analyze_config rc = tmoe_analyze_config_default();
    rc.out_dir = tu_tmppath("report20");
    rc.gnuplot = "";
    tmoe_analyze_summary s;
    const char *dirs[] = {dir};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &rc, &s, &err), &err);
    char *html = slurp(s.report_path);
    assert_non_null(html);
    assert_non_null(strstr(html, "kernel_aware_ttha used"));
    assert_non_null(strstr(html, "less energy per token than baseline on standard"));
    assert_non_null(strstr(html, "significant at 5% after Holm"));
    assert_null(strstr(html, "SIMULATED"));
    char p[1024];
    snprintf(p, sizeof p, "%s/comparisons.csv", rc.out_dir);
    char *csv = slurp(p);
    assert_non_null(csv);
    assert_true(strncmp(csv, "workload,strategy,metric,n_baseline,n,baseline_mean,mean,pct_change,",
                        68) == 0);
    char *line = strstr(csv, "\nstandard,kernel_aware_ttha,energy_per_token,5,5,");
    assert_non_null(line);
    /* the p column (13th) is below 0.01 */
    char *q = line + 1;
    for (int i = 0; i < 12; i++) q = strchr(q, ',') + 1;
    double pcsv = strtod(q, NULL);
    if (!(pcsv < 0.01)) fail_msg("comparisons.csv p = %g", pcsv);
}

/* No difference: over seeds 1..200 the paired test on per-repeat means rejects at 5% in a
 * fraction of runs near 5%, although batches within a run are correlated. */
static void test_false_positive_rate(void **state) {
    (void)state;
    const double mult[] = {1.0, 1.0};
    int rejections = 0, trials = 200;
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.bootstrap = 0;
    for (int seed = 1; seed <= trials; seed++) {
        synth_cfg sc = {.strategies = STRATS2,
                        .energy_mult = mult,
                        .nstrategies = 2,
                        .workloads = WL1,
                        .nworkloads = 1,
                        .repeats = 4,
                        .batches = 10,
                        .experts = 4,
                        .run_sd = 0.05,
                        .batch_sd = 0.05,
                        .seed = (uint64_t)seed,
                        .telemetry = "nvml"};
        char name[32];
        snprintf(name, sizeof name, "fpr%d", seed);
        const char *dir = tu_tmppath(name);
        assert_int_equal(synth_run(dir, &sc), 0);
        tmoe_error err = {0};
        tmoe_dataset *ds = tmoe_dataset_create(&err);
        ASSERT_OK(tmoe_dataset_add_dir(ds, dir, &err), &err);
        tmoe_analysis *a = tmoe_analysis_create(ds, &cfg, &err);
        assert_non_null(a);
        const tmoe_group_result *g = tmoe_analysis_find(a, "standard", "kernel_aware_ttha");
        double p = g->m[TMOE_M_ENERGY_PER_TOKEN].p;
        assert_true(p >= 0.0 && p <= 1.0);
        rejections += p < 0.05;
        tmoe_analysis_free(a);
        tmoe_dataset_free(ds);
    }
    double rate = (double)rejections / trials;
    print_message("false-positive rate over %d seeds: %.3f\n", trials, rate);
    if (rate < 0.02 || rate > 0.09) fail_msg("false-positive rate %.3f outside [0.02, 0.09]", rate);
}

/* ---- PNG checks: IHDR dimensions, then inflate + unfilter the image and count colours. */

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

typedef struct {
    uint32_t w, h;
    int colors;          /* distinct RGB colours (capped at 4096) */
    double non_bg_share; /* pixels differing from the top-left pixel */
} png_info;

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

static void png_check(const char *path, png_info *out) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    static unsigned char file[8 << 20];
    size_t n = fread(file, 1, sizeof file, f);
    fclose(f);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 33 || memcmp(file, sig, 8) || memcmp(file + 12, "IHDR", 4))
        fail_msg("%s: not a PNG", path);
    out->w = be32(file + 16);
    out->h = be32(file + 20);
    int depth = file[24], ctype = file[25], interlace = file[28];
    if (depth != 8 || (ctype != 2 && ctype != 6) || interlace)
        fail_msg("%s: PNG type %d/%d unsupported", path, depth, ctype);
#ifdef TEST_HAVE_ZLIB
    int bpp = ctype == 6 ? 4 : 3;
    /* gather IDAT */
    unsigned char *z = malloc(n), *raw;
    size_t zl = 0;
    for (size_t p = 8; p + 12 <= n;) {
        uint32_t len = be32(file + p);
        if (memcmp(file + p + 4, "IDAT", 4) == 0) {
            memcpy(z + zl, file + p + 8, len);
            zl += len;
        }
        p += 12 + len;
    }
    size_t stride = (size_t)out->w * bpp + 1;
    uLongf rl = (uLongf)(stride * out->h);
    raw = malloc(rl);
    if (uncompress(raw, &rl, z, zl) != Z_OK || rl != stride * out->h)
        fail_msg("%s: bad image data", path);
    free(z);
    /* unfilter in place */
    for (uint32_t y = 0; y < out->h; y++) {
        unsigned char *row = raw + y * stride + 1, *prev = y ? raw + (y - 1) * stride + 1 : NULL;
        int ft = row[-1];
        for (size_t x = 0; x < stride - 1; x++) {
            int a = x >= (size_t)bpp ? row[x - bpp] : 0, b = prev ? prev[x] : 0;
            int c = prev && x >= (size_t)bpp ? prev[x - bpp] : 0;
            int add = ft == 0   ? 0
                      : ft == 1 ? a
                      : ft == 2 ? b
                      : ft == 3 ? (a + b) / 2
                                : paeth(a, b, c);
            row[x] = (unsigned char)(row[x] + add);
        }
    }
    static uint32_t seen[4096];
    int ncol = 0;
    size_t nonbg = 0;
    const unsigned char *bg = raw + 1;
    for (uint32_t y = 0; y < out->h; y++)
        for (uint32_t x = 0; x < out->w; x++) {
            const unsigned char *px = raw + y * stride + 1 + (size_t)x * bpp;
            uint32_t c = (uint32_t)px[0] << 16 | (uint32_t)px[1] << 8 | px[2];
            if (memcmp(px, bg, 3)) nonbg++;
            int k = 0;
            while (k < ncol && seen[k] != c) k++;
            if (k == ncol && ncol < 4096) seen[ncol++] = c;
        }
    out->colors = ncol;
    out->non_bg_share = (double)nonbg / ((double)out->w * out->h);
    free(raw);
#else
    /* Without zlib: a blank 1050x780 render compresses to a few kB; a drawn figure is larger. */
    (void)paeth;
    out->colors = n > 20000 ? 4 : 1;
    out->non_bg_share = n > 20000 ? 1.0 : 0.0;
#endif
}

static int gnuplot_missing; /* test_figures_render could not run: exit 77 (ctest's skip) */

/* All strategies x 2 workloads, rendered as PNG, SVG and PDF: no gnuplot warnings, and every
 * PNG has the column-width size, several colours and a real share of drawn pixels. */
static void test_figures_render(void **state) {
    (void)state;
    if (system("gnuplot -e 'exit' >/dev/null 2>&1") != 0) {
        printf(
            "SKIP: gnuplot not installed: figures not rendered (install gnuplot 5 with the cairo "
            "terminals); the path without it is test_no_gnuplot\n");
        gnuplot_missing = 1;
        skip();
    }
    const double mult[] = {1.0, 0.95, 0.8, 0.9, 0.85, 0.97};
    synth_cfg sc = {.strategies = STRATS_ALL,
                    .energy_mult = mult,
                    .nstrategies = 6,
                    .workloads = WL2,
                    .nworkloads = 2,
                    .repeats = 3,
                    .batches = 15,
                    .experts = 8,
                    .run_sd = 0.03,
                    .batch_sd = 0.05,
                    .seed = 5,
                    .telemetry = "sim"};
    const char *dir = tu_tmppath("runfig");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    const char *keep = getenv("THERMOE_KEEP_REPORT");
    cfg.out_dir = keep && *keep ? keep : tu_tmppath("reportfig");
    cfg.formats = TMOE_FMT_PNG | TMOE_FMT_SVG | TMOE_FMT_PDF;
    cfg.bootstrap = 500;
    tmoe_analyze_summary s;
    tmoe_error err = {0};
    const char *dirs[] = {dir};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, &s, &err), &err);
    assert_true(s.figures.gnuplot_found);
    if (s.figures.n_failed)
        fail_msg("%d renders failed: %s", s.figures.n_failed, s.figures.first_failure);
    /* per workload: power, temperature, ccdf, percentiles, usage, time, ttha loss, adapter, 2
     * pareto; overall: forest, timeline, energy, peak power, throughput, overhead bars,
     * predicted vs measured energy */
    assert_int_equal(s.figures.n_figures, 2 * 10 + 7);
    assert_int_equal(s.figures.n_rendered, 3 * s.figures.n_figures);
    static const char *const check[] = {"energy_per_token",
                                        "power_standard",
                                        "temperature_large_batch",
                                        "latency_ccdf_standard",
                                        "expert_usage_standard",
                                        "ttha_adapter_standard_kernel_aware_ttha",
                                        "energy_pred_vs_meas",
                                        "pareto_latency_standard",
                                        "ttha_loss_large_batch_kernel_aware_ttha",
                                        "overhead"};
    for (size_t i = 0; i < sizeof check / sizeof *check; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/figures/%s.png", cfg.out_dir, check[i]);
        png_info pi;
        png_check(p, &pi);
        if (pi.w != 1050 || pi.h != 780) fail_msg("%s: %ux%u, want 1050x780", p, pi.w, pi.h);
        if (pi.colors < 4 || pi.non_bg_share < 0.02)
            fail_msg("%s looks blank: %d colours, %.4f of pixels drawn", p, pi.colors,
                     pi.non_bg_share);
        snprintf(p, sizeof p, "%s/figures/%s.gp", cfg.out_dir, check[i]);
        assert_int_equal(access(p, R_OK), 0);
        snprintf(p, sizeof p, "%s/figures/%s.dat", cfg.out_dir, check[i]);
        assert_int_equal(access(p, R_OK), 0);
    }
    /* the headline and the whole-run timeline are two columns wide (7 in at 300 dpi) */
    static const char *const wide[] = {"forest", "timeline"};
    for (size_t i = 0; i < 2; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/figures/%s.png", cfg.out_dir, wide[i]);
        png_info pi;
        png_check(p, &pi);
        if (pi.w != 2100 || pi.h < 780) fail_msg("%s: %ux%u, want 2100 x >= 780", p, pi.w, pi.h);
        if (pi.colors < 4 || pi.non_bg_share < 0.02)
            fail_msg("%s looks blank: %d colours, %.4f of pixels drawn", p, pi.colors,
                     pi.non_bg_share);
        snprintf(p, sizeof p, "%s/figures/%s.gp", cfg.out_dir, check[i]);
        assert_int_equal(access(p, R_OK), 0);
        snprintf(p, sizeof p, "%s/figures/%s.dat", cfg.out_dir, check[i]);
        assert_int_equal(access(p, R_OK), 0);
    }
    char p[1024];
    snprintf(p, sizeof p, "%s/report.html", cfg.out_dir);
    char *html = slurp(p);
    assert_non_null(html);
    assert_non_null(strstr(html, "SIMULATED TELEMETRY"));
    assert_non_null(strstr(html, "(simulated telemetry)"));
    assert_non_null(strstr(html, "figures/energy_per_token.png"));
    assert_null(strstr(html, "not rendered"));
    static const char *const tables[] = {"summary.md",     "summary.csv",     "summary.tex",
                                         "comparisons.md", "comparisons.csv", "comparisons.tex"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", cfg.out_dir, tables[i]);
        assert_int_equal(access(p, R_OK), 0);
    }
    snprintf(p, sizeof p, "%s/summary.tex", cfg.out_dir);
    html = slurp(p);
    assert_non_null(strstr(html, "\\toprule"));
    assert_non_null(strstr(html, "kernel\\_aware\\_ttha"));
}

/* The numeric columns of the lines of block `index` of a .dat (comment lines skipped,
 * blocks separated by two blank lines) into v (rows x cols, at most maxrows); returns rows. */
static int dat_block(const char *text, int index, double *v, int cols, int maxrows) {
    int blk = 0, blank = 0, rows = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) {
            if (++blank == 2) blk++;
        } else {
            blank = 0;
            if (*p != '#' && blk == index && rows < maxrows) {
                char *q = (char *)p;
                for (int k = 0; k < cols; k++) v[rows * cols + k] = strtod(q, &q);
                rows++;
            }
        }
        p = e ? e + 1 : p + len;
    }
    return rows;
}

/* A report from a synthetic log with the quality columns: the forest plot's .dat has one row
 * per workload x non-baseline strategy in each panel, with 95% CIs from 4 repeats (the
 * perplexity change near 100 (exp(delta) - 1)); report.html has the table of contents, the
 * headline first and the tables folded; every .dat opens with header rows; the latency CCDF
 * never rises; the overhead figure is not a % of simulated time. With 2 repeats the forest
 * plot has no CI and says effect sizes only. */
static void test_forest_and_report(void **state) {
    (void)state;
    const double mult[] = {1.0, 0.95, 0.8};
    const double dnll[] = {0.0, 0.01, 0.05};
    const char *strats[] = {"baseline", "static_optimal", "kernel_aware_ttha"};
    for (int reps = 4; reps >= 2; reps -= 2) {
        synth_cfg sc = {.strategies = strats,
                        .energy_mult = mult,
                        .nstrategies = 3,
                        .workloads = WL2,
                        .nworkloads = 2,
                        .repeats = reps,
                        .batches = 12,
                        .experts = 4,
                        .run_sd = 0.03,
                        .batch_sd = 0.05,
                        .seed = 17,
                        .telemetry = reps == 4 ? "sim" : "nvml",
                        .nll_delta = dnll};
        char name[32], out[32];
        snprintf(name, sizeof name, "forest%d", reps);
        snprintf(out, sizeof out, "forestrep%d", reps);
        const char *dir = tu_tmppath(name);
        assert_int_equal(synth_run(dir, &sc), 0);
        tmoe_analyze_config cfg = tmoe_analyze_config_default();
        cfg.out_dir = tu_tmppath(out);
        cfg.gnuplot = ""; /* the data and the HTML are checked with or without gnuplot */
        cfg.bootstrap = 0;
        tmoe_analyze_summary s;
        tmoe_error err = {0};
        const char *dirs[] = {dir};
        ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, &s, &err), &err);
        assert_int_equal(s.n_problems, 0); /* the quality columns are not a schema problem */
        char p[1024];
        snprintf(p, sizeof p, "%s/figures/forest.dat", cfg.out_dir);
        char *dat = strdup(slurp(p));
        assert_non_null(dat);
        assert_true(strncmp(dat, "# ", 2) == 0);
        assert_non_null(strstr(dat, "workload 'large_batch' strategy 'kernel_aware_ttha'"));
        double v[16 * 6];
        for (int panel = 0; panel < 5; panel++) {
            int n = dat_block(dat, panel, v, 6, 16);
            if (n != 2 * 2) fail_msg("forest.dat panel %d: %d rows, want 4", panel, n);
            for (int r = 0; r < n; r++) {
                double est = v[r * 6 + 1], lo = v[r * 6 + 2], hi = v[r * 6 + 3];
                assert_int_equal((int)v[r * 6 + 4], reps);
                if (panel >= 3) continue; /* the synthetic temperatures have no noise */
                if (!isfinite(est)) fail_msg("panel %d row %d: no estimate", panel, r);
                if (reps >= 3 && !(lo <= est && est <= hi))
                    fail_msg("panel %d row %d: CI [%g, %g] of %g", panel, r, lo, hi, est);
                if (reps < 3 && (isfinite(lo) || isfinite(hi)))
                    fail_msg("panel %d row %d: a CI from %d repeats", panel, r, reps);
            }
            if (panel == 1) /* perplexity: kernel_aware_ttha rows (y 2 and 0) near +5.1% */
                for (int r = 0; r < n; r++)
                    if (v[r * 6] == 2.0 || v[r * 6] == 0.0) {
                        double want = 100.0 * expm1(0.05);
                        if (fabs(v[r * 6 + 1] - want) > 0.35 * want)
                            fail_msg("perplexity change %g%%, want near %g%%", v[r * 6 + 1], want);
                    }
            if (panel == 0) /* energy per token in mJ: kernel_aware_ttha 20% below 0.02 J */
                for (int r = 0; r < n; r++)
                    if (v[r * 6] == 2.0 && !(v[r * 6 + 1] < -2.0 && v[r * 6 + 1] > -6.0))
                        fail_msg("energy change %g mJ/token, want near -4", v[r * 6 + 1]);
        }
        free(dat);
        snprintf(p, sizeof p, "%s/figures/forest.gp", cfg.out_dir);
        char *gp = slurp(p);
        if (reps < 3)
            assert_non_null(strstr(gp, "2 repeats: effect sizes only, no CI or p-value"));
        else
            assert_non_null(strstr(gp, "95% CI over repeats"));
        /* every .dat opens with header rows; the CCDF never rises and stays in (0, 1] */
        DIR *d = opendir(tu_tmppath(out));
        assert_non_null(d);
        closedir(d);
        char fdir[1024];
        snprintf(fdir, sizeof fdir, "%s/figures", cfg.out_dir);
        d = opendir(fdir);
        assert_non_null(d);
        int ndat = 0;
        for (struct dirent *e; (e = readdir(d));) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 4, ".dat") != 0) continue;
            snprintf(p, sizeof p, "%s/%s", fdir, e->d_name);
            char *t = slurp(p);
            if (strncmp(t, "# ", 2) != 0) fail_msg("%s has no header row", p);
            ndat++;
        }
        closedir(d);
        assert_int_equal(ndat, s.figures.n_figures);
        snprintf(p, sizeof p, "%s/figures/latency_ccdf_standard.dat", cfg.out_dir);
        char *cc = strdup(slurp(p));
        for (int blk = 0; blk < 3; blk++) {
            double c2[64 * 2];
            int n = dat_block(cc, blk, c2, 2, 64);
            assert_int_equal(n, 12 * reps);
            for (int k = 0; k < n; k++) {
                if (!(c2[k * 2 + 1] > 0.0 && c2[k * 2 + 1] <= 1.0))
                    fail_msg("CCDF value %g outside (0, 1]", c2[k * 2 + 1]);
                if (k && (c2[k * 2] < c2[k * 2 - 2] || c2[k * 2 + 1] > c2[k * 2 - 1]))
                    fail_msg("CCDF not monotone at point %d of block %d", k, blk);
            }
        }
        free(cc);
        snprintf(p, sizeof p, "%s/figures/overhead.gp", cfg.out_dir);
        gp = slurp(p);
        if (reps == 4) {
            assert_non_null(strstr(gp, "the step time is simulated, so no % of it"));
            assert_null(strstr(gp, "% of the measured step time"));
        } else
            assert_non_null(strstr(gp, "% of the measured step time"));
        snprintf(p, sizeof p, "%s/figures/energy_pred_vs_meas.gp", cfg.out_dir);
        gp = slurp(p);
        assert_non_null(
            strstr(gp, reps == 4 ? "simulated GPU" : "measured energy per batch (mJ), NVML"));
        assert_non_null(strstr(gp, "cost model"));
        /* report.html: contents, the headline before the other figures and the tables, the
         * long tables folded */
        char *html = slurp(s.report_path);
        const char *toc = strstr(html, "<nav id=toc>"), *head = strstr(html, "id=\"headline\"");
        const char *forest = strstr(html, "figures/forest.");
        const char *tables = strstr(html, "<h2 id=tables>"), *det = strstr(html, "<details>");
        assert_non_null(toc);
        assert_non_null(strstr(html, "<a href=\"#headline\">"));
        assert_non_null(strstr(html, "<a href=\"#tables\">"));
        assert_true(head && forest && tables && det);
        assert_true(toc < head && head < forest && forest < tables && tables < det);
        assert_non_null(strstr(html, "</details>"));
        assert_non_null(strstr(html, "perplexity +"));
        if (reps < 3) assert_non_null(strstr(html, "2 repeat(s): effect sizes only"));
    }
}

/* True when any file under dir (recursively) is called name. */
static int file_named_under(const char *dir, const char *name) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (strcmp(e->d_name, name) == 0) found = 1;
        char sub[2048];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        struct stat st;
        if (!found && lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            found = file_named_under(sub, name);
    }
    closedir(d);
    return found;
}

/* Workload and strategy names from a hostile or careless log: quotes that close a gnuplot
 * string and call system(), backquotes, macros, backslashes, newlines, '/', '%', LaTeX and
 * HTML specials, bytes that are not UTF-8 and 300 characters. Nothing in them runs, every
 * figure is written and renders without a gnuplot complaint, and the tables and report
 * show the names escaped. */
static void test_hostile_names(void **state) {
    (void)state;
    if (system("gnuplot -e 'exit' >/dev/null 2>&1") != 0)
        fail_msg("gnuplot is not on PATH: it is a build dependency, and this test must render");
    char root[600], marker[700];
    snprintf(root, sizeof root, "%s", tu_tmppath("hostile"));
    assert_int_equal(mkdir(root, 0777), 0);
    snprintf(marker, sizeof marker, "%s/INJECTED", root);
    char s_quote[1024], w_quote[1024], s_nl[1024], s_long[301];
    snprintf(s_quote, sizeof s_quote, "s'; system('touch %s'); t='", marker);
    snprintf(w_quote, sizeof w_quote, "w'; system('touch %s'); x='/../w", marker);
    snprintf(s_nl, sizeof s_nl, "nl\nsystem('touch %s')\n#", marker);
    memset(s_long, 'L', 300);
    s_long[300] = '\0';
    const char *strats[] = {"baseline",
                            s_quote,
                            s_nl,
                            "back\\slash\\",
                            "a/b",
                            s_long,
                            "tick`touch INJECTED`@m",
                            "50%_{x}^~&$#<b>\"q\"",
                            "kernel_aware_ttha_\xff\xfe"};
    const double mult[] = {1.0, 0.9, 0.95, 0.85, 0.8, 0.97, 0.93, 0.88, 0.9};
    const char *wls[] = {w_quote, "standard"};
    synth_cfg sc = {.strategies = strats,
                    .energy_mult = mult,
                    .nstrategies = 9,
                    .workloads = wls,
                    .nworkloads = 2,
                    .repeats = 2,
                    .batches = 6,
                    .experts = 4,
                    .run_sd = 0.03,
                    .batch_sd = 0.05,
                    .seed = 21,
                    .telemetry = "nvml"};
    char run[700], out[700];
    snprintf(run, sizeof run, "%s/run", root);
    snprintf(out, sizeof out, "%s/report", root);
    assert_int_equal(synth_run(run, &sc), 0);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.out_dir = out;
    cfg.formats = TMOE_FMT_PNG | TMOE_FMT_SVG;
    cfg.bootstrap = 100;
    tmoe_analyze_summary s;
    tmoe_error err = {0};
    const char *dirs[] = {run};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, &s, &err), &err);
    assert_int_equal(s.n_groups, 2 * 9);
    assert_true(s.figures.gnuplot_found);
    if (s.figures.n_failed)
        fail_msg("%d renders failed: %s", s.figures.n_failed, s.figures.first_failure);
    /* per workload 10 figures (one TTHA strategy: loss and adapter), plus the forest plot, the
     * timeline, 4 bars and predicted vs measured energy */
    assert_int_equal(s.figures.n_figures, 2 * 10 + 7);
    assert_int_equal(s.figures.n_rendered, 2 * s.figures.n_figures);
    if (file_named_under(root, "INJECTED")) fail_msg("a name from the log ran a command");
    assert_int_not_equal(access(marker, F_OK), 0);
    /* every figure listed in the report has its script, data and render under one name */
    char *html = slurp(s.report_path);
    assert_non_null(html);
    int nimg = 0;
    for (const char *p = html; (p = strstr(p, "<img src=\"figures/"));) {
        p += strlen("<img src=\"figures/");
        const char *q = strstr(p, ".png\"");
        assert_non_null(q);
        char base[400], path[1200];
        snprintf(base, sizeof base, "%.*s", (int)(q - p), p);
        for (const char *x = base; *x; x++)
            if (!((*x >= 'a' && *x <= 'z') || (*x >= 'A' && *x <= 'Z') ||
                  (*x >= '0' && *x <= '9') || *x == '_' || *x == '-'))
                fail_msg("figure file name '%s' has a character outside [A-Za-z0-9_-]", base);
        static const char *const ext[] = {"dat", "gp", "png", "svg"};
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/figures/%s.%s", out, base, ext[k]);
            if (access(path, R_OK) != 0) fail_msg("%s is missing", path);
        }
        nimg++;
    }
    assert_int_equal(nimg, s.figures.n_figures);
    /* HTML: names escaped, never markup */
    assert_null(strstr(html, "<b>\"q\""));
    assert_non_null(strstr(html, "50%_{x}^~&amp;$#&lt;b&gt;&quot;q&quot;"));
}

/* Names reach the tables escaped for each format: LaTeX specials (\ { } ^ ~ & % $ # _ | [ ])
 * as commands, Markdown's | and friends with a backslash (a newline would end a row), CSV
 * quoted when it holds a comma, quote, CR or LF, HTML with entities. */
static void test_table_escaping(void **state) {
    (void)state;
    const char *strats[] = {"baseline", "x\\y{z}^~&%$#_|[o]", "nl\nrow\r", "it's"};
    const double mult[] = {1.0, 0.9, 0.95, 0.97};
    const char *wls[] = {"w|1<b>"};
    synth_cfg sc = {.strategies = strats,
                    .energy_mult = mult,
                    .nstrategies = 4,
                    .workloads = wls,
                    .nworkloads = 1,
                    .repeats = 2,
                    .batches = 4,
                    .experts = 4,
                    .run_sd = 0.03,
                    .batch_sd = 0.05,
                    .seed = 8,
                    .telemetry = "nvml"};
    char run[600];
    snprintf(run, sizeof run, "%s", tu_tmppath("escrun"));
    assert_int_equal(synth_run(run, &sc), 0);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.out_dir = tu_tmppath("escrep");
    cfg.gnuplot = "";
    cfg.bootstrap = 0;
    tmoe_analyze_summary s;
    tmoe_error err = {0};
    const char *dirs[] = {run};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, &s, &err), &err);
    assert_int_equal(s.n_groups, 4);
    char p[1024];
    snprintf(p, sizeof p, "%s/summary.tex", cfg.out_dir);
    char *t = slurp(p);
    assert_non_null(t);
    if (!strstr(t, "w\\textbar{}1$<$b$>$ & "
                   "x\\textbackslash{}y\\{z\\}\\textasciicircum{}\\textasciitilde{}\\&\\%\\$\\#"
                   "\\_\\textbar{}{[}o{]} & "))
        fail_msg("summary.tex lacks the escaped names:\n%s", t);
    assert_non_null(strstr(t, "w\\textbar{}1$<$b$>$ & nl row  & "));
    assert_null(strstr(t, "nl\nrow"));
    snprintf(p, sizeof p, "%s/comparisons.tex", cfg.out_dir);
    t = slurp(p);
    assert_non_null(strstr(t, "\\textasciicircum{}\\textasciitilde{}"));
    snprintf(p, sizeof p, "%s/summary.md", cfg.out_dir);
    t = slurp(p);
    if (!strstr(t, "| w\\|1&lt;b&gt; | x\\\\y{z}^~&%$#_\\|\\[o\\] | "))
        fail_msg("summary.md lacks the escaped names:\n%s", t);
    assert_non_null(strstr(t, "| w\\|1&lt;b&gt; | nl row  | "));
    snprintf(p, sizeof p, "%s/summary.csv", cfg.out_dir);
    t = slurp(p);
    assert_non_null(strstr(t, "\nw|1<b>,\"nl\nrow\r\","));
    assert_non_null(strstr(t, "\nw|1<b>,x\\y{z}^~&%$#_|[o],"));
    t = slurp(s.report_path);
    assert_non_null(strstr(t, "<td class=l>w|1&lt;b&gt;</td><td class=l>it&#39;s</td>"));
    assert_null(strstr(t, "1<b>"));
}

/* With gnuplot absent the tables and scripts are still written and the report says how to
 * render the figures. */
static void test_no_gnuplot(void **state) {
    (void)state;
    const double mult[] = {1.0, 0.8};
    synth_cfg sc = {.strategies = STRATS2,
                    .energy_mult = mult,
                    .nstrategies = 2,
                    .workloads = WL1,
                    .nworkloads = 1,
                    .repeats = 2,
                    .batches = 6,
                    .experts = 4,
                    .run_sd = 0.03,
                    .batch_sd = 0.05,
                    .seed = 3,
                    .telemetry = "nvml"};
    const char *dir = tu_tmppath("runnogp");
    assert_int_equal(synth_run(dir, &sc), 0);
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    cfg.out_dir = tu_tmppath("reportnogp");
    cfg.gnuplot = "/nonexistent/bin/gnuplot";
    tmoe_analyze_summary s;
    tmoe_error err = {0};
    const char *dirs[] = {dir};
    ASSERT_OK(tmoe_analyze_run_ex(dirs, 1, &cfg, &s, &err), &err);
    assert_false(s.figures.gnuplot_found);
    assert_true(s.figures.n_figures > 0);
    assert_int_equal(s.figures.n_rendered, 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/figures/energy_per_token.gp", cfg.out_dir);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/figures/energy_per_token.png", cfg.out_dir);
    assert_int_not_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/summary.md", cfg.out_dir);
    assert_int_equal(access(p, R_OK), 0);
    char *html = slurp(s.report_path);
    assert_non_null(strstr(html, "because gnuplot could not be run"));
    assert_non_null(strstr(html, "gnuplot -e \"fmt='png'\""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_20pct),       cmocka_unit_test(test_false_positive_rate),
        cmocka_unit_test(test_figures_render),    cmocka_unit_test(test_no_gnuplot),
        cmocka_unit_test(test_hostile_names),     cmocka_unit_test(test_table_escaping),
        cmocka_unit_test(test_forest_and_report),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed ? failed : gnuplot_missing ? 77 : 0;
}
