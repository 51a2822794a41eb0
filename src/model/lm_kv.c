/* The KV cache of the decoder: per layer, K and V in slots that sequences hold while they
 * run, so a batch can gain and lose sequences between steps. */
#include "thermoe/model.h"

#include <stdlib.h>
#include <string.h>

void tmoe_kv_cache_free(tmoe_kv_cache *kv) {
    if (!kv) return;
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k) free(kv->k[l]);
        if (kv->v) free(kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->len);
    free(kv->used);
    free(kv);
}

int tmoe_kv_cache_create(const tmoe_lm_config *c, int max_seqs, int max_len, tmoe_kv_cache **out,
                         tmoe_error *err) {
    *out = NULL;
    if (max_seqs < 1 || max_len < 1)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "KV cache: max_seqs = %d, max_len = %d: both must be "
                           "positive",
                           max_seqs, max_len);
    tmoe_kv_cache *kv = tmoe_calloc(1, sizeof *kv, err);
    if (!kv) return TMOE_ENOMEM;
    kv->n_layers = c->n_layers;
    kv->max_seqs = max_seqs;
    kv->max_len = max_len;
    kv->n_kv_heads = c->n_kv_heads;
    kv->head_dim = c->head_dim;
    kv->k = tmoe_calloc((size_t)c->n_layers, sizeof(float *), err);
    kv->v = tmoe_calloc((size_t)c->n_layers, sizeof(float *), err);
    kv->len = tmoe_calloc((size_t)max_seqs, sizeof(int32_t), err);
    kv->used = tmoe_calloc((size_t)max_seqs, 1, err);
    int rc = kv->k && kv->v && kv->len && kv->used ? TMOE_OK : TMOE_ENOMEM;
    size_t per = (size_t)max_seqs * max_len * c->n_kv_heads * c->head_dim;
    for (int l = 0; rc == TMOE_OK && l < c->n_layers; l++) {
        kv->k[l] = tmoe_malloc(sizeof(float) * per, err);
        kv->v[l] = tmoe_malloc(sizeof(float) * per, err);
        if (!kv->k[l] || !kv->v[l]) rc = TMOE_ENOMEM;
    }
    if (rc) {
        tmoe_kv_cache_free(kv);
        return tmoe_error_prefix(err, rc, "KV cache of %d sequences x %d positions", max_seqs,
                                 max_len);
    }
    *out = kv;
    return TMOE_OK;
}

int tmoe_kv_seq_open(tmoe_kv_cache *kv, int *slot, tmoe_error *err) {
    for (int s = 0; s < kv->max_seqs; s++)
        if (!kv->used[s]) {
            kv->used[s] = 1;
            kv->len[s] = 0;
            *slot = s;
            return TMOE_OK;
        }
    return tmoe_errorf(err, TMOE_EINVAL, "KV cache: all %d sequence slots are in use",
                       kv->max_seqs);
}

void tmoe_kv_seq_close(tmoe_kv_cache *kv, int slot) {
    TMOE_ASSERT(slot >= 0 && slot < kv->max_seqs && kv->used[slot]);
    kv->used[slot] = 0;
    kv->len[slot] = 0;
}

size_t tmoe_kv_cache_bytes(const tmoe_kv_cache *kv) {
    return 2 * sizeof(float) * (size_t)kv->n_layers * kv->max_seqs * kv->max_len * kv->n_kv_heads *
           kv->head_dim;
}
