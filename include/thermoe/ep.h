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

#include "thermoe/core.h"

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

#ifdef __cplusplus
}
#endif
#endif
