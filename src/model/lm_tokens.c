/* Token files (DESIGN.md: a 256-int32 little-endian header, then uint32 ids) and the
 * arithmetic of scoring text: per-token NLL from logits, perplexity and its confidence
 * interval over windows. */
#include "thermoe/model.h"

#include <errno.h>
#include <gsl/gsl_cdf.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_INTS 256

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void tmoe_tokens_free(tmoe_tokens *t) {
    if (!t) return;
    free(t->ids);
    t->ids = NULL;
    t->n = 0;
}

static int check_header(const char *path, const uint8_t *h, size_t size, tmoe_tokens *t,
                        tmoe_error *err) {
    int32_t f[6];
    for (int i = 0; i < 6; i++) f[i] = (int32_t)le32(h + 4 * i);
    if (f[0] != TMOE_TOKENS_MAGIC)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: header[0] (magic) = %d, expected %d: not a token file (write one "
                           "with tools/tokenize.py)",
                           path, f[0], TMOE_TOKENS_MAGIC);
    if (f[1] != TMOE_TOKENS_VERSION)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: header[1] (version) = %d, expected %d", path,
                           f[1], TMOE_TOKENS_VERSION);
    if (f[2] < 0)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: header[2] (tokens) = %d is negative", path,
                           f[2]);
    if (f[3] <= 0)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: header[3] (vocabulary size) = %d: must be "
                           "positive",
                           path, f[3]);
    if (f[4] != 4)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: header[4] (bytes per id) = %d, expected 4", path,
                           f[4]);
    if (f[5] < 0)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: header[5] (text bytes) = %d is negative", path,
                           f[5]);
    size_t want = 4 * HEADER_INTS + 4 * (size_t)f[2];
    if (size != want)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: %zu bytes, but the header's %d tokens need %zu (truncated or "
                           "padded)",
                           path, size, f[2], want);
    t->n = f[2];
    t->vocab_size = f[3];
    t->text_bytes = f[5];
    return TMOE_OK;
}

int tmoe_tokens_read(const char *path, tmoe_tokens *t, tmoe_error *err) {
    memset(t, 0, sizeof *t);
    size_t size = 0;
    FILE *f =
        tmoe_file_open_read(path, (size_t)4 * HEADER_INTS + (size_t)4 * INT32_MAX, &size, err);
    if (!f) return err ? err->code : TMOE_EIO;
    uint8_t h[4 * HEADER_INTS];
    int rc = TMOE_OK;
    if (size < sizeof h) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: %zu bytes, shorter than the %zu-byte header", path,
                         size, sizeof h);
    } else if (fread(h, 1, sizeof h, f) != sizeof h) {
        rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot read the header", path);
    } else {
        rc = check_header(path, h, size, t, err);
    }
    uint8_t *raw = NULL;
    if (rc == TMOE_OK) {
        raw = tmoe_malloc(4 * (size_t)t->n + 1, err);
        t->ids = tmoe_malloc(4 * (size_t)t->n + 4, err);
        if (!raw || !t->ids) rc = TMOE_ENOMEM;
    }
    if (rc == TMOE_OK && t->n > 0 && fread(raw, 4, (size_t)t->n, f) != (size_t)t->n)
        rc = tmoe_errorf(err, TMOE_EIO, "%s: cannot read %lld ids", path, (long long)t->n);
    for (int64_t i = 0; rc == TMOE_OK && i < t->n; i++) {
        t->ids[i] = le32(raw + 4 * i);
        if (t->ids[i] >= (uint32_t)t->vocab_size)
            rc = tmoe_errorf(err, TMOE_EFORMAT,
                             "%s: token %lld has id %u, not below the header's vocabulary size %d",
                             path, (long long)i, t->ids[i], t->vocab_size);
    }
    free(raw);
    fclose(f);
    if (rc) tmoe_tokens_free(t);
    return rc;
}

int tmoe_tokens_write(const char *path, const uint32_t *ids, int64_t n, int32_t vocab_size,
                      int64_t text_bytes, tmoe_error *err) {
    if (n < 0 || n > INT32_MAX || vocab_size <= 0 || text_bytes < 0 || text_bytes > INT32_MAX)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "token file %s: n = %lld, vocabulary %d, text bytes %lld out of range",
                           path, (long long)n, vocab_size, (long long)text_bytes);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= (uint32_t)vocab_size)
            return tmoe_errorf(err, TMOE_EINVAL, "token file %s: id %u at %lld is not below %d",
                               path, ids[i], (long long)i, vocab_size);
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) return rc;
    uint8_t h[4 * HEADER_INTS] = {0}, b[4];
    int32_t f[6] = {TMOE_TOKENS_MAGIC,  TMOE_TOKENS_VERSION, (int32_t)n, vocab_size, 4,
                    (int32_t)text_bytes};
    for (int i = 0; i < 6; i++) put_le32(h + 4 * i, (uint32_t)f[i]);
    fwrite(h, 1, sizeof h, af.f);
    for (int64_t i = 0; i < n; i++) {
        put_le32(b, ids[i]);
        fwrite(b, 1, 4, af.f);
    }
    return tmoe_atomic_commit(&af, err);
}

void tmoe_lm_nll(const float *logits, const uint32_t *targets, int n, int V, double *nll) {
    for (int t = 0; t < n; t++) {
        const float *r = logits + (size_t)t * V;
        double m = r[0];
        for (int v = 1; v < V; v++) m = r[v] > m ? r[v] : m;
        double s = 0.0;
        for (int v = 0; v < V; v++) s += exp((double)r[v] - m);
        nll[t] = m + log(s) - (double)r[targets[t]];
    }
}

void tmoe_lm_score_add_window(tmoe_lm_score *s, const double *nll, int n) {
    if (n <= 0) return;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += nll[i];
    s->windows++;
    s->tokens_scored += n;
    s->nll_sum += sum;
    s->win_sum += sum / n;
    s->win_sum2 += (sum / n) * (sum / n);
}

void tmoe_lm_score_finish(const tmoe_lm_score *s, double *nll_mean, double *ppl, double *ppl_lo,
                          double *ppl_hi) {
    *nll_mean = s->tokens_scored ? s->nll_sum / (double)s->tokens_scored : NAN;
    *ppl = exp(*nll_mean);
    *ppl_lo = *ppl_hi = NAN;
    if (s->windows < 2) return;
    double w = (double)s->windows, mean = s->win_sum / w;
    double var = (s->win_sum2 - w * mean * mean) / (w - 1.0);
    double half = gsl_cdf_tdist_Pinv(0.975, w - 1.0) * sqrt(var > 0.0 ? var / w : 0.0);
    *ppl_lo = exp(*nll_mean - half);
    *ppl_hi = exp(*nll_mean + half);
}
