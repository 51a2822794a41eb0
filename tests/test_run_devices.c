/* The per-device columns of thermoe run's batches.csv (device_energy_j, device_power_avg_w,
 * device_temp_end_c, device_tokens), read back through the analysis reader: on two simulated
 * GPUs with an uneven placement, on one, and on two GPUs of the fake libnvidia-ml. Each row
 * has one entry per device; the device energies and powers sum to energy_j and power_avg_w;
 * the device token copies are the per-expert counts summed over the placement. Also the
 * run's progress events, which is all the library says about a run on its way. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thermoe/analyze.h"
#include "thermoe/exp.h"

/* The cells are written with 9 significant digits: a sum of per-device cells matches the
 * total's cell to a few roundings of that. */
#define TOL_CELL_SUM 1e-7

#define E 8
#define K 2

static tmoe_run_config small_run(const char *name, tmoe_telemetry_kind tel, int ndev,
                                 const char *placement) {
    tmoe_run_config c = tmoe_run_config_default();
    for (int i = 0; i < TMOE_ROUTE_STRATEGY_COUNT; i++) c.strategies[i] = 0;
    for (int i = 0; i < TMOE_WL_COUNT; i++) c.workloads[i] = 0;
    c.strategies[TMOE_ROUTE_BASELINE] = c.strategies[TMOE_ROUTE_KERNEL_AWARE_TTHA] = 1;
    c.workloads[TMOE_WL_STANDARD] = c.workloads[TMOE_WL_SKEWED] = 1;
    c.batch_size = 1;
    c.block.seq_len = 16;
    c.block.d_model = 64; /* values on the CPU; time and energy are the telemetry's */
    c.block.d_ff = 128;
    c.block.n_heads = 2;
    c.block.num_experts = E;
    c.block.top_k = K;
    c.moe_only = 1;
    c.num_samples = 5;
    c.warmup_batches = 0;
    c.trace_batches = 0;
    c.backend = TMOE_BACKEND_CPU;
    c.telemetry = tel;
    c.sim_devices = ndev;
    c.placement_file = placement;
    c.seed = tu_seed();
    c.out_dir = tu_tmppath(name);
    return c;
}

static int close_rel(double a, double b, double rtol) {
    return fabs(a - b) <= rtol * fmax(fabs(a), fabs(b));
}

/* Run, read back and check every row against ndev devices and the placement dev_of (E).
 * Returns the dataset (caller frees). */
static tmoe_dataset *run_and_check(const tmoe_run_config *c, int ndev, const int *dev_of) {
    tmoe_error err = {0};
    ASSERT_OK(tmoe_run(c, NULL, &err), &err);
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    assert_non_null(ds);
    ASSERT_OK(tmoe_dataset_add_dir(ds, c->out_dir, &err), &err);
    for (int i = 0; i < tmoe_dataset_nproblems(ds); i++)
        fail_msg("reading %s: %s", c->out_dir, tmoe_dataset_problem(ds, i));
    int nrows = tmoe_dataset_nrows(ds);
    assert_int_equal(nrows, 2 * 2 * c->num_samples);
    for (int i = 0; i < nrows; i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        const double *de = r->list[TMOE_RL_DEVICE_ENERGY_J],
                     *dp = r->list[TMOE_RL_DEVICE_POWER_AVG_W];
        const double *dt = r->list[TMOE_RL_DEVICE_TEMP_END_C], *dk = r->list[TMOE_RL_DEVICE_TOKENS];
        const double *cnt = r->list[TMOE_RL_EXPERT_USAGE_COUNTS];
        assert_int_equal(r->nlist[TMOE_RL_DEVICE_ENERGY_J], ndev);
        assert_int_equal(r->nlist[TMOE_RL_DEVICE_POWER_AVG_W], ndev);
        assert_int_equal(r->nlist[TMOE_RL_DEVICE_TEMP_END_C], ndev);
        assert_int_equal(r->nlist[TMOE_RL_DEVICE_TOKENS], ndev);
        assert_int_equal(r->nlist[TMOE_RL_EXPERT_USAGE_COUNTS], E);
        double energy = r->num[TMOE_RL_ENERGY_J], power = r->num[TMOE_RL_POWER_AVG_W];
        double se = 0.0, sp = 0.0, sk = 0.0, sc = 0.0;
        for (int d = 0; d < ndev; d++) {
            if (!(de[d] > 0.0) || !(dp[d] > 0.0) || isnan(dt[d]))
                fail_msg("row %d device %d: energy %g J, power %g W, temperature %g C", i, d, de[d],
                         dp[d], dt[d]);
            se += de[d];
            sp += dp[d];
            sk += dk[d];
            /* energy = mean power x the batch's period (energy_j / power_avg_w) */
            if (!close_rel(de[d], dp[d] * energy / power, TOL_CELL_SUM))
                fail_msg("row %d device %d: %g J vs %g W x %g s", i, d, de[d], dp[d],
                         energy / power);
        }
        if (!close_rel(se, energy, TOL_CELL_SUM))
            fail_msg("row %d: device energies sum to %.9g J, energy_j %.9g J", i, se, energy);
        if (!close_rel(sp, power, TOL_CELL_SUM))
            fail_msg("row %d: device powers sum to %.9g W, power_avg_w %.9g W", i, sp, power);
        assert_true(dt[0] == r->num[TMOE_RL_GPU_TEMP_END_C]);
        /* the peak sums each device's peak, each at least its mean */
        double peak = r->num[TMOE_RL_POWER_PEAK_W];
        if (!(peak >= power * (1.0 - TOL_CELL_SUM)))
            fail_msg("row %d: power_peak_w %.9g W below power_avg_w %.9g W", i, peak, power);
        double want[TMOE_ROUTE_MAX_DEVICES] = {0};
        for (int e = 0; e < E; e++) {
            sc += cnt[e];
            want[dev_of[e]] += cnt[e];
        }
        assert_true(sk == sc);
        assert_true(sc == r->num[TMOE_RL_TOKENS] * K);
        for (int d = 0; d < ndev; d++)
            if (dk[d] != want[d])
                fail_msg("row %d device %d: %g token copies, placement says %g", i, d, dk[d],
                         want[d]);
    }
    return ds;
}

/* Two simulated GPUs, experts 1..7 on device 1 and expert 0 on device 0 (which also runs
 * the gate, top-k, permute and combine): device 1 draws more energy over the run. */
static void test_sim_two_devices(void **state) {
    (void)state;
    int dev_of[E] = {0, 1, 1, 1, 1, 1, 1, 1};
    const char *pl = tu_tmppath("placement.txt");
    FILE *f = fopen(pl, "w");
    assert_non_null(f);
    fprintf(f, "# expert device\n");
    for (int e = E - 1; e >= 0; e--) fprintf(f, "%d %d\n", e, dev_of[e]);
    assert_int_equal(fclose(f), 0);
    char plcopy[512];
    snprintf(plcopy, sizeof plcopy, "%s", pl);
    tmoe_run_config c = small_run("sim2", TMOE_TELEMETRY_SIM, 2, plcopy);
    tmoe_dataset *ds = run_and_check(&c, 2, dev_of);
    double e[2] = {0, 0}, tok[2] = {0, 0};
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        for (int d = 0; d < 2; d++) {
            e[d] += r->list[TMOE_RL_DEVICE_ENERGY_J][d];
            tok[d] += r->list[TMOE_RL_DEVICE_TOKENS][d];
        }
    }
    print_message("two simulated GPUs: %.4g J / %.0f token copies on device 0, %.4g J / %.0f on "
                  "device 1\n",
                  e[0], tok[0], e[1], tok[1]);
    assert_true(tok[1] > tok[0]);
    assert_true(e[1] > e[0]);
    tmoe_dataset_free(ds);
}

static void test_sim_one_device(void **state) {
    (void)state;
    int dev_of[E] = {0};
    tmoe_run_config c = small_run("sim1", TMOE_TELEMETRY_SIM, 1, NULL);
    tmoe_dataset *ds = run_and_check(&c, 1, dev_of);
    /* the columns added at the end: the window energy_j covers, the epoch time it closed
     * (within a minute of now), the memory clock and utilisation the simulated GPU has, and
     * unknown (nan, never 0) for PCIe, which it does not simulate; the gradient norm of
     * the TTHA update on its rows only */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int grads = 0;
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        double win = r->num[TMOE_RL_ENERGY_WINDOW_S];
        if (!(win > 0.0) ||
            !close_rel(win, r->num[TMOE_RL_ENERGY_J] / r->num[TMOE_RL_POWER_AVG_W], TOL_CELL_SUM))
            fail_msg("row %d: energy_window_s %g", i, win);
        double wall = r->num[TMOE_RL_WALL_TIME_UNIX_S];
        if (!(fabs(wall - (double)now.tv_sec) < 60.0))
            fail_msg("row %d: wall_time_unix_s %.3f, now %lld", i, wall, (long long)now.tv_sec);
        assert_true(r->num[TMOE_RL_MEM_CLOCK_MHZ] > 0.0);
        assert_true(r->num[TMOE_RL_MEM_UTIL_PCT] >= 0.0);
        assert_true(isnan(r->num[TMOE_RL_PCIE_RX_MBPS]));
        assert_true(isnan(r->num[TMOE_RL_PCIE_TX_MBPS]));
        double g = r->num[TMOE_RL_TTHA_GRAD_NORM];
        if (!strcmp(r->str[TMOE_RL_STRATEGY], "baseline"))
            assert_true(isnan(g));
        else if (!isnan(g))
            grads += g >= 0.0;
    }
    assert_true(grads > 0);
    tmoe_dataset_free(ds);
    /* the raw cells say nan, not 0 or empty */
    char path[600], line[16384];
    snprintf(path, sizeof path, "%s/batches.csv", c.out_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    assert_non_null(strstr(line, ",nan,nan,")); /* pcie_rx_mbps, pcie_tx_mbps */
    /* metadata: where it ran, and "simulated" for what a simulated GPU has no value of */
    snprintf(path, sizeof path, "%s/metadata.json", c.out_dir);
    json_error_t je;
    json_t *meta = json_load_file(path, 0, &je);
    if (!meta) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
    json_t *host = json_object_get(meta, "host"), *dev = json_object_get(meta, "device");
    const char *hn = json_string_value(json_object_get(host, "hostname"));
    assert_true(hn && *hn);
    assert_non_null(json_object_get(host, "slurm_job_id"));
    assert_string_equal(json_string_value(json_object_get(dev, "driver")), "simulated");
    assert_string_equal(json_string_value(json_object_get(dev, "cuda_driver_version")),
                        "simulated");
    assert_string_equal(json_string_value(json_object_get(dev, "persistence_mode")), "simulated");
    assert_non_null(json_string_value(json_object_get(dev, "cuda_runtime_version")));
    assert_true(json_number_value(json_object_get(dev, "power_limit_w")) > 0.0);
    json_decref(meta);
}

typedef struct events {
    int n, start, batch, combo_done, end, resume, bad;
    int last_batch; /* batch of the last BATCH event */
    tmoe_run_event last;
    char why[256]; /* the first ordering broken */
} events;

static void on_progress(const tmoe_run_progress *p, void *user) {
    events *ev = user;
    const char *bad = NULL;
    if (!p->run_id || !*p->run_id)
        bad = "no run id";
    else if (ev->end)
        bad = "an event after END";
    else if (ev->n == 0 && p->event != TMOE_RUN_EV_START)
        bad = "START is not first";
    switch (p->event) {
    case TMOE_RUN_EV_RESUME: ev->resume++; break;
    case TMOE_RUN_EV_START:
        ev->start++;
        if (p->strategies != 2 || p->workloads != 2 || p->repeats != 1 || !p->backend ||
            !p->telemetry || !p->simulated || !p->cost_model)
            bad = "START without the sweep's shape";
        break;
    case TMOE_RUN_EV_BATCH:
        if (p->batch != (ev->last == TMOE_RUN_EV_BATCH ? ev->last_batch + 1 : 1))
            bad = "BATCH out of order";
        if (p->combos != 4 || p->combo < 0 || p->combo >= 4 || p->batch > p->batches ||
            strcmp(p->source, "sim") || !(p->elapsed_s >= 0.0))
            bad = "BATCH fields";
        ev->last_batch = p->batch;
        ev->batch++;
        break;
    case TMOE_RUN_EV_COMBO_DONE:
        if (ev->last != TMOE_RUN_EV_BATCH || p->batch != p->batches)
            bad = "COMBO_DONE not right after a combination's last BATCH";
        ev->combo_done++;
        break;
    case TMOE_RUN_EV_END: ev->end++; break;
    }
    if (bad && !ev->bad++)
        snprintf(ev->why, sizeof ev->why, "event %d (%d): %s", ev->n, p->event, bad);
    ev->last = p->event;
    ev->n++;
}

/* The progress callback gets START, a BATCH per logged batch (1..batches per combination),
 * a COMBO_DONE after each combination's last one, and END last. */
static void test_progress_events(void **state) {
    (void)state;
    tmoe_run_config c = small_run("progress", TMOE_TELEMETRY_SIM, 1, NULL);
    c.num_samples = 3;
    events ev = {0};
    c.on_progress = on_progress;
    c.progress_user = &ev;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_run(&c, NULL, &err), &err);
    if (ev.bad) fail_msg("%s", ev.why);
    assert_int_equal(ev.start, 1);
    assert_int_equal(ev.resume, 0);
    assert_int_equal(ev.batch, 2 * 2 * c.num_samples);
    assert_int_equal(ev.combo_done, 2 * 2);
    assert_int_equal(ev.end, 1);
    assert_int_equal(ev.last, TMOE_RUN_EV_END);
}

/* Two GPUs of the fake libnvidia-ml (device d reads 40 + d C, 250 W): the per-device values
 * come from each device's own samples and energy window. */
static void test_nvml_two_devices(void **state) {
    (void)state;
    char lib[1024];
    snprintf(lib, sizeof lib, "%s/libfake_nvml.so", THERMOE_BINARY_DIR);
    setenv("THERMOE_NVML_LIB", lib, 1);
    setenv("FAKE_NVML_DEVICES", "2", 1);
    int dev_of[E];
    for (int e = 0; e < E; e++) dev_of[e] = e % 2; /* round robin */
    tmoe_run_config c = small_run("nvml2", TMOE_TELEMETRY_NVML, 0, NULL);
    tmoe_dataset *ds = run_and_check(&c, 2, dev_of);
    for (int i = 0; i < tmoe_dataset_nrows(ds); i++) {
        const tmoe_analyze_row *r = tmoe_dataset_row(ds, i);
        assert_string_equal(r->str[TMOE_RL_TELEMETRY_SOURCE], "nvml");
        assert_true(r->list[TMOE_RL_DEVICE_TEMP_END_C][0] == 40.0);
        assert_true(r->list[TMOE_RL_DEVICE_TEMP_END_C][1] == 41.0);
        assert_true(r->num[TMOE_RL_GPU_TEMP_PEAK_C] == 41.0);
    }
    tmoe_dataset_free(ds);
    unsetenv("FAKE_NVML_DEVICES");
    unsetenv("THERMOE_NVML_LIB");
    /* the device's provenance from NVML: what the fake library answers, and unknown for
     * the call it lacks (nvmlDeviceGetPersistenceMode) */
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.json", c.out_dir);
    json_error_t je;
    json_t *meta = json_load_file(path, 0, &je);
    if (!meta) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
    json_t *dev = json_object_get(meta, "device");
    assert_string_equal(json_string_value(json_object_get(dev, "driver")), "999.1.2-fake");
    assert_string_equal(json_string_value(json_object_get(dev, "cuda_driver_version")), "12.8");
    assert_string_equal(json_string_value(json_object_get(dev, "persistence_mode")), "unknown");
    assert_true(json_number_value(json_object_get(dev, "applications_clock_sm_mhz")) == 1755.0);
    assert_true(json_number_value(json_object_get(dev, "applications_clock_mem_mhz")) == 2619.0);
    assert_true(json_number_value(json_object_get(dev, "power_limit_w")) == 700.0);
    json_decref(meta);
}

static json_t *load_metadata(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/metadata.json", dir);
    json_error_t je;
    json_t *meta = json_load_file(path, 0, &je);
    if (!meta) fail_msg("%s:%d:%d: %s", path, je.line, je.column, je.text);
    return meta;
}

static void use_fake_nvml(const char *devices) {
    char lib[1024];
    snprintf(lib, sizeof lib, "%s/libfake_nvml.so", THERMOE_BINARY_DIR);
    setenv("THERMOE_NVML_LIB", lib, 1);
    setenv("FAKE_NVML_DEVICES", devices, 1);
}

static void drop_fake_nvml(void) {
    unsetenv("FAKE_NVML_LOST_AFTER");
    unsetenv("FAKE_NVML_DEVICES");
    unsetenv("THERMOE_NVML_LIB");
}

/* The GPU is lost mid-run (the fake library answers GPU_IS_LOST after its 21st temperature
 * read, about 1 s in; arrivals at 270 tokens/s stretch the 48 batches of 16 tokens to about
 * 3 s): every batch is still logged, but the run does not end "complete": tmoe_run_ex
 * reports the telemetry-fault outcome and an error, metadata.json says
 * complete_with_telemetry_faults and counts the faulted batches (exactly the rows whose
 * energy is nan) with the first one and the reason. */
static void test_nvml_device_lost(void **state) {
    (void)state;
    use_fake_nvml("1");
    setenv("FAKE_NVML_LOST_AFTER", "20", 1);
    tmoe_run_config c = small_run("nvml_lost", TMOE_TELEMETRY_NVML, 0, NULL);
    c.num_samples = 10;
    c.arrival_rate = 270.0;
    tmoe_error err = {0};
    tmoe_run_report rep;
    int rc = tmoe_run_ex(&c, NULL, &rep, &err);
    drop_fake_nvml();
    if (rc == TMOE_OK) fail_msg("a run that lost its GPU returned OK");
    assert_int_equal(rep.outcome, TMOE_RUN_TELEMETRY_FAULTS);
    if (!strstr(err.msg, "telemetry")) fail_msg("message: %s", err.msg);
    tmoe_dataset *ds = tmoe_dataset_create(&err);
    assert_non_null(ds);
    ASSERT_OK(tmoe_dataset_add_dir(ds, c.out_dir, &err), &err);
    int nrows = tmoe_dataset_nrows(ds), nan_rows = 0;
    assert_int_equal(nrows, 2 * 2 * c.num_samples);
    for (int i = 0; i < nrows; i++)
        nan_rows += isnan(tmoe_dataset_row(ds, i)->num[TMOE_RL_ENERGY_J]);
    tmoe_dataset_free(ds);
    json_t *meta = load_metadata(c.out_dir);
    assert_string_equal(json_string_value(json_object_get(meta, "status")),
                        "complete_with_telemetry_faults");
    json_t *tf = json_object_get(meta, "telemetry_faults");
    assert_true(json_is_object(tf));
    long count = (long)json_integer_value(json_object_get(tf, "count"));
    print_message("GPU lost: %ld of %d batches faulted, %d rows with nan energy; %s\n", count,
                  nrows, nan_rows, err.msg);
    assert_true(count >= 1 && count <= nrows);
    assert_int_equal(count, nan_rows);
    assert_int_equal(rep.telemetry_faults, count);
    const char *reason = json_string_value(json_object_get(tf, "reason"));
    if (!reason || !strstr(reason, "lost")) fail_msg("reason: %s", reason ? reason : "(none)");
    json_t *first = json_object_get(tf, "first");
    assert_non_null(json_string_value(json_object_get(first, "workload")));
    assert_true(json_is_integer(json_object_get(first, "batch_idx")));
    json_decref(meta);
}

static char last_warning[1024];
static void keep_warning(tmoe_log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= TMOE_LOG_WARN && strstr(msg, "devices"))
        snprintf(last_warning, sizeof last_warning, "%s", msg);
}

/* 20 GPUs: the run follows the first 16 (the router's device limit) and says so: a warning,
 * and metadata.json's telemetry has devices 16, devices_found 20, devices_ignored 4. */
static void test_nvml_twenty_devices(void **state) {
    (void)state;
    use_fake_nvml("20");
    tmoe_log_set(keep_warning, NULL);
    tmoe_run_config c = small_run("nvml20", TMOE_TELEMETRY_NVML, 0, NULL);
    c.num_samples = 1;
    tmoe_error err = {0};
    int rc = tmoe_run(&c, NULL, &err);
    tmoe_log_set(NULL, NULL);
    drop_fake_nvml();
    if (rc != TMOE_OK) fail_msg("20 GPUs: %s", err.msg);
    if (!strstr(last_warning, "20") || !strstr(last_warning, "16"))
        fail_msg("no warning about the devices left out (last: '%s')", last_warning);
    json_t *meta = load_metadata(c.out_dir);
    json_t *tel = json_object_get(meta, "telemetry");
    assert_int_equal(json_integer_value(json_object_get(tel, "devices")), 16);
    assert_int_equal(json_integer_value(json_object_get(tel, "devices_found")), 20);
    assert_int_equal(json_integer_value(json_object_get(tel, "devices_ignored")), 4);
    json_decref(meta);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_two_devices),  cmocka_unit_test(test_sim_one_device),
        cmocka_unit_test(test_progress_events),  cmocka_unit_test(test_nvml_two_devices),
        cmocka_unit_test(test_nvml_device_lost), cmocka_unit_test(test_nvml_twenty_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
