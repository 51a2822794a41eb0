/* The checks of one decoder step's batch, shared by the CPU and CUDA forwards. */
#include "thermoe/backend.h"

int tmoe_lm_batch_check(const tmoe_lm_batch *b, const tmoe_lm_slots *s, int vocab_size, int *T_out,
                        tmoe_error *err) {
    int T = 0;
    for (int i = 0; i < b->nseq; i++) {
        int slot = b->slots[i];
        if (slot < 0 || slot >= s->max_seqs || !s->used[slot])
            return tmoe_errorf(err, TMOE_EINVAL, "sequence %d: KV slot %d is not open", i, slot);
        for (int j = 0; j < i; j++)
            if (b->slots[j] == slot)
                return tmoe_errorf(err, TMOE_EINVAL, "sequences %d and %d share KV slot %d", j, i,
                                   slot);
        if (b->n_new[i] < 1)
            return tmoe_errorf(err, TMOE_EINVAL, "sequence %d: %d new tokens", i, b->n_new[i]);
        if ((int64_t)s->len[slot] + b->n_new[i] > s->max_len ||
            (int64_t)s->len[slot] + b->n_new[i] > s->max_ctx)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "sequence %d: %d + %d positions exceed the cache (%d) or the "
                               "model's max_position_embeddings (%d)",
                               i, s->len[slot], b->n_new[i], s->max_len, s->max_ctx);
        T += b->n_new[i];
        if (T > s->max_tokens)
            return tmoe_errorf(err, TMOE_EINVAL, "more than max_tokens = %d new tokens",
                               s->max_tokens);
    }
    for (int t = 0; t < T; t++)
        if (b->tokens[t] >= (uint32_t)vocab_size)
            return tmoe_errorf(err, TMOE_EINVAL, "token %d: id %u is outside the vocabulary (%d)",
                               t, b->tokens[t], vocab_size);
    *T_out = T;
    return TMOE_OK;
}
