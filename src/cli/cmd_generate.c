/* thermoe generate: greedy continuation of a prompt (a token file) with a real MoE LM:
 * one prefill, then one decode step per new token through the KV cache. Prints the new ids. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "cli/cli_lm.h"

enum { O_TOKENS = 3000, O_MAXNEW, O_PROMPT };

static void generate_help(const cli_lm_opts *d) {
    printf("usage: thermoe generate --model DIR --tokens FILE [--max-new N] [flags]\n\n"
           "Continue the prompt in a token file greedily (the most likely token each step, the\n"
           "lowest id on a tie) and print the new ids on one line.\n\n");
    cli_lm_help(d);
    printf("generation:\n"
           "  --tokens FILE      the prompt as a token file (tools/tokenize.py) (required)\n"
           "  --prompt-tokens N  use only the first N ids of the file (default: all)\n"
           "  --max-new N        tokens to generate (default 16)\n"
           "  -v, --verbose      more messages (timings on stderr)\n"
           "  -h, --help         this text\n");
}

/* Index of the largest value (the first one on a tie, as torch.argmax). */
static uint32_t argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (uint32_t)best;
}

static int run(const cli_lm_opts *lo, const tmoe_tokens *tok, int64_t prompt, int max_new) {
    tmoe_lm *m = NULL;
    cli_lm_exec x = {0};
    float *logits = NULL;
    uint32_t *out = NULL;
    tmoe_error err = {0};
    int rc = 1, slot = -1;
    if ((rc = cli_lm_load("generate", lo, &m)) != 0) return rc;
    rc = 1;
    const tmoe_lm_config *c = &m->cfg;
    for (int64_t i = 0; i < prompt; i++)
        if (tok->ids[i] >= (uint32_t)c->vocab_size) {
            cli_fail("generate",
                     "prompt token %lld has id %u, outside the model's vocabulary "
                     "of %d",
                     (long long)i, tok->ids[i], c->vocab_size);
            goto done;
        }
    if (prompt + max_new > c->max_positions) {
        cli_fail("generate", "%lld prompt + %d new tokens exceed max_position_embeddings %d",
                 (long long)prompt, max_new, c->max_positions);
        goto done;
    }
    logits = tmoe_malloc(sizeof(float) * (size_t)c->vocab_size, &err);
    out = tmoe_malloc(sizeof(uint32_t) * (size_t)(max_new + 1), &err);
    if (!logits || !out ||
        cli_lm_exec_create(m, lo, (int)prompt, 1, (int)prompt + max_new, NULL, NULL, &x, &err) ||
        cli_lm_exec_open(&x, &slot, &err))
        goto fail;
    int32_t n_new = (int32_t)prompt;
    tmoe_lm_batch b = {1, &slot, &n_new, tok->ids, 0};
    int64_t t0 = tmoe_now_ns();
    if (cli_lm_exec_forward(&x, &b, logits, &err)) goto fail;
    int64_t t1 = tmoe_now_ns();
    n_new = 1;
    for (int i = 0; i < max_new; i++) {
        out[i] = argmax(logits, c->vocab_size);
        if (i + 1 == max_new) break;
        b.tokens = &out[i];
        if (cli_lm_exec_forward(&x, &b, logits, &err)) goto fail;
    }
    int64_t t2 = tmoe_now_ns();
    for (int i = 0; i < max_new; i++) printf("%s%u", i ? " " : "", out[i]);
    printf("\n");
    tmoe_log(TMOE_LOG_INFO, "prefill %lld tokens %.3f s; %d decode steps %.3f s (%.1f tokens/s)",
             (long long)prompt, (double)(t1 - t0) / 1e9, max_new - 1, (double)(t2 - t1) / 1e9,
             max_new > 1 ? (max_new - 1) / ((double)(t2 - t1) / 1e9) : 0.0);
    rc = 0;
    goto done;
fail:
    cli_fail_err("generate", &err);
done:
    free(logits);
    free(out);
    cli_lm_exec_free(&x);
    tmoe_lm_free(m);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    static const struct option longopts[] = {CLI_LM_OPTIONS,
                                             {"tokens", required_argument, 0, O_TOKENS},
                                             {"max-new", required_argument, 0, O_MAXNEW},
                                             {"prompt-tokens", required_argument, 0, O_PROMPT},
                                             {"verbose", no_argument, 0, 'v'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    cli_lm_opts lo = cli_lm_opts_default();
    const char *tokens = NULL;
    long max_new = 16, prompt = 0;
    int verbosity = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1;) {
        int r = cli_lm_flag("generate", c, optarg, &lo);
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        switch (c) {
        case O_TOKENS: tokens = optarg; break;
        case O_MAXNEW:
            if (cli_int("generate", "max-new", optarg, 1, 1 << 20, &max_new)) return 2;
            break;
        case O_PROMPT:
            if (cli_int("generate", "prompt-tokens", optarg, 1, INT32_MAX, &prompt)) return 2;
            break;
        case 'v': verbosity++; break;
        case 'h': generate_help(&lo); return 0;
        default: return cli_usage_error("generate");
        }
    }
    if (optind < argc) return cli_usage_fail("generate", "unexpected argument '%s'", argv[optind]);
    if (!lo.model)
        return cli_usage_fail("generate",
                              "--model DIR is required (a Hugging Face model directory)");
    if (!tokens) return cli_usage_fail("generate", "--tokens FILE is required (the prompt)");
    cli_log_init(verbosity);
    tmoe_tokens tok;
    tmoe_error err = {0};
    if (tmoe_tokens_read(tokens, &tok, &err)) return cli_fail_err("generate", &err);
    int rc;
    if (tok.n < 1)
        rc = cli_fail("generate", "%s holds no tokens: the prompt needs at least one", tokens);
    else if (prompt > tok.n)
        rc = cli_fail("generate", "--prompt-tokens %ld: %s holds only %lld", prompt, tokens,
                      (long long)tok.n);
    else
        rc = run(&lo, &tok, prompt ? prompt : tok.n, (int)max_new);
    tmoe_tokens_free(&tok);
    return rc;
}
