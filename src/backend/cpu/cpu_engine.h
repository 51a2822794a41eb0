/* Private: what the expert-parallel CPU backend (src/backend/cpu/backend_cpu_ep.c) uses of a
 * CPU engine state (the void *state that tmoe_backend_cpu.create returns). */
#ifndef THERMOE_CPU_ENGINE_H
#define THERMOE_CPU_ENGINE_H

#include "thermoe/core.h"

typedef struct tmoe_cpu_io {
    float *x;      /* (T, D) residual stream after begin (input of the MoE layer) */
    tmoe_f16 *h16; /* (T, D) norm2(x) after begin: what the experts read */
    float *logits; /* (T, E) gate logits after begin */
} tmoe_cpu_io;
void tmoe_cpu_state_io(void *state, tmoe_cpu_io *io);

#endif
