/* One op of the op table, prepared alone on a backend so that a profiler can time it:
 * weights for the op's expert type (several copies, so the working set exceeds the L2
 * cache and each call reads a copy it did not just read), inputs of the given token
 * count, and a launcher that runs the op back to back and times every call. */
#ifndef THERMOE_OPRUN_H
#define THERMOE_OPRUN_H

#include "thermoe/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tmoe_oprun_spec {
    tmoe_backend_kind backend; /* cpu or cuda (auto is resolved by the caller) */
    int device_id;
    tmoe_op op;
    tmoe_etype etype;          /* expert ops: the weights' type; other ops: fp16 */
    tmoe_impl impl;            /* linear ops of q4/q2: fused or unfused (dequant_unpack apart) */
    int tokens;                /* rows the op sees (expert ops: tokens routed to the expert) */
    tmoe_block_config block;   /* shape: d_model, d_ff, num_experts, top_k, n_heads, group, act */
    size_t min_working_set;    /* bytes of weights to rotate through (0: one copy) */
    int whole_expert;          /* run the whole expert forward per call, as the engine does
                                  (dequant_unpack when unfused, fc1 with its activation, fc2);
                                  op is ignored */
    uint64_t seed;
} tmoe_oprun_spec;

typedef struct tmoe_oprun tmoe_oprun;

/* Prepare the op. TMOE_ENOTSUP when the op does not apply (e.g. dequant_unpack of fp16). */
int tmoe_oprun_create(const tmoe_oprun_spec *spec, tmoe_oprun **out, tmoe_error *err);
void tmoe_oprun_free(tmoe_oprun *o); /* NULL-safe */
/* Run the op `calls` times back to back; ms (calls, may be NULL) gets each call's time
 * (device events on cuda, the monotonic clock on cpu). Returns when all calls finished. */
int tmoe_oprun_run(tmoe_oprun *o, int calls, double *ms, tmoe_error *err);
/* Bytes of device memory one call must read + write at least, and its FLOPs. */
double tmoe_oprun_bytes(const tmoe_oprun *o);
double tmoe_oprun_flops(const tmoe_oprun *o);
/* Weight copies rotated through. */
int tmoe_oprun_copies(const tmoe_oprun *o);

#ifdef __cplusplus
}
#endif
#endif
