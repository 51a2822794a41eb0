/* The kernel profiler behind `thermoe profile`: runs every op an expert (and the block
 * around it) uses, alone, with the method of DESIGN.md "Measuring energy of short
 * operations", and writes a kernel cost model. */
#ifndef THERMOE_PROFILER_H
#define THERMOE_PROFILER_H

#include "thermoe/cost.h"
#include "thermoe/engine.h"
#include "thermoe/telemetry.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_PROFILE_MAX_TOKENS 32

typedef struct tmoe_profile_config {
    tmoe_backend_kind backend;        /* auto resolves like the engine */
    int device_id;
    tmoe_telemetry_kind telemetry;    /* energy is measured only with nvml */
    int ops[TMOE_OP_COUNT];           /* 1 = profile this op */
    int etypes[TMOE_ET_COUNT];        /* 1 = profile this expert type */
    int impls[TMOE_IMPL_COUNT];       /* 1 = profile this impl */
    int tokens[TMOE_PROFILE_MAX_TOKENS];
    int ntokens;
    double min_seconds;               /* run each op at least this long (default 1 s) */
    int min_calls;                    /* and at least this many calls (default 20) */
    int warmup_calls;                 /* unmeasured calls first (default 5) */
    double rest_max_s;                /* rest after an op until back within rest_tol_c of the
                                         idle temperature, at most this long (default 10 s) */
    double rest_tol_c;                /* default 1 C */
    double min_working_set_mb;        /* weights rotated per op, MB (default 128: > 2x L2) */
    tmoe_block_config block;          /* the shape measured */
    int moe_only;                     /* skip norm and attention ops */
    uint64_t seed;
    /* progress (may be NULL): done of total measurements, what is running, ETA in s */
    void (*progress)(void *user, int done, int total, const char *what, double eta_s);
    void *progress_user;
    volatile int *stop;               /* set non-zero to stop after the current op */
    const char *check_path;           /* when set: also measure each whole expert forward and
                                         write a Markdown table of sum-of-ops vs whole here */
} tmoe_profile_config;

tmoe_profile_config tmoe_profile_config_default(void);

/* Measure and return a cost model (caller frees). The model is complete up to the op in
 * progress when stopped (TMOE_EINTR, *out still set). */
int tmoe_profile_run(const tmoe_profile_config *cfg, tmoe_cost_model **out, tmoe_error *err);

/* One planned measurement. Ops outside an expert are keyed as fp16 / fused. */
typedef struct tmoe_profile_item {
    tmoe_op op;
    tmoe_etype et;
    tmoe_impl impl;
    int tokens;
    int also_other_impl; /* fp16 experts: the same numbers stand for the other impl too */
} tmoe_profile_item;

/* The measurements tmoe_profile_run makes, in order (at most cap; returns the count). */
int tmoe_profile_plan(const tmoe_profile_config *cfg, tmoe_profile_item *items, int cap);
int tmoe_profile_plan_cap(const tmoe_profile_config *cfg); /* room the plan needs */

/* Median and 90th percentile (linear interpolation between order statistics) of n values;
 * v is sorted in place. */
void tmoe_profile_percentiles(double *v, int n, double *median, double *p90);

#ifdef __cplusplus
}
#endif
#endif
