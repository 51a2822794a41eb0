/* thermoe monitor: a live terminal view of GPU telemetry (temperature, power, energy,
 * clocks, utilization, clock-event reasons, a power sparkline), CSV logging, and an
 * --overhead mode that measures the sampling monitor's own CPU use. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "thermoe/telemetry.h"

#define SPARK_N 40

typedef struct monitor_opts {
    tmoe_telemetry_kind kind;
    long interval_ms;
    long refresh_ms;
    double duration_s;
    const char *csv;
    long sim_devices;
    uint64_t seed;
    double sim_load;
    int overhead;
    int plain;
    uint32_t fields; /* TMOE_F_* to read */
} monitor_opts;

/* "all" or a comma list of field names (tmoe_field_name) -> mask; 0 on an unknown name. */
static uint32_t parse_fields(const char *list) {
    if (!strcmp(list, "all")) return TMOE_F_ALL;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    uint32_t m = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint32_t bit = 0;
        for (int i = 0; i < TMOE_F_COUNT; i++)
            if (!strcmp(tok, tmoe_field_name(1u << i))) bit = 1u << i;
        if (!bit) {
            cli_fail("monitor", "--fields: unknown field '%s'", tok);
            return 0;
        }
        m |= bit;
    }
    return m;
}

static volatile sig_atomic_t stop_flag;
static void on_sigint(int sig) {
    (void)sig;
    stop_flag = 1;
}

static void usage(void) {
    printf(
        "usage: thermoe monitor [flags]\n\n"
        "Live view of every GPU's telemetry; with --csv, every sample is logged.\n"
        "Ctrl-C stops cleanly (the CSV is flushed).\n\n"
        "  --telemetry auto|nvml|sim  source (default auto: nvml when a device answers)\n"
        "  --interval MS              sampling period (default 50)\n"
        "  --refresh MS               screen refresh period (default 500)\n"
        "  --duration S               stop after S seconds (default 0: until Ctrl-C)\n"
        "  --csv FILE                 write every sample to FILE (default: none); it goes to\n"
        "                             FILE.tmp.<pid> and is renamed to FILE when the monitor\n"
        "                             stops, so a failed write leaves an old FILE as it was\n"
        "  --sim-devices N            simulated GPUs (default 1)\n"
        "  --seed N                   simulator seed (default 1)\n"
        "  --sim-load F               simulated memory-bound load, busy fraction 0..1 (default 0)\n"
        "  --plain                    one text line per refresh instead of redrawing (default:\n"
        "                             plain when stdout is not a terminal)\n"
        "  --fields LIST              fields to read: all, or a comma list of gpu_temp_c,\n"
        "                             mem_temp_c, power_avg_w, power_instant_w, energy_mj,\n"
        "                             sm_clock_mhz, ... (the CSV header names; default all)\n"
        "  --overhead                 measure the monitor's CPU use at 20 Hz for --duration\n"
        "                             (default 10 s) and print it; no view\n"
        "  -v, --verbose              more log messages\n"
        "  -h, --help                 this text\n");
}

/* The CSV writers return -1 once the stream is in error (a failed fprintf/fputc sets it). */
static int csv_header(FILE *f) {
    fprintf(f, "source,device,t_s,gpu_temp_c,mem_temp_c,power_avg_w,power_instant_w,energy_mj,"
               "sm_clock_mhz,mem_clock_mhz,gpu_util_pct,mem_util_pct,mem_used_bytes,"
               "mem_total_bytes,throttle_reasons,throttle_names,pcie_rx_kbs,pcie_tx_kbs,fan_pct\n");
    return ferror(f) ? -1 : 0;
}

static void csv_num(FILE *f, const tmoe_sample *s, uint32_t bit, double v, const char *fmt) {
    fputc(',', f);
    if (s->valid & bit) fprintf(f, fmt, v);
}

static int csv_row(FILE *f, const char *src, const tmoe_sample *s, int64_t t0) {
    fprintf(f, "%s,%d,%.4f", src, s->device, (double)(s->t_ns - t0) * 1e-9);
    csv_num(f, s, TMOE_F_GPU_TEMP, s->gpu_temp_c, "%.0f");
    csv_num(f, s, TMOE_F_MEM_TEMP, s->mem_temp_c, "%.0f");
    csv_num(f, s, TMOE_F_POWER_AVG, s->power_avg_w, "%.3f");
    csv_num(f, s, TMOE_F_POWER_INSTANT, s->power_instant_w, "%.3f");
    csv_num(f, s, TMOE_F_ENERGY, s->energy_mj, "%.0f");
    csv_num(f, s, TMOE_F_SM_CLOCK, s->sm_clock_mhz, "%.0f");
    csv_num(f, s, TMOE_F_MEM_CLOCK, s->mem_clock_mhz, "%.0f");
    csv_num(f, s, TMOE_F_GPU_UTIL, s->gpu_util_pct, "%.0f");
    csv_num(f, s, TMOE_F_MEM_UTIL, s->mem_util_pct, "%.0f");
    fputc(',', f);
    if (s->valid & TMOE_F_MEM_USED) fprintf(f, "%" PRIu64, s->mem_used_bytes);
    fputc(',', f);
    if (s->valid & TMOE_F_MEM_TOTAL) fprintf(f, "%" PRIu64, s->mem_total_bytes);
    fputc(',', f);
    if (s->valid & TMOE_F_THROTTLE) {
        char names[256];
        tmoe_throttle_format(s->throttle_reasons, names, sizeof names);
        fprintf(f, "0x%" PRIx64 ",%s", s->throttle_reasons, names);
    } else {
        fputc(',', f);
    }
    csv_num(f, s, TMOE_F_PCIE_RX, s->pcie_rx_kbs, "%.0f");
    csv_num(f, s, TMOE_F_PCIE_TX, s->pcie_tx_kbs, "%.0f");
    csv_num(f, s, TMOE_F_FAN, s->fan_pct, "%.0f");
    fputc('\n', f);
    return ferror(f) ? -1 : 0;
}

static void fmt_val(char *buf, size_t n, const tmoe_sample *s, uint32_t bit, double v,
                    const char *fmt) {
    if (s->valid & bit)
        snprintf(buf, n, fmt, v);
    else
        snprintf(buf, n, "n/a");
}

static void sparkline(char *out, size_t n, const double *p, int count, double top) {
    static const char *const bars[8] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                        "\u2585", "\u2586", "\u2587", "\u2588"};
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < count && len + 4 < n; i++) {
        const char *b = " ";
        if (isfinite(p[i])) {
            int k = (int)(p[i] / top * 8.0);
            b = bars[k < 0 ? 0 : k > 7 ? 7 : k];
        }
        size_t bl = strlen(b);
        memcpy(out + len, b, bl);
        len += bl;
        out[len] = '\0';
    }
}

static int sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    return nanosleep(&ts, NULL);
}

static double cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return NAN;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* --overhead: the monitor thread at 20 Hz while this thread sleeps; CPU from getrusage. */
static int run_overhead(tmoe_telemetry *t, const monitor_opts *o) {
    double secs = o->duration_s > 0 ? o->duration_s : 10.0;
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.period_ns = 50000000;
    mc.fields = o->fields;
    tmoe_monitor *m;
    tmoe_error err = {0};
    double c0 = cpu_seconds();
    int64_t w0 = tmoe_now_ns();
    int rc = tmoe_monitor_create(t, &mc, &m, &err);
    if (rc) return cli_fail_err("monitor", &err);
    while (!stop_flag && (double)(tmoe_now_ns() - w0) * 1e-9 < secs) sleep_ms(100);
    tmoe_monitor_free(m);
    double c1 = cpu_seconds();
    double wall = (double)(tmoe_now_ns() - w0) * 1e-9;
    printf("monitor overhead: source %s%s, %d device(s), 20 Hz, %.1f s wall, %.4f s CPU = %.3f%% "
           "of one core\n",
           tmoe_telemetry_source_name(t),
           tmoe_telemetry_is_simulated(t) ? " (SIMULATED GPU: reads cost nothing like NVML)" : "",
           tmoe_telemetry_device_count(t), wall, c1 - c0, 100.0 * (c1 - c0) / wall);
    return 0;
}

int cmd_monitor(int argc, char **argv) {
    monitor_opts o = {.kind = TMOE_TELEMETRY_AUTO,
                      .interval_ms = 50,
                      .refresh_ms = 500,
                      .duration_s = 0,
                      .csv = NULL,
                      .sim_devices = 1,
                      .seed = 1,
                      .sim_load = 0,
                      .overhead = 0,
                      .plain = !isatty(STDOUT_FILENO),
                      .fields = TMOE_F_ALL};
    int verbose = 0;
    static const struct option longopts[] = {
        {"telemetry", required_argument, 0, 't'}, {"interval", required_argument, 0, 'i'},
        {"refresh", required_argument, 0, 'r'},   {"duration", required_argument, 0, 'd'},
        {"csv", required_argument, 0, 'c'},       {"sim-devices", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'},      {"sim-load", required_argument, 0, 'l'},
        {"plain", no_argument, 0, 'p'},           {"overhead", no_argument, 0, 'o'},
        {"verbose", no_argument, 0, 'v'},         {"help", no_argument, 0, 'h'},
        {"fields", required_argument, 0, 'f'},    {0, 0, 0, 0}};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1;) {
        switch (c) {
        case 't':
            if (cli_telemetry_flag("monitor", optarg, &o.kind)) return 2;
            break;
        case 'i':
            if (cli_int("monitor", "interval", optarg, 1, 60000, &o.interval_ms)) return 2;
            break;
        case 'r':
            if (cli_int("monitor", "refresh", optarg, 10, 60000, &o.refresh_ms)) return 2;
            break;
        case 'd':
            if (cli_double("monitor", "duration", optarg, 0, 1e7, &o.duration_s)) return 2;
            break;
        case 'c': o.csv = optarg; break;
        case 'n':
            if (cli_int("monitor", "sim-devices", optarg, 1, 64, &o.sim_devices)) return 2;
            break;
        case 's':
            if (cli_u64("monitor", "seed", optarg, &o.seed)) return 2;
            break;
        case 'l':
            if (cli_double("monitor", "sim-load", optarg, 0, 1, &o.sim_load)) return 2;
            break;
        case 'p': o.plain = 1; break;
        case 'o': o.overhead = 1; break;
        case 'f':
            if (!(o.fields = parse_fields(optarg))) return 2;
            break;
        case 'v': verbose++; break;
        case 'h': usage(); return 0;
        default: return cli_usage_error("monitor");
        }
    }
    if (optind < argc) {
        cli_fail("monitor", "unexpected argument '%s'", argv[optind]);
        return 2;
    }
    cli_log_init(verbose);
    tmoe_telemetry_config tc = tmoe_telemetry_config_default();
    tc.kind = o.kind;
    tc.sim.n_devices = (int)o.sim_devices;
    tc.sim.seed = o.seed;
    tmoe_telemetry *t;
    tmoe_error err = {0};
    if (tmoe_telemetry_open(&tc, &t, &err)) return cli_fail_err("monitor", &err);
    fprintf(stderr, "%s\n", tmoe_telemetry_choice(t));

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        tmoe_telemetry_free(t);
        return cli_fail("monitor", "sigaction failed");
    }
    if (o.overhead) {
        int rc = run_overhead(t, &o);
        tmoe_telemetry_free(t);
        return rc;
    }

    /* the CSV goes to a temporary renamed over --csv at the end (whole or nothing); a
     * device, FIFO or directory there is refused */
    tmoe_atomic_file csvf;
    memset(&csvf, 0, sizeof csvf);
    FILE *csv = NULL;
    if (o.csv) {
        if (tmoe_atomic_open(&csvf, o.csv, &err)) {
            tmoe_telemetry_free(t);
            return cli_fail("monitor", "--csv: %s", err.msg);
        }
        csv = csvf.f;
        if (csv_header(csv) != 0) {
            int e = errno;
            tmoe_atomic_abort(&csvf);
            tmoe_telemetry_free(t);
            return cli_fail("monitor", "--csv %s: write failed: %s", o.csv, strerror(e));
        }
    }
    tmoe_sim *sim = tmoe_telemetry_sim(t);
    tmoe_monitor_config mc = tmoe_monitor_config_default();
    mc.fields = o.fields;
    mc.period_ns = o.interval_ms * 1000000LL;
    mc.mode = sim ? TMOE_MONITOR_SYNC : TMOE_MONITOR_THREAD;
    tmoe_monitor *m;
    if (tmoe_monitor_create(t, &mc, &m, &err)) {
        tmoe_atomic_abort(&csvf);
        tmoe_telemetry_free(t);
        return cli_fail_err("monitor", &err);
    }
    int nd = tmoe_telemetry_device_count(t);
    const char *src = tmoe_telemetry_source_name(t);
    int64_t t0 = tmoe_monitor_now_ns(m);
    int64_t *written = calloc((size_t)nd, sizeof *written);
    double *spark = calloc((size_t)nd * SPARK_N, sizeof *spark);
    int cap = (int)(o.refresh_ms / o.interval_ms + 64) * 2;
    tmoe_sample *buf = malloc((size_t)cap * sizeof *buf);
    double *plimit = calloc((size_t)nd, sizeof *plimit);
    if (!written || !spark || !buf || !plimit) {
        free(written), free(spark), free(buf), free(plimit);
        tmoe_monitor_free(m);
        tmoe_atomic_abort(&csvf);
        tmoe_telemetry_free(t);
        return cli_fail("monitor", "out of memory");
    }
    for (int d = 0; d < nd; d++) {
        written[d] = t0 - 1;
        for (int k = 0; k < SPARK_N; k++) spark[d * SPARK_N + k] = NAN;
        tmoe_device_info inf;
        plimit[d] = 700.0;
        if (tmoe_telemetry_device_info(t, d, &inf, &err) == TMOE_OK && isfinite(inf.power_limit_w))
            plimit[d] = inf.power_limit_w;
    }
    int64_t wall0 = tmoe_now_ns(), wall_prev = wall0;
    int first = 1, rc = 0, csv_ok = 1, csv_errno = 0;
    while (!stop_flag) {
        if (sim) { /* the simulated GPU follows wall time in this view */
            int64_t now = tmoe_now_ns();
            double dt = (double)(now - wall_prev) * 1e-9;
            wall_prev = now;
            if (o.sim_load > 0 && dt > 0) /* 10 ms pieces, like a stream of kernels */
                for (int d = 0; d < nd; d++)
                    for (double q = 0; q < dt && tmoe_sim_backlog_s(sim, d) < dt; q += 0.01)
                        tmoe_sim_submit(sim, d, o.sim_load * 0.01, o.sim_load * 0.01 * 2.6e12, 0.0);
            if (dt > 0) tmoe_sim_advance(sim, dt);
        }
        if (!o.plain && !first) printf("\033[%dA", 3 * nd + 1);
        first = 0;
        const char *el = o.plain ? "" : "\033[K"; /* --plain: no escape codes at all */
        printf("%s  t=%.1f s  (%s)%s\n", src, (double)(tmoe_monitor_now_ns(m) - t0) * 1e-9,
               tmoe_telemetry_is_simulated(t) ? "SIMULATED" : "measured", el);
        for (int d = 0; d < nd; d++) {
            int n = tmoe_monitor_samples(m, d, written[d] + 1, INT64_MAX, buf, cap);
            for (int i = 0; i < n && csv_ok; i++) {
                if (csv && csv_row(csv, src, &buf[i], t0) != 0) csv_ok = 0, csv_errno = errno;
                written[d] = buf[i].t_ns;
            }
            tmoe_sample s;
            if (tmoe_monitor_latest(m, d, &s) != TMOE_OK) s = tmoe_sample_invalid(d, 0);
            memmove(&spark[d * SPARK_N], &spark[d * SPARK_N + 1], (SPARK_N - 1) * sizeof *spark);
            spark[d * SPARK_N + SPARK_N - 1] = (s.valid & TMOE_F_POWER_AVG) ? s.power_avg_w : NAN;
            char gt[16], mt[16], pa[16], pi[16], en[24], sm[16], mm[16], gu[16], mu[16];
            fmt_val(gt, sizeof gt, &s, TMOE_F_GPU_TEMP, s.gpu_temp_c, "%.0f C");
            fmt_val(mt, sizeof mt, &s, TMOE_F_MEM_TEMP, s.mem_temp_c, "%.0f C");
            fmt_val(pa, sizeof pa, &s, TMOE_F_POWER_AVG, s.power_avg_w, "%.1f W");
            fmt_val(pi, sizeof pi, &s, TMOE_F_POWER_INSTANT, s.power_instant_w, "%.1f W");
            tmoe_energy e = tmoe_monitor_energy_between(m, d, t0, tmoe_monitor_now_ns(m));
            if (e.method != TMOE_ENERGY_NONE)
                snprintf(en, sizeof en, "%.1f J", e.joules);
            else
                snprintf(en, sizeof en, "n/a");
            fmt_val(sm, sizeof sm, &s, TMOE_F_SM_CLOCK, s.sm_clock_mhz, "%.0f");
            fmt_val(mm, sizeof mm, &s, TMOE_F_MEM_CLOCK, s.mem_clock_mhz, "%.0f");
            fmt_val(gu, sizeof gu, &s, TMOE_F_GPU_UTIL, s.gpu_util_pct, "%.0f%%");
            fmt_val(mu, sizeof mu, &s, TMOE_F_MEM_UTIL, s.mem_util_pct, "%.0f%%");
            char reasons[256] = "n/a", line[SPARK_N * 4 + 1];
            if (s.valid & TMOE_F_THROTTLE)
                tmoe_throttle_format(s.throttle_reasons, reasons, sizeof reasons);
            sparkline(line, sizeof line, &spark[d * SPARK_N], SPARK_N, plimit[d]);
            printf("[%d] GPU %s  HBM %s  power %s (instant %s)  energy %s%s%s\n", d, gt, mt, pa, pi,
                   en, tmoe_monitor_device_lost(m, d) ? "  LOST" : "", el);
            printf("    SM %s MHz  mem %s MHz  util %s  mem util %s  reasons %s%s\n", sm, mm, gu,
                   mu, reasons, el);
            printf("    power |%s|%s\n", line, el);
        }
        fflush(stdout);
        if (csv && (!csv_ok || fflush(csv) != 0)) {
            rc = cli_fail("monitor", "--csv %s: write failed: %s (left unchanged)", o.csv,
                          strerror(csv_ok ? errno : csv_errno));
            break;
        }
        if (o.duration_s > 0 && (double)(tmoe_now_ns() - wall0) * 1e-9 >= o.duration_s) break;
        sleep_ms(o.refresh_ms);
    }
    /* last samples into the CSV, then flush, sync and rename it into place */
    for (int d = 0; d < nd && csv && rc == 0; d++) {
        int n;
        while (csv_ok && (n = tmoe_monitor_samples(m, d, written[d] + 1, INT64_MAX, buf, cap)) > 0)
            for (int i = 0; i < n && csv_ok; i++) {
                if (csv_row(csv, src, &buf[i], t0) != 0) csv_ok = 0;
                written[d] = buf[i].t_ns;
            }
    }
    if (csv && rc == 0 && tmoe_atomic_commit(&csvf, &err) != 0)
        rc = cli_fail("monitor", "--csv: %s", err.msg);
    tmoe_atomic_abort(&csvf); /* after a failure: remove the temporary; else nothing to do */
    for (int d = 0; d < nd; d++)
        if (tmoe_monitor_device_lost(m, d))
            fprintf(stderr,
                    "thermoe monitor: device %d was lost during the run; its later "
                    "samples are invalid\n",
                    d);
    if (rc == 0)
        fprintf(stderr, "thermoe monitor: %s%s\n", stop_flag ? "interrupted, " : "",
                csv ? "CSV written" : "done");
    tmoe_monitor_free(m);
    free(written), free(spark), free(buf), free(plimit);
    tmoe_telemetry_free(t);
    return rc;
}
