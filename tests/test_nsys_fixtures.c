/* nsys SQLite import on the real exports of ../shared/fixtures/nsys (from another project,
 * so not committed here): kernel counts and times per device (expected values from sqlite3),
 * the tables a real capture lacks, and a real export cut short. Exits with ctest's skip
 * status, naming the missing file, when the exports are not there (THERMOE_FIXTURES=DIR
 * points at them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "thermoe/profile.h"

static void test_h100_2gpu(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(tu_fixture("nsys/h100_2gpu_1s.sqlite"), &r, &err), &err);
    /* sqlite3 FILE "select count(*), sum(end-start) from CUPTI_ACTIVITY_KIND_KERNEL" */
    assert_int_equal(r->n_kernels, 3442);
    assert_int_equal(r->kernel_ns, 44829522);
    /* sqlite3 FILE "select deviceId, count(*), sum(end-start) from CUPTI_ACTIVITY_KIND_KERNEL
     *               group by deviceId" -> 0|1721|22385163, 1|1721|22444359 */
    assert_int_equal(r->n_devices, 2);
    assert_int_equal(r->devices[0].device, 0);
    assert_int_equal(r->devices[0].kernels, 1721);
    assert_int_equal(r->devices[0].kernel_ns, 22385163);
    assert_int_equal(r->devices[1].device, 1);
    assert_int_equal(r->devices[1].kernels, 1721);
    assert_int_equal(r->devices[1].kernel_ns, 22444359);
    assert_string_equal(r->name_column, "demangledName");
    /* no GPU_METRICS in this export: reported, energy unknown */
    assert_non_null(strstr(r->missing, "GPU_METRICS"));
    assert_true(isnan(r->energy_j));
    assert_int_equal(r->nvtx_ranges > 0, 1);
    for (int64_t i = 0; i < r->n_kernels; i++)
        assert_true(r->kernels[i].end_ns >= r->kernels[i].start_ns);
    tmoe_nsys_free(r);
}

static void test_mock_2026(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_nsys_result *r;
    ASSERT_OK(tmoe_import_nsys(tu_fixture("nsys/nsys2026_mock.sqlite"), &r, &err), &err);
    assert_int_equal(r->n_kernels, 2);
    assert_int_equal(r->kernel_ns, 4129);
    assert_non_null(strstr(r->missing, "NVTX_EVENTS"));
    tmoe_nsys_free(r);
}

/* The first 64 pages of the real export: an error naming the file, never a crash. */
static void test_h100_cut_short(void **state) {
    (void)state;
    const char *cut = tu_tmppath("cut.sqlite");
    FILE *in = fopen(tu_fixture("nsys/h100_2gpu_1s.sqlite"), "rb");
    FILE *f = fopen(cut, "wb");
    assert_non_null(in);
    assert_non_null(f);
    char buf[4096];
    for (int i = 0; i < 64; i++) {
        size_t n = fread(buf, 1, sizeof buf, in);
        assert_int_equal(n, sizeof buf);
        assert_int_equal(fwrite(buf, 1, n, f), n);
    }
    fclose(in);
    assert_int_equal(fclose(f), 0);
    tmoe_error err = {0};
    tmoe_nsys_result *r = (tmoe_nsys_result *)1;
    int rc = tmoe_import_nsys(cut, &r, &err);
    assert_int_not_equal(rc, TMOE_OK);
    assert_null(r);
    assert_non_null(strstr(err.msg, cut));
    print_message("truncated export: %s\n", err.msg);
}

int main(void) {
    if (tu_fixture_missing("nsys/h100_2gpu_1s.sqlite") +
        tu_fixture_missing("nsys/nsys2026_mock.sqlite"))
        return TU_SKIP;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h100_2gpu),
        cmocka_unit_test(test_mock_2026),
        cmocka_unit_test(test_h100_cut_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
