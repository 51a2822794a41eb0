/* The meter (measurement windows) on the simulated GPU and on the fake libnvidia-ml
 * (tests/fake_nvml.c): billed energy, temperatures, windows shorter than a sample, unknown
 * fields, several devices and the own device, a device lost inside a window, and the
 * argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "thermoe/telemetry.h"

/* A billed window against the billed dynamic energy plus the idle power (measured over an
 * idle window just before) times its length. Static power follows the die temperature (1 W
 * per C idle, 1.6 W per C busy: docs/telemetry.md), which moves a few C between the two
 * windows; the measured gap is under 1 %. */
#define TOL_BILLED_REL 0.03
/* Values computed from constant fake readings (scaled trapezoids): rounding only. */
#define TOL_EXACT_REL 1e-9

static tmoe_telemetry *open_sim(int ndev) {
    tmoe_telemetry_config c = tmoe_telemetry_config_default();
    c.kind = TMOE_TELEMETRY_SIM;
    c.sim.n_devices = ndev;
    tmoe_telemetry *t;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_telemetry_open(&c, &t, &err), &err);
    return t;
}

static tmoe_monitor *sync_monitor(tmoe_telemetry *t, uint32_t fields) {
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.mode = TMOE_MONITOR_SYNC;
    mc.energy_period_ns = 100000000;
    mc.fields = fields;
    tmoe_monitor *m;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_monitor_create(t, &mc, &m, &err), &err);
    return m;
}

static tmoe_meter *meter(tmoe_telemetry *t, tmoe_monitor *mon, int own, int own_only) {
    tmoe_meter_config c = tmoe_meter_config_default();
    c.own_device = own;
    c.own_only = own_only;
    tmoe_meter *m;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_meter_create(t, mon, &c, &m, &err), &err);
    return m;
}

static int whole_degrees(double c) {
    return isfinite(c) && c == floor(c) && c > 15.0 && c < 100.0;
}

static void test_sim_billed_window(void **state) {
    (void)state;
    tmoe_telemetry *t = open_sim(1);
    tmoe_monitor *mon = sync_monitor(t, TMOE_F_ALL);
    tmoe_meter *m = meter(t, mon, 0, 0);
    tmoe_error err = {0};
    /* first work puts the clocks up; then settle */
    ASSERT_OK(tmoe_meter_bill(m, 0, 0.01, 1.0, 0.85), &err);
    tmoe_meter_sync(m);
    assert_true(tmoe_meter_wait(m, 5.0) == 0.0);

    tmoe_meter_window w;
    tmoe_meter_reading idle, busy;
    tmoe_meter_begin(m, &w);
    tmoe_meter_wait(m, 1.0);
    ASSERT_OK(tmoe_meter_end(m, &w, &idle, &err), &err);
    double idle_w = idle.total.power_avg_w;

    const double busy_s = 0.6, dyn_j = 150.0, rest_s = 0.4;
    tmoe_meter_begin(m, &w);
    ASSERT_OK(tmoe_meter_bill(m, 0, busy_s, dyn_j, 0.85), &err);
    assert_true(fabs(tmoe_meter_backlog_s(m, 0) - busy_s) < 1e-9);
    tmoe_meter_sync(m);
    assert_true(tmoe_meter_backlog_s(m, 0) == 0.0);
    tmoe_meter_wait(m, rest_s);
    ASSERT_OK(tmoe_meter_end(m, &w, &busy, &err), &err);
    const tmoe_meter_values *v = &busy.total;
    double expect = dyn_j + idle_w * busy.period_s;
    printf("meter sim: idle %.1f W; billed window %.3f s: %.2f J (%s), expected %.2f J "
           "(%.2f%%); avg %.0f W, peak %.0f W; GPU %.0f -> %.0f C (peak %.0f), HBM %.0f -> %.0f C "
           "(peak %.0f); SM %.0f MHz (max %.0f), mem %.0f MHz, util %.0f%%, %d samples\n",
           idle_w, busy.period_s, v->energy_j, tmoe_energy_method_name(v->method), expect,
           100.0 * (v->energy_j / expect - 1.0), v->power_avg_w, v->power_peak_w,
           v->gpu_temp_start_c, v->gpu_temp_end_c, v->gpu_temp_peak_c, v->mem_temp_start_c,
           v->mem_temp_end_c, v->mem_temp_peak_c, v->sm_clock_mhz, v->sm_clock_max_mhz,
           v->mem_clock_mhz, v->gpu_util_pct, v->samples);
    assert_string_equal(busy.source, "sim");
    assert_true(fabs(busy.period_s - (busy_s + rest_s)) < 1e-9);
    assert_int_equal(v->method, TMOE_ENERGY_SIM_EXACT);
    assert_true(fabs(v->energy_j / expect - 1.0) < TOL_BILLED_REL);
    assert_true(fabs(v->power_avg_w - v->energy_j / busy.period_s) < 1e-9);
    assert_true(v->power_peak_w >= v->power_avg_w && v->power_peak_w < 700.0);
    /* temperatures in degrees C, whole degrees like NVML; the die and the HBM warm */
    assert_true(whole_degrees(v->gpu_temp_start_c) && whole_degrees(v->gpu_temp_end_c));
    assert_true(whole_degrees(v->mem_temp_start_c) && whole_degrees(v->mem_temp_end_c));
    assert_true(v->gpu_temp_peak_c >= v->gpu_temp_end_c && v->mem_temp_peak_c >= v->mem_temp_end_c);
    assert_true(v->gpu_temp_peak_c > v->gpu_temp_start_c);
    assert_true(v->mem_temp_peak_c > v->mem_temp_start_c);
    assert_true(v->sm_clock_mhz > 300.0 && v->sm_clock_max_mhz >= v->sm_clock_mhz);
    assert_true(v->mem_clock_mhz > 0.0 && v->gpu_util_pct > 0.0 && v->throttle_known);
    int64_t p = 50000000, t1 = w.t0_ns + (int64_t)llround(busy.period_s * 1e9);
    assert_int_equal(v->samples, (int)(t1 / p - (w.t0_ns + p - 1) / p + 1)); /* the 50 ms grid */
    /* one device: the total is the device */
    assert_true(v->energy_j == busy.dev[0].energy_j && v->power_peak_w == busy.dev[0].power_peak_w);
    tmoe_meter_free(m);
    tmoe_meter_free(NULL);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

/* A window shorter than the sampling period: the latest sample before it stands in. */
static void test_sim_window_without_sample(void **state) {
    (void)state;
    tmoe_telemetry *t = open_sim(1);
    tmoe_monitor *mon = sync_monitor(t, TMOE_F_ALL);
    tmoe_meter *m = meter(t, mon, 0, 0);
    tmoe_error err = {0};
    tmoe_meter_wait(m, 1.001); /* 1 ms past a sample */
    tmoe_sample latest;
    ASSERT_OK(tmoe_monitor_latest(mon, 0, &latest), &err);
    tmoe_meter_window w;
    tmoe_meter_reading r;
    tmoe_meter_begin(m, &w);
    ASSERT_OK(tmoe_meter_bill(m, 0, 0.005, 1.0, 0.85), &err);
    tmoe_meter_sync(m);
    tmoe_meter_wait(m, 0.005);
    ASSERT_OK(tmoe_meter_end(m, &w, &r, &err), &err);
    const tmoe_meter_values *v = &r.total;
    assert_int_equal(v->samples, 0);
    assert_true(v->gpu_temp_start_c == latest.gpu_temp_c);
    assert_true(v->gpu_temp_end_c == latest.gpu_temp_c && v->gpu_temp_peak_c == latest.gpu_temp_c);
    assert_true(v->mem_temp_end_c == latest.mem_temp_c);
    assert_true(v->sm_clock_mhz == latest.sm_clock_mhz);
    /* the simulated GPU's energy is exact at any length: idle ~72 W x 10 ms + 1 J */
    assert_int_equal(v->method, TMOE_ENERGY_SIM_EXACT);
    assert_true(v->energy_j > 1.0 && v->energy_j < 1.0 + 0.010 * 200.0);
    assert_true(v->power_peak_w >= v->power_avg_w);
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

/* Fields the monitor does not read are NAN (throttle: not known), never 0. */
static void test_sim_unknown_fields(void **state) {
    (void)state;
    tmoe_telemetry *t = open_sim(1);
    uint32_t absent = TMOE_F_MEM_TEMP | TMOE_F_MEM_CLOCK | TMOE_F_GPU_UTIL | TMOE_F_MEM_UTIL |
                      TMOE_F_THROTTLE | TMOE_F_SM_CLOCK;
    tmoe_monitor *mon = sync_monitor(t, TMOE_F_ALL & ~absent);
    tmoe_meter *m = meter(t, mon, 0, 0);
    tmoe_error err = {0};
    tmoe_meter_window w;
    tmoe_meter_reading r;
    tmoe_meter_begin(m, &w);
    tmoe_meter_wait(m, 0.5);
    ASSERT_OK(tmoe_meter_end(m, &w, &r, &err), &err);
    for (int i = 0; i < 2; i++) {
        const tmoe_meter_values *v = i ? &r.dev[0] : &r.total;
        assert_true(isfinite(v->energy_j) && isfinite(v->gpu_temp_end_c));
        assert_true(isnan(v->mem_temp_start_c) && isnan(v->mem_temp_end_c) &&
                    isnan(v->mem_temp_peak_c));
        assert_true(isnan(v->sm_clock_mhz) && isnan(v->sm_clock_max_mhz) &&
                    isnan(v->mem_clock_mhz));
        assert_true(isnan(v->gpu_util_pct) && isnan(v->mem_util_pct));
        assert_int_equal(v->throttle_known, 0);
        assert_true(v->throttle == 0);
    }
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

/* Two devices: totals over both, or the own device's alone (an expert-parallel rank). A
 * window longer than the meter's copy buffer (512 samples) is read whole. */
static void test_sim_devices_and_own(void **state) {
    (void)state;
    tmoe_telemetry *t = open_sim(2);
    tmoe_monitor *mon = sync_monitor(t, TMOE_F_ALL);
    tmoe_meter *all = meter(t, mon, 0, 0), *rank1 = meter(t, mon, 1, 1);
    tmoe_error err = {0};
    tmoe_meter_window w, w1;
    tmoe_meter_reading r, r1;
    tmoe_meter_begin(all, &w);
    tmoe_meter_begin(rank1, &w1);
    ASSERT_OK(tmoe_meter_bill(all, 1, 20.0, 20.0 * 300.0, 0.85), &err); /* 300 W for 20 s */
    tmoe_meter_sync(all);
    tmoe_meter_wait(all, 10.0);
    ASSERT_OK(tmoe_meter_end(all, &w, &r, &err), &err);
    ASSERT_OK(tmoe_meter_end(rank1, &w1, &r1, &err), &err);
    assert_int_equal(r.n_devices, 2);
    assert_int_equal(r.dev[0].samples, 601); /* 30 s on the 50 ms grid */
    assert_int_equal(r.dev[1].samples, 601);
    tmoe_sample l0, l1;
    ASSERT_OK(tmoe_monitor_latest(mon, 0, &l0), &err);
    ASSERT_OK(tmoe_monitor_latest(mon, 1, &l1), &err);
    assert_true(r.dev[0].gpu_temp_end_c == l0.gpu_temp_c &&
                r.dev[1].gpu_temp_end_c == l1.gpu_temp_c);
    printf("meter sim, 2 devices over %.0f s: %.0f J + %.0f J, GPU peak %.0f / %.0f C\n",
           r.period_s, r.dev[0].energy_j, r.dev[1].energy_j, r.dev[0].gpu_temp_peak_c,
           r.dev[1].gpu_temp_peak_c);
    assert_true(r.dev[1].energy_j > r.dev[0].energy_j + 20.0 * 300.0 * (1.0 - TOL_BILLED_REL));
    assert_true(fabs(r.total.energy_j - (r.dev[0].energy_j + r.dev[1].energy_j)) < 1e-9);
    assert_true(r.total.power_peak_w == r.dev[0].power_peak_w + r.dev[1].power_peak_w);
    assert_true(r.total.gpu_temp_peak_c == r.dev[1].gpu_temp_peak_c); /* the hottest */
    assert_true(r.total.gpu_temp_peak_c > r.dev[0].gpu_temp_peak_c);
    assert_true(r.total.gpu_temp_start_c == r.dev[0].gpu_temp_start_c); /* own device 0 */
    assert_true(r.total.gpu_temp_end_c == r.dev[0].gpu_temp_end_c);
    assert_int_equal(r.total.samples, 1202);
    double clk = (r.dev[0].sm_clock_mhz + r.dev[1].sm_clock_mhz) / 2.0; /* equal counts */
    assert_true(fabs(r.total.sm_clock_mhz - clk) < 1e-6);
    /* own device 1 only: every total is device 1's */
    assert_int_equal(r1.own_device, 1);
    assert_true(r1.total.energy_j == r1.dev[1].energy_j &&
                r1.total.power_peak_w == r1.dev[1].power_peak_w);
    assert_true(r1.total.gpu_temp_start_c == r1.dev[1].gpu_temp_start_c);
    assert_true(r1.total.gpu_temp_peak_c == r1.dev[1].gpu_temp_peak_c);
    assert_true(r1.total.sm_clock_mhz == r1.dev[1].sm_clock_mhz);
    assert_int_equal(r1.total.samples, r1.dev[1].samples);
    /* both meters saw the same devices */
    assert_true(r1.dev[0].energy_j == r.dev[0].energy_j && r1.dev[1].energy_j == r.dev[1].energy_j);
    tmoe_meter_free(all);
    tmoe_meter_free(rank1);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

static void test_arguments(void **state) {
    (void)state;
    tmoe_telemetry *t = open_sim(2);
    tmoe_monitor *mon = sync_monitor(t, TMOE_F_ALL);
    tmoe_meter_config c = tmoe_meter_config_default();
    assert_int_equal(c.own_device, 0);
    assert_int_equal(c.own_only, 0);
    c.own_device = 2;
    tmoe_meter *m = NULL;
    tmoe_error err = {0};
    assert_int_equal(tmoe_meter_create(t, mon, &c, &m, &err), TMOE_EINVAL);
    assert_null(m);
    assert_non_null(strstr(err.msg, "own device 2"));
    ASSERT_OK(tmoe_meter_create(t, mon, NULL, &m, &err), &err);
    assert_int_equal(tmoe_meter_bill(m, 2, 1.0, 1.0, 0.5), TMOE_EINVAL);
    assert_int_equal(tmoe_meter_bill(m, 0, -1.0, 1.0, 0.5), TMOE_EINVAL);
    assert_int_equal(tmoe_meter_bill(m, 0, 1.0, NAN, 0.5), TMOE_EINVAL);
    assert_int_equal(tmoe_meter_bill(m, 0, 1.0, 1.0, 1.5), TMOE_EINVAL);
    ASSERT_OK(tmoe_meter_bill(m, 0, 0.0, 0.0, 0.5), &err); /* nothing */
    assert_true(tmoe_meter_backlog_s(m, 0) == 0.0);
    assert_true(isnan(tmoe_meter_backlog_s(m, 5)));
    tmoe_meter_window w;
    tmoe_meter_reading r;
    tmoe_meter_begin(m, &w);
    w.n_devices = 1;
    assert_int_equal(tmoe_meter_end(m, &w, &r, &err), TMOE_EINVAL);
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

/* ---- the fake libnvidia-ml ------------------------------------------------------------ */

static int use_fake_nvml(void **state) {
    (void)state;
    static char path[1024];
    snprintf(path, sizeof path, "%s/libfake_nvml.so", THERMOE_BINARY_DIR);
    setenv("THERMOE_NVML_LIB", path, 1);
    unsetenv("FAKE_NVML_INIT_RC");
    unsetenv("FAKE_NVML_DEVICES");
    unsetenv("FAKE_NVML_UNSUPPORTED");
    unsetenv("FAKE_NVML_LOST_AFTER");
    unsetenv("FAKE_NVML_ENERGY_RESET_AT");
    return 0;
}

static tmoe_telemetry *open_nvml(void) {
    tmoe_telemetry_config c = tmoe_telemetry_config_default();
    c.kind = TMOE_TELEMETRY_NVML;
    tmoe_telemetry *t;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_telemetry_open(&c, &t, &err), &err);
    return t;
}

static tmoe_monitor *thread_monitor(tmoe_telemetry *t, int64_t period_ns) {
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.period_ns = period_ns;
    mc.energy_period_ns = period_ns;
    tmoe_monitor *m;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_monitor_create(t, &mc, &m, &err), &err);
    return m;
}

/* Wait (real time) until every device has at least n samples. */
static void wait_samples(tmoe_monitor *m, int ndev, int64_t n) {
    struct timespec ts = {0, 1000000};
    for (int i = 0; i < 10000; i++) {
        int ok = 1;
        for (int d = 0; d < ndev; d++) ok &= tmoe_monitor_sample_count(m, d) >= n;
        if (ok) return;
        nanosleep(&ts, NULL);
    }
    fail_msg("the monitor took fewer than %lld samples in 10 s", (long long)n);
}

static void test_nvml_counter_window(void **state) {
    (void)state;
    setenv("FAKE_NVML_DEVICES", "2", 1);
    tmoe_telemetry *t = open_nvml();
    tmoe_monitor *mon = thread_monitor(t, 2000000);
    tmoe_meter *m = meter(t, mon, 0, 0);
    tmoe_error err = {0};
    wait_samples(mon, 2, 1);
    tmoe_meter_window w;
    tmoe_meter_reading r;
    tmoe_meter_begin(m, &w);
    assert_true(isnan(w.sim_energy_j[0]));
    ASSERT_OK(tmoe_meter_bill(m, 0, 1.0, 100.0, 0.5), &err); /* the real GPU bills itself */
    tmoe_meter_sync(m);
    assert_true(isnan(tmoe_meter_backlog_s(m, 0)));
    int64_t n0 = tmoe_monitor_sample_count(mon, 1);
    wait_samples(mon, 2, n0 + 10);
    ASSERT_OK(tmoe_meter_end(m, &w, &r, &err), &err);
    assert_string_equal(r.source, "nvml");
    for (int d = 0; d < 2; d++) {
        const tmoe_meter_values *v = &r.dev[d];
        assert_int_equal(v->method, TMOE_ENERGY_COUNTER);
        assert_true(v->energy_j > 0.0 && isfinite(v->energy_j));
        assert_true(v->samples >= 2);
        assert_true(v->gpu_temp_start_c == 40.0 + d && v->gpu_temp_end_c == 40.0 + d);
        assert_true(v->gpu_temp_peak_c == 40.0 + d);
        assert_true(v->mem_temp_start_c == 45.0 && v->mem_temp_peak_c == 45.0);
        assert_true(v->sm_clock_mhz == 1980.0 && v->mem_clock_mhz == 2619.0);
        assert_true(v->gpu_util_pct == 97.0 && v->mem_util_pct == 60.0);
        assert_true(v->throttle_known && v->throttle == TMOE_THROTTLE_SW_POWER_CAP);
        assert_true(v->power_peak_w >= v->power_avg_w && v->power_peak_w >= 251.5);
    }
    assert_int_equal(r.total.method, TMOE_ENERGY_COUNTER);
    assert_true(fabs(r.total.energy_j - (r.dev[0].energy_j + r.dev[1].energy_j)) <=
                TOL_EXACT_REL * r.total.energy_j);
    assert_true(r.total.gpu_temp_peak_c == 41.0 && r.total.gpu_temp_start_c == 40.0);
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

/* Without the energy counter: integrated power; a window shorter than a sample: the latest
 * power times its length; fields the device does not have: NAN. */
static void test_nvml_integrated_and_latest(void **state) {
    (void)state;
    setenv("FAKE_NVML_UNSUPPORTED", "energy,memtemp,reasons", 1);
    tmoe_telemetry *t = open_nvml();
    tmoe_monitor *mon = thread_monitor(t, 2000000);
    tmoe_meter *m = meter(t, mon, 0, 0);
    tmoe_error err = {0};
    wait_samples(mon, 1, 1);
    tmoe_meter_window w;
    tmoe_meter_reading r;
    tmoe_meter_begin(m, &w);
    wait_samples(mon, 1, tmoe_monitor_sample_count(mon, 0) + 5);
    ASSERT_OK(tmoe_meter_end(m, &w, &r, &err), &err);
    const tmoe_meter_values *v = &r.total;
    assert_int_equal(v->method, TMOE_ENERGY_INTEGRATED);
    /* constant 251.5 W instant power: the scaled trapezoid is exact */
    assert_true(fabs(v->energy_j / (251.5 * r.period_s) - 1.0) < TOL_EXACT_REL);
    assert_true(isnan(v->mem_temp_start_c) && isnan(v->mem_temp_end_c) &&
                isnan(v->mem_temp_peak_c));
    assert_int_equal(v->throttle_known, 0);
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);

    /* a sample every 200 ms: a window of a few microseconds holds none */
    mon = thread_monitor(t, 200000000);
    m = meter(t, mon, 0, 0);
    wait_samples(mon, 1, 1);
    tmoe_meter_begin(m, &w);
    ASSERT_OK(tmoe_meter_end(m, &w, &r, &err), &err);
    v = &r.total;
    assert_int_equal(v->samples, 0);
    assert_int_equal(v->method, TMOE_ENERGY_LATEST_POWER);
    assert_string_equal(tmoe_energy_method_name(v->method), "latest_power");
    assert_true(fabs(v->power_avg_w / 251.5 - 1.0) < TOL_EXACT_REL);
    assert_true(v->gpu_temp_end_c == 40.0 && v->sm_clock_mhz == 1980.0);
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

/* A device lost inside the window (the fake library answers GPU_IS_LOST after its 20th
 * temperature read, 40 ms in): the reading says so and has no energy for it, though samples
 * from before the loss lie in the window, so that a caller can judge the window from the
 * reading alone; the temperatures sampled before the loss stay. */
static void test_nvml_lost_in_window(void **state) {
    (void)state;
    setenv("FAKE_NVML_LOST_AFTER", "20", 1);
    tmoe_telemetry *t = open_nvml();
    tmoe_monitor *mon = thread_monitor(t, 2000000);
    tmoe_meter *m = meter(t, mon, 0, 0);
    tmoe_error err = {0};
    wait_samples(mon, 1, 1);
    tmoe_meter_window w;
    tmoe_meter_reading r;
    tmoe_meter_begin(m, &w);
    struct timespec ts = {0, 1000000};
    for (int i = 0; i < 10000 && !tmoe_monitor_device_lost(mon, 0); i++) nanosleep(&ts, NULL);
    assert_true(tmoe_monitor_device_lost(mon, 0));
    ASSERT_OK(tmoe_meter_end(m, &w, &r, &err), &err);
    for (const tmoe_meter_values *v = &r.dev[0]; v; v = v == &r.total ? NULL : &r.total) {
        assert_int_equal(v->lost, 1);
        assert_true(isnan(v->energy_j) && isnan(v->power_avg_w));
        assert_int_equal(v->method, TMOE_ENERGY_NONE);
    }
    if (r.dev[0].samples > 0 && !isnan(r.dev[0].gpu_temp_peak_c))
        assert_true(r.dev[0].gpu_temp_peak_c == 40.0);
    tmoe_meter_free(m);
    tmoe_monitor_free(mon);
    tmoe_telemetry_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim_billed_window),
        cmocka_unit_test(test_sim_window_without_sample),
        cmocka_unit_test(test_sim_unknown_fields),
        cmocka_unit_test(test_sim_devices_and_own),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test_setup(test_nvml_counter_window, use_fake_nvml),
        cmocka_unit_test_setup(test_nvml_integrated_and_latest, use_fake_nvml),
        cmocka_unit_test_setup(test_nvml_lost_in_window, use_fake_nvml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
