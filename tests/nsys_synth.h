/* Synthetic Nsight Systems SQLite exports for the importer's tests: the tables and columns a
 * real `nsys export --type sqlite` (schema 3.24-3.25) has where tmoe_import_nsys reads, and
 * metadata tables beside them that it must leave alone. Every row is made up here (from a
 * seed, or by the caller), never copied from a capture. Independent of cmocka, so that the
 * command-line generator (tests/nsys_synth_cli.c) and the fuzz targets can use it too.
 * Functions print what went wrong to stderr and return nonzero. */
#ifndef THERMOE_NSYS_SYNTH_H
#define THERMOE_NSYS_SYNTH_H

#include <stdint.h>

typedef struct tu_nsys tu_nsys; /* an export being written */

/* Optional tables of tu_nsys_create. */
enum {
    TU_NSYS_NVTX = 1,    /* NVTX_EVENTS */
    TU_NSYS_RUNTIME = 2, /* CUPTI_ACTIVITY_KIND_RUNTIME (launch calls) */
};

/* Create `path` (an existing file is replaced) with StringIds, CUPTI_ACTIVITY_KIND_KERNEL,
 * META_DATA_EXPORT, TARGET_INFO_GPU, TARGET_INFO_SESSION_START_TIME and the `tables` asked
 * for, in one open transaction. NULL on failure. */
tu_nsys *tu_nsys_create(const char *path, unsigned tables);
/* Run SQL (a printf format) on the open export. */
int tu_nsys_exec(tu_nsys *x, const char *fmt, ...);
/* Id of `s` in StringIds, added on first use; < 0 on failure. */
int64_t tu_nsys_string(tu_nsys *x, const char *s);
/* One CUPTI_ACTIVITY_KIND_KERNEL row; names are StringIds ids (demangled, short). */
int tu_nsys_kernel(tu_nsys *x, int64_t start, int64_t end, int device, int64_t correlation,
                   int64_t global_pid, int64_t demangled, int64_t short_name);
/* One CUPTI_ACTIVITY_KIND_RUNTIME row (a launch call). */
int tu_nsys_launch(tu_nsys *x, int64_t start, int64_t end, int64_t global_tid, int64_t correlation);
/* One NVTX_EVENTS row: end < 0 writes NULL (a mark); text NULL writes NULL. */
int tu_nsys_nvtx(tu_nsys *x, int64_t start, int64_t end, int event_type, const char *text,
                 int64_t text_id, int64_t global_tid);
/* Commit, close and free (x may be NULL); nonzero when the commit or close failed. */
int tu_nsys_close(tu_nsys *x);

/* nsys serializes ids as (hardware id << 56 | pid << 24 | tid); globalPid has tid 0. */
#define TU_NSYS_GLOBAL_TID(pid, tid) (((int64_t)1 << 56) | ((int64_t)(pid) << 24) | (int64_t)(tid))

/* A random export like a short multi-GPU capture of one process. */
typedef struct tu_nsys_spec {
    uint64_t seed;
    int n_devices;          /* 1..16 */
    int kernels_per_device; /* >= 1 */
    int n_names;            /* distinct kernels, 1..64 */
    int with_nvtx;          /* NVTX ranges named like PyTorch's (no op names), and marks */
    int64_t t0;             /* first timestamp in ns (captures do not start at 0) */
} tu_nsys_spec;

typedef struct tu_nsys_kern {
    int64_t start, end; /* ns */
    int device;
    int name;     /* index into tu_nsys_truth.names */
    int launched; /* 1 when a launch call of the same process is in the export */
} tu_nsys_kern;

/* What was written, for the test to compute its expected values from. */
typedef struct tu_nsys_truth {
    int n_kernels;
    tu_nsys_kern *kernels; /* (n_kernels), in the order written (not by start) */
    int n_names;
    char names[64][96];  /* demangled names (StringIds values of demangledName) */
    int64_t nvtx_ranges; /* NVTX push/pop and start/end ranges with an end */
    int64_t nvtx_marks;  /* NVTX marks (no end): not ranges */
} tu_nsys_truth;

/* Write a random export to `path` following spec; *truth holds what was written (free with
 * tu_nsys_truth_free). */
int tu_nsys_random(const char *path, const tu_nsys_spec *spec, tu_nsys_truth *truth);
void tu_nsys_truth_free(tu_nsys_truth *truth);

#endif
