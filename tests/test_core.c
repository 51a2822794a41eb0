/* Core: fp16 / bf16 conversion (exhaustive and crafted cases), the RNG, errors, arena, buffer
 * tables, file helpers, percentiles and the comparator of doubles. */
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The value of an fp16 bit pattern by the IEEE definition, in double. */
static double f16_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_f16_exhaustive(void **state) {
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = tmoe_f16_to_f32(h);
        double want = f16_value(h);
        if (isnan(want)) {
            assert_true(isnan(f));
            uint16_t back = tmoe_f32_to_f16(f);
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
            assert_int_equal(back & 0x8000, h & 0x8000);
            continue;
        }
        if ((double)f != want) fail_msg("fp16 0x%04x -> %.10g, want %.10g", h, (double)f, want);
        assert_int_equal(signbit(f) != 0, (h >> 15) != 0);
        uint16_t back = tmoe_f32_to_f16(f);
        if (back != h) fail_msg("fp16 0x%04x -> %g -> 0x%04x", h, (double)f, back);
        assert_true(tmoe_f16_table()[h] == f);
    }
}

static void test_f16_rounding(void **state) {
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {1.0f, 0x3c00},
        {1.0f + 0x1p-11f, 0x3c00},            /* tie, even is 1.0 */
        {1.0f + 3 * 0x1p-11f, 0x3c02},        /* tie, even is 1 + 2^-9 */
        {1.0f + 0x1p-11f + 0x1p-23f, 0x3c01}, /* just above the tie */
        {1.0f + 0x1p-11f - 0x1p-23f, 0x3c00}, /* just below */
        {-1.0f - 3 * 0x1p-11f, 0xbc02},
        {65504.0f, 0x7bff}, /* largest finite */
        {65519.0f, 0x7bff}, /* below the 65520 midpoint */
        {65520.0f, 0x7c00}, /* tie with 2^16: even is inf */
        {1e6f, 0x7c00},
        {-1e6f, 0xfc00},
        {FLT_MAX, 0x7c00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-24f, 0x0001},            /* smallest subnormal */
        {0x1p-25f, 0x0000},            /* tie with 0: even is 0 */
        {0x1p-25f + 0x1p-40f, 0x0001}, /* just above it */
        {1.5f * 0x1p-24f, 0x0002},     /* subnormal tie 1|2 -> 2 */
        {2.5f * 0x1p-24f, 0x0002},     /* subnormal tie 2|3 -> 2 */
        {3.5f * 0x1p-24f, 0x0004},
        {1023 * 0x1p-24f, 0x03ff},     /* largest subnormal */
        {0x1p-14f, 0x0400},            /* smallest normal */
        {0x1p-14f - 0x1p-26f, 0x0400}, /* rounds up from subnormal into normal */
        {1e-40f, 0x0000},              /* fp32 subnormal -> 0 */
        {-1e-40f, 0x8000},
        {-0.0f, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t got = tmoe_f32_to_f16(cases[i].f);
        if (got != cases[i].h)
            fail_msg("case %zu: fp16(%.12g) = 0x%04x, want 0x%04x", i, (double)cases[i].f, got,
                     cases[i].h);
    }
}

/* Random fp32 bit patterns over the whole fp16 range vs nearest-even in double. */
static void test_f16_random_vs_reference(void **state) {
    (void)state;
    static double pos[31 * 1024 + 1]; /* every non-negative finite fp16, then 2^16 */
    int n = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) pos[n++] = f16_value((uint16_t)h);
    pos[n++] = 65536.0;
    qsort(pos, (size_t)n, sizeof *pos, tmoe_cmp_double);
    tmoe_rng r;
    tmoe_rng_seed(&r, 99);
    for (int it = 0; it < 1000000; it++) {
        /* exponents from 2^-30 to 2^17, any mantissa, any sign */
        uint32_t e = 97 + tmoe_rng_below(&r, 48), m = (uint32_t)tmoe_rng_u64(&r) & 0x7fffff;
        uint32_t s = (uint32_t)tmoe_rng_below(&r, 2) << 31;
        float f = from_bits(s | e << 23 | m);
        double a = fabs((double)f);
        int lo = 0, hi = n - 1; /* largest index with pos[lo] <= a */
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (pos[mid] <= a)
                lo = mid;
            else
                hi = mid - 1;
        }
        int pick = lo;
        if (lo + 1 < n) {
            double dl = a - pos[lo], du = pos[lo + 1] - a;
            if (du < dl || (du == dl && ((lo + 1) & 1) == 0)) pick = lo + 1;
        }
        uint16_t want = (uint16_t)(pick == n - 1 ? 0x7c00 : pick);
        if (s) want |= 0x8000;
        uint16_t got = tmoe_f32_to_f16(f);
        if (got != want)
            fail_msg("fp16(%.12g [0x%08x]) = 0x%04x, want 0x%04x", (double)f, bits(f), got, want);
    }
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        float f = tmoe_bf16_to_f32((uint16_t)i);
        assert_int_equal(bits(f), i << 16);
        uint16_t back = tmoe_f32_to_bf16(f);
        if (isnan(f))
            assert_true((back & 0x7f80) == 0x7f80 && (back & 0x7f) != 0);
        else
            assert_int_equal(back, i);
    }
    assert_int_equal(tmoe_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);            /* tie -> even */
    assert_int_equal(tmoe_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);        /* tie -> even */
    assert_int_equal(tmoe_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above */
    assert_int_equal(tmoe_f32_to_bf16(FLT_MAX), 0x7f80);                   /* overflow -> inf */
    assert_int_equal(tmoe_f32_to_bf16(-FLT_MAX), 0xff80);
    assert_int_equal(tmoe_f32_to_bf16(from_bits(0x00000001)), 0x0000); /* tiny -> 0 */
    assert_int_equal(tmoe_f32_to_bf16(from_bits(0x00018000)), 0x0002); /* subnormal tie */
    assert_true(isnan(tmoe_bf16_to_f32(tmoe_f32_to_bf16(from_bits(0x7f800001))))); /* NaN kept */
}

/* An independent splitmix64 + xoshiro256** from the published reference code. */
static uint64_t ref_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_rng_reference(void **state) {
    (void)state;
    uint64_t x = 0;
    assert_true(ref_splitmix(&x) == 0xe220a8397b1dcdafull); /* published first value, seed 0 */
    tmoe_rng r;
    tmoe_rng_seed(&r, 0);
    assert_true(r.s[0] == 0xe220a8397b1dcdafull);
    /* known first outputs for seed 42 (regression: they must never change) */
    tmoe_rng_seed(&r, 42);
    static const uint64_t want[4] = {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull,
                                     0xae17533239e499a1ull, 0xecb8ad4703b360a1ull};
    for (int i = 0; i < 4; i++) {
        uint64_t got = tmoe_rng_u64(&r);
        if (got != want[i])
            fail_msg("seed 42 output %d: 0x%016llx, want 0x%016llx", i, (unsigned long long)got,
                     (unsigned long long)want[i]);
    }
}

static void test_rng_properties(void **state) {
    (void)state;
    tmoe_rng a, b;
    tmoe_rng_seed(&a, 7);
    tmoe_rng_seed(&b, 7);
    for (int i = 0; i < 1000; i++) assert_true(tmoe_rng_u64(&a) == tmoe_rng_u64(&b));
    /* streams: same (seed, stream) same sequence; different streams look independent */
    tmoe_rng s0, s1, s0b;
    tmoe_rng_seed_stream(&s0, 7, 0);
    tmoe_rng_seed_stream(&s1, 7, 1);
    tmoe_rng_seed_stream(&s0b, 7, 0);
    long ones = 0;
    int equal = 0;
    for (int i = 0; i < 4096; i++) {
        uint64_t u = tmoe_rng_u64(&s0), v = tmoe_rng_u64(&s1);
        assert_true(u == tmoe_rng_u64(&s0b));
        equal += u == v;
        ones += __builtin_popcountll(u ^ v);
    }
    assert_int_equal(equal, 0);
    double frac = (double)ones / (4096.0 * 64); /* 0.5 +- 0.0012 (1 sigma) if independent */
    assert_true(fabs(frac - 0.5) < 0.01);
    /* ranges */
    for (int i = 0; i < 100000; i++) {
        double u = tmoe_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        float v = tmoe_rng_uniform_sym(&a, 0.25f);
        assert_true(v >= -0.25f && v < 0.25f);
        assert_true(tmoe_rng_below(&a, 7) < 7);
    }
}

static void test_errors_and_arena(void **state) {
    (void)state;
    tmoe_error err = {0};
    assert_int_equal(tmoe_errorf(&err, TMOE_EFORMAT, "x = %d", 3), TMOE_EFORMAT);
    assert_string_equal(err.msg, "x = 3");
    tmoe_error_prefix(&err, TMOE_EIO, "file %s", "a.st");
    assert_string_equal(err.msg, "file a.st: x = 3");
    assert_int_equal(err.code, TMOE_EFORMAT);
    assert_int_equal(tmoe_errorf(NULL, TMOE_EIO, "ignored"), TMOE_EIO);
    tmoe_arena a;
    ASSERT_OK(tmoe_arena_init(&a, 1000, &err), &err);
    void *p = tmoe_arena_alloc(&a, 100), *q = tmoe_arena_alloc(&a, 100);
    assert_non_null(p);
    assert_int_equal((uintptr_t)q % 64, 0);
    assert_null(tmoe_arena_alloc(&a, 1000));
    tmoe_arena_reset(&a);
    assert_ptr_equal(tmoe_arena_alloc(&a, 10), p);
    tmoe_arena_free(&a);
    tmoe_arena_free(NULL);
    int64_t shape[2] = {3, 5};
    tmoe_tensor t = tmoe_tensor_make(TMOE_Q4, NULL, 2, shape);
    assert_int_equal(tmoe_tensor_numel(&t), 15);
    assert_int_equal(tmoe_tensor_nbytes(&t), 8);
}

/* Buffer tables: every buffer aligned, in table order, none overlapping, all inside the total;
 * a zero-byte buffer takes no room; a total that cannot fit a size_t is SIZE_MAX. */
static void test_buffer_table(void **state) {
    (void)state;
    float *x = NULL, *y = NULL;
    int32_t *idx = NULL;
    tmoe_f16 *h = NULL;
    void *none = NULL, *tail = NULL;
    const tmoe_buf bufs[] = {
        TMOE_BUF(x, 100 * 4), TMOE_BUF(h, 3 * 2), TMOE_BUF(none, 0),
        TMOE_BUF(idx, 256),   TMOE_BUF(y, 1),     TMOE_BUF(tail, 257),
    };
    const int n = (int)(sizeof bufs / sizeof *bufs);
    assert_string_equal(bufs[0].name, "x");
    for (size_t align = 1; align <= 256; align *= 4) {
        size_t total = tmoe_bufs_total(bufs, n, align), want = 0;
        for (int i = 0; i < n; i++) want += (bufs[i].bytes + align - 1) / align * align;
        assert_int_equal(total, want);
        void *mem = NULL;
        assert_int_equal(posix_memalign(&mem, 256, total), 0);
        uint8_t *base = mem;
        tmoe_bufs_carve(bufs, n, base, align);
        assert_ptr_equal(x, base);
        for (int i = 0; i < n; i++) {
            uint8_t *p = *bufs[i].slot;
            assert_int_equal((uintptr_t)p % align, 0);
            assert_true(p >= base && p + bufs[i].bytes <= base + total);
            if (i > 0) { /* after the previous buffer's end: in order, no overlap */
                uint8_t *q = *bufs[i - 1].slot;
                assert_true(p >= q + bufs[i - 1].bytes);
            }
        }
        assert_ptr_equal(none, idx); /* zero bytes: the next buffer starts where it does */
        memset(base, 0, total);      /* the whole of it is addressable (ASan checks) */
        free(base);
    }
    assert_int_equal(tmoe_bufs_total(bufs, 0, 64), 0);
    const tmoe_buf huge[] = {TMOE_BUF(x, SIZE_MAX / 2 + 1), TMOE_BUF(y, SIZE_MAX / 2 + 1)};
    assert_true(tmoe_bufs_total(huge, 2, 64) == SIZE_MAX);
    const tmoe_buf edge[] = {TMOE_BUF(x, SIZE_MAX - 10)};
    assert_true(tmoe_bufs_total(edge, 1, 64) == SIZE_MAX);
}

/* File helpers: special files refused before blocking, size limits, whole-or-nothing writes. */
/* Type-7 percentiles against known values: x = [15, 20, 35, 40, 50] (the textbook example);
 * numpy.percentile(x, p) for p = 0, 5, 30, 40, 50, 75, 90, 100 gives
 * 15, 16, 23, 29, 35, 40, 46, 50. */
static void test_percentile(void **state) {
    (void)state;
    const double x[] = {15, 20, 35, 40, 50};
    const double p[] = {0, 5, 30, 40, 50, 75, 90, 100};
    const double want[] = {15, 16, 23, 29, 35, 40, 46, 50};
    for (int i = 0; i < 8; i++) {
        double got = tmoe_percentile_sorted(x, 5, p[i]);
        if (!(fabs(got - want[i]) <= 1e-12 * want[i]))
            fail_msg("percentile %g of [15 20 35 40 50]: got %.17g, want %g", p[i], got, want[i]);
    }
    for (double q = 0; q <= 100; q += 12.5)
        assert_true(tmoe_percentile_sorted(x + 2, 1, q) == 35.0); /* one value: itself */
    const double two[] = {-1.0, 3.0};
    assert_true(tmoe_percentile_sorted(two, 2, 50.0) == 1.0);
    assert_true(tmoe_percentile_sorted(two, 2, 25.0) == 0.0);
}

/* The comparator sorts ascending, -0 == +0, infinities in place, NaNs last. */
static void test_cmp_double(void **state) {
    (void)state;
    double v[] = {2.0, NAN, -INFINITY, 0.0, INFINITY, -1.5, NAN, -0.0, 1e-300};
    const int n = (int)(sizeof v / sizeof *v);
    qsort(v, (size_t)n, sizeof *v, tmoe_cmp_double);
    const double want[] = {-INFINITY, -1.5, 0.0, 0.0, 1e-300, 2.0, INFINITY};
    for (int i = 0; i < 7; i++)
        if (v[i] != want[i]) fail_msg("sorted[%d] = %g, want %g", i, v[i], want[i]);
    assert_true(isnan(v[7]) && isnan(v[8]));
    double a = 1.0, b = 2.0, z = 0.0, nz = -0.0, nan = NAN;
    assert_true(tmoe_cmp_double(&a, &b) < 0 && tmoe_cmp_double(&b, &a) > 0);
    assert_int_equal(tmoe_cmp_double(&a, &a), 0);
    assert_int_equal(tmoe_cmp_double(&z, &nz), 0);
    assert_true(tmoe_cmp_double(&nan, &b) > 0 && tmoe_cmp_double(&b, &nan) < 0);
    assert_int_equal(tmoe_cmp_double(&nan, &nan), 0);
}

static void test_file_helpers(void **state) {
    (void)state;
    tmoe_error err = {0};
    size_t len = 0;
    /* a device, a directory and a FIFO are refused at once, naming what they are */
    assert_null(tmoe_file_read_all("/dev/zero", 1 << 20, &len, &err));
    assert_non_null(strstr(err.msg, "character device"));
    assert_null(tmoe_file_open_read(tu_tmpdir(), 0, NULL, &err));
    assert_non_null(strstr(err.msg, "directory"));
    const char *fifo = tu_tmppath("fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_null(tmoe_file_open_read(fifo, 0, NULL, &err)); /* would block without O_NONBLOCK */
    assert_non_null(strstr(err.msg, "FIFO"));
    /* a regular file over the limit names its size; within it, read whole */
    const char *p = tu_tmppath("small.txt");
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("hello\n", f);
    fclose(f);
    assert_null(tmoe_file_read_all(p, 3, &len, &err));
    assert_non_null(strstr(err.msg, "6 bytes"));
    char *s = tmoe_file_read_all(p, 100, &len, &err);
    assert_non_null(s);
    assert_int_equal(len, 6);
    assert_string_equal(s, "hello\n");
    free(s);
    /* atomic write: a failed write leaves the old contents and no temporary behind */
    tmoe_atomic_file af;
    assert_int_equal(tmoe_atomic_open(&af, p, &err), TMOE_OK);
    fputs("replaced\n", af.f);
    tmoe_atomic_abort(&af);
    s = tmoe_file_read_all(p, 100, &len, &err);
    assert_string_equal(s, "hello\n");
    free(s);
    assert_int_equal(access(af.tmp[0] ? af.tmp : "/nonexistent", F_OK), -1);
    assert_int_equal(tmoe_atomic_open(&af, p, &err), TMOE_OK);
    fputs("replaced\n", af.f);
    assert_int_equal(tmoe_atomic_commit(&af, &err), TMOE_OK);
    s = tmoe_file_read_all(p, 100, &len, &err);
    assert_string_equal(s, "replaced\n");
    free(s);
    /* a device node is never replaced by a regular file */
    assert_int_equal(tmoe_atomic_open(&af, "/dev/null", &err), TMOE_EINVAL);
    assert_int_equal(tmoe_file_check_writable("/dev/null", &err), TMOE_EINVAL);
    /* a full disk: the write fails, the target is untouched (here: /dev/full as the stream) */
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(tmoe_atomic_open(&af, p, &err), TMOE_OK);
        fclose(af.f);
        af.f = fopen("/dev/full", "w");
        assert_non_null(af.f);
        for (int i = 0; i < 10000; i++) fputs("0123456789", af.f);
        assert_int_equal(tmoe_atomic_commit(&af, &err), TMOE_EIO);
        assert_non_null(strstr(err.msg, "No space left"));
        s = tmoe_file_read_all(p, 100, &len, &err);
        assert_string_equal(s, "replaced\n");
        free(s);
    }
    /* mkdir -p: nested, idempotent, and a file in the way is an error */
    char d[4096];
    snprintf(d, sizeof d, "%s/a/b/c", tu_tmpdir());
    assert_int_equal(tmoe_mkdir_p(d, &err), TMOE_OK);
    assert_int_equal(tmoe_mkdir_p(d, &err), TMOE_OK);
    assert_int_not_equal(tmoe_mkdir_p(p, &err), TMOE_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_f16_random_vs_reference),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_rng_reference),
        cmocka_unit_test(test_rng_properties),
        cmocka_unit_test(test_errors_and_arena),
        cmocka_unit_test(test_buffer_table),
        cmocka_unit_test(test_file_helpers),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_cmp_double),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
