/* Process group of an expert-parallel run over MPI (or a group of one without it). */
#include "thermoe/ep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef THERMOE_HAVE_MPI
#include <mpi.h>
#endif

struct tmoe_ep {
    int rank, size, local_rank, local_size;
    int started; /* this group called MPI_Init (and must finalize) */
#ifdef THERMOE_HAVE_MPI
    MPI_Comm local;
    int have_local;
#endif
};

int tmoe_ep_mpi_built(void) {
#ifdef THERMOE_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

#ifndef THERMOE_HAVE_MPI
/* Processes the launcher says it started, from its environment (0 = not under a launcher). */
static int launcher_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                       "MPI_LOCALNRANKS", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}
#endif

#ifdef THERMOE_HAVE_MPI
static int mpi_fail(tmoe_error *err, int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", rc);
    return tmoe_errorf(err, TMOE_EIO, "%s: %s", what, msg);
}
#define MPI_TRY(call, what)                                                                        \
    do {                                                                                           \
        int mrc_ = (call);                                                                         \
        if (mrc_ != MPI_SUCCESS) return mpi_fail(err, mrc_, (what));                               \
    } while (0)
#endif

int tmoe_ep_init(int *argc, char ***argv, tmoe_ep **out, tmoe_error *err) {
    *out = NULL;
    tmoe_ep *g = tmoe_calloc(1, sizeof *g, err);
    if (!g) return TMOE_ENOMEM;
    g->size = g->local_size = 1;
#ifdef THERMOE_HAVE_MPI
    int inited = 0, provided = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            free(g);
            return tmoe_errorf(err, TMOE_EIO, "MPI_Init_thread failed (code %d)", rc);
        }
        g->started = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g->size);
    rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g->rank, MPI_INFO_NULL,
                             &g->local);
    if (rc != MPI_SUCCESS) {
        tmoe_ep_finalize(g);
        return mpi_fail(err, rc, "MPI_Comm_split_type (processes of this host)");
    }
    g->have_local = 1;
    MPI_Comm_rank(g->local, &g->local_rank);
    MPI_Comm_size(g->local, &g->local_size);
#else
    (void)argc;
    (void)argv;
    int n = launcher_size();
    if (n > 1) {
        free(g);
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "started as one of %d processes, but this thermoe was built without "
                           "MPI: each would run alone (install libopenmpi-dev and rebuild)",
                           n);
    }
#endif
    *out = g;
    return TMOE_OK;
}

void tmoe_ep_finalize(tmoe_ep *g) {
    if (!g) return;
#ifdef THERMOE_HAVE_MPI
    if (g->have_local) MPI_Comm_free(&g->local);
    int fin = 0;
    MPI_Finalized(&fin);
    if (g->started && !fin) MPI_Finalize();
#endif
    free(g);
}

void tmoe_ep_abort(tmoe_ep *g, int code) {
#ifdef THERMOE_HAVE_MPI
    if (g && g->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)g;
    (void)code;
#endif
}

int tmoe_ep_rank(const tmoe_ep *g) {
    return g->rank;
}
int tmoe_ep_size(const tmoe_ep *g) {
    return g->size;
}
int tmoe_ep_local_rank(const tmoe_ep *g) {
    return g->local_rank;
}
int tmoe_ep_local_size(const tmoe_ep *g) {
    return g->local_size;
}

int tmoe_ep_barrier(tmoe_ep *g, tmoe_error *err) {
#ifdef THERMOE_HAVE_MPI
    if (g->size > 1) MPI_TRY(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#else
    (void)g;
    (void)err;
#endif
    return TMOE_OK;
}

int tmoe_ep_bcast(tmoe_ep *g, void *buf, size_t bytes, int root, tmoe_error *err) {
    if (root < 0 || root >= g->size)
        return tmoe_errorf(err, TMOE_EINVAL, "broadcast root %d: the group has %d ranks", root,
                           g->size);
#ifdef THERMOE_HAVE_MPI
    if (g->size > 1)
        MPI_TRY(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
#else
    (void)buf;
    (void)bytes;
#endif
    return TMOE_OK;
}

int tmoe_ep_allgather(tmoe_ep *g, const void *send, size_t bytes, void *recv, tmoe_error *err) {
#ifdef THERMOE_HAVE_MPI
    if (g->size > 1) {
        MPI_TRY(
            MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD),
            "MPI_Allgather");
        return TMOE_OK;
    }
#else
    (void)g;
    (void)err;
#endif
    memmove(recv, send, bytes);
    return TMOE_OK;
}

int tmoe_ep_alltoallv(tmoe_ep *g, const void *send, const int *scount, const int *sdispl,
                      void *recv, const int *rcount, const int *rdispl, tmoe_error *err) {
#ifdef THERMOE_HAVE_MPI
    if (g->size > 1) {
        MPI_TRY(MPI_Alltoallv(send, scount, sdispl, MPI_BYTE, recv, rcount, rdispl, MPI_BYTE,
                              MPI_COMM_WORLD),
                "MPI_Alltoallv");
        return TMOE_OK;
    }
#else
    (void)g;
#endif
    if (scount[0] != rcount[0])
        return tmoe_errorf(err, TMOE_EINVAL, "all-to-all with one rank: sends %d bytes, expects %d",
                           scount[0], rcount[0]);
    memmove((char *)recv + rdispl[0], (const char *)send + sdispl[0], (size_t)scount[0]);
    return TMOE_OK;
}

static int allreduce(tmoe_ep *g, double *v, int max, tmoe_error *err) {
#ifdef THERMOE_HAVE_MPI
    if (g->size > 1)
        MPI_TRY(
            MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_DOUBLE, max ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
#else
    (void)g;
    (void)v;
    (void)max;
    (void)err;
#endif
    return TMOE_OK;
}

int tmoe_ep_allreduce_max(tmoe_ep *g, double *v, tmoe_error *err) {
    return allreduce(g, v, 1, err);
}
int tmoe_ep_allreduce_sum(tmoe_ep *g, double *v, tmoe_error *err) {
    return allreduce(g, v, 0, err);
}
