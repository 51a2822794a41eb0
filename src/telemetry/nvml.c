/* NVML telemetry source: libnvidia-ml.so.1 loaded with dlopen at run time (env
 * THERMOE_NVML_LIB overrides the path), our own declarations of the few types and functions
 * used, newest versioned symbols first with fallback (as nvtop does). Unsupported fields
 * stay invalid; a lost GPU marks the device lost; a counter that goes backwards (wrap or
 * driver reset) is detected and the reported energy stays monotonic. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/telemetry.h"

#include "nvml_decl.h"

typedef struct nvml_api {
    void *lib;
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*shutdown)(void);
    const char *(*error_string)(nvmlReturn_t);
    nvmlReturn_t (*count)(unsigned int *);
    nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t *);
    nvmlReturn_t (*name)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*uuid)(nvmlDevice_t, char *, unsigned int);
    nvmlReturn_t (*driver)(char *, unsigned int);
    nvmlReturn_t (*pci)(nvmlDevice_t, nvmlPciInfo_t *);
    nvmlReturn_t (*power_limit)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*threshold)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*field_values)(nvmlDevice_t, int, nvmlFieldValue_t *);
    nvmlReturn_t (*power)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*energy)(nvmlDevice_t, unsigned long long *);
    nvmlReturn_t (*clock)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*util)(nvmlDevice_t, nvmlUtilization_t *);
    nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t *);
    nvmlReturn_t (*reasons)(nvmlDevice_t, unsigned long long *);
    nvmlReturn_t (*pcie)(nvmlDevice_t, int, unsigned int *);
    nvmlReturn_t (*fan)(nvmlDevice_t, unsigned int *);
    nvmlReturn_t (*cuda_driver)(int *);
    nvmlReturn_t (*persistence)(nvmlDevice_t, nvmlEnableState_t *);
    nvmlReturn_t (*app_clock)(nvmlDevice_t, int, unsigned int *);
} nvml_api;

typedef struct nvdev {
    nvmlDevice_t h;
    tmoe_device_info info;
    uint32_t unsupported; /* fields that answered NOT_SUPPORTED once */
    int lost;
    double last_energy_raw; /* mJ, < 0 before the first read */
    double energy_offset;   /* mJ added after a wrap or reset */
    int energy_resets;
} nvdev;

typedef struct nvml_state {
    nvml_api api;
    int n;
    nvdev *d;
} nvml_state;

static const char *nvml_err(const nvml_api *a, nvmlReturn_t rc) {
    const char *s = a->error_string ? a->error_string(rc) : NULL;
    return s ? s : "unknown NVML error";
}

/* First symbol of names[] that the library has; NULL otherwise. */
static void *sym_first(void *lib, const char *const *names, int n, const char **missing) {
    for (int i = 0; i < n; i++) {
        dlerror();
        void *p = dlsym(lib, names[i]);
        if (p && !dlerror()) return p;
    }
    if (missing) *missing = names[0];
    return NULL;
}

#define LOAD(field, ...)                                                                           \
    do {                                                                                           \
        static const char *const names_[] = {__VA_ARGS__};                                         \
        *(void **)&a->field = sym_first(a->lib, names_, (int)(sizeof names_ / sizeof *names_),     \
                                        required ? &missing : NULL);                               \
    } while (0)

static int nvml_load(nvml_api *a, const char *path, tmoe_error *err) {
    memset(a, 0, sizeof *a);
    if (!path) path = getenv("THERMOE_NVML_LIB");
    if (!path || !*path) path = "libnvidia-ml.so.1";
    a->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) {
        const char *e = dlerror();
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "nvml: library not found: dlopen(%s): %s (install the NVIDIA driver, "
                           "or set THERMOE_NVML_LIB)",
                           path, e ? e : "?");
    }
    const char *missing = NULL;
    int required = 1;
    LOAD(init, "nvmlInit_v2", "nvmlInit");
    LOAD(shutdown, "nvmlShutdown");
    LOAD(count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
    LOAD(handle, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
    LOAD(temperature, "nvmlDeviceGetTemperature");
    LOAD(power, "nvmlDeviceGetPowerUsage");
    if (missing) {
        int rc =
            tmoe_errorf(err, TMOE_ENOTSUP, "nvml: symbol missing: %s not in %s", missing, path);
        dlclose(a->lib);
        a->lib = NULL;
        return rc;
    }
    required = 0; /* the rest are optional: a missing one makes its field absent */
    LOAD(error_string, "nvmlErrorString");
    LOAD(name, "nvmlDeviceGetName");
    LOAD(uuid, "nvmlDeviceGetUUID");
    LOAD(driver, "nvmlSystemGetDriverVersion");
    LOAD(pci, "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo");
    LOAD(power_limit, "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit");
    LOAD(threshold, "nvmlDeviceGetTemperatureThreshold");
    LOAD(field_values, "nvmlDeviceGetFieldValues");
    LOAD(energy, "nvmlDeviceGetTotalEnergyConsumption");
    LOAD(clock, "nvmlDeviceGetClockInfo");
    LOAD(util, "nvmlDeviceGetUtilizationRates");
    LOAD(memory, "nvmlDeviceGetMemoryInfo");
    LOAD(reasons, "nvmlDeviceGetCurrentClocksEventReasons",
         "nvmlDeviceGetCurrentClocksThrottleReasons");
    LOAD(pcie, "nvmlDeviceGetPcieThroughput");
    LOAD(fan, "nvmlDeviceGetFanSpeed");
    LOAD(cuda_driver, "nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion");
    LOAD(persistence, "nvmlDeviceGetPersistenceMode");
    LOAD(app_clock, "nvmlDeviceGetApplicationsClock");
    return TMOE_OK;
}

static void nvml_unload(nvml_api *a) {
    if (a->lib) {
        if (a->shutdown) a->shutdown();
        if (dlclose(a->lib) != 0) tmoe_log(TMOE_LOG_WARN, "nvml: dlclose: %s", dlerror());
    }
    a->lib = NULL;
}

static int init_error(const nvml_api *a, nvmlReturn_t rc, tmoe_error *err) {
    if (rc == NVML_ERROR_NO_PERMISSION)
        return tmoe_errorf(err, TMOE_EDEVICE, "nvml: permission denied (nvmlInit: %s, code %d)",
                           nvml_err(a, rc), rc);
    if (rc == NVML_ERROR_DRIVER_NOT_LOADED)
        return tmoe_errorf(err, TMOE_ENODEV,
                           "nvml: no device: the NVIDIA driver is not loaded "
                           "(nvmlInit: %s, code %d)",
                           nvml_err(a, rc), rc);
    return tmoe_errorf(err, TMOE_EDEVICE, "nvml: init failed: %s (NVML error code %d)",
                       nvml_err(a, rc), rc);
}

static int nv_read(void *state, int dev, uint32_t fields, tmoe_sample *o, tmoe_error *err);

static int nv_open(void **state, const void *cfg, tmoe_error *err) {
    *state = NULL;
    nvml_state *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    int rc = nvml_load(&s->api, (const char *)cfg, err);
    if (rc) {
        free(s);
        return rc;
    }
    nvml_api *a = &s->api;
    nvmlReturn_t nr = a->init();
    if (nr != NVML_SUCCESS) {
        rc = init_error(a, nr, err);
        a->shutdown = NULL;
        nvml_unload(a);
        free(s);
        return rc;
    }
    unsigned int n = 0;
    nr = a->count(&n);
    if (nr != NVML_SUCCESS || n == 0) {
        rc = nr != NVML_SUCCESS
                 ? tmoe_errorf(err, nr == NVML_ERROR_NO_PERMISSION ? TMOE_EDEVICE : TMOE_ENODEV,
                               "nvml: no device: nvmlDeviceGetCount: %s (code %d)", nvml_err(a, nr),
                               nr)
                 : tmoe_errorf(err, TMOE_ENODEV, "nvml: no device: NVML loaded but reports 0 GPUs");
        nvml_unload(a);
        free(s);
        return rc;
    }
    s->d = tmoe_calloc(n, sizeof *s->d, err);
    if (!s->d) {
        nvml_unload(a);
        free(s);
        return TMOE_ENOMEM;
    }
    s->n = (int)n;
    for (int i = 0; i < s->n; i++) {
        nvdev *d = &s->d[i];
        d->last_energy_raw = -1.0;
        tmoe_device_info *inf = &d->info;
        inf->power_limit_w = inf->slowdown_temp_c = inf->shutdown_temp_c = NAN;
        nr = a->handle((unsigned)i, &d->h);
        if (nr != NVML_SUCCESS) {
            rc = tmoe_errorf(err, nr == NVML_ERROR_NO_PERMISSION ? TMOE_EDEVICE : TMOE_ENODEV,
                             "nvml: device %d does not answer: %s (code %d)%s", i, nvml_err(a, nr),
                             nr, nr == NVML_ERROR_NO_PERMISSION ? ": permission denied" : "");
            nvml_unload(a);
            free(s->d);
            free(s);
            return rc;
        }
        if (!a->name || a->name(d->h, inf->name, sizeof inf->name) != NVML_SUCCESS)
            snprintf(inf->name, sizeof inf->name, "unknown");
        if (!a->uuid || a->uuid(d->h, inf->uuid, sizeof inf->uuid) != NVML_SUCCESS)
            snprintf(inf->uuid, sizeof inf->uuid, "unknown");
        if (!a->driver || a->driver(inf->driver, sizeof inf->driver) != NVML_SUCCESS)
            snprintf(inf->driver, sizeof inf->driver, "unknown");
        nvmlPciInfo_t pci;
        memset(&pci, 0, sizeof pci);
        if (a->pci && a->pci(d->h, &pci) == NVML_SUCCESS) {
            pci.busId[sizeof pci.busId - 1] = '\0';
            snprintf(inf->pci_id, sizeof inf->pci_id, "%s", pci.busId);
        } else {
            snprintf(inf->pci_id, sizeof inf->pci_id, "unknown");
        }
        int cv = 0;
        if (a->cuda_driver && a->cuda_driver(&cv) == NVML_SUCCESS && cv > 0)
            snprintf(inf->cuda_driver, sizeof inf->cuda_driver, "%d.%d", cv / 1000, cv % 1000 / 10);
        else
            snprintf(inf->cuda_driver, sizeof inf->cuda_driver, "unknown");
        nvmlEnableState_t pm = NVML_FEATURE_DISABLED;
        inf->persistence_mode =
            a->persistence && a->persistence(d->h, &pm) == NVML_SUCCESS ? pm != 0 : -1;
        inf->app_sm_clock_mhz = inf->app_mem_clock_mhz = NAN;
        unsigned int v;
        if (a->app_clock && a->app_clock(d->h, NVML_CLOCK_SM, &v) == NVML_SUCCESS)
            inf->app_sm_clock_mhz = v;
        if (a->app_clock && a->app_clock(d->h, NVML_CLOCK_MEM, &v) == NVML_SUCCESS)
            inf->app_mem_clock_mhz = v;
        if (a->power_limit && a->power_limit(d->h, &v) == NVML_SUCCESS)
            inf->power_limit_w = v * 1e-3;
        if (a->threshold && a->threshold(d->h, NVML_TEMP_THRESHOLD_SLOWDOWN, &v) == NVML_SUCCESS)
            inf->slowdown_temp_c = v;
        if (a->threshold && a->threshold(d->h, NVML_TEMP_THRESHOLD_SHUTDOWN, &v) == NVML_SUCCESS)
            inf->shutdown_temp_c = v;
        tmoe_sample probe;
        tmoe_error perr = {0};
        if (nv_read(s, i, TMOE_F_ALL, &probe, &perr) == TMOE_OK) inf->supported = probe.valid;
    }
    *state = s;
    return TMOE_OK;
}

static int nv_count(void *state) {
    return ((nvml_state *)state)->n;
}

static int nv_info(void *state, int dev, tmoe_device_info *o, tmoe_error *err) {
    nvml_state *s = state;
    if (dev < 0 || dev >= s->n)
        return tmoe_errorf(err, TMOE_EINVAL, "nvml: device %d out of range [0, %d)", dev, s->n);
    *o = s->d[dev].info;
    return TMOE_OK;
}

/* Classify one call's result: 1 = value good; 0 = absent (not supported / missing);
 * -1 = device lost. Other errors make the field absent for this sample and are logged. */
static int take(nvml_state *s, nvdev *d, uint32_t field, nvmlReturn_t rc) {
    if (rc == NVML_SUCCESS) return 1;
    if (rc == NVML_ERROR_GPU_IS_LOST) return -1;
    if (rc == NVML_ERROR_NOT_SUPPORTED) {
        d->unsupported |= field;
        return 0;
    }
    tmoe_log(TMOE_LOG_DEBUG, "nvml: %s: %s (code %d)", tmoe_field_name(field),
             nvml_err(&s->api, rc), rc);
    return 0;
}

static int nv_read(void *state, int dev, uint32_t fields, tmoe_sample *o, tmoe_error *err) {
    nvml_state *s = state;
    if (dev < 0 || dev >= s->n)
        return tmoe_errorf(err, TMOE_EINVAL, "nvml: device %d out of range [0, %d)", dev, s->n);
    nvdev *d = &s->d[dev];
    nvml_api *a = &s->api;
    *o = tmoe_sample_invalid(dev, tmoe_now_ns());
    if (d->lost) return tmoe_errorf(err, TMOE_ENODEV, "nvml: device %d is lost", dev);
    fields &= ~d->unsupported;
    uint32_t v = 0;
    int lost = 0, r;
    unsigned int u;
#define TAKE(field, call) (lost ? 0 : ((r = take(s, d, (field), (call))) < 0 ? (lost = 1, 0) : r))
    if ((fields & TMOE_F_GPU_TEMP) &&
        TAKE(TMOE_F_GPU_TEMP, a->temperature(d->h, NVML_TEMPERATURE_GPU, &u)))
        o->gpu_temp_c = u, v |= TMOE_F_GPU_TEMP;
    if ((fields & (TMOE_F_MEM_TEMP | TMOE_F_POWER_INSTANT)) && !lost) {
        if (!a->field_values) {
            d->unsupported |= TMOE_F_MEM_TEMP | TMOE_F_POWER_INSTANT;
        } else {
            nvmlFieldValue_t fv[2];
            memset(fv, 0, sizeof fv);
            fv[0].fieldId = NVML_FI_DEV_MEMORY_TEMP;
            fv[1].fieldId = NVML_FI_DEV_POWER_INSTANT;
            nvmlReturn_t rc = a->field_values(d->h, 2, fv);
            if (rc == NVML_ERROR_GPU_IS_LOST)
                lost = 1;
            else if (rc == NVML_ERROR_NOT_SUPPORTED)
                d->unsupported |= TMOE_F_MEM_TEMP | TMOE_F_POWER_INSTANT;
            else if (rc == NVML_SUCCESS) {
                for (int k = 0; k < 2; k++) {
                    uint32_t f = k == 0 ? TMOE_F_MEM_TEMP : TMOE_F_POWER_INSTANT;
                    if (!(fields & f)) continue;
                    if (take(s, d, f, fv[k].nvmlReturn) != 1) continue;
                    double x;
                    switch (fv[k].valueType) {
                    case VT_DOUBLE: x = fv[k].value.dVal; break;
                    case VT_UINT: x = fv[k].value.uiVal; break;
                    case VT_ULONG: x = (double)fv[k].value.ulVal; break;
                    case VT_ULLONG: x = (double)fv[k].value.ullVal; break;
                    case VT_SLLONG: x = (double)fv[k].value.sllVal; break;
                    case VT_SINT: x = fv[k].value.siVal; break;
                    case VT_USHORT: x = fv[k].value.usVal; break;
                    default: continue;
                    }
                    if (k == 0)
                        o->mem_temp_c = x;
                    else
                        o->power_instant_w = x * 1e-3; /* mW */
                    v |= f;
                }
            }
        }
    }
    if ((fields & TMOE_F_POWER_AVG) && TAKE(TMOE_F_POWER_AVG, a->power(d->h, &u)))
        o->power_avg_w = u * 1e-3, v |= TMOE_F_POWER_AVG;
    if ((fields & TMOE_F_ENERGY) && a->energy) {
        unsigned long long e;
        if (TAKE(TMOE_F_ENERGY, a->energy(d->h, &e))) {
            double raw = (double)e;
            if (d->last_energy_raw >= 0.0 && raw < d->last_energy_raw) {
                d->energy_offset += d->last_energy_raw - raw;
                d->energy_resets++;
                tmoe_log(TMOE_LOG_WARN,
                         "nvml: device %d energy counter went backwards "
                         "(%.0f -> %.0f mJ): wrap or reset #%d, continuing from the last value",
                         dev, d->last_energy_raw, raw, d->energy_resets);
            }
            d->last_energy_raw = raw;
            o->energy_mj = raw + d->energy_offset;
            v |= TMOE_F_ENERGY;
        }
    } else if (fields & TMOE_F_ENERGY) {
        d->unsupported |= TMOE_F_ENERGY;
    }
    if ((fields & TMOE_F_SM_CLOCK) && a->clock &&
        TAKE(TMOE_F_SM_CLOCK, a->clock(d->h, NVML_CLOCK_SM, &u)))
        o->sm_clock_mhz = u, v |= TMOE_F_SM_CLOCK;
    if ((fields & TMOE_F_MEM_CLOCK) && a->clock &&
        TAKE(TMOE_F_MEM_CLOCK, a->clock(d->h, NVML_CLOCK_MEM, &u)))
        o->mem_clock_mhz = u, v |= TMOE_F_MEM_CLOCK;
    if ((fields & (TMOE_F_GPU_UTIL | TMOE_F_MEM_UTIL)) && a->util) {
        nvmlUtilization_t ut;
        if (TAKE(TMOE_F_GPU_UTIL, a->util(d->h, &ut))) {
            if (fields & TMOE_F_GPU_UTIL) o->gpu_util_pct = ut.gpu, v |= TMOE_F_GPU_UTIL;
            if (fields & TMOE_F_MEM_UTIL) o->mem_util_pct = ut.memory, v |= TMOE_F_MEM_UTIL;
        }
    }
    if ((fields & (TMOE_F_MEM_USED | TMOE_F_MEM_TOTAL)) && a->memory) {
        nvmlMemory_t m;
        if (TAKE(TMOE_F_MEM_USED, a->memory(d->h, &m))) {
            if (fields & TMOE_F_MEM_USED) o->mem_used_bytes = m.used, v |= TMOE_F_MEM_USED;
            if (fields & TMOE_F_MEM_TOTAL) o->mem_total_bytes = m.total, v |= TMOE_F_MEM_TOTAL;
        }
    }
    if ((fields & TMOE_F_THROTTLE) && a->reasons) {
        unsigned long long rr;
        if (TAKE(TMOE_F_THROTTLE, a->reasons(d->h, &rr)))
            o->throttle_reasons = rr, v |= TMOE_F_THROTTLE;
    }
    if ((fields & TMOE_F_PCIE_RX) && a->pcie &&
        TAKE(TMOE_F_PCIE_RX, a->pcie(d->h, NVML_PCIE_RX, &u)))
        o->pcie_rx_kbs = u, v |= TMOE_F_PCIE_RX;
    if ((fields & TMOE_F_PCIE_TX) && a->pcie &&
        TAKE(TMOE_F_PCIE_TX, a->pcie(d->h, NVML_PCIE_TX, &u)))
        o->pcie_tx_kbs = u, v |= TMOE_F_PCIE_TX;
    if ((fields & TMOE_F_FAN) && a->fan && TAKE(TMOE_F_FAN, a->fan(d->h, &u)))
        o->fan_pct = u, v |= TMOE_F_FAN;
#undef TAKE
    if (lost) {
        d->lost = 1;
        *o = tmoe_sample_invalid(dev, o->t_ns);
        tmoe_log(TMOE_LOG_ERROR,
                 "nvml: device %d (%s) is lost (NVML_ERROR_GPU_IS_LOST); its "
                 "samples are invalid from now on",
                 dev, d->info.uuid);
        return tmoe_errorf(err, TMOE_ENODEV, "nvml: device %d is lost", dev);
    }
    o->valid = v;
    return TMOE_OK;
}

static void nv_close(void *state) {
    nvml_state *s = state;
    if (!s) return;
    nvml_unload(&s->api);
    free(s->d);
    free(s);
}

const tmoe_telemetry_source tmoe_source_nvml = {"nvml",  nv_open, nv_count,
                                                nv_info, nv_read, nv_close};
