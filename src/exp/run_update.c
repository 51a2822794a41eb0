/* The router update of a batch (the TTHA adapter's step) on a worker thread: it runs while
 * the next batch is prepared; the next call into the router waits for it, and the batch's
 * row is written then with the update's loss terms. */
#include "exp/runner_internal.h"

static void *update_worker(void *arg) {
    run_ctx *r = arg;
    pthread_mutex_lock(&r->upd_mu);
    for (;;) {
        while (!r->upd_busy && !r->upd_quit) pthread_cond_wait(&r->upd_cv, &r->upd_mu);
        if (r->upd_quit) break;
        pthread_mutex_unlock(&r->upd_mu);
        tmoe_error e = {0};
        tmoe_ttha_record rec;
        int rc = run_router_update(r, &r->upd_obs, &rec, &e);
        pthread_mutex_lock(&r->upd_mu);
        r->upd_rec = rec;
        r->upd_rc = rc;
        r->upd_err = e;
        r->upd_busy = 0;
        pthread_cond_broadcast(&r->upd_cv);
    }
    pthread_mutex_unlock(&r->upd_mu);
    return NULL;
}

int run_update_start(run_ctx *r, tmoe_error *err) {
    if (pthread_mutex_init(&r->upd_mu, NULL) || pthread_cond_init(&r->upd_cv, NULL))
        return tmoe_errorf(err, TMOE_ENOMEM, "cannot create the router update lock");
    if (pthread_create(&r->upd_thread, NULL, update_worker, r))
        return tmoe_errorf(err, TMOE_ENOMEM, "cannot start the router update thread");
    r->upd_started = 1;
    return TMOE_OK;
}

void run_update_stop(run_ctx *r) {
    if (!r->upd_started) return;
    pthread_mutex_lock(&r->upd_mu);
    r->upd_quit = 1;
    pthread_cond_broadcast(&r->upd_cv);
    pthread_mutex_unlock(&r->upd_mu);
    pthread_join(r->upd_thread, NULL);
    pthread_cond_destroy(&r->upd_cv);
    pthread_mutex_destroy(&r->upd_mu);
    r->upd_started = 0;
}

/* Wait for the router update in flight; then write the row it completes. */
int run_update_finish(run_ctx *r, tmoe_error *err) {
    if (!r->upd_started) return TMOE_OK;
    int64_t w0 = tmoe_now_ns();
    pthread_mutex_lock(&r->upd_mu);
    while (r->upd_busy) pthread_cond_wait(&r->upd_cv, &r->upd_mu);
    int rc = r->upd_rc;
    tmoe_ttha_record rec = r->upd_rec;
    if (rc && err) *err = r->upd_err;
    r->upd_rc = 0;
    pthread_mutex_unlock(&r->upd_mu);
    double wait_ms = (double)(tmoe_now_ns() - w0) / 1e6;
    if (rc) return tmoe_error_prefix(err, rc, "router update");
    if (!r->row_pending) return TMOE_OK;
    r->row_pending = 0;
    tmoe_runlog_row *row = &r->row;
    tmoe_runlog_row_dbl(row, TMOE_RL_ROUTER_OVERHEAD_MS, r->row_route_ms + wait_ms);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_POWER_LOSS, rec.power_loss);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_TEMP_LOSS, rec.temp_loss);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_LATENCY_PENALTY, rec.latency_penalty);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_THROUGHPUT_BONUS, rec.throughput_bonus);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_FIDELITY, rec.fidelity);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_TOTAL_LOSS, rec.total);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_LR, rec.lr);
    tmoe_runlog_row_dbl(row, TMOE_RL_TTHA_GRAD_NORM, rec.grad_norm);
    return tmoe_runlog_write(r->log, row, err);
}

void run_update_post(run_ctx *r, const tmoe_route_obs *obs) {
    pthread_mutex_lock(&r->upd_mu);
    r->upd_obs = *obs;
    r->upd_busy = 1;
    pthread_cond_broadcast(&r->upd_cv);
    pthread_mutex_unlock(&r->upd_mu);
}
