/* The decoder LM's workloads: windows of a token file, cut into domains (a domains file
 * beside the token file, else its two halves), with calibration slots kept apart from the
 * scored ones (include/thermoe/exp.h, docs/harness.md "Workloads of the decoder LM"). */
#include "thermoe/exp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOMAINS_MAX_BYTES (1u << 20)

int tmoe_text_file_checksum(const char *path, uint64_t *out, tmoe_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "%s: cannot open: %s", path, strerror(errno));
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
    int bad = ferror(f);
    fclose(f);
    if (bad) return tmoe_errorf(err, TMOE_EIO, "%s: read error", path);
    *out = h;
    return TMOE_OK;
}

/* X.tokens -> X.domains.tsv (any other name: name + .domains.tsv). */
static void domains_path(const char *tokens, char *buf, size_t n) {
    size_t len = strlen(tokens);
    const char *ext = ".tokens";
    size_t el = strlen(ext);
    if (len > el && strcmp(tokens + len - el, ext) == 0) len -= el;
    snprintf(buf, n, "%.*s%s", (int)len, tokens, TMOE_TEXT_DOMAINS_SUFFIX);
}

static int parse_i64(const char *s, int64_t *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno) return -1;
    *v = x;
    return 0;
}

/* Parse the domains file text (NUL-terminated, modified in place). */
static int parse_domains(char *text, const char *dpath, tmoe_text *t, tmoe_error *err) {
    int line = 0, have_n = 0, have_sum = 0;
    char *save = NULL;
    for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        line++; /* strtok_r skips empty lines: numbers count the non-empty ones */
        size_t L = strlen(ln);
        if (L && ln[L - 1] == '\r') ln[--L] = '\0';
        if (!L || ln[0] == '#') continue;
        char *f[4] = {0};
        int nf = 0;
        char *s2 = NULL;
        for (char *x = strtok_r(ln, "\t", &s2); x && nf < 4; x = strtok_r(NULL, "\t", &s2))
            f[nf++] = x;
        if (!strcmp(f[0], "domain")) continue; /* the column header */
        if (!strcmp(f[0], "tokens")) {
            int64_t v;
            if (nf < 2 || parse_i64(f[1], &v))
                return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d: 'tokens' needs a count", dpath, line);
            if (v != t->n)
                return tmoe_errorf(err, TMOE_EFORMAT,
                                   "%s:%d: made for a token file of %lld tokens, this one has "
                                   "%lld",
                                   dpath, line, (long long)v, (long long)t->n);
            have_n = 1;
            continue;
        }
        if (!strcmp(f[0], "fnv1a64")) {
            char want[32];
            snprintf(want, sizeof want, "%016" PRIx64, t->checksum);
            if (nf < 2 || strcmp(f[1], want))
                return tmoe_errorf(err, TMOE_EFORMAT,
                                   "%s:%d: made for a token file with FNV-1a 64 %s, this one "
                                   "has %s",
                                   dpath, line, nf < 2 ? "(none)" : f[1], want);
            have_sum = 1;
            continue;
        }
        if (nf < 3)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: expected 'NAME<TAB>FIRST<TAB>END[<TAB>documents]'", dpath,
                               line);
        if (t->ndom == TMOE_TEXT_MAX_DOMAINS)
            return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d: more than %d domains", dpath, line,
                               TMOE_TEXT_MAX_DOMAINS);
        int64_t a, b;
        if (parse_i64(f[1], &a) || parse_i64(f[2], &b) || a < 0 || b <= a || b > t->n)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: domain '%s': range [%s, %s) is not 0 <= first < end <= "
                               "%lld (the token count)",
                               dpath, line, f[0], f[1], f[2], (long long)t->n);
        for (int d = 0; d < t->ndom; d++)
            if (a < t->end[d] && t->first[d] < b)
                return tmoe_errorf(
                    err, TMOE_EFORMAT, "%s:%d: domain '%s' overlaps domain '%s' [%lld, %lld)",
                    dpath, line, f[0], t->domain[d], (long long)t->first[d], (long long)t->end[d]);
        if (strlen(f[0]) >= sizeof t->domain[0])
            return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d: domain name longer than %zu bytes", dpath,
                               line, sizeof t->domain[0] - 1);
        snprintf(t->domain[t->ndom], sizeof t->domain[0], "%s", f[0]);
        t->first[t->ndom] = a;
        t->end[t->ndom] = b;
        t->ndom++;
    }
    if (!have_n || !have_sum)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: lacks the %s line that ties it to its token file", dpath,
                           !have_n ? "'tokens'" : "'fnv1a64'");
    if (t->ndom == 0) return tmoe_errorf(err, TMOE_EFORMAT, "%s: no domain", dpath);
    return TMOE_OK;
}

int tmoe_text_open(const char *path, const tmoe_tokens *tok, tmoe_text *t, tmoe_error *err) {
    memset(t, 0, sizeof *t);
    t->ids = tok->ids;
    t->n = tok->n;
    int rc = tmoe_text_file_checksum(path, &t->checksum, err);
    if (rc) return rc;
    char dpath[4096];
    domains_path(path, dpath, sizeof dpath);
    FILE *probe = fopen(dpath, "r");
    if (!probe && errno == ENOENT) {
        /* no domains file: the two halves stand in for two domains (skewed shifts between
         * them); said in the metadata */
        t->ndom = 2;
        snprintf(t->domain[0], sizeof t->domain[0], "first_half");
        snprintf(t->domain[1], sizeof t->domain[1], "second_half");
        t->first[0] = 0;
        t->end[0] = t->first[1] = t->n / 2;
        t->end[1] = t->n;
        snprintf(t->source, sizeof t->source,
                 "halves of the token file (no %s): skewed shifts from the first half to the "
                 "second",
                 dpath);
        return TMOE_OK;
    }
    if (probe) fclose(probe);
    size_t len = 0;
    char *text = tmoe_file_read_all(dpath, DOMAINS_MAX_BYTES, &len, err);
    if (!text) return tmoe_error_prefix(err, TMOE_EIO, "domains of %s", path);
    rc = parse_domains(text, dpath, t, err);
    free(text);
    if (rc) return rc;
    snprintf(t->source, sizeof t->source, "%s", dpath);
    return TMOE_OK;
}

/* Slots of domain d for windows of L tokens: scored ones (calib = 0) or calibration ones. */
static int64_t slot_count(const tmoe_text *t, int d, int L, int calib) {
    int64_t all = (t->end[d] - t->first[d]) / L, c = all / TMOE_TEXT_CALIB_EVERY;
    return calib ? c : all - c;
}

/* Start of the i-th slot of its kind in domain d. */
static int64_t slot_start(const tmoe_text *t, int d, int L, int calib, int64_t i) {
    const int64_t K = TMOE_TEXT_CALIB_EVERY;
    int64_t s = calib ? i * K + (K - 1) : i / (K - 1) * K + i % (K - 1);
    return t->first[d] + s * L;
}

int tmoe_text_batch(const tmoe_workload *w, const tmoe_text *t, int idx, int num_samples, int calib,
                    uint32_t *ids, tmoe_error *err) {
    int L = w->seq_len, lo = 0, hi = t->ndom;
    if (w->kind == TMOE_WL_SKEWED) {
        if (t->ndom < 2)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "skewed (a domain shift) needs two domains; %s has one", t->source);
        lo = idx < (num_samples + 1) / 2 ? 0 : 1;
        hi = lo + 1;
    }
    int64_t total = 0;
    for (int d = lo; d < hi; d++) total += slot_count(t, d, L, calib);
    if (total <= 0 || total > UINT32_MAX)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "workload %s: %s has no %s window of %d tokens (domains %s%s%s: "
                           "%lld tokens)",
                           tmoe_workload_name(w->kind), t->source, calib ? "calibration" : "scored",
                           L, t->domain[lo], hi - lo > 1 ? " .. " : "",
                           hi - lo > 1 ? t->domain[hi - 1] : "",
                           (long long)(t->end[hi - 1] - t->first[lo]));
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, w->seed,
                         0x7e47ull << 40 ^ (uint64_t)w->kind << 32 ^ (uint64_t)calib << 31 ^
                             (uint64_t)(uint32_t)idx);
    for (int s = 0; s < w->n_seqs; s++) {
        int64_t i = tmoe_rng_below(&r, (uint32_t)total);
        int d = lo;
        while (i >= slot_count(t, d, L, calib)) i -= slot_count(t, d, L, calib), d++;
        memcpy(ids + (size_t)s * L, t->ids + slot_start(t, d, L, calib, i),
               sizeof(uint32_t) * (size_t)L);
    }
    return TMOE_OK;
}
