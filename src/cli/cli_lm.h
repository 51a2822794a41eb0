/* The subcommands over real decoder LMs (eval, generate, info --model): their shared model
 * flags, loading, routing hook and the architecture summary. */
#ifndef THERMOE_CLI_LM_H
#define THERMOE_CLI_LM_H

#include "thermoe/backend.h"
#include "thermoe/route.h"

int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);

/* Flags every LM subcommand takes (codes CLI_LM_BASE..). */
enum {
    CLI_LM_BASE = 2000,
    CLI_LM_MODEL = CLI_LM_BASE,
    CLI_LM_EXPERT_TYPE,
    CLI_LM_GROUP,
    CLI_LM_IMPL,
    CLI_LM_BACKEND,
    CLI_LM_ACT8,
    CLI_LM_END
};
#define CLI_LM_OPTIONS                                                                             \
    {"model", required_argument, 0, CLI_LM_MODEL},                                                 \
        {"expert-type", required_argument, 0, CLI_LM_EXPERT_TYPE},                                 \
        {"group-size", required_argument, 0, CLI_LM_GROUP},                                        \
        {"impl", required_argument, 0, CLI_LM_IMPL},                                               \
        {"expert-activations", required_argument, 0, CLI_LM_ACT8}, {                               \
        "backend", required_argument, 0, CLI_LM_BACKEND                                            \
    }

typedef struct cli_lm_opts {
    const char *model; /* directory */
    tmoe_lm_load_opts load;
    tmoe_impl impl;
    tmoe_backend_kind backend;
} cli_lm_opts;

cli_lm_opts cli_lm_opts_default(void);
/* 0 applied, 1 bad value (message printed), -1 not an LM flag. */
int cli_lm_flag(const char *cmd, int code, const char *arg, cli_lm_opts *o);
void cli_lm_help(const cli_lm_opts *d);
/* Check --model, load the model: 0, or 1 after printing why not. */
int cli_lm_load(const char *cmd, const cli_lm_opts *o, tmoe_lm **out);
/* The experts' type as text: fp32, one type, or one per expert comma-separated (in buf) */
const char *cli_lm_type_text(const tmoe_lm *m, char *buf, size_t n);
/* The architecture, sizes and bytes per token of a loaded model. */
void cli_lm_print_info(FILE *f, const char *dir, const tmoe_lm *m);

/* Routing strategies acting per MoE layer: one router per layer over the cost model's
 * expert costs; no hardware state on the CPU (strategies that react to temperature or power
 * see it as unknown) and the TTHA adapter is not updated. */
typedef struct cli_lm_route cli_lm_route;
int cli_lm_route_create(const tmoe_lm *m, tmoe_route_strategy s, const char *cost_model,
                        tmoe_impl impl, int max_tokens, cli_lm_route **out, tmoe_error *err);
void cli_lm_route_free(cli_lm_route *r);
int cli_lm_route_fn(void *user, int layer, const float *logits, int T, int E,
                    tmoe_lm_route_out *out, tmoe_error *err);

/* Where the decoder runs: the CPU reference with a host KV cache, or the CUDA decoder with its
 * device cache (--backend cuda, or auto when a CUDA device answers). */
typedef struct cli_lm_exec {
    tmoe_backend_kind kind; /* cpu or cuda, after auto is resolved */
    tmoe_kv_cache *kv;
    tmoe_cpu_lm *cpu;
    tmoe_cuda_lm *gpu;
} cli_lm_exec;
/* Resolve the backend (logged) and create the runner and its cache for max_seqs sequences of
 * max_len positions, max_tokens new tokens a step; route may be NULL. */
int cli_lm_exec_create(const tmoe_lm *m, const cli_lm_opts *o, int max_tokens, int max_seqs,
                       int max_len, tmoe_lm_route_fn route, void *route_user, cli_lm_exec *x,
                       tmoe_error *err);
void cli_lm_exec_free(cli_lm_exec *x);
int cli_lm_exec_open(cli_lm_exec *x, int *slot, tmoe_error *err);
void cli_lm_exec_close(cli_lm_exec *x, int slot);
int cli_lm_exec_forward(cli_lm_exec *x, const tmoe_lm_batch *b, float *logits, tmoe_error *err);

#endif
