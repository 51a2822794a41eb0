/* A fake libnvidia-ml for tests: the same symbol names as the real library, with values
 * and failures scripted by environment variables (read at every call):
 *   FAKE_NVML_INIT_RC=n        nvmlInit returns n
 *   FAKE_NVML_DEVICES=n        device count (default 1)
 *   FAKE_NVML_UNSUPPORTED=list comma list of fan,pcie,memtemp,instant,energy,reasons:
 *                              those calls answer NVML_ERROR_NOT_SUPPORTED (3)
 *   FAKE_NVML_LOST_AFTER=n     after n temperature reads every call answers GPU_IS_LOST (15)
 *   FAKE_NVML_ENERGY_RESET_AT=n the n-th energy read (from 1) restarts the counter at 50 mJ
 * Built without nvmlDeviceGetPowerUsage when FAKE_NVML_OMIT_POWER is defined. State is
 * reset by nvmlInit. */
#include <stdlib.h>
#include <string.h>

#include "telemetry/nvml_decl.h"

#define EXPORT __attribute__((visibility("default")))
static struct nvmlDevice_st *const devs = (struct nvmlDevice_st *)0x1000;
static long temp_reads, energy_reads;

static long envl(const char *name, long dflt) {
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 10) : dflt;
}
static int unsupported(const char *what) {
    const char *s = getenv("FAKE_NVML_UNSUPPORTED");
    if (!s) return 0;
    size_t n = strlen(what);
    for (const char *p = s; (p = strstr(p, what)) != NULL; p += n)
        if ((p == s || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return 1;
    return 0;
}
/* lost once `after` samples (temperature reads) have completed */
static int lost(void) {
    long after = envl("FAKE_NVML_LOST_AFTER", -1);
    return after >= 0 && temp_reads > after;
}
static int idx(nvmlDevice_t d) {
    return (int)((char *)d - (char *)devs);
}

EXPORT nvmlReturn_t nvmlInit_v2(void) {
    temp_reads = energy_reads = 0;
    return (nvmlReturn_t)envl("FAKE_NVML_INIT_RC", 0);
}
EXPORT nvmlReturn_t nvmlShutdown(void) {
    return 0;
}
EXPORT const char *nvmlErrorString(nvmlReturn_t rc) {
    switch (rc) {
    case 0: return "Success";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    *n = (unsigned)envl("FAKE_NVML_DEVICES", 1);
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    *d = (nvmlDevice_t)((char *)devs + i);
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *buf, unsigned int n) {
    strncpy(buf, "Fake H100 80GB HBM3", n);
    buf[n - 1] = '\0';
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *buf, unsigned int n) {
    strncpy(buf, idx(d) ? "GPU-fake-1" : "GPU-fake-0", n);
    buf[n - 1] = '\0';
    return 0;
}
EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int n) {
    strncpy(buf, "999.1.2-fake", n);
    buf[n - 1] = '\0';
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *p) {
    memset(p, 0, sizeof *p);
    strcpy(p->busId, "00000000:18:00.0");
    return 0;
}
/* CUDA 12.8; application clocks 1755 / 2619 MHz; no nvmlDeviceGetPersistenceMode (the
 * field stays unknown) */
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    *v = 12080;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetApplicationsClock(nvmlDevice_t d, int type, unsigned int *mhz) {
    (void)d;
    if (type != NVML_CLOCK_SM && type != NVML_CLOCK_MEM) return NVML_ERROR_NOT_SUPPORTED;
    *mhz = type == NVML_CLOCK_SM ? 1755 : 2619;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *mw) {
    *mw = 700000;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t d, int type, unsigned int *t) {
    *t = type == 0 ? 95 : 89;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    temp_reads++;
    if (lost()) return 15;
    *t = 40 + (unsigned)idx(d);
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int n, nvmlFieldValue_t *v) {
    if (lost()) return 15;
    for (int i = 0; i < n; i++) {
        if (v[i].fieldId == 82) {
            v[i].nvmlReturn = unsupported("memtemp") ? 3 : 0;
            v[i].valueType = 1;
            v[i].value.uiVal = 45;
        } else if (v[i].fieldId == 186) {
            v[i].nvmlReturn = unsupported("instant") ? 3 : 0;
            v[i].valueType = 1;
            v[i].value.uiVal = 251500; /* mW */
        } else {
            v[i].nvmlReturn = 2;
        }
    }
    return 0;
}
#ifndef FAKE_NVML_OMIT_POWER
EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    if (lost()) return 15;
    *mw = 250000;
    return 0;
}
#endif
EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *e) {
    if (lost()) return 15;
    if (unsupported("energy")) return 3;
    energy_reads++;
    long reset = envl("FAKE_NVML_ENERGY_RESET_AT", -1);
    if (reset > 0 && energy_reads >= reset)
        *e = 50ull + 1000ull * (unsigned long long)(energy_reads - reset);
    else
        *e = 1000000ull + 1000ull * (unsigned long long)energy_reads;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    if (lost()) return 15;
    *mhz = type == 2 ? 2619 : 1980;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    if (lost()) return 15;
    u->gpu = 97;
    u->memory = 60;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    if (lost()) return 15;
    m->total = 85520809984ull;
    m->used = 1ull << 30;
    m->free = m->total - m->used;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
    if (lost()) return 15;
    if (unsupported("reasons")) return 3;
    *r = 0x4;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned int *v) {
    if (lost()) return 15;
    if (unsupported("pcie")) return 3;
    *v = counter ? 1200 : 800;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t d, unsigned int *pct) {
    if (lost()) return 15;
    if (unsupported("fan")) return 3;
    *pct = 30;
    return 0;
}
