/* GPU telemetry: one sample type with a validity bit per field, sources behind a small
 * table of function pointers (nvml: libnvidia-ml loaded with dlopen; sim: a simulated H100
 * calibrated to measured traces), a background sampling monitor with energy windows, the
 * meter (measurement windows over every device), and an online RC thermal fit. See
 * docs/telemetry.md. */
#ifndef THERMOE_TELEMETRY_H
#define THERMOE_TELEMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "thermoe/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- one sample ----------------------------------------------------------------------- */
typedef enum {
    TMOE_F_GPU_TEMP = 1u << 0,
    TMOE_F_MEM_TEMP = 1u << 1,
    TMOE_F_POWER_AVG = 1u << 2,
    TMOE_F_POWER_INSTANT = 1u << 3,
    TMOE_F_ENERGY = 1u << 4,
    TMOE_F_SM_CLOCK = 1u << 5,
    TMOE_F_MEM_CLOCK = 1u << 6,
    TMOE_F_GPU_UTIL = 1u << 7,
    TMOE_F_MEM_UTIL = 1u << 8,
    TMOE_F_MEM_USED = 1u << 9,
    TMOE_F_MEM_TOTAL = 1u << 10,
    TMOE_F_THROTTLE = 1u << 11,
    TMOE_F_PCIE_RX = 1u << 12,
    TMOE_F_PCIE_TX = 1u << 13,
    TMOE_F_FAN = 1u << 14,
    TMOE_F_COUNT = 15,
    TMOE_F_ALL = (1u << 15) - 1u
} tmoe_field;

/* Every value whose bit in `valid` is clear is unknown (floating fields are also NAN). */
typedef struct tmoe_sample {
    int device;                /* device index within its source */
    int64_t t_ns;              /* CLOCK_MONOTONIC ns (nvml) or simulated ns (sim) */
    double gpu_temp_c;         /* GPU die, C */
    double mem_temp_c;         /* HBM, C */
    double power_avg_w;        /* board power, W, ~1 s average (updates every ~100 ms) */
    double power_instant_w;    /* board power, W, instantaneous (NVML field 186) */
    double energy_mj;          /* total energy counter since driver load, mJ */
    double sm_clock_mhz;       /* MHz */
    double mem_clock_mhz;      /* MHz */
    double gpu_util_pct;       /* % of the last sample period a kernel ran */
    double mem_util_pct;       /* % of the last sample period memory was read/written */
    uint64_t mem_used_bytes;   /* bytes */
    uint64_t mem_total_bytes;  /* bytes */
    uint64_t throttle_reasons; /* NVML clock-event reason bits (TMOE_THROTTLE_*) */
    double pcie_rx_kbs;        /* KB/s */
    double pcie_tx_kbs;        /* KB/s */
    double fan_pct;            /* % of max speed */
    uint32_t valid;            /* OR of tmoe_field bits */
} tmoe_sample;

/* A sample with every field unknown (NAN, valid = 0). */
tmoe_sample tmoe_sample_invalid(int device, int64_t t_ns);
/* Short name of one field bit ("gpu_temp_c", ...), NULL for anything else. */
const char *tmoe_field_name(uint32_t field);
/* Write the names of the fields in mask, ','-separated, into buf (always terminated).
 * Returns the length it needed (like snprintf). */
int tmoe_fields_format(uint32_t mask, char *buf, size_t n);

/* NVML clock-event (throttle) reason bits. */
#define TMOE_THROTTLE_GPU_IDLE 0x1ull
#define TMOE_THROTTLE_APP_CLOCKS 0x2ull
#define TMOE_THROTTLE_SW_POWER_CAP 0x4ull
#define TMOE_THROTTLE_HW_SLOWDOWN 0x8ull
#define TMOE_THROTTLE_SYNC_BOOST 0x10ull
#define TMOE_THROTTLE_SW_THERMAL 0x20ull
#define TMOE_THROTTLE_HW_THERMAL 0x40ull
#define TMOE_THROTTLE_HW_POWER_BRAKE 0x80ull
#define TMOE_THROTTLE_DISPLAY_CLOCK 0x100ull
/* Name of one reason bit ("SwPowerCap"), NULL when unknown. */
const char *tmoe_throttle_reason_name(uint64_t bit);
/* Decode reasons to "SwPowerCap|HwSlowdown" ("none" for 0, unknown bits as 0x...).
 * Always terminates buf; returns the length it needed. */
int tmoe_throttle_format(uint64_t reasons, char *buf, size_t n);

/* ---- devices and sources --------------------------------------------------------------- */
typedef struct tmoe_device_info {
    char name[96];
    char uuid[96];
    char pci_id[32];        /* "0000:18:00.0" bus id */
    char driver[32];        /* driver version ("580.159.04"), "simulated" or "unknown" */
    double power_limit_w;   /* enforced limit, W (NAN unknown) */
    double slowdown_temp_c; /* C (NAN unknown) */
    double shutdown_temp_c; /* C (NAN unknown) */
    uint32_t supported;     /* fields that answered a probe read at open */
    /* newest CUDA version the driver supports ("12.8"; nvmlSystemGetCudaDriverVersion),
     * "simulated" or "unknown" */
    char cuda_driver[16];
    int persistence_mode;     /* 1 on, 0 off, -1 unknown (simulated GPU: -1) */
    double app_sm_clock_mhz;  /* application (target) SM clock, MHz (NAN unknown) */
    double app_mem_clock_mhz; /* application memory clock, MHz (NAN unknown) */
} tmoe_device_info;

typedef enum { TMOE_TELEMETRY_AUTO, TMOE_TELEMETRY_NVML, TMOE_TELEMETRY_SIM } tmoe_telemetry_kind;
const char *tmoe_telemetry_kind_name(tmoe_telemetry_kind k);
/* "auto" | "nvml" | "sim" -> kind; TMOE_EINVAL naming the choices otherwise. */
int tmoe_telemetry_kind_parse(const char *s, tmoe_telemetry_kind *out, tmoe_error *err);

/* A telemetry source: a table of functions over an opaque state. `read` fills the fields
 * asked for that the device supports; a field the device does not support stays invalid and
 * is not an error. read returns TMOE_ENODEV once the device is lost (sample all invalid). */
typedef struct tmoe_telemetry_source {
    const char *name;
    int (*open)(void **state, const void *cfg, tmoe_error *err);
    int (*device_count)(void *state);
    int (*device_info)(void *state, int dev, tmoe_device_info *out, tmoe_error *err);
    int (*read)(void *state, int dev, uint32_t fields, tmoe_sample *out, tmoe_error *err);
    void (*close)(void *state);
} tmoe_telemetry_source;

extern const tmoe_telemetry_source tmoe_source_nvml;
extern const tmoe_telemetry_source tmoe_source_sim;

/* ---- simulated GPU --------------------------------------------------------------------
 * A plain physical model of an H100 SXM (docs/telemetry.md has every number and where it
 * comes from). Time is SIMULATED: it moves only through tmoe_sim_advance / tmoe_sim_sync;
 * work is queued per device (FIFO, like a stream) and runs as time advances. */
typedef struct tmoe_sim_config {
    int n_devices;             /* >= 1 */
    uint64_t seed;             /* instant-power noise and energy counter origin */
    double idle_temp_c;        /* equilibrium GPU temperature at idle, clocks down (C) */
    double power_limit_w;      /* W; work above it lowers the SM clock (reason 0x4) */
    double power_noise_w;      /* standard deviation of instant power noise, W */
    double clock_down_after_s; /* idle seconds after which clocks drop (<= 0: never) */
} tmoe_sim_config;

tmoe_sim_config tmoe_sim_config_default(void);

typedef struct tmoe_sim tmoe_sim;
int tmoe_sim_create(const tmoe_sim_config *cfg, tmoe_sim **out, tmoe_error *err);
void tmoe_sim_free(tmoe_sim *s); /* NULL-safe */
int tmoe_sim_device_count(const tmoe_sim *s);
int64_t tmoe_sim_now_ns(const tmoe_sim *s); /* simulated time since create */

/* Queue work on device dev: busy_s seconds at full clock that move `bytes` of device memory
 * and do `flops` operations. Dynamic power = (bytes * 134 pJ + flops * 0.82 pJ) / busy_s;
 * above the power limit the clock (and progress) slows. Returns the simulated time (s) at
 * which the device's queue will be empty if it is not capped, or -1 on a bad argument. */
double tmoe_sim_submit(tmoe_sim *s, int dev, double busy_s, double bytes, double flops);
/* Same, with the dynamic (above-idle) energy given directly, e.g. from a cost model;
 * mem_fraction in [0, 1] is the share of it spent moving memory (heats the HBM). */
double tmoe_sim_submit_energy(tmoe_sim *s, int dev, double busy_s, double energy_j,
                              double mem_fraction);
/* Drive device dev at a given board power for dt_s (replaying a measured trace): the
 * thermal model, counters and clocks follow as if that power were drawn, mem_w of it being
 * memory traffic (heats the HBM). Advances simulated time for all devices. */
void tmoe_sim_drive_power(tmoe_sim *s, int dev, double dt_s, double board_w, double mem_w);
/* Set the present GPU and HBM temperatures of dev (the slow stages take the difference
 * from equilibrium at the present power), e.g. to start a replay where a trace starts. */
void tmoe_sim_set_temps(tmoe_sim *s, int dev, double gpu_c, double mem_c);
/* Advance simulated time by dt_s: queued work runs, idle devices idle. */
void tmoe_sim_advance(tmoe_sim *s, double dt_s);
/* Advance until device dev's queue is empty (dev = -1: every device). */
void tmoe_sim_sync(tmoe_sim *s, int dev);
/* Seconds of queued work on dev (at full clock). */
double tmoe_sim_backlog_s(const tmoe_sim *s, int dev);
/* Energy dev has drawn since create, J, integrated exactly as simulated time advanced (the
 * sampled energy counter steps every 100 ms like NVML's; this is the value under it). */
double tmoe_sim_energy_exact_j(const tmoe_sim *s, int dev);
/* Set the memory in use on dev (reported as mem_used_bytes). */
void tmoe_sim_set_mem_used(tmoe_sim *s, int dev, uint64_t bytes);
/* Read a sample at the current simulated time (all supported fields; PCIe and fan are not
 * simulated and stay invalid). */
int tmoe_sim_read(tmoe_sim *s, int dev, uint32_t fields, tmoe_sample *out, tmoe_error *err);
/* Call fn(user, t_ns) at every multiple of period_ns of simulated time as it passes
 * (the synchronous monitor uses this); fn = NULL removes it. */
typedef void (*tmoe_sim_tick_fn)(void *user, int64_t t_ns);
void tmoe_sim_set_tick(tmoe_sim *s, int64_t period_ns, tmoe_sim_tick_fn fn, void *user);

/* ---- opened telemetry ----------------------------------------------------------------- */
typedef struct tmoe_telemetry_config {
    tmoe_telemetry_kind kind;
    tmoe_sim_config sim;  /* used when the sim is chosen */
    const char *nvml_lib; /* NULL: env THERMOE_NVML_LIB, else "libnvidia-ml.so.1" */
} tmoe_telemetry_config;

tmoe_telemetry_config tmoe_telemetry_config_default(void);

typedef struct tmoe_telemetry tmoe_telemetry;
/* Open a source. auto: NVML when it loads and a device answers, else sim; the choice and
 * the reason are logged at info level and kept (tmoe_telemetry_choice). Forced nvml that
 * cannot run: TMOE_ENOTSUP (library not found, symbol missing), TMOE_ENODEV (no device),
 * TMOE_EDEVICE (permission, init failed: NVML error code in the message). */
int tmoe_telemetry_open(const tmoe_telemetry_config *cfg, tmoe_telemetry **out, tmoe_error *err);
void tmoe_telemetry_free(tmoe_telemetry *t);                     /* NULL-safe */
const char *tmoe_telemetry_source_name(const tmoe_telemetry *t); /* "nvml" | "sim" */
int tmoe_telemetry_is_simulated(const tmoe_telemetry *t);
/* One line: "telemetry: nvml (2 devices answered)" or "telemetry: sim (nvml: ...)". */
const char *tmoe_telemetry_choice(const tmoe_telemetry *t);
int tmoe_telemetry_device_count(const tmoe_telemetry *t);
int tmoe_telemetry_device_info(const tmoe_telemetry *t, int dev, tmoe_device_info *out,
                               tmoe_error *err);
/* Read the asked fields of dev now. TMOE_ENODEV once dev is lost: the sample is all invalid. */
int tmoe_telemetry_read(tmoe_telemetry *t, int dev, uint32_t fields, tmoe_sample *out,
                        tmoe_error *err);
int tmoe_telemetry_device_lost(const tmoe_telemetry *t, int dev);
/* The simulated GPU behind t (borrowed), NULL for nvml. */
tmoe_sim *tmoe_telemetry_sim(tmoe_telemetry *t);
/* Probe NVML without keeping it: TMOE_OK with the device count, or why not. */
int tmoe_telemetry_probe_nvml(const char *lib, int *n_devices, tmoe_error *err);

/* ---- online RC thermal fit -------------------------------------------------------------
 * T = c + g_fast * lag_fast(P) + g_slow * lag_slow(P), lags with unit gain; (c, g_fast,
 * g_slow) by recursive least squares with forgetting, for a bank of slow time constants at
 * once; the bank member with the lowest recent error predicts. */
typedef struct tmoe_rcfit_config {
    double tau_fast_s; /* fast stage time constant, s */
    double forgetting; /* RLS forgetting factor per update, (0, 1] */
    double step_s;     /* updates are accumulated into steps of this length, s */
} tmoe_rcfit_config;
tmoe_rcfit_config tmoe_rcfit_config_default(void);

typedef struct tmoe_rcfit tmoe_rcfit;
int tmoe_rcfit_create(const tmoe_rcfit_config *cfg, tmoe_rcfit **out, tmoe_error *err);
void tmoe_rcfit_free(tmoe_rcfit *f); /* NULL-safe */
/* Feed one observation: power_w drawn over the last dt_s, temperature temp_c at its end. */
void tmoe_rcfit_update(tmoe_rcfit *f, double power_w, double temp_c, double dt_s);
/* Temperature after horizon_s at constant power_w (NAN before the first update). */
double tmoe_rcfit_predict(const tmoe_rcfit *f, double horizon_s, double power_w);
/* Same with a planned power trace: power_w[i] held for dt_s each, n steps; fills temp_c[i]
 * (temperature at the end of step i). */
void tmoe_rcfit_predict_trace(const tmoe_rcfit *f, const double *power_w, int n, double dt_s,
                              double *temp_c);
/* Fitted parameters: steady-state gain C/W of each stage, offset C, chosen slow tau s. */
void tmoe_rcfit_params(const tmoe_rcfit *f, double *c, double *g_fast, double *g_slow,
                       double *tau_slow_s);

/* ---- monitor ----------------------------------------------------------------------------
 * Samples every device of a telemetry at a fixed period into a ring buffer. Thread mode: a
 * background thread on absolute CLOCK_MONOTONIC deadlines. Sync mode (sim only): no thread;
 * it samples inside tmoe_sim_advance at every period boundary of simulated time. */
typedef enum { TMOE_MONITOR_THREAD, TMOE_MONITOR_SYNC } tmoe_monitor_mode;
/* Fields read every slow_period_ns instead of every period_ns. */
#define TMOE_MONITOR_SLOW_FIELDS                                                                   \
    (TMOE_F_PCIE_RX | TMOE_F_PCIE_TX | TMOE_F_MEM_USED | TMOE_F_MEM_TOTAL)

typedef struct tmoe_monitor_config {
    tmoe_monitor_mode mode;
    int64_t period_ns;        /* default 50 ms */
    int64_t energy_period_ns; /* energy counter read at most this often; default 2 s (each
                                 NVML read costs ~4 ms of CPU; 100 ms for measurements) */
    int64_t slow_period_ns;   /* PCIe throughput and memory info: default 2 s (costly reads) */
    int capacity;             /* samples kept per device; default 65536 */
    uint32_t fields;          /* fields to read; default TMOE_F_ALL */
    int thermal_device;       /* device whose samples feed the online RC fit; default 0 */
} tmoe_monitor_config;
tmoe_monitor_config tmoe_monitor_config_default(void);

typedef struct tmoe_monitor tmoe_monitor;
/* t is borrowed and must outlive the monitor. Thread mode starts sampling at once. */
int tmoe_monitor_create(tmoe_telemetry *t, const tmoe_monitor_config *cfg, tmoe_monitor **out,
                        tmoe_error *err);
/* Stops the thread (or the sim tick) and frees. NULL-safe. */
void tmoe_monitor_free(tmoe_monitor *m);
/* Latest sample of dev; TMOE_ENODEV if none yet. */
int tmoe_monitor_latest(tmoe_monitor *m, int dev, tmoe_sample *out);
/* Copy up to cap samples of dev with t0 <= t_ns <= t1 (oldest first); returns the count. */
int tmoe_monitor_samples(tmoe_monitor *m, int dev, int64_t t0_ns, int64_t t1_ns, tmoe_sample *out,
                         int cap);
int64_t tmoe_monitor_now_ns(const tmoe_monitor *m);                /* monotonic or simulated */
int64_t tmoe_monitor_sample_count(const tmoe_monitor *m, int dev); /* taken so far */
int tmoe_monitor_device_lost(const tmoe_monitor *m, int dev);

/* How an energy was obtained. The monitor's windows give none, counter or integrated; the
 * meter adds latest_power (no usable sample inside the window: the latest power before it
 * times the window's length) and sim_exact (the simulated GPU's own integral). */
typedef enum {
    TMOE_ENERGY_NONE,
    TMOE_ENERGY_COUNTER,
    TMOE_ENERGY_INTEGRATED,
    TMOE_ENERGY_LATEST_POWER,
    TMOE_ENERGY_SIM_EXACT
} tmoe_energy_method;
const char *tmoe_energy_method_name(tmoe_energy_method m);
typedef struct tmoe_energy {
    double joules;             /* NAN when method is NONE */
    tmoe_energy_method method; /* counter where it moved inside the window, else trapezoid */
    double seconds;            /* window length */
    int samples;               /* samples inside the window */
} tmoe_energy;
/* Open an energy window on dev at the current time; returns a token >= 0, or -1 when too
 * many windows are open (64). Windows may nest and overlap. */
int64_t tmoe_monitor_energy_begin(tmoe_monitor *m, int dev);
/* Close it: energy over [begin, now] from the samples taken. TMOE_EINVAL on a bad token. */
int tmoe_monitor_energy_end(tmoe_monitor *m, int64_t token, tmoe_energy *out, tmoe_error *err);
/* Energy of dev over [t0, t1] from the ring buffer (same rules as a window). */
tmoe_energy tmoe_monitor_energy_between(tmoe_monitor *m, int dev, int64_t t0_ns, int64_t t1_ns);
/* GPU temperature of the thermal device after horizon_s at planned_power_w, from the RC
 * model fitted online to its samples; NAN before enough samples. */
double tmoe_monitor_predict_thermal(tmoe_monitor *m, double horizon_s, double planned_power_w);
/* The trajectory: temp_c[i] = predicted GPU temperature at (i + 1) * dt_s, i < n, at
 * planned_power_w[i] over step i (a power profile, e.g. from the cost model of the batches
 * planned). All NAN before enough samples. */
void tmoe_monitor_predict_thermal_trajectory(tmoe_monitor *m, const double *planned_power_w, int n,
                                             double dt_s, double *temp_c);

/* ---- meter -----------------------------------------------------------------------------
 * Measurement windows over every device of a telemetry: energy, power, temperatures, clocks,
 * utilisation and throttle reasons of a span of work, the same way on NVML and on the
 * simulated GPU. NVML: energy from the monitor's window (counter where it stepped, else
 * integrated power, else the latest power times the length). Simulated GPU: the exact energy
 * each device drew (tmoe_sim_energy_exact_j), the rest from its samples; the work is billed
 * to it through the meter (on NVML the real GPU bills itself). Unknown values are NAN. One
 * meter is used by one thread at a time (it keeps a scratch buffer of samples). */
#define TMOE_METER_MAX_DEVICES 16

typedef struct tmoe_meter_config {
    int own_device;  /* the device this process drives (default 0): its first and last samples
                        give the totals' start and end temperatures */
    int own_only;    /* 1: every total is the own device's value (an expert-parallel rank, so
                        that the ranks' rows add up to the host); 0 (default): totals over every
                        device (sums, the hottest, means over all samples) */
    int max_devices; /* follow devices 0..max_devices-1 only (a host with more GPUs than a
                        caller can hold); 0 (default): every device */
} tmoe_meter_config;
tmoe_meter_config tmoe_meter_config_default(void);

/* An open window: a plain value the caller keeps (nothing to release; dropping it is fine). */
typedef struct tmoe_meter_window {
    int64_t t0_ns; /* start, on the monitor's clock */
    int n_devices;
    tmoe_sample first[TMOE_METER_MAX_DEVICES];   /* (n_devices) latest sample of each device at
                                                    the start; all invalid when none yet */
    double sim_energy_j[TMOE_METER_MAX_DEVICES]; /* (n_devices) sim: exact energy drawn so far,
                                                    J; NAN on nvml */
} tmoe_meter_window;

/* What one device (or the total) did over a window. NAN = unknown. */
typedef struct tmoe_meter_values {
    double energy_j;           /* J over the window */
    tmoe_energy_method method; /* how energy_j was obtained (total: the weakest device's) */
    double power_avg_w;        /* W, energy_j / period */
    double power_peak_w;       /* W, highest sampled power, at least power_avg_w (total: the
                                  sum of the devices' peaks, an upper bound, exact with one) */
    double gpu_temp_start_c;   /* C, latest sample at the start */
    double gpu_temp_end_c;     /* C, last sample in the window */
    double gpu_temp_peak_c;    /* C, hottest sample (total: the hottest device) */
    double mem_temp_start_c, mem_temp_end_c, mem_temp_peak_c; /* HBM, C, the same way */
    double sm_clock_mhz;                                      /* MHz, mean over the samples */
    double sm_clock_max_mhz;                                  /* MHz, highest sample */
    double mem_clock_mhz;                                     /* MHz, mean over the samples */
    double gpu_util_pct;                                      /* %, mean over the samples */
    double mem_util_pct;                                      /* %, mean over the samples */
    double pcie_rx_kbs, pcie_tx_kbs; /* KB/s, mean over the samples that carry it (read every
                                        slow period); total: the sum over the devices */
    uint64_t throttle;               /* OR of the samples' clock-event reasons, GpuIdle removed */
    int throttle_known; /* 1 when a sample carried throttle reasons (else throttle 0) */
    int samples;        /* samples inside the window; 0: the latest sample before it
                           stood in for the temperatures, clocks and power */
    int lost;           /* 1: the device was lost (NVML GPU_IS_LOST) by the time the
                           window was read: its energy is unknown (NAN, method none)
                           even where samples from before the loss lie inside the
                           window (total: the own device's with own_only, else any) */
} tmoe_meter_values;

typedef struct tmoe_meter_reading {
    const char *source; /* "nvml" | "sim" (static string) */
    double period_s;    /* window length, s */
    int n_devices;
    int own_device;
    tmoe_meter_values total; /* the batch: see tmoe_meter_config for own_only */
    tmoe_meter_values dev[TMOE_METER_MAX_DEVICES]; /* (n_devices) each device */
} tmoe_meter_reading;

typedef struct tmoe_meter tmoe_meter;
/* t and mon are borrowed and must outlive the meter (mon samples t). cfg may be NULL
 * (defaults). TMOE_EINVAL: own_device out of range, more than TMOE_METER_MAX_DEVICES devices. */
int tmoe_meter_create(tmoe_telemetry *t, tmoe_monitor *mon, const tmoe_meter_config *cfg,
                      tmoe_meter **out, tmoe_error *err);
void tmoe_meter_free(tmoe_meter *m); /* NULL-safe */
/* Open a window now on every device (fills *w). */
void tmoe_meter_begin(tmoe_meter *m, tmoe_meter_window *w);
/* Close w now: fills *out. w stays valid (a later end measures from the same start).
 * TMOE_EINVAL when w does not come from a meter over this telemetry. */
int tmoe_meter_end(tmoe_meter *m, const tmoe_meter_window *w, tmoe_meter_reading *out,
                   tmoe_error *err);
/* Work done on device dev: busy_s seconds at full clock drawing dynamic_j above idle, a
 * share mem_fraction of it moving memory. Simulated GPU: queued (tmoe_sim_submit_energy);
 * NVML: nothing (the real GPU bills itself). busy_s = 0 bills nothing. TMOE_EINVAL on a bad
 * device or value. */
int tmoe_meter_bill(tmoe_meter *m, int dev, double busy_s, double dynamic_j, double mem_fraction);
/* Simulated GPU: advance until every device's billed work is done; NVML: nothing (the
 * engine synchronizes its own stream). */
void tmoe_meter_sync(tmoe_meter *m);
/* Let dt_s pass with nothing billed: simulated time advances; on NVML the thread sleeps.
 * Returns the seconds left when a signal cut the sleep short (0 when it all passed), so a
 * caller can check its stop flag and call again. */
double tmoe_meter_wait(tmoe_meter *m, double dt_s);
/* Seconds of billed work still queued on dev (simulated GPU); NAN on NVML. */
double tmoe_meter_backlog_s(tmoe_meter *m, int dev);

#ifdef __cplusplus
}
#endif
#endif
