/* A small deterministic mutation fuzzer shared by tests/fuzz_*.c. Each target defines
 * LLVMFuzzerTestOneInput and fuzz_seeds(); with -DTHERMOE_LIBFUZZER the program is built for
 * clang -fsanitize=fuzzer instead and this main is left out.
 * Environment: THERMOE_FUZZ_ITERS (default 20000), THERMOE_FUZZ_SECONDS (a cap, default 5),
 * THERMOE_FUZZ_SEED (default 1). Crashes are caught by ASan/UBSan. The run is deterministic
 * for a seed and iteration count; THERMOE_FUZZ_KEEP=FILE writes each input there before it
 * runs, so the last one left after a sanitizer report is the culprit. */
#ifndef THERMOE_FUZZ_DRIVER_H
#define THERMOE_FUZZ_DRIVER_H

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
static inline size_t fuzz_mutate(tmoe_rng *r, uint8_t *buf, size_t len, size_t cap, const fuzz_seed *seeds, int nseeds) {
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

static inline int fuzz_main(const char *name) {
    long iters = fuzz_env("THERMOE_FUZZ_ITERS", 20000), secs = fuzz_env("THERMOE_FUZZ_SECONDS", 5);
    uint64_t seed = (uint64_t)fuzz_env("THERMOE_FUZZ_SEED", 1);
    fuzz_seed seeds[16];
    int nseeds = fuzz_seeds(seeds, 16);
    if (nseeds < 1) {
        fprintf(stderr, "%s: no seed inputs\n", name);
        return 1;
    }
    size_t maxlen = 0;
    for (int i = 0; i < nseeds; i++)
        if (seeds[i].len > maxlen) maxlen = seeds[i].len;
    size_t cap = maxlen + 4096;
    uint8_t *buf = malloc(cap);
    if (!buf) return 1;
    tmoe_rng r;
    tmoe_rng_seed(&r, seed);
    int64_t t0 = tmoe_now_ns();
    long done = 0;
    const char *keep = getenv("THERMOE_FUZZ_KEEP");
    for (int i = 0; i < nseeds; i++) LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);
    for (; done < iters; done++) {
        if ((done & 15) == 0 && tmoe_now_ns() - t0 > (int64_t)secs * 1000000000) break;
        const fuzz_seed *s = &seeds[tmoe_rng_below(&r, (uint32_t)nseeds)];
        size_t len = s->len;
        memcpy(buf, s->data, len);
        int nmut = 1 + (int)tmoe_rng_below(&r, 8);
        for (int m = 0; m < nmut; m++) len = fuzz_mutate(&r, buf, len, cap, seeds, nseeds);
        if (keep) { /* the input about to run, so a sanitizer report can be replayed */
            FILE *f = fopen(keep, "wb");
            if (!f || fwrite(buf, 1, len, f) != len) fprintf(stderr, "%s: cannot write %s\n", name, keep);
            if (f) fclose(f);
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("%s: %ld mutated inputs from %d seeds (seed %llu) without a sanitizer report\n", name, done, nseeds,
           (unsigned long long)seed);
    for (int i = 0; i < nseeds; i++) free(seeds[i].data);
    free(buf);
    return 0;
}
#endif /* THERMOE_LIBFUZZER */

#endif
