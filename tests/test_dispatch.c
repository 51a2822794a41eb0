/* Expert-parallel dispatch plan: placement maps (round robin, file, errors with file:line),
 * random routings on 1..8 ranks (every copy sent once, counts and displacements consistent,
 * the round trip send -> local experts -> return -> combine order, the overlapped schedule's
 * rounds delivering exactly the one-piece exchange both ways), and a whole MoE layer
 * through a loopback all-to-all (memcpy between per-rank buffers) on the CPU expert kernels,
 * bit-identical to the single-device CPU engine. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thermoe/backend.h"
#include "thermoe/ep.h"

static tmoe_rng rng;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static int rnd(int n) {
    return (int)tmoe_rng_below(&rng, (uint32_t)n);
}

/* ---- placement ---------------------------------------------------------------------- */

static void check_placement(const tmoe_placement *pl) {
    int E = pl->num_experts, N = pl->num_devices;
    assert_int_equal(pl->first[0], 0);
    assert_int_equal(pl->first[N], E);
    int seen[TMOE_MAX_EXPERTS] = {0};
    for (int d = 0; d < N; d++)
        for (int i = pl->first[d]; i < pl->first[d + 1]; i++) {
            int e = pl->by_device[i];
            assert_int_equal(pl->device[e], d);
            assert_int_equal(pl->local[e], i - pl->first[d]);
            if (i > pl->first[d]) assert_true(pl->by_device[i - 1] < e); /* ascending ids */
            seen[e]++;
        }
    for (int e = 0; e < E; e++) assert_int_equal(seen[e], 1);
}

static void test_placement_round_robin(void **state) {
    (void)state;
    tmoe_error err = {0};
    for (int N = 1; N <= 8; N++) {
        int E = N + rnd(40);
        tmoe_placement pl;
        ASSERT_OK(tmoe_placement_round_robin(E, N, &pl, &err), &err);
        for (int e = 0; e < E; e++) assert_int_equal(pl.device[e], e % N);
        check_placement(&pl);
    }
    tmoe_placement pl;
    assert_int_equal(tmoe_placement_round_robin(8, 0, &pl, &err), TMOE_EINVAL);
    assert_int_equal(tmoe_placement_round_robin(0, 2, &pl, &err), TMOE_EINVAL);
    tmoe_placement_kind k;
    assert_int_equal(tmoe_placement_kind_parse("file", &k), TMOE_OK);
    assert_int_equal(k, TMOE_PLACE_FILE);
    assert_string_equal(tmoe_placement_kind_name(TMOE_PLACE_ROUND_ROBIN), "round_robin");
    assert_int_not_equal(tmoe_placement_kind_parse("roundrobin", &k), TMOE_OK);
}

static void test_placement_file(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_placement pl, back;
    const char *ok = "# four experts on two devices\n\n3 0\n0 1   # hot expert alone\n1 0\n2\t0\n";
    ASSERT_OK(tmoe_placement_parse(ok, "p.txt", 4, 2, &pl, &err), &err);
    assert_int_equal(pl.device[0], 1);
    assert_int_equal(pl.device[3], 0);
    assert_int_equal(pl.first[1], 3);
    check_placement(&pl);
    /* save -> load round trip of a random placement */
    int32_t dev[TMOE_MAX_EXPERTS];
    for (int e = 0; e < 37; e++) dev[e] = rnd(5);
    ASSERT_OK(tmoe_placement_from_array(dev, 37, 5, &pl, &err), &err);
    const char *path = tu_tmppath("placement.txt");
    ASSERT_OK(tmoe_placement_save(&pl, path, &err), &err);
    ASSERT_OK(tmoe_placement_load(path, 37, 5, &back, &err), &err);
    assert_memory_equal(back.device, pl.device, sizeof(int32_t) * 37);
    check_placement(&back);
    /* the save goes through a temporary file renamed over the path: none is left behind, and
     * a path that is a directory is refused with nothing written */
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    const char *dir = tu_tmppath("placement_dir");
    assert_true(mkdir(dir, 0700) == 0 || errno == EEXIST);
    memset(&err, 0, sizeof err);
    assert_int_equal(tmoe_placement_save(&pl, dir, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "refusing to replace"));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    rmdir(dir);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"0 0\n1 1\n1 0\n", "p.txt:3: expert 1 placed twice (first at line 2)"},
        {"0 0\n1 2\n", "p.txt:2: device 2 out of range"},
        {"0 0\n\n4 1\n", "p.txt:3: expert 4 out of range"},
        {"0 0\n1 1\n2 0\n", "expert 3 is not placed"},
        {"0 0\n1 x\n", "p.txt:2: expected \"expert device\""},
        {"0 0 0\n", "p.txt:1: expected \"expert device\", got extra text"},
        {"0\n", "p.txt:1: expected \"expert device\""},
        {"-1 0\n", "p.txt:1: expert -1 out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(tmoe_placement_parse(bad[i].text, "p.txt", 4, 2, &pl, &err), TMOE_EFORMAT);
        if (!strstr(err.msg, bad[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].want);
    }
    assert_int_equal(tmoe_placement_load(tu_tmppath("absent.txt"), 4, 2, &pl, &err), TMOE_EIO);
    assert_non_null(strstr(err.msg, "absent.txt"));
}

/* ---- loopback all-to-all ------------------------------------------------------------ */

typedef struct rank_io {
    tmoe_dispatch *d;
    int T;
    int32_t *idx;  /* (T, k) */
    uint8_t *send; /* (T*k, row) */
    uint8_t *recv; /* (rows, row) */
    uint8_t *grp;  /* (rows, row) */
    uint8_t *ret;  /* (rows, row2) */
    uint8_t *back; /* (T*k, row2) */
} rank_io;

/* Count exchange: rank p's recv counts (N, L_p) row s = rank s's expert_counts slice for p.
 * With payloads: what the backends exchange (tmoe_dispatch_pack_payload: the slice and the
 * sender's copies), planned with tmoe_dispatch_plan_recv_payload, which also sums the
 * copies of every rank. */
static void exchange_payloads(rank_io *r, int N, const tmoe_placement *pl) {
    tmoe_error err = {0};
    int32_t *pay[8];
    long want = 0;
    for (int s = 0; s < N; s++) {
        pay[s] = xmalloc(sizeof(int32_t) * (size_t)(pl->num_experts + N));
        tmoe_dispatch_pack_payload(r[s].d, pay[s]);
        want += (long)r[s].T * tmoe_dispatch_send_plan(r[s].d).top_k;
    }
    for (int p = 0; p < N; p++) {
        int L = pl->first[p + 1] - pl->first[p];
        int32_t *row = xmalloc(sizeof(int32_t) * (size_t)N * (L + 1));
        for (int s = 0; s < N; s++)
            memcpy(row + (size_t)s * (L + 1), pay[s] + tmoe_dispatch_payload_offset(pl, p),
                   sizeof(int32_t) * (size_t)(L + 1));
        long copies = -1;
        ASSERT_OK(tmoe_dispatch_plan_recv_payload(r[p].d, row, &copies, &err), &err);
        assert_int_equal(copies, want);
        free(row);
    }
    for (int s = 0; s < N; s++) free(pay[s]);
}

static void exchange_counts(rank_io *r, int N, const tmoe_placement *pl) {
    tmoe_error err = {0};
    for (int p = 0; p < N; p++) {
        int L = pl->first[p + 1] - pl->first[p];
        int32_t *cnt = xmalloc(sizeof(int32_t) * (size_t)N * (L ? L : 1));
        for (int s = 0; s < N; s++) {
            tmoe_dispatch_send sp = tmoe_dispatch_send_plan(r[s].d);
            memcpy(cnt + (size_t)s * L, sp.expert_counts + pl->first[p],
                   sizeof(int32_t) * (size_t)L);
        }
        ASSERT_OK(tmoe_dispatch_plan_recv(r[p].d, cnt, &err), &err);
        free(cnt);
    }
}

/* What ncclSend/ncclRecv grouped do: forward moves send rows of every source to the receive
 * buffers; reverse moves the expert outputs back along the same pairs. */
static void alltoall(rank_io *r, int N, size_t row, int reverse) {
    for (int s = 0; s < N; s++) {
        tmoe_dispatch_send sp = tmoe_dispatch_send_plan(r[s].d);
        for (int p = 0; p < N; p++) {
            tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(r[p].d);
            assert_int_equal(sp.counts[p], rp.counts[s]);
            size_t n = (size_t)sp.counts[p] * row;
            if (!n) continue;
            if (!reverse)
                memcpy(r[p].recv + (size_t)rp.displs[s] * row,
                       r[s].send + (size_t)sp.displs[p] * row, n);
            else
                memcpy(r[s].back + (size_t)sp.displs[p] * row,
                       r[p].ret + (size_t)rp.displs[s] * row, n);
        }
    }
}

/* The overlapped schedule: round j moves, between every pair, the rows for the receiving
 * rank's local expert j (tmoe_dispatch_send_slice / recv_slice). Run the rounds into fresh
 * poisoned buffers and check they deliver exactly what the one-piece exchange did (forward:
 * the receive buffers; reverse: the returned rows), every row once. */
static void rounds_match(rank_io *r, int N, const tmoe_placement *pl, size_t row, int reverse) {
    int maxL = 0;
    for (int p = 0; p < N; p++)
        if (pl->first[p + 1] - pl->first[p] > maxL) maxL = pl->first[p + 1] - pl->first[p];
    uint8_t *got[8];
    size_t n_of[8];
    for (int p = 0; p < N; p++) {
        n_of[p] = (size_t)(reverse ? tmoe_dispatch_send_plan(r[p].d).tokens *
                                         tmoe_dispatch_send_plan(r[p].d).top_k
                                   : tmoe_dispatch_recv_plan(r[p].d).rows) *
                  row;
        got[p] = xmalloc(n_of[p] + 1);
        memset(got[p], 0xA5, n_of[p] + 1);
    }
    for (int j = 0; j < maxL + 1; j++) /* one round past the last: nothing moves */
        for (int s = 0; s < N; s++)
            for (int q = 0; q < N; q++) {
                int32_t so, ns, ro, nr;
                tmoe_dispatch_send_slice(r[s].d, q, j, &so, &ns);
                tmoe_dispatch_recv_slice(r[q].d, s, j, &ro, &nr);
                assert_int_equal(ns, nr);
                if (j >= maxL) assert_int_equal(ns, 0);
                if (!ns) continue;
                if (!reverse)
                    memcpy(got[q] + (size_t)ro * row, r[s].send + (size_t)so * row,
                           (size_t)ns * row);
                else
                    memcpy(got[s] + (size_t)so * row, r[q].ret + (size_t)ro * row,
                           (size_t)ns * row);
            }
    for (int p = 0; p < N; p++) {
        const uint8_t *want = reverse ? r[p].back : r[p].recv;
        assert_memory_equal(got[p], want, n_of[p]);
        assert_int_equal(got[p][n_of[p]], 0xA5); /* nothing past the end */
        free(got[p]);
    }
}

/* Random routing: k distinct experts per token (or repeats when allow_dup). */
static void random_routing(int32_t *idx, int T, int k, int E, int allow_dup) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, again;
            do {
                e = rnd(E);
                again = 0;
                for (int i = 0; i < j && !allow_dup; i++) again |= idx[t * k + i] == e;
            } while (again);
            idx[t * k + j] = e;
        }
}

/* Payload of a copy: (source rank, copy index, expert it was routed to). */
typedef struct {
    int32_t rank, copy, expert;
} tag;

static void test_plan_random(void **state) {
    (void)state;
    tmoe_error err = {0};
    for (int trial = 0; trial < 60; trial++) {
        int N = 1 + trial % 8;
        int E = N + rnd(48), k = 1 + rnd(E < 6 ? E : 6), maxT = 1 + rnd(40);
        tmoe_placement pl;
        if (trial % 2) {
            ASSERT_OK(tmoe_placement_round_robin(E, N, &pl, &err), &err);
        } else {
            int32_t dev[TMOE_MAX_EXPERTS];
            for (int e = 0; e < E; e++) dev[e] = rnd(N); /* some devices may hold none */
            ASSERT_OK(tmoe_placement_from_array(dev, E, N, &pl, &err), &err);
        }
        rank_io r[8];
        memset(r, 0, sizeof r);
        for (int s = 0; s < N; s++) {
            ASSERT_OK(tmoe_dispatch_create(&pl, s, maxT, k, &r[s].d, &err), &err);
            r[s].T = rnd(4) == 0 ? 0 : 1 + rnd(maxT);
            r[s].idx = xmalloc(sizeof(int32_t) * (size_t)r[s].T * k);
            random_routing(r[s].idx, r[s].T, k, E, trial % 5 == 4);
            ASSERT_OK(tmoe_dispatch_plan_send(r[s].d, r[s].idx, r[s].T, &err), &err);
            tmoe_dispatch_send sp = tmoe_dispatch_send_plan(r[s].d);
            int C = r[s].T * k;
            /* counts and displacements */
            assert_int_equal(sp.displs[0], 0);
            assert_int_equal(sp.displs[N], C);
            for (int p = 0; p < N; p++)
                assert_int_equal(sp.displs[p + 1] - sp.displs[p], sp.counts[p]);
            /* every copy exactly once, at a row of the device of its expert, ordered by
             * (local expert, copy index) within the device */
            int *hits = calloc((size_t)C + 1, sizeof(int));
            assert_non_null(hits);
            for (int p = 0; p < N; p++)
                for (int i = sp.displs[p]; i < sp.displs[p + 1]; i++) {
                    int c = sp.src[i];
                    assert_true(c >= 0 && c < C);
                    hits[c]++;
                    assert_int_equal(sp.pos[c], i);
                    int e = r[s].idx[c];
                    assert_int_equal(pl.device[e], p);
                    if (i > sp.displs[p]) {
                        int c0 = sp.src[i - 1], e0 = r[s].idx[c0];
                        assert_true(pl.local[e0] < pl.local[e] || (e0 == e && c0 < c));
                    }
                }
            for (int c = 0; c < C; c++) assert_int_equal(hits[c], 1);
            free(hits);
            for (int i = 0, total = 0; i < E; i++) {
                total += sp.expert_counts[i];
                if (i + 1 == E) assert_int_equal(total, C);
            }
        }
        if (trial % 3 == 2)
            exchange_payloads(r, N, &pl);
        else
            exchange_counts(r, N, &pl);
        size_t row = sizeof(tag);
        for (int s = 0; s < N; s++) {
            tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(r[s].d);
            assert_int_equal(rp.displs[0], 0);
            assert_int_equal(rp.displs[N], rp.rows);
            assert_int_equal(rp.expert_offsets[rp.num_local], rp.rows);
            for (int l = 0; l < rp.num_local; l++) {
                assert_int_equal(rp.experts[l], pl.by_device[pl.first[s] + l]);
                assert_int_equal(rp.expert_offsets[l + 1] - rp.expert_offsets[l],
                                 rp.expert_counts[l]);
            }
            for (int i = 0; i < rp.rows; i++)
                assert_int_equal(rp.from_grouped[rp.to_grouped[i]], i);
            /* payload: which copy each send row is */
            tmoe_dispatch_send sp = tmoe_dispatch_send_plan(r[s].d);
            tag *x = xmalloc(sizeof(tag) * (size_t)r[s].T * k);
            for (int c = 0; c < r[s].T * k; c++) x[c] = (tag){s, c, r[s].idx[c]};
            r[s].send = xmalloc(row * (size_t)r[s].T * k);
            /* the payload is per copy, not per token row: place it by src directly */
            for (int i = 0; i < r[s].T * k; i++) memcpy(r[s].send + i * row, &x[sp.src[i]], row);
            free(x);
            r[s].recv = xmalloc(row * (size_t)rp.rows);
            r[s].grp = xmalloc(row * (size_t)rp.rows);
            r[s].ret = xmalloc(row * (size_t)rp.rows);
            r[s].back = xmalloc(row * (size_t)r[s].T * k);
        }
        alltoall(r, N, row, 0);
        rounds_match(r, N, &pl, row, 0);
        for (int p = 0; p < N; p++) {
            tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(r[p].d);
            tmoe_dispatch_group(r[p].d, r[p].recv, row, r[p].grp);
            const tag *g = (const tag *)r[p].grp;
            /* each local expert's block holds only its copies, in (source, token, slot) order */
            for (int l = 0; l < rp.num_local; l++)
                for (int i = rp.expert_offsets[l]; i < rp.expert_offsets[l + 1]; i++) {
                    assert_int_equal(g[i].expert, rp.experts[l]);
                    if (i > rp.expert_offsets[l])
                        assert_true(g[i - 1].rank < g[i].rank ||
                                    (g[i - 1].rank == g[i].rank && g[i - 1].copy < g[i].copy));
                }
            /* "expert compute": mark the row with the rank that ran it */
            tag *gm = (tag *)r[p].grp;
            for (int i = 0; i < rp.rows; i++) gm[i].expert += 1000 * (p + 1);
            tmoe_dispatch_ungroup(r[p].d, r[p].grp, row, r[p].ret);
        }
        alltoall(r, N, row, 1);
        rounds_match(r, N, &pl, row, 1);
        for (int s = 0; s < N; s++) {
            tmoe_dispatch_send sp = tmoe_dispatch_send_plan(r[s].d);
            const tag *b = (const tag *)r[s].back;
            for (int c = 0; c < r[s].T * k; c++) {
                const tag *t = &b[sp.pos[c]];
                assert_int_equal(t->rank, s);
                assert_int_equal(t->copy, c);
                int e = r[s].idx[c];
                assert_int_equal(t->expert, e + 1000 * (pl.device[e] + 1));
            }
        }
        /* one rank: grouped order is the single-device permute order */
        if (N == 1) {
            int C = r[0].T * k;
            int32_t counts[TMOE_MAX_EXPERTS], offsets[TMOE_MAX_EXPERTS + 1];
            int32_t *src = xmalloc(sizeof(int32_t) * (size_t)C),
                    *dst = xmalloc(sizeof(int32_t) * (size_t)C);
            tmoe_cpu_permute(r[0].idx, r[0].T, k, E, counts, offsets, src, dst);
            const tag *g = (const tag *)r[0].grp;
            for (int i = 0; i < C; i++) assert_int_equal(g[i].copy, src[i]);
            free(src);
            free(dst);
        }
        for (int s = 0; s < N; s++) {
            tmoe_dispatch_free(r[s].d);
            free(r[s].idx);
            free(r[s].send);
            free(r[s].recv);
            free(r[s].grp);
            free(r[s].ret);
            free(r[s].back);
        }
    }
}

static void test_plan_errors(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_placement pl;
    tmoe_dispatch *d = NULL;
    ASSERT_OK(tmoe_placement_round_robin(8, 2, &pl, &err), &err);
    assert_int_equal(tmoe_dispatch_create(&pl, 2, 4, 2, &d, &err), TMOE_EINVAL);
    assert_null(d);
    assert_int_equal(tmoe_dispatch_create(&pl, 0, 4, 9, &d, &err), TMOE_EINVAL);
    ASSERT_OK(tmoe_dispatch_create(&pl, 1, 4, 2, &d, &err), &err);
    int32_t idx[10] = {0, 1, 2, 3, 4, 5, 6, 8, 0, 0};
    assert_int_equal(tmoe_dispatch_plan_send(d, idx, 5, &err), TMOE_EINVAL); /* T > max */
    assert_int_equal(tmoe_dispatch_plan_send(d, idx, 4, &err), TMOE_EINVAL); /* expert 8 */
    assert_non_null(strstr(err.msg, "token 3 slot 1"));
    ASSERT_OK(tmoe_dispatch_plan_send(d, idx, 3, &err), &err);
    int32_t cnt[2 * 4] = {1, 1, 1, 1, 9, 0, 0, 0}; /* source 1 sends 9 > 4 x 2 rows */
    assert_int_equal(tmoe_dispatch_plan_recv(d, cnt, &err), TMOE_EINVAL);
    cnt[4] = -1;
    assert_int_equal(tmoe_dispatch_plan_recv(d, cnt, &err), TMOE_EINVAL);
    tmoe_dispatch_free(d);
    tmoe_dispatch_free(NULL);
}

/* ---- a whole MoE layer through the loopback ---------------------------------------- */

static void layer_case(tmoe_etype et, tmoe_impl impl, int N, int random_place) {
    tmoe_error err = {0};
    tmoe_block_config bc = tmoe_block_config_default();
    bc.d_model = 64;
    bc.n_heads = 4;
    bc.d_ff = 128;
    bc.num_experts = 8 + rnd(9);
    bc.top_k = 1 + rnd(4);
    bc.group_size = 32;
    bc.expert_type = et;
    bc.seq_len = 64;
    bc.seed = tmoe_rng_u64(&rng);
    int D = bc.d_model, E = bc.num_experts, k = bc.top_k, T = 1 + rnd(48);
    tmoe_block *blk = NULL;
    ASSERT_OK(tmoe_block_create(&bc, &blk, &err), &err);
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = T;
    ec.impl = impl;
    tmoe_engine *eng = NULL;
    ASSERT_OK(tmoe_engine_create(blk, &ec, &eng, &err), &err);
    float *x = xmalloc(sizeof(float) * (size_t)T * D),
          *yref = xmalloc(sizeof(float) * (size_t)T * D);
    float *y = xmalloc(sizeof(float) * (size_t)T * D), *w = xmalloc(sizeof(float) * (size_t)T * k);
    int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)T * k);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] = (float)tmoe_rng_normal(&rng);
    tmoe_moe_metrics m = {.topk_idx = idx, .topk_w = w};
    ASSERT_OK(tmoe_engine_forward(eng, x, T, 1, NULL, yref, &m, &err), &err);

    /* the same routing, distributed: the layer input is norm2(x) in fp16 */
    tmoe_f16 *h16 = xmalloc(sizeof(tmoe_f16) * (size_t)T * D);
    tmoe_cpu_rmsnorm(x, blk->norm2, T, D, bc.norm_eps, h16);
    tmoe_placement pl;
    if (random_place) {
        int32_t dev[TMOE_MAX_EXPERTS];
        for (int e = 0; e < E; e++) dev[e] = rnd(N);
        ASSERT_OK(tmoe_placement_from_array(dev, E, N, &pl, &err), &err);
    } else {
        ASSERT_OK(tmoe_placement_round_robin(E, N, &pl, &err), &err);
    }
    /* tokens sharded over the ranks in contiguous pieces (some may be empty) */
    int first[9];
    first[0] = 0;
    for (int s = 1; s < N; s++) first[s] = first[s - 1] + rnd(T - first[s - 1] + 1);
    first[N] = T;
    rank_io r[8];
    memset(r, 0, sizeof r);
    size_t in_row = sizeof(tmoe_f16) * (size_t)D, out_row = sizeof(float) * (size_t)D;
    for (int s = 0; s < N; s++) {
        r[s].T = first[s + 1] - first[s];
        ASSERT_OK(tmoe_dispatch_create(&pl, s, T, k, &r[s].d, &err), &err);
        ASSERT_OK(tmoe_dispatch_plan_send(r[s].d, idx + (size_t)first[s] * k, r[s].T, &err), &err);
        r[s].send = xmalloc(in_row * (size_t)r[s].T * k);
        tmoe_dispatch_pack(r[s].d, h16 + (size_t)first[s] * D, in_row, r[s].send);
    }
    exchange_counts(r, N, &pl);
    for (int s = 0; s < N; s++) {
        tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(r[s].d);
        r[s].recv = xmalloc(in_row * (size_t)rp.rows);
        r[s].grp = xmalloc(in_row * (size_t)rp.rows);
    }
    alltoall(r, N, in_row, 0);
    for (int p = 0; p < N; p++) {
        tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(r[p].d);
        tmoe_dispatch_group(r[p].d, r[p].recv, in_row, r[p].grp);
        float *ye = xmalloc(out_row * (size_t)rp.rows);
        for (int l = 0; l < rp.num_local; l++) {
            int n = rp.expert_counts[l];
            if (!n) continue;
            const tmoe_expert *ex = &blk->moe.experts[rp.experts[l]];
            void *scratch = xmalloc(tmoe_cpu_expert_scratch_bytes(ex, n, impl));
            tmoe_cpu_expert_forward(ex, impl,
                                    (const tmoe_f16 *)r[p].grp + (size_t)rp.expert_offsets[l] * D,
                                    n, ye + (size_t)rp.expert_offsets[l] * D, scratch, NULL);
            free(scratch);
        }
        r[p].ret = xmalloc(out_row * (size_t)rp.rows);
        tmoe_dispatch_ungroup(r[p].d, ye, out_row, r[p].ret);
        free(ye);
    }
    for (int s = 0; s < N; s++) r[s].back = xmalloc(out_row * (size_t)r[s].T * k);
    alltoall(r, N, out_row, 1);
    for (int s = 0; s < N; s++) {
        tmoe_dispatch_send sp = tmoe_dispatch_send_plan(r[s].d);
        float *ys = y + (size_t)first[s] * D;
        if (r[s].T)
            tmoe_cpu_combine((const float *)r[s].back, sp.pos, w + (size_t)first[s] * k, r[s].T, k,
                             D, ys);
        for (size_t i = 0; i < (size_t)r[s].T * D; i++) ys[i] += x[(size_t)first[s] * D + i];
    }
    size_t nd = 0;
    for (size_t i = 0; i < (size_t)T * D; i++) nd += memcmp(&y[i], &yref[i], sizeof(float)) != 0;
    if (nd)
        fail_msg("%s/%s, %d ranks, E %d, k %d, T %d: %zu of %zu outputs differ from the "
                 "single-device engine",
                 tmoe_etype_name(et), tmoe_impl_name(impl), N, E, k, T, nd, (size_t)T * D);
    for (int s = 0; s < N; s++) {
        tmoe_dispatch_free(r[s].d);
        free(r[s].send);
        free(r[s].recv);
        free(r[s].grp);
        free(r[s].ret);
        free(r[s].back);
    }
    free(h16);
    free(x);
    free(yref);
    free(y);
    free(w);
    free(idx);
    tmoe_engine_free(eng);
    tmoe_block_free(blk);
}

static void test_layer_matches_single_device(void **state) {
    (void)state;
    for (int N = 1; N <= 8; N++) {
        layer_case(TMOE_ET_FP16, TMOE_IMPL_FUSED, N, N % 2);
        layer_case(TMOE_ET_Q4, N % 2 ? TMOE_IMPL_FUSED : TMOE_IMPL_UNFUSED, N, (N + 1) % 2);
    }
}

int main(void) {
    tmoe_rng_seed(&rng, tu_seed());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement_round_robin),
        cmocka_unit_test(test_placement_file),
        cmocka_unit_test(test_plan_random),
        cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_layer_matches_single_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
