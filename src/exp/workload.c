/* Workload generators (see include/thermoe/exp.h for what each exercises). */
#include "thermoe/exp.h"

#include <math.h>
#include <string.h>

static const char *const names[TMOE_WL_COUNT] = {"standard", "high_complexity", "small_batch",
                                                 "large_batch", "skewed"};

const char *tmoe_workload_name(tmoe_workload_kind k) {
    return (unsigned)k < TMOE_WL_COUNT ? names[k] : "?";
}

int tmoe_workload_parse(const char *s, tmoe_workload_kind *out) {
    for (int i = 0; i < TMOE_WL_COUNT; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *out = (tmoe_workload_kind)i;
            return 0;
        }
    return -1;
}

tmoe_workload tmoe_workload_make(tmoe_workload_kind k, int batch_size, int seq_len, uint64_t seed) {
    tmoe_workload w = {.kind = k,
                       .seq_len = seq_len,
                       .n_seqs = batch_size,
                       .mix = 1,
                       .push = 3.0f,
                       .zipf_s = 0.0,
                       .seed = seed};
    switch (k) {
    case TMOE_WL_HIGH_COMPLEXITY:
        w.seq_len = 2 * seq_len;
        w.mix = 4;
        w.push = 1.5f;
        break;
    case TMOE_WL_SMALL_BATCH:
        w.n_seqs = batch_size / 4 > 0 ? batch_size / 4 : 1;
        if (batch_size < 4) w.seq_len = seq_len / 4 > 0 ? seq_len / 4 : 1;
        break;
    case TMOE_WL_LARGE_BATCH: w.n_seqs = 4 * batch_size; break;
    case TMOE_WL_SKEWED: w.zipf_s = 1.2; break;
    default: break;
    }
    w.tokens = w.seq_len * w.n_seqs;
    return w;
}

int tmoe_workload_max_tokens(int batch_size, int seq_len) {
    int m = 0;
    for (int k = 0; k < TMOE_WL_COUNT; k++) {
        tmoe_workload w = tmoe_workload_make((tmoe_workload_kind)k, batch_size, seq_len, 0);
        if (w.tokens > m) m = w.tokens;
    }
    return m;
}

/* Expert drawn from Zipf(s) over a seed-fixed permutation (inverse CDF on E weights). */
static int draw_expert(const tmoe_workload *w, tmoe_rng *r, const int *perm, int E) {
    if (w->zipf_s <= 0.0) return (int)tmoe_rng_below(r, (uint32_t)E);
    double total = 0.0;
    for (int i = 1; i <= E; i++) total += pow((double)i, -w->zipf_s);
    double u = tmoe_rng_uniform(r) * total, c = 0.0;
    for (int i = 1; i <= E; i++) {
        c += pow((double)i, -w->zipf_s);
        if (u < c) return perm[i - 1];
    }
    return perm[E - 1];
}

void tmoe_workload_batch(const tmoe_workload *w, const tmoe_block *blk, int idx, float *x) {
    int D = blk->cfg.d_model, E = blk->cfg.num_experts;
    const tmoe_linear *g = &blk->moe.gate;
    /* the popularity order is fixed by the seed alone, so every batch agrees on it */
    int perm[TMOE_MAX_EXPERTS];
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, w->seed, 0x5eed);
    for (int e = 0; e < E; e++) perm[e] = e;
    for (int e = E - 1; e > 0; e--) {
        int j = (int)tmoe_rng_below(&r, (uint32_t)e + 1), t = perm[e];
        perm[e] = perm[j];
        perm[j] = t;
    }
    tmoe_rng_seed_stream(&r, w->seed, ((uint64_t)w->kind << 32) ^ (uint64_t)idx);
    const float *tab = tmoe_f16_table();
    for (int t = 0; t < w->tokens; t++) {
        float *xt = x + (size_t)t * D;
        for (int i = 0; i < D; i++) xt[i] = tmoe_rng_uniform_sym(&r, 1.7320508f); /* unit var */
        for (int m = 0; m < w->mix; m++) {
            int e = draw_expert(w, &r, perm, E);
            const tmoe_f16 *row = g->w + (size_t)e * D;
            double nrm = 0.0;
            for (int i = 0; i < D; i++) nrm += (double)tab[row[i]] * tab[row[i]];
            float s =
                nrm > 0.0 ? w->push * sqrtf((float)D / (float)nrm) / sqrtf((float)w->mix) : 0.0f;
            for (int i = 0; i < D; i++) xt[i] += s * tab[row[i]];
        }
    }
}
