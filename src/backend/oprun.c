/* Isolated-op runner: the backend's runner from the registry (registry.c) and shared checks. */
#include "backend/backend_internal.h"

#include <stdlib.h>

struct tmoe_oprun {
    const tmoe_oprun_vt *vt;
    void *st;
};

int tmoe_oprun_create(const tmoe_oprun_spec *spec, tmoe_oprun **out, tmoe_error *err) {
    *out = NULL;
    const tmoe_backend_entry *b = tmoe_backend_entry_of(spec->backend);
    const tmoe_oprun_vt *vt = b ? b->oprun : NULL;
    if (!vt)
        return tmoe_errorf(err, TMOE_ENOTSUP, "no isolated-op runner for backend %s in this build",
                           tmoe_backend_kind_name(spec->backend));
    if (spec->tokens < 1)
        return tmoe_errorf(err, TMOE_EINVAL, "tokens = %d: must be >= 1", spec->tokens);
    if (!spec->whole_expert && spec->op == TMOE_OP_DEQUANT_UNPACK &&
        (!tmoe_etype_is_quant(spec->etype) || spec->impl != TMOE_IMPL_UNFUSED))
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "dequant_unpack runs only for q4/q2 experts, unfused");
    int rc = tmoe_block_config_validate(&spec->block, err);
    if (rc) return rc;
    tmoe_oprun *o = tmoe_calloc(1, sizeof *o, err);
    if (!o) return TMOE_ENOMEM;
    o->vt = vt;
    rc = vt->create(spec, &o->st, err);
    if (rc) {
        free(o);
        return tmoe_error_prefix(err, rc, "preparing %s (%s, %s, %d tokens)",
                                 spec->whole_expert ? "the whole expert" : tmoe_op_name(spec->op),
                                 tmoe_etype_name(spec->etype), tmoe_impl_name(spec->impl),
                                 spec->tokens);
    }
    *out = o;
    return TMOE_OK;
}

void tmoe_oprun_free(tmoe_oprun *o) {
    if (!o) return;
    o->vt->destroy(o->st);
    free(o);
}

int tmoe_oprun_run(tmoe_oprun *o, int calls, double *ms, tmoe_error *err) {
    if (calls < 1) return tmoe_errorf(err, TMOE_EINVAL, "calls = %d: must be >= 1", calls);
    return o->vt->run(o->st, calls, ms, err);
}

double tmoe_oprun_bytes(const tmoe_oprun *o) {
    return o->vt->bytes(o->st);
}
double tmoe_oprun_flops(const tmoe_oprun *o) {
    return o->vt->flops(o->st);
}
int tmoe_oprun_copies(const tmoe_oprun *o) {
    return o->vt->copies(o->st);
}
