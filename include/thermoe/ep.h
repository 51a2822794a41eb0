/* The process group of an expert-parallel run: one process (rank) per GPU, started by
 * mpirun (Open MPI or MPICH). MPI starts the processes, tells each its rank, its rank among
 * the processes of its host (which picks its GPU) and carries the few host-side messages a
 * run needs (NCCL's unique id, a barrier, small gathers); the tokens themselves move over
 * NCCL (see the expert-parallel CUDA backend, docs/cluster.md).
 *
 * Built without MPI, tmoe_ep_init gives a group of one process, and refuses when mpirun's
 * environment says several processes were started (they would each run alone). */
#ifndef THERMOE_EP_H
#define THERMOE_EP_H

#include <stddef.h>
#include <stdint.h>

#include "thermoe/core.h"
#include "thermoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tmoe_ep tmoe_ep;

/* Was this thermoe built with MPI? */
int tmoe_ep_mpi_built(void);

/* Start the group (MPI_Init_thread with MPI_THREAD_FUNNELED: only the thread that called
 * init talks to MPI). argc/argv may be NULL. Call once per process. */
int tmoe_ep_init(int *argc, char ***argv, tmoe_ep **out, tmoe_error *err);
/* Leave the group (MPI_Finalize). NULL is a no-op. */
void tmoe_ep_finalize(tmoe_ep *g);
/* Stop every process of the group after a fatal error on one (MPI_Abort), so the others do
 * not wait forever in a collective. Returns only without MPI. */
void tmoe_ep_abort(tmoe_ep *g, int code);

int tmoe_ep_rank(const tmoe_ep *g);       /* 0..size-1 */
int tmoe_ep_size(const tmoe_ep *g);       /* processes in the group */
int tmoe_ep_local_rank(const tmoe_ep *g); /* rank among the processes of this host */
int tmoe_ep_local_size(const tmoe_ep *g); /* processes on this host */

/* Collectives over host memory; every process must call them in the same order. */
int tmoe_ep_barrier(tmoe_ep *g, tmoe_error *err);
int tmoe_ep_bcast(tmoe_ep *g, void *buf, size_t bytes, int root, tmoe_error *err);
/* recv (size * bytes) = every rank's send (bytes), in rank order. */
int tmoe_ep_allgather(tmoe_ep *g, const void *send, size_t bytes, void *recv, tmoe_error *err);
/* All-to-all of bytes with per-peer counts and displacements (MPI_Alltoallv): send
 * scount[p] bytes at send + sdispl[p] to rank p, receive rcount[p] bytes from p at
 * recv + rdispl[p]. Every array has size() entries; counts below 2^31. */
int tmoe_ep_alltoallv(tmoe_ep *g, const void *send, const int *scount, const int *sdispl,
                      void *recv, const int *rcount, const int *rdispl, tmoe_error *err);
/* Largest / sum of one double over the group. */
int tmoe_ep_allreduce_max(tmoe_ep *g, double *v, tmoe_error *err);
int tmoe_ep_allreduce_sum(tmoe_ep *g, double *v, tmoe_error *err);

/* ============================== dispatch ============================================== */
/* Expert parallelism without the transport: where each expert lives (the placement map)
 * and, for one batch, who sends which token rows where and how the expert outputs come
 * back in (token, slot) order for the combine. Plain C, no GPU and no NCCL here: the
 * transport (ncclGroupStart, ncclSend/ncclRecv per peer, ncclGroupEnd) takes its counts and
 * displacements from this plan, and a CPU loopback (memcpy between per-rank buffers) uses
 * the same plan in the tests.
 *
 * One rank (process) per device. Every rank holds its own tokens (T_r rows, its own top-k
 * routing) and a tmoe_dispatch. One MoE step on rank r:
 *   1. tmoe_dispatch_plan_send(idx (T_r, k)): send rows grouped by destination device,
 *      within a device by its local expert (ascending global id), within an expert in
 *      (token, slot) order; per destination the copies per local expert (the count payload).
 *   2. count exchange: an all-to-all of the per-expert counts (device d receives from every
 *      source s the slice expert_counts[experts_of(d)]) -> tmoe_dispatch_plan_recv.
 *   3. token all-to-all: send rows [displs[p], displs[p] + counts[p]) to peer p, receive
 *      recv.counts[p] rows at recv.displs[p] (rows of d_model fp16 values).
 *   4. tmoe_dispatch_group: received rows -> one contiguous block per local expert, rows in
 *      (source rank, token, slot) order; each local expert runs once on its block.
 *   5. tmoe_dispatch_ungroup: expert outputs back to received order; the reverse all-to-all
 *      (counts swapped) returns them to the senders, in send order.
 *   6. combine on the sender: the output of copy t*k + j is returned row send.pos[t*k + j]
 *      (tmoe_cpu_combine(ret, send.pos, w, T, k, D, y) sums it in slot order).
 * With one rank the grouped order is exactly the single-device permute order. */

#define TMOE_DISPATCH_MAX_DEVICES 64

/* ---- placement: expert -> device ----------------------------------------------------- */

typedef enum { TMOE_PLACE_ROUND_ROBIN, TMOE_PLACE_FILE, TMOE_PLACE_COUNT } tmoe_placement_kind;
const char *tmoe_placement_kind_name(tmoe_placement_kind k); /* "round_robin", "file" */
int tmoe_placement_kind_parse(const char *s, tmoe_placement_kind *out);

/* Every expert on exactly one device; a device may hold none. */
typedef struct tmoe_placement {
    int num_experts;                              /* E */
    int num_devices;                              /* N, 1..TMOE_DISPATCH_MAX_DEVICES */
    int32_t device[TMOE_MAX_EXPERTS];             /* (E) device of each expert */
    int32_t local[TMOE_MAX_EXPERTS];              /* (E) index among its device's experts */
    int32_t by_device[TMOE_MAX_EXPERTS];          /* (E) experts ordered by (device, id) */
    int32_t first[TMOE_DISPATCH_MAX_DEVICES + 1]; /* (N+1) experts of device d are
                                                     by_device[first[d] .. first[d+1]) */
} tmoe_placement;

/* Expert e on device e mod N. */
int tmoe_placement_round_robin(int num_experts, int num_devices, tmoe_placement *out,
                               tmoe_error *err);
/* From an explicit map dev (E): checks every id is in [0, N). */
int tmoe_placement_from_array(const int32_t *dev, int num_experts, int num_devices,
                              tmoe_placement *out, tmoe_error *err);
/* Text form: one line per expert "expert device" (integers, whitespace-separated); blank
 * lines and '#' comments are skipped. Every expert 0..E-1 must appear exactly once and every
 * device id must be < N. Errors name name:line (name = file name, for messages). */
int tmoe_placement_parse(const char *text, const char *name, int num_experts, int num_devices,
                         tmoe_placement *out, tmoe_error *err);
int tmoe_placement_load(const char *path, int num_experts, int num_devices, tmoe_placement *out,
                        tmoe_error *err);
/* The placement of an expert-parallel engine: *given (when not NULL) checked against E
 * experts on N ranks, else round robin. */
int tmoe_placement_for_ranks(const tmoe_placement *given, int num_experts, int num_ranks,
                             tmoe_placement *out, tmoe_error *err);
/* Write the text form (a file that tmoe_placement_load reads back). */
int tmoe_placement_save(const tmoe_placement *pl, const char *path, tmoe_error *err);

/* ---- dispatch plan of one rank ------------------------------------------------------- */

typedef struct tmoe_dispatch tmoe_dispatch;

/* Send side, valid after tmoe_dispatch_plan_send. Rows are token copies (t, j). */
typedef struct tmoe_dispatch_send {
    int tokens, top_k, num_devices;
    const int32_t *counts;        /* (N) rows sent to each device */
    const int32_t *displs;        /* (N+1) first send row of each device; displs[N] = T*k */
    const int32_t *src;           /* (T*k) send row -> copy index t*k + j */
    const int32_t *pos;           /* (T*k) copy index -> send row = row of its returned output */
    const int32_t *expert_counts; /* (E) copies per expert, in placement by_device order: the
                                     slice [first[d], first[d+1]) is the count payload for d */
} tmoe_dispatch_send;

/* Receive side, valid after tmoe_dispatch_plan_recv. */
typedef struct tmoe_dispatch_recv {
    int rank, num_devices;
    int num_local;                 /* L, experts on this rank */
    const int32_t *experts;        /* (L) their global ids, ascending */
    const int32_t *counts;         /* (N) rows received from each source rank */
    const int32_t *displs;         /* (N+1) first receive row of each source */
    int rows;                      /* rows received in all */
    const int32_t *expert_counts;  /* (L) rows per local expert */
    const int32_t *expert_offsets; /* (L+1) grouped rows of local expert l */
    const int32_t *to_grouped;     /* (rows) receive row -> grouped row */
    const int32_t *from_grouped;   /* (rows) grouped row -> receive row */
} tmoe_dispatch_recv;

/* A plan for `rank` of pl (copied), for batches of up to max_tokens tokens on every rank and
 * top_k copies per token. All buffers are allocated here; planning never allocates. */
int tmoe_dispatch_create(const tmoe_placement *pl, int rank, int max_tokens, int top_k,
                         tmoe_dispatch **out, tmoe_error *err);
void tmoe_dispatch_free(tmoe_dispatch *d); /* NULL is a no-op */
const tmoe_placement *tmoe_dispatch_placement(const tmoe_dispatch *d);

/* Plan the sends of this rank's batch: idx (T, k) expert ids, 0 <= T <= max_tokens. */
int tmoe_dispatch_plan_send(tmoe_dispatch *d, const int32_t *idx, int T, tmoe_error *err);
tmoe_dispatch_send tmoe_dispatch_send_plan(const tmoe_dispatch *d);

/* Plan the receives from the count exchange: counts (N, L), row s = what source rank s
 * sends to each local expert of this rank (source s's expert_counts slice for this rank). */
int tmoe_dispatch_plan_recv(tmoe_dispatch *d, const int32_t *counts, tmoe_error *err);
tmoe_dispatch_recv tmoe_dispatch_recv_plan(const tmoe_dispatch *d);

/* The count exchange as the expert-parallel backends run it: to each peer q a payload of
 * L_q + 1 int32 at offset payload_offset(q) of an (E + N) array: this rank's copies for q's
 * experts (its expert_counts slice), then this rank's copies in all (T k), from which every
 * rank takes the same decisions. pack_payload fills the array after plan_send;
 * plan_recv_payload plans from the N received payloads (row s of L + 1 from rank s) and
 * gives every rank's copies in all (copies may be NULL). */
size_t tmoe_dispatch_payload_offset(const tmoe_placement *pl, int q);
void tmoe_dispatch_pack_payload(const tmoe_dispatch *d, int32_t *pay);
int tmoe_dispatch_plan_recv_payload(tmoe_dispatch *d, const int32_t *pay, long *copies,
                                    tmoe_error *err);

/* The overlapped schedule moves the rows in rounds, one per local expert index j: round j
 * carries, between this rank and peer q, the rows for the receiving rank's local expert j.
 * send_slice: the send rows [*first, *first + *n) that this rank sends q in round j (q's
 * local expert j; n = 0 when q holds fewer than j + 1 experts). recv_slice: the receive rows
 * that come from q in round j (this rank's local expert j). The return rounds move the same
 * rows back. Valid after plan_send / plan_recv. */
void tmoe_dispatch_send_slice(const tmoe_dispatch *d, int q, int j, int32_t *first, int32_t *n);
void tmoe_dispatch_recv_slice(const tmoe_dispatch *d, int q, int j, int32_t *first, int32_t *n);

/* Data movement on the host, rows of row_bytes bytes (the CPU reference of the pack /
 * regroup kernels):
 * pack:    send row i = x row src[i] / k        (x: (T, row) -> send: (T*k, row))
 * group:   grouped row to_grouped[i] = recv row i
 * ungroup: ret row i = grouped row to_grouped[i] (the inverse of group) */
void tmoe_dispatch_pack(const tmoe_dispatch *d, const void *x, size_t row_bytes, void *send);
void tmoe_dispatch_group(const tmoe_dispatch *d, const void *recv, size_t row_bytes, void *grouped);
void tmoe_dispatch_ungroup(const tmoe_dispatch *d, const void *grouped, size_t row_bytes,
                           void *ret);

#ifdef __cplusplus
}
#endif
#endif
