/* Fuzz target: the nsys SQLite importer. Inputs are database images: each is written to a
 * temporary file and imported; damage must give an error message, never a crash. Seeds are
 * small exports built here with the documented tables. */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_driver.h"
#include "thermoe/profile.h"

static char g_path[256];

static const char *tmp_path(void) {
    if (!g_path[0])
        snprintf(g_path, sizeof g_path, "/tmp/thermoe-fuzz-nsys-%ld.sqlite", (long)getpid());
    return g_path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = tmp_path();
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size) return 0;
    tmoe_error err = {0};
    tmoe_nsys_result *r = NULL;
    if (tmoe_import_nsys(path, &r, &err) != TMOE_OK) {
        TMOE_ASSERT(r == NULL && strstr(err.msg, path));
    } else {
        int64_t ns = 0;
        for (int i = 0; i < r->n_devices; i++) ns += r->devices[i].kernel_ns;
        TMOE_ASSERT(ns == r->kernel_ns);
        tmoe_cost_model *cm;
        if (tmoe_cost_create(&cm, &err) == TMOE_OK) {
            (void)tmoe_nsys_to_cost(r, TMOE_ET_Q2, TMOE_IMPL_FUSED, 4, cm, NULL, &err);
            tmoe_cost_free(cm);
        }
        tmoe_nsys_free(r);
    }
    remove(path);
    return 0;
}

#ifndef THERMOE_LIBFUZZER
static const char *const *fuzz_tokens(void) {
    static const char *const t[] = {"\xff\xff\xff\xff", "\x00\x00", "SQLite format 3",
                                    "linear_fc1",       "Power",    NULL};
    return t;
}

/* Build a seed database with sqlite3 from sql; returns its bytes. */
static fuzz_seed build_seed(const char *sql) {
    fuzz_seed s = {0};
    const char *path = tmp_path();
    remove(path);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) return s;
    char *msg = NULL;
    if (sqlite3_exec(db, "PRAGMA page_size = 512;", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "fuzz_nsys: seed: %s\n", msg ? msg : "?");
        sqlite3_free(msg);
    }
    sqlite3_close(db);
    s = fuzz_read_file(path, 1 << 16);
    remove(path);
    return s;
}

static int fuzz_seeds(fuzz_seed *seeds, int max) {
    int n = 0;
    seeds[n] = build_seed(
        "CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT NOT NULL, end INT NOT NULL, deviceId "
        "INT, "
        "correlationId INT, globalPid INT, demangledName INT);"
        "CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INT, end INT, globalTid INT, "
        "correlationId INT);"
        "CREATE TABLE NVTX_EVENTS (start INT NOT NULL, end INT, eventType INT NOT NULL, text TEXT, "
        "textId INT, "
        "globalTid INT);"
        "CREATE TABLE GPU_METRICS (timestamp INT NOT NULL, typeId INT NOT NULL, metricId INT NOT "
        "NULL, value INT);"
        "CREATE TABLE TARGET_INFO_GPU_METRICS (typeId INT NOT NULL, sourceId INT NOT NULL, "
        "typeName TEXT NOT NULL, "
        "metricId INT NOT NULL, metricName TEXT NOT NULL);"
        "INSERT INTO StringIds VALUES (1, 'gemm'), (2, 'relu_k'), (3, 'linear_fc2');"
        "INSERT INTO TARGET_INFO_GPU_METRICS VALUES (0, 0, 'GH100', 4, 'Power [W]'), (1, 1, "
        "'GH100', 4, 'Power [W]');"
        "INSERT INTO GPU_METRICS VALUES (0, 0, 4, 100), (1000, 0, 4, 300), (2000, 0, 4, 200), "
        "(3000, 0, 4, 250),"
        " (0, 1, 4, 90), (3000, 1, 4, 95);"
        "INSERT INTO NVTX_EVENTS VALUES (0, 1500, 59, 'thermoe:linear_fc1', NULL, 16777223),"
        " (1600, 2900, 60, NULL, 3, 16777223), (0, 10, 34, 'mark', NULL, 1);"
        "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (100, 110, 16777223, 1);"
        "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (200, 700, 0, 1, 16777216, 1), (800, 1200, "
        "1, 2, 16777216, 2),"
        " (1700, 2600, 0, 3, 16777216, 1), (2700, 3500, 0, 4, 16777216, 2);");
    if (seeds[n].data) n++;
    if (n < max) {
        seeds[n] = build_seed(
            "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, shortName INT);"
            "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (1, 5, 7), (2, 9, NULL);");
        if (seeds[n].data) n++;
    }
    if (n < max) {
        seeds[n] = build_seed(
            "CREATE TABLE NVML_POWER (timestamp INT, gpuId INT, powerMilliWatts INT);"
            "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, deviceId INT);"
            "INSERT INTO NVML_POWER VALUES (0, 0, 100000), (100, 0, 200000), (200, 0, 0);"
            "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (10, 150, 0);");
        if (seeds[n].data) n++;
    }
    return n;
}

int main(void) {
    return fuzz_main("fuzz_nsys");
}
#endif
