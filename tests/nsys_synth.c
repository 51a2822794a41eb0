/* Synthetic Nsight Systems SQLite exports (see nsys_synth.h). The CREATE TABLE statements
 * follow the column names, types and NOT NULL constraints of nsys's export schema for the
 * tables the importer reads; the rows are made up. */
#include "nsys_synth.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tu_nsys {
    sqlite3 *db;
    char path[512];
    sqlite3_stmt *find_string, *add_string;
};

static int fail(tu_nsys *x, const char *what) {
    fprintf(stderr, "nsys_synth: %s: %s: %s\n", x->path, what,
            x->db ? sqlite3_errmsg(x->db) : "no database");
    return -1;
}

int tu_nsys_exec(tu_nsys *x, const char *fmt, ...) {
    char stack[2048], *sql = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (n < 0) return fail(x, "bad SQL format");
    if ((size_t)n >= sizeof stack) {
        sql = malloc((size_t)n + 1);
        if (!sql) return fail(x, "out of memory");
        va_start(ap, fmt);
        vsnprintf(sql, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    char *msg = NULL;
    int rc = sqlite3_exec(x->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "nsys_synth: %s: %s in: %.300s\n", x->path, msg ? msg : "?", sql);
    sqlite3_free(msg);
    if (sql != stack) free(sql);
    return rc == SQLITE_OK ? 0 : -1;
}

static const char *const SCHEMA =
    "CREATE TABLE StringIds (\n"
    "    id INTEGER NOT NULL PRIMARY KEY,\n"
    "    value TEXT NOT NULL);\n"
    "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (\n"
    "    start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL, contextId "
    "INTEGER NOT NULL,\n"
    "    greenContextId INTEGER, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid "
    "INTEGER,\n"
    "    demangledName INTEGER NOT NULL, shortName INTEGER NOT NULL, mangledName INTEGER, "
    "launchType INTEGER,\n"
    "    cacheConfig INTEGER, registersPerThread INTEGER NOT NULL, gridX INTEGER NOT NULL, gridY "
    "INTEGER NOT NULL,\n"
    "    gridZ INTEGER NOT NULL, blockX INTEGER NOT NULL, blockY INTEGER NOT NULL, blockZ INTEGER "
    "NOT NULL,\n"
    "    staticSharedMemory INTEGER NOT NULL, dynamicSharedMemory INTEGER NOT NULL,\n"
    "    localMemoryPerThread INTEGER NOT NULL, localMemoryTotal INTEGER NOT NULL, gridId INTEGER "
    "NOT NULL,\n"
    "    sharedMemoryExecuted INTEGER, graphNodeId INTEGER, sharedMemoryLimitConfig INTEGER, "
    "graphId INTEGER);\n"
    "CREATE TABLE META_DATA_EXPORT (\n"
    "    name TEXT NOT NULL,\n"
    "    value TEXT);\n"
    "CREATE TABLE TARGET_INFO_SESSION_START_TIME (\n"
    "    utcEpochNs INTEGER, utcTime TEXT, localTime TEXT, systemClockNs INTEGER);\n"
    "CREATE TABLE TARGET_INFO_GPU (\n"
    "    vmId INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT, busLocation TEXT, isDiscrete "
    "INTEGER,\n"
    "    l2CacheSize INTEGER, totalMemory INTEGER, smCount INTEGER, uuid TEXT, chipName TEXT, "
    "cuDevice INTEGER);\n"
    /* values made up for these files, in the shape nsys writes them */
    "INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_PRODUCT_NAME', 'thermoe tests/nsys_synth.c "
    "(synthetic)'),\n"
    "    ('EXPORT_SCHEMA_VERSION', '3.25.0'), ('EXPORT_SCHEMA_VERSION_MAJOR', '3'),\n"
    "    ('EXPORT_SCHEMA_VERSION_MINOR', '25'), ('EXPORT_SCHEMA_VERSION_MICRO', '0'),\n"
    "    ('EXPORT_PARAM_EXPORT_TYPE', 'sqlite'), ('EXPORT_TIME_UTC', NULL);\n"
    "INSERT INTO TARGET_INFO_SESSION_START_TIME VALUES (1800000000000000000, "
    "'2027-01-15T08:00:00Z', NULL, 0);\n";

static const char *const SCHEMA_RUNTIME = "CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (\n"
                                          "    start INTEGER NOT NULL, end INTEGER NOT NULL, "
                                          "eventClass INTEGER NOT NULL, globalTid INTEGER,\n"
                                          "    correlationId INTEGER, nameId INTEGER NOT NULL, "
                                          "returnValue INTEGER NOT NULL, callchainId INTEGER);\n";

static const char *const SCHEMA_NVTX =
    "CREATE TABLE NVTX_EVENTS (\n"
    "    start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, rangeId INTEGER, "
    "category INTEGER,\n"
    "    color INTEGER, text TEXT, globalTid INTEGER, endGlobalTid INTEGER, textId INTEGER, "
    "domainId INTEGER,\n"
    "    uint64Value INTEGER, int64Value INTEGER, doubleValue REAL, uint32Value INTEGER, "
    "int32Value INTEGER,\n"
    "    floatValue REAL, jsonTextId INTEGER, jsonText TEXT, binaryData TEXT);\n";

tu_nsys *tu_nsys_create(const char *path, unsigned tables) {
    tu_nsys *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    snprintf(x->path, sizeof x->path, "%s", path);
    remove(path);
    if (sqlite3_open(path, &x->db) != SQLITE_OK) {
        fail(x, "cannot create");
        tu_nsys_close(x);
        return NULL;
    }
    if (tu_nsys_exec(x, "PRAGMA page_size = 4096; BEGIN") || tu_nsys_exec(x, "%s", SCHEMA) ||
        ((tables & TU_NSYS_RUNTIME) && tu_nsys_exec(x, "%s", SCHEMA_RUNTIME)) ||
        ((tables & TU_NSYS_NVTX) && tu_nsys_exec(x, "%s", SCHEMA_NVTX)) ||
        sqlite3_prepare_v2(x->db, "SELECT id FROM StringIds WHERE value = ?1", -1, &x->find_string,
                           NULL) ||
        sqlite3_prepare_v2(x->db, "INSERT INTO StringIds (value) VALUES (?1)", -1, &x->add_string,
                           NULL)) {
        fail(x, "cannot write the schema");
        tu_nsys_close(x);
        return NULL;
    }
    return x;
}

int64_t tu_nsys_string(tu_nsys *x, const char *s) {
    sqlite3_reset(x->find_string);
    sqlite3_bind_text(x->find_string, 1, s, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(x->find_string);
    if (rc == SQLITE_ROW) return sqlite3_column_int64(x->find_string, 0);
    if (rc != SQLITE_DONE) return fail(x, "cannot read StringIds");
    sqlite3_reset(x->add_string);
    sqlite3_bind_text(x->add_string, 1, s, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(x->add_string) != SQLITE_DONE) return fail(x, "cannot add to StringIds");
    return sqlite3_last_insert_rowid(x->db);
}

int tu_nsys_kernel(tu_nsys *x, int64_t start, int64_t end, int device, int64_t correlation,
                   int64_t global_pid, int64_t demangled, int64_t short_name) {
    return tu_nsys_exec(
        x,
        "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, streamId, "
        "correlationId, globalPid, demangledName, shortName, mangledName, launchType, "
        "registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, staticSharedMemory, "
        "dynamicSharedMemory, localMemoryPerThread, localMemoryTotal, gridId) VALUES "
        "(%lld, %lld, %d, 1, 7, %lld, %lld, %lld, %lld, NULL, 0, 64, 132, 1, 1, 256, 1, 1, 0, "
        "49152, 0, 0, %lld)",
        (long long)start, (long long)end, device, (long long)correlation, (long long)global_pid,
        (long long)demangled, (long long)short_name, (long long)correlation);
}

int tu_nsys_launch(tu_nsys *x, int64_t start, int64_t end, int64_t global_tid,
                   int64_t correlation) {
    int64_t name = tu_nsys_string(x, "cudaLaunchKernel_v7000");
    if (name < 0) return -1;
    return tu_nsys_exec(
        x,
        "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (%lld, %lld, 1, %lld, %lld, %lld, 0, NULL)",
        (long long)start, (long long)end, (long long)global_tid, (long long)correlation,
        (long long)name);
}

int tu_nsys_nvtx(tu_nsys *x, int64_t start, int64_t end, int event_type, const char *text,
                 int64_t text_id, int64_t global_tid) {
    char end_s[32] = "NULL", id_s[32] = "NULL";
    if (end >= 0) snprintf(end_s, sizeof end_s, "%lld", (long long)end);
    if (text_id >= 0) snprintf(id_s, sizeof id_s, "%lld", (long long)text_id);
    char *q = text ? sqlite3_mprintf("%Q", text) : NULL;
    int rc = tu_nsys_exec(
        x,
        "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId) "
        "VALUES (%lld, %s, %d, %s, %lld, %s)",
        (long long)start, end_s, event_type, q ? q : "NULL", (long long)global_tid, id_s);
    sqlite3_free(q);
    return rc;
}

int tu_nsys_close(tu_nsys *x) {
    if (!x) return 0;
    int rc = 0;
    sqlite3_finalize(x->find_string);
    sqlite3_finalize(x->add_string);
    if (x->db && sqlite3_get_autocommit(x->db) == 0) rc = tu_nsys_exec(x, "COMMIT");
    if (x->db && sqlite3_close(x->db) != SQLITE_OK) rc = fail(x, "cannot close");
    free(x);
    return rc;
}

/* ---- random exports ------------------------------------------------------------------ */

static uint64_t next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t below(uint64_t *s, int64_t n) {
    return (int64_t)(next(s) % (uint64_t)n);
}

void tu_nsys_truth_free(tu_nsys_truth *t) {
    if (!t) return;
    free(t->kernels);
    memset(t, 0, sizeof *t);
}

int tu_nsys_random(const char *path, const tu_nsys_spec *spec, tu_nsys_truth *t) {
    memset(t, 0, sizeof *t);
    if (spec->n_devices < 1 || spec->n_devices > 16 || spec->kernels_per_device < 1 ||
        spec->n_names < 1 || spec->n_names > 64 || spec->t0 < 0) {
        fprintf(stderr, "nsys_synth: %s: spec out of range\n", path);
        return -1;
    }
    uint64_t s = spec->seed;
    tu_nsys *x = tu_nsys_create(path, TU_NSYS_RUNTIME | (spec->with_nvtx ? TU_NSYS_NVTX : 0u));
    if (!x) return -1;
    const int64_t pid = 1000 + below(&s, 60000), other_pid = pid + 1;
    const int64_t gpid = TU_NSYS_GLOBAL_TID(pid, 0);
    int64_t ids[64][2];
    t->n_names = spec->n_names;
    int rc = 0;
    for (int i = 0; i < spec->n_names && !rc; i++) {
        char shortn[64];
        snprintf(shortn, sizeof shortn, "synth_kernel_%d", i);
        snprintf(t->names[i], sizeof t->names[i],
                 "void synth_kernel_%d<float, %d>(float const*, float*, int)", i,
                 (int)(1 + below(&s, 8)));
        ids[i][0] = tu_nsys_string(x, t->names[i]);
        ids[i][1] = tu_nsys_string(x, shortn);
        if (ids[i][0] < 0 || ids[i][1] < 0) rc = -1;
    }
    for (int d = 0; d < spec->n_devices && !rc; d++)
        rc = tu_nsys_exec(x,
                          "INSERT INTO TARGET_INFO_GPU VALUES (0, %d, 'NVIDIA H100 80GB HBM3', "
                          "'0000:%02x:00.0', 1, "
                          "52428800, 85520809984, 132, 'GPU-synthetic-%d', 'GH100', %d)",
                          d, 0x18 + d, d, d);
    t->n_kernels = spec->n_devices * spec->kernels_per_device;
    t->kernels = calloc((size_t)t->n_kernels, sizeof *t->kernels);
    if (!t->kernels) rc = -1;
    const int64_t span = 1000000 + (int64_t)t->n_kernels * 20000; /* ns of capture */
    for (int i = 0; i < t->n_kernels && !rc; i++) {
        tu_nsys_kern *k = &t->kernels[i];
        k->device = i % spec->n_devices;
        k->name = (int)below(&s, spec->n_names);
        k->start = spec->t0 + below(&s, span);
        k->end = k->start + 1 + below(&s, 60000);
        int64_t corr = 5000 + i, tid = TU_NSYS_GLOBAL_TID(pid, 1 + below(&s, 3));
        int64_t r = below(&s, 10);
        k->launched = r < 7;
        rc = tu_nsys_kernel(x, k->start, k->end, k->device, corr, gpid, ids[k->name][0],
                            ids[k->name][1]);
        /* the launch call precedes the kernel; 1 in 10 kernels has a call of the same
         * correlation id in another process only, which must not count */
        int64_t at = k->start > spec->t0 + 5000 ? k->start - 1 - below(&s, 5000) : k->start;
        if (!rc && k->launched) rc = tu_nsys_launch(x, at, at + 3000, tid, corr);
        if (!rc && r == 9)
            rc = tu_nsys_launch(x, at, at + 3000, TU_NSYS_GLOBAL_TID(other_pid, 1), corr);
    }
    if (spec->with_nvtx) {
        int64_t texts = tu_nsys_string(x, "synth: step");
        if (texts < 0) rc = -1;
        int64_t n_nvtx = t->n_kernels / 2 + 3;
        for (int64_t i = 0; i < n_nvtx && !rc; i++) {
            int64_t a = spec->t0 + below(&s, span), tid = TU_NSYS_GLOBAL_TID(pid, 1 + below(&s, 3));
            char text[64];
            switch (i % 4) {
            case 0: /* PyTorch's push/pop ranges: not op names */
            case 1:
                snprintf(text, sizeof text, "aten::%s, op_id = %lld", i % 4 ? "mm" : "add",
                         (long long)i);
                rc = tu_nsys_nvtx(x, a, a + below(&s, 200000), 59, text, -1, tid);
                t->nvtx_ranges++;
                break;
            case 2: /* a start/end range named by a registered string */
                rc = tu_nsys_nvtx(x, a, a + below(&s, 200000), 60, NULL, texts, tid);
                t->nvtx_ranges++;
                break;
            default: /* a mark: no end */
                rc = tu_nsys_nvtx(x, a, -1, 34, "synth mark", -1, tid);
                t->nvtx_marks++;
            }
        }
    }
    if (tu_nsys_close(x)) rc = -1;
    if (rc) tu_nsys_truth_free(t);
    return rc;
}
