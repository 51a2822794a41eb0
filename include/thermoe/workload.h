/* Workloads: deterministic streams of input batches, each built to exercise one aspect of
 * routing. A token's hidden state is noise plus a push along the gate direction of the
 * expert(s) it "belongs" to, so the workload controls expert popularity and routing entropy
 * through the model's own gate:
 *   standard        each token leans toward one expert chosen uniformly; the base batch.
 *   high_complexity longer sequences (2x seq_len) and tokens that lean toward 4 experts at
 *                   once with a weaker push: high-entropy routing, many near-ties.
 *   small_batch     a quarter of the base tokens per batch (latency-bound, few experts).
 *   large_batch     4x the base tokens per batch (throughput-bound, every expert busy).
 *   skewed          the leaned-toward expert follows a Zipf law (s = 1.2) over a random
 *                   permutation of the experts: a few hot experts, a long tail. */
#ifndef THERMOE_WORKLOAD_H
#define THERMOE_WORKLOAD_H

#include "thermoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TMOE_WL_STANDARD,
    TMOE_WL_HIGH_COMPLEXITY,
    TMOE_WL_SMALL_BATCH,
    TMOE_WL_LARGE_BATCH,
    TMOE_WL_SKEWED,
    TMOE_WL_COUNT
} tmoe_workload_kind;

const char *tmoe_workload_name(tmoe_workload_kind k);
int tmoe_workload_parse(const char *s, tmoe_workload_kind *out);

typedef struct tmoe_workload {
    tmoe_workload_kind kind;
    int seq_len;      /* tokens per sequence */
    int n_seqs;       /* sequences per batch */
    int tokens;       /* seq_len * n_seqs */
    int mix;          /* experts each token leans toward */
    float push;       /* strength of the lean, in units of the noise */
    double zipf_s;    /* 0 = uniform popularity */
    uint64_t seed;
} tmoe_workload;

/* The workload of kind k for a base batch of batch_size sequences of seq_len tokens. */
tmoe_workload tmoe_workload_make(tmoe_workload_kind k, int batch_size, int seq_len, uint64_t seed);

/* Largest token count any of the kinds makes for this base (for workspace sizing). */
int tmoe_workload_max_tokens(int batch_size, int seq_len);

/* Batch number idx of workload w for block blk: x (w->tokens, d_model). Deterministic in
 * (w->seed, kind, idx) and independent of the batches drawn before. */
void tmoe_workload_batch(const tmoe_workload *w, const tmoe_block *blk, int idx, float *x);

#ifdef __cplusplus
}
#endif
#endif
