/* Telemetry sample helpers: invalid samples, field names, clock-event reason decoding and
 * the telemetry kind names. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "thermoe/telemetry.h"

tmoe_sample tmoe_sample_invalid(int device, int64_t t_ns) {
    tmoe_sample s;
    memset(&s, 0, sizeof s);
    s.device = device;
    s.t_ns = t_ns;
    s.gpu_temp_c = s.mem_temp_c = s.power_avg_w = s.power_instant_w = s.energy_mj = NAN;
    s.sm_clock_mhz = s.mem_clock_mhz = s.gpu_util_pct = s.mem_util_pct = NAN;
    s.pcie_rx_kbs = s.pcie_tx_kbs = s.fan_pct = NAN;
    s.valid = 0;
    return s;
}

static const char *const field_names[TMOE_F_COUNT] = {
    "gpu_temp_c",      "mem_temp_c",       "power_avg_w",  "power_instant_w", "energy_mj",
    "sm_clock_mhz",    "mem_clock_mhz",    "gpu_util_pct", "mem_util_pct",    "mem_used_bytes",
    "mem_total_bytes", "throttle_reasons", "pcie_rx_kbs",  "pcie_tx_kbs",     "fan_pct"};

const char *tmoe_field_name(uint32_t field) {
    for (int i = 0; i < TMOE_F_COUNT; i++)
        if (field == (1u << i)) return field_names[i];
    return NULL;
}

int tmoe_fields_format(uint32_t mask, char *buf, size_t n) {
    size_t len = 0;
    if (n) buf[0] = '\0';
    for (int i = 0; i < TMOE_F_COUNT; i++) {
        if (!(mask & (1u << i))) continue;
        int w = snprintf(len < n ? buf + len : NULL, len < n ? n - len : 0, "%s%s", len ? "," : "",
                         field_names[i]);
        if (w < 0) return -1;
        len += (size_t)w;
    }
    if (len == 0) {
        int w = snprintf(buf, n, "none");
        return w;
    }
    return (int)len;
}

static const struct {
    uint64_t bit;
    const char *name;
} reasons[] = {
    {TMOE_THROTTLE_GPU_IDLE, "GpuIdle"},
    {TMOE_THROTTLE_APP_CLOCKS, "ApplicationsClocksSetting"},
    {TMOE_THROTTLE_SW_POWER_CAP, "SwPowerCap"},
    {TMOE_THROTTLE_HW_SLOWDOWN, "HwSlowdown"},
    {TMOE_THROTTLE_SYNC_BOOST, "SyncBoost"},
    {TMOE_THROTTLE_SW_THERMAL, "SwThermalSlowdown"},
    {TMOE_THROTTLE_HW_THERMAL, "HwThermalSlowdown"},
    {TMOE_THROTTLE_HW_POWER_BRAKE, "HwPowerBrakeSlowdown"},
    {TMOE_THROTTLE_DISPLAY_CLOCK, "DisplayClockSetting"},
};
#define NREASONS (sizeof reasons / sizeof *reasons)

const char *tmoe_throttle_reason_name(uint64_t bit) {
    for (size_t i = 0; i < NREASONS; i++)
        if (reasons[i].bit == bit) return reasons[i].name;
    return NULL;
}

int tmoe_throttle_format(uint64_t r, char *buf, size_t n) {
    if (n) buf[0] = '\0';
    if (r == 0) return snprintf(buf, n, "none");
    size_t len = 0;
    uint64_t known = 0;
    for (size_t i = 0; i < NREASONS; i++) {
        known |= reasons[i].bit;
        if (!(r & reasons[i].bit)) continue;
        int w = snprintf(len < n ? buf + len : NULL, len < n ? n - len : 0, "%s%s", len ? "|" : "",
                         reasons[i].name);
        if (w < 0) return -1;
        len += (size_t)w;
    }
    if (r & ~known) {
        int w = snprintf(len < n ? buf + len : NULL, len < n ? n - len : 0, "%s0x%llx",
                         len ? "|" : "", (unsigned long long)(r & ~known));
        if (w < 0) return -1;
        len += (size_t)w;
    }
    return (int)len;
}

const char *tmoe_telemetry_kind_name(tmoe_telemetry_kind k) {
    switch (k) {
    case TMOE_TELEMETRY_AUTO: return "auto";
    case TMOE_TELEMETRY_NVML: return "nvml";
    case TMOE_TELEMETRY_SIM: return "sim";
    }
    return "?";
}

int tmoe_telemetry_kind_parse(const char *s, tmoe_telemetry_kind *out, tmoe_error *err) {
    for (int k = TMOE_TELEMETRY_AUTO; k <= TMOE_TELEMETRY_SIM; k++) {
        if (strcmp(s, tmoe_telemetry_kind_name((tmoe_telemetry_kind)k)) == 0) {
            *out = (tmoe_telemetry_kind)k;
            return TMOE_OK;
        }
    }
    return tmoe_errorf(err, TMOE_EINVAL, "telemetry '%s': expected auto, nvml or sim", s);
}
