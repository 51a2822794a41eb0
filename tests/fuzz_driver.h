/* A small deterministic mutation fuzzer shared by tests/fuzz_*.c. Each target defines
 * LLVMFuzzerTestOneInput and fuzz_seeds(); with -DTHERMOE_LIBFUZZER the program is built for
 * clang -fsanitize=fuzzer instead and this main is left out.
 * Seeds: the target's own (fuzz_seeds) and every regular file in the corpus directory,
 * tests/fuzz/corpus/<target>/ (THERMOE_FUZZ_CORPUS_DIR, set by CMake; the environment
 * variable THERMOE_FUZZ_CORPUS overrides it; a missing directory is fine), read in name
 * order. Each seed runs once as it is, then mutated copies run until the budget is spent.
 * Environment: THERMOE_FUZZ_ITERS (default 20000), THERMOE_FUZZ_SECONDS (a cap on the whole
 * run, seeds included, default 5), THERMOE_FUZZ_SEED (default 1). Crashes are caught by
 * ASan/UBSan. The run is deterministic for a seed, corpus and iteration count;
 * THERMOE_FUZZ_KEEP=FILE writes each input there before it runs, so the last one left after
 * a sanitizer report is the culprit. */
#ifndef THERMOE_FUZZ_DRIVER_H
#define THERMOE_FUZZ_DRIVER_H

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_seed {
    uint8_t *data;
    size_t len;
} fuzz_seed;

/* Read a whole file (at most cap bytes); NULL data when it cannot be read. */
static inline fuzz_seed fuzz_read_file(const char *path, size_t cap) {
    fuzz_seed s = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz: seed %s not readable, skipped\n", path);
        return s;
    }
    s.data = malloc(cap);
    if (s.data) s.len = fread(s.data, 1, cap, f);
    fclose(f);
    return s;
}

static inline fuzz_seed fuzz_from_string(const char *text) {
    fuzz_seed s = {0};
    s.len = strlen(text);
    s.data = malloc(s.len + 1);
    if (s.data) memcpy(s.data, text, s.len + 1);
    return s;
}

#ifndef THERMOE_LIBFUZZER

/* Fill seeds (up to max); returns how many. Defined by each target. */
static int fuzz_seeds(fuzz_seed *seeds, int max);
/* Tokens worth inserting for this format. Defined by each target. */
static const char *const *fuzz_tokens(void);

static inline long fuzz_env(const char *name, long dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    long v = strtol(s, &end, 10);
    return *end ? dflt : v;
}

/* One mutation of buf (len bytes, capacity cap) in place; returns the new length. */
static inline size_t fuzz_mutate(tmoe_rng *r, uint8_t *buf, size_t len, size_t cap,
                                 const fuzz_seed *seeds, int nseeds) {
    const char *const *tok = fuzz_tokens();
    int ntok = 0;
    while (tok[ntok]) ntok++;
    switch (tmoe_rng_below(r, 8)) {
    case 0: /* flip a bit */
        if (len) buf[tmoe_rng_below(r, (uint32_t)len)] ^= (uint8_t)(1u << tmoe_rng_below(r, 8));
        break;
    case 1: /* set a byte */
        if (len) buf[tmoe_rng_below(r, (uint32_t)len)] = (uint8_t)tmoe_rng_below(r, 256);
        break;
    case 2: { /* delete a range */
        if (!len) break;
        size_t at = tmoe_rng_below(r, (uint32_t)len), n = 1 + tmoe_rng_below(r, 16);
        if (at + n > len) n = len - at;
        memmove(buf + at, buf + at + n, len - at - n);
        len -= n;
        break;
    }
    case 3: { /* insert a token */
        if (!ntok) break;
        const char *t = tok[tmoe_rng_below(r, (uint32_t)ntok)];
        size_t n = strlen(t), at = len ? tmoe_rng_below(r, (uint32_t)len + 1) : 0;
        if (len + n > cap) break;
        memmove(buf + at + n, buf + at, len - at);
        memcpy(buf + at, t, n);
        len += n;
        break;
    }
    case 4: { /* duplicate a range */
        if (!len) break;
        size_t at = tmoe_rng_below(r, (uint32_t)len), n = 1 + tmoe_rng_below(r, 64);
        if (at + n > len) n = len - at;
        if (len + n > cap) break;
        memmove(buf + at + n, buf + at, len - at);
        len += n;
        break;
    }
    case 5: /* truncate */
        if (len) len = tmoe_rng_below(r, (uint32_t)len + 1);
        break;
    case 6: { /* splice in a piece of another seed */
        const fuzz_seed *o = &seeds[tmoe_rng_below(r, (uint32_t)nseeds)];
        if (!o->len || !len) break;
        size_t from = tmoe_rng_below(r, (uint32_t)o->len), n = 1 + tmoe_rng_below(r, 256);
        if (from + n > o->len) n = o->len - from;
        size_t at = tmoe_rng_below(r, (uint32_t)len);
        if (at + n > cap) n = cap - at;
        memcpy(buf + at, o->data + from, n);
        if (at + n > len) len = at + n;
        break;
    }
    default: { /* overwrite a 4-byte run with an extreme value */
        static const uint32_t vals[] = {0, 0xffffffffu, 0x7fffffffu, 0x80000000u, 1, 0xffu};
        if (len < 4) break;
        uint32_t v = vals[tmoe_rng_below(r, 6)];
        memcpy(buf + tmoe_rng_below(r, (uint32_t)(len - 3)), &v, 4);
        break;
    }
    }
    return len;
}

#define FUZZ_MAX_SEED_BYTES ((size_t)1 << 20) /* a corpus file larger than this is skipped */

static int fuzz_cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Append every regular file of dir (in name order, dot files left out) to *seeds (n used, cap
 * allocated; grown as needed). Returns how many were added, or -1 when out of memory. A
 * missing directory adds none; an unreadable file is skipped with a message. */
static inline int fuzz_read_corpus(const char *name, const char *dir, fuzz_seed **seeds, int *n,
                                   int *cap) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            fprintf(stderr, "%s: corpus %s: %s; no corpus seeds\n", name, dir, strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t nn = 0, nc = 0;
    int oom = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL && !oom;) {
        if (e->d_name[0] == '.') continue;
        if (nn == nc) {
            nc = nc ? nc * 2 : 16;
            char **p = realloc(names, nc * sizeof *p);
            if (!p) {
                oom = 1;
                break;
            }
            names = p;
        }
        if (!(names[nn] = strdup(e->d_name)))
            oom = 1;
        else
            nn++;
    }
    closedir(d);
    if (nn) qsort(names, nn, sizeof *names, fuzz_cmp_names);
    int added = 0;
    for (size_t i = 0; i < nn && !oom; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        tmoe_error err = {0};
        size_t len = 0;
        char *data = tmoe_file_read_all(path, FUZZ_MAX_SEED_BYTES, &len, &err);
        if (!data) { /* a directory or FIFO in the corpus, or a file over the limit */
            fprintf(stderr, "%s: corpus file skipped: %s\n", name, err.msg);
            continue;
        }
        if (*n == *cap) {
            int c2 = *cap * 2;
            fuzz_seed *p = realloc(*seeds, (size_t)c2 * sizeof *p);
            if (!p) {
                free(data);
                oom = 1;
                break;
            }
            *seeds = p;
            *cap = c2;
        }
        (*seeds)[(*n)++] = (fuzz_seed){(uint8_t *)data, len};
        added++;
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
    return oom ? -1 : added;
}

static inline void fuzz_keep(const char *name, const char *keep, const uint8_t *buf, size_t len) {
    if (!keep) return;
    FILE *f = fopen(keep, "wb");
    if (!f || fwrite(buf, 1, len, f) != len) fprintf(stderr, "%s: cannot write %s\n", name, keep);
    if (f) fclose(f);
}

static inline int fuzz_main(const char *name) {
    long iters = fuzz_env("THERMOE_FUZZ_ITERS", 20000), secs = fuzz_env("THERMOE_FUZZ_SECONDS", 5);
    uint64_t seed = (uint64_t)fuzz_env("THERMOE_FUZZ_SEED", 1);
    int cap = 16, nseeds;
    fuzz_seed *seeds = calloc((size_t)cap, sizeof *seeds);
    if (!seeds) return 1;
    nseeds = fuzz_seeds(seeds, 16);
    const char *corpus = getenv("THERMOE_FUZZ_CORPUS");
#ifdef THERMOE_FUZZ_CORPUS_DIR
    if (!corpus || !*corpus) corpus = THERMOE_FUZZ_CORPUS_DIR;
#endif
    int ncorpus = corpus && *corpus ? fuzz_read_corpus(name, corpus, &seeds, &nseeds, &cap) : 0;
    if (ncorpus < 0) {
        fprintf(stderr, "%s: out of memory reading the corpus %s\n", name, corpus);
        return 1;
    }
    if (nseeds < 1) {
        fprintf(stderr, "%s: no seed inputs\n", name);
        return 1;
    }
    size_t maxlen = 0;
    for (int i = 0; i < nseeds; i++)
        if (seeds[i].len > maxlen) maxlen = seeds[i].len;
    size_t cap_bytes = maxlen + 4096;
    uint8_t *buf = malloc(cap_bytes);
    if (!buf) return 1;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed);
    int64_t t0 = tmoe_now_ns();
    long done = 0;
    const char *keep = getenv("THERMOE_FUZZ_KEEP");
    for (int i = 0; i < nseeds; i++) { /* every seed once as it is */
        fuzz_keep(name, keep, seeds[i].data, seeds[i].len);
        LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);
    }
    for (; done < iters; done++) {
        if ((done & 15) == 0 && tmoe_now_ns() - t0 > (int64_t)secs * 1000000000) break;
        const fuzz_seed *s = &seeds[tmoe_rng_below(&r, (uint32_t)nseeds)];
        size_t len = s->len;
        memcpy(buf, s->data, len);
        int nmut = 1 + (int)tmoe_rng_below(&r, 8);
        for (int m = 0; m < nmut; m++) len = fuzz_mutate(&r, buf, len, cap_bytes, seeds, nseeds);
        fuzz_keep(name, keep, buf,
                  len); /* the input about to run, so a sanitizer report can be replayed */
        /* run on an allocation of exactly len bytes, so ASan sees a read past the end */
        uint8_t *in = malloc(len ? len : 1);
        if (!in) break;
        memcpy(in, buf, len);
        LLVMFuzzerTestOneInput(in, len);
        free(in);
    }
    printf("%s: %d seeds (%d from %s), %ld mutated inputs (seed %llu) without a sanitizer report\n",
           name, nseeds, ncorpus, corpus && *corpus ? corpus : "no corpus", done,
           (unsigned long long)seed);
    for (int i = 0; i < nseeds; i++) free(seeds[i].data);
    free(seeds);
    free(buf);
    return 0;
}
#endif /* THERMOE_LIBFUZZER */

#endif
