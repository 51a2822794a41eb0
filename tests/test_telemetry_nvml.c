/* The NVML source through the real dlopen path, against a fake libnvidia-ml built by the
 * tests (tests/fake_nvml.c): missing library, missing symbol, init failures, no device,
 * NOT_SUPPORTED fields, a device lost after N samples, an energy counter reset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "thermoe/telemetry.h"

static const char *lib(const char *name) {
    static char buf[2][1024];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/lib%s.so", THERMOE_BINARY_DIR, name);
    return buf[k];
}

static int reset_env(void **state) {
    (void)state;
    unsetenv("FAKE_NVML_INIT_RC");
    unsetenv("FAKE_NVML_DEVICES");
    unsetenv("FAKE_NVML_UNSUPPORTED");
    unsetenv("FAKE_NVML_LOST_AFTER");
    unsetenv("FAKE_NVML_ENERGY_RESET_AT");
    setenv("THERMOE_NVML_LIB", lib("fake_nvml"), 1);
    return 0;
}

static int open_kind(tmoe_telemetry_kind k, const char *path, tmoe_telemetry **t, tmoe_error *err) {
    tmoe_telemetry_config c = tmoe_telemetry_config_default();
    c.kind = k;
    c.nvml_lib = path;
    return tmoe_telemetry_open(&c, t, err);
}

static void test_missing_library(void **state) {
    (void)state;
    tmoe_telemetry *t = NULL;
    tmoe_error err = {0};
    const char *nowhere = "/nonexistent/libnvidia-ml.so.1";
    assert_int_equal(open_kind(TMOE_TELEMETRY_NVML, nowhere, &t, &err), TMOE_ENOTSUP);
    assert_null(t);
    assert_non_null(strstr(err.msg, "library not found"));
    /* the env override is the same path */
    setenv("THERMOE_NVML_LIB", nowhere, 1);
    assert_int_equal(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), TMOE_ENOTSUP);
    /* auto falls back to sim and says why */
    ASSERT_OK(open_kind(TMOE_TELEMETRY_AUTO, NULL, &t, &err), &err);
    assert_true(tmoe_telemetry_is_simulated(t));
    assert_non_null(strstr(tmoe_telemetry_choice(t), "library not found"));
    tmoe_telemetry_free(t);
}

static void test_missing_symbol(void **state) {
    (void)state;
    tmoe_telemetry *t = NULL;
    tmoe_error err = {0};
    assert_int_equal(open_kind(TMOE_TELEMETRY_NVML, lib("fake_nvml_nopower"), &t, &err),
                     TMOE_ENOTSUP);
    assert_non_null(strstr(err.msg, "symbol missing"));
    assert_non_null(strstr(err.msg, "nvmlDeviceGetPowerUsage"));
}

static void test_init_failures(void **state) {
    (void)state;
    tmoe_telemetry *t = NULL;
    tmoe_error err = {0};
    setenv("FAKE_NVML_INIT_RC", "4", 1);
    assert_int_equal(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), TMOE_EDEVICE);
    assert_non_null(strstr(err.msg, "permission"));
    setenv("FAKE_NVML_INIT_RC", "999", 1);
    assert_int_equal(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), TMOE_EDEVICE);
    assert_non_null(strstr(err.msg, "init failed"));
    assert_non_null(strstr(err.msg, "999"));
    unsetenv("FAKE_NVML_INIT_RC");
    setenv("FAKE_NVML_DEVICES", "0", 1);
    assert_int_equal(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), TMOE_ENODEV);
    assert_non_null(strstr(err.msg, "no device"));
    int n = -1;
    assert_int_equal(tmoe_telemetry_probe_nvml(NULL, &n, &err), TMOE_ENODEV);
    assert_int_equal(n, 0);
}

static void test_fields_and_not_supported(void **state) {
    (void)state;
    tmoe_telemetry *t;
    tmoe_error err = {0};
    setenv("FAKE_NVML_DEVICES", "2", 1);
    ASSERT_OK(open_kind(TMOE_TELEMETRY_AUTO, NULL, &t, &err), &err);
    assert_string_equal(tmoe_telemetry_source_name(t), "nvml");
    assert_int_equal(tmoe_telemetry_device_count(t), 2);
    tmoe_device_info inf;
    ASSERT_OK(tmoe_telemetry_device_info(t, 1, &inf, &err), &err);
    assert_string_equal(inf.uuid, "GPU-fake-1");
    assert_string_equal(inf.driver, "999.1.2-fake");
    assert_string_equal(inf.pci_id, "00000000:18:00.0");
    assert_true(inf.power_limit_w == 700.0 && inf.slowdown_temp_c == 89.0 &&
                inf.shutdown_temp_c == 95.0);
    assert_int_equal(inf.supported, TMOE_F_ALL);
    tmoe_sample s;
    ASSERT_OK(tmoe_telemetry_read(t, 1, TMOE_F_ALL, &s, &err), &err);
    assert_int_equal(s.valid, TMOE_F_ALL);
    assert_true(s.gpu_temp_c == 41.0 && s.mem_temp_c == 45.0);
    assert_true(fabs(s.power_instant_w - 251.5) < 1e-9 && fabs(s.power_avg_w - 250.0) < 1e-9);
    assert_true(s.throttle_reasons == TMOE_THROTTLE_SW_POWER_CAP);
    assert_true(s.pcie_rx_kbs == 1200.0 && s.pcie_tx_kbs == 800.0 && s.fan_pct == 30.0);
    tmoe_telemetry_free(t);

    setenv("FAKE_NVML_UNSUPPORTED", "fan,pcie,memtemp", 1);
    ASSERT_OK(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), &err);
    ASSERT_OK(tmoe_telemetry_device_info(t, 0, &inf, &err), &err);
    uint32_t absent = TMOE_F_FAN | TMOE_F_PCIE_RX | TMOE_F_PCIE_TX | TMOE_F_MEM_TEMP;
    assert_int_equal(inf.supported, TMOE_F_ALL & ~absent);
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(tmoe_telemetry_read(t, 0, TMOE_F_ALL, &s, &err), &err);
        assert_int_equal(s.valid, TMOE_F_ALL & ~absent);
        assert_true(isnan(s.fan_pct) && isnan(s.mem_temp_c) && isnan(s.pcie_rx_kbs));
        assert_true(s.valid & TMOE_F_POWER_INSTANT);
    }
    tmoe_telemetry_free(t);
}

static void test_device_lost(void **state) {
    (void)state;
    tmoe_telemetry *t;
    tmoe_error err = {0};
    const int N = 5; /* the open's probe read counts as one */
    char buf[16];
    snprintf(buf, sizeof buf, "%d", N);
    setenv("FAKE_NVML_LOST_AFTER", buf, 1);
    ASSERT_OK(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), &err);
    tmoe_sample s;
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        int rc = tmoe_telemetry_read(t, 0, TMOE_F_ALL, &s, &err);
        if (rc == TMOE_OK) {
            ok++;
            assert_false(tmoe_telemetry_device_lost(t, 0));
        } else {
            assert_int_equal(rc, TMOE_ENODEV);
            assert_int_equal(s.valid, 0);
            assert_true(isnan(s.gpu_temp_c));
        }
    }
    assert_int_equal(ok, N - 1);
    assert_true(tmoe_telemetry_device_lost(t, 0));
    tmoe_telemetry_free(t);

    /* under the monitor, the run goes on and the loss is reported */
    setenv("FAKE_NVML_LOST_AFTER", "3", 1);
    ASSERT_OK(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), &err);
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.period_ns = 1000000;
    tmoe_monitor *m;
    ASSERT_OK(tmoe_monitor_create(t, &mc, &m, &err), &err);
    struct timespec ts = {0, 1000000};
    for (int i = 0; i < 5000 && tmoe_monitor_sample_count(m, 0) < 10; i++) nanosleep(&ts, NULL);
    assert_true(tmoe_monitor_sample_count(m, 0) >= 10);
    assert_true(tmoe_monitor_device_lost(m, 0));
    ASSERT_OK(tmoe_monitor_latest(m, 0, &s), &err);
    assert_int_equal(s.valid, 0);
    tmoe_monitor_free(m);
    tmoe_telemetry_free(t);
}

static void test_energy_reset(void **state) {
    (void)state;
    tmoe_telemetry *t;
    tmoe_error err = {0};
    setenv("FAKE_NVML_ENERGY_RESET_AT", "4", 1);
    ASSERT_OK(open_kind(TMOE_TELEMETRY_NVML, NULL, &t, &err), &err);
    double prev = -1;
    for (int i = 0; i < 8; i++) {
        tmoe_sample s;
        ASSERT_OK(tmoe_telemetry_read(t, 0, TMOE_F_ENERGY, &s, &err), &err);
        assert_true(s.valid & TMOE_F_ENERGY);
        if (prev >= 0) assert_true(s.energy_mj >= prev);
        if (prev >= 0 && i > 3) assert_true(s.energy_mj - prev == 1000.0);
        prev = s.energy_mj;
    }
    tmoe_telemetry_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_missing_library, reset_env),
        cmocka_unit_test_setup(test_missing_symbol, reset_env),
        cmocka_unit_test_setup(test_init_failures, reset_env),
        cmocka_unit_test_setup(test_fields_and_not_supported, reset_env),
        cmocka_unit_test_setup(test_device_lost, reset_env),
        cmocka_unit_test_setup(test_energy_reset, reset_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
