/* Pieces of the cost model's in-memory part (cost_model.c) that its file format
 * (cost_json.c) uses; the dependency is one-way, file layer on top. Not a public header. */
#ifndef THERMOE_COST_INTERNAL_H
#define THERMOE_COST_INTERNAL_H

#include "thermoe/cost.h"

struct tmoe_cost_model {
    tmoe_cost_meta meta;
    tmoe_cost_entry *entries; /* (n), sorted by (op, expert_type, impl, tokens) */
    int n, cap;
    tmoe_cost_extrap extrap;
    char source[512]; /* file it came from, for messages */
};

/* Check an entry's values (ranges, finiteness, enum bounds). Messages name the field as
 * the file spells it ("latency_ms.median: expected a finite number >= 0, got -1"). */
int tmoe__cost_check_entry(const tmoe_cost_entry *e, tmoe_error *err);
/* Unknown meta: empty strings, NAN numbers, zero shape. */
tmoe_cost_meta tmoe__cost_meta_unknown(void);
void tmoe__cost_set_source(tmoe_cost_model *cm, const char *source);
/* Insert a deep copy; `replaced` (may be NULL) says whether a same-key entry was replaced. */
int tmoe__cost_insert(tmoe_cost_model *cm, const tmoe_cost_entry *e, int *replaced,
                      tmoe_error *err);

#endif
