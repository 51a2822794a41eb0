/* Core: the RFC 4180 record reader (quoted fields, doubled quotes, embedded newlines and the
 * line numbers after them, CRLF, empty fields, a last record without newline, an unclosed
 * quote, limits, skipped lines, reading a file). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every record of text as "line:field|field|...", then '$' when it ended with a newline, then
 * ' '; an error as "!code:message". */
static const char *records(const char *text, size_t len, int max_fields, size_t max_bytes) {
    static char out[4096];
    size_t o = 0;
    tmoe_csv c;
    tmoe_csv_init(&c, text, len);
    c.max_fields = max_fields;
    c.max_record_bytes = max_bytes;
    tmoe_error err = {0};
    for (;;) {
        int rc = tmoe_csv_next(&c, &err);
        if (c.nfields > 0) {
            assert_true(c.begin < c.end && c.end <= len);
            assert_int_equal(c.terminated, !c.unclosed && text[c.end - 1] == '\n');
            o += (size_t)snprintf(out + o, sizeof out - o, "%d:", c.line);
            for (int i = 0; i < c.nfields; i++)
                o += (size_t)snprintf(out + o, sizeof out - o, "%s%s", i ? "|" : "",
                                      tmoe_csv_field(&c, i));
            o += (size_t)snprintf(out + o, sizeof out - o, "%s ", c.terminated ? "$" : "");
        }
        if (rc) {
            assert_int_equal(c.unclosed, rc == TMOE_EFORMAT && c.nfields > 0);
            o += (size_t)snprintf(out + o, sizeof out - o, "!%d:%s", rc, err.msg);
            break;
        }
        if (c.nfields == 0) break;
    }
    /* the end stays the end */
    assert_int_equal(tmoe_csv_next(&c, &err), TMOE_OK);
    assert_int_equal(c.nfields, 0);
    tmoe_csv_free(&c);
    return out;
}

static const char *recs(const char *text) {
    return records(text, strlen(text), 0, 0);
}

static void test_plain_and_empty(void **state) {
    (void)state;
    assert_string_equal(recs(""), "");
    assert_string_equal(recs("a,b,c\n1,2,3\n"), "1:a|b|c$ 2:1|2|3$ ");
    /* empty fields, an empty line is one empty field */
    assert_string_equal(recs(",,\n\nx,\n,y\n"), "1:||$ 2:$ 3:x|$ 4:|y$ ");
    assert_string_equal(recs("\"\",\"\"\n"), "1:|$ ");
    /* a last record without newline */
    assert_string_equal(recs("a,b\nc,d"), "1:a|b$ 2:c|d ");
    assert_string_equal(recs("a,"), "1:a| ");
}

static void test_quotes(void **state) {
    (void)state;
    /* quoted commas, doubled quotes */
    assert_string_equal(recs("\"a,b\",\"say \"\"hi\"\"\",\"\"\"\"\n"), "1:a,b|say \"hi\"|\"$ ");
    /* text after the closing quote is kept; a quote inside an unquoted field is data */
    assert_string_equal(recs("\"ab\"cd,x\"y\"\n"), "1:abcd|x\"y\"$ ");
    /* an embedded newline: the record starts on line 1, the next one on line 3 */
    assert_string_equal(recs("\"two\nlines\",x\ny,\"a\n\nb\"\nz\n"),
                        "1:two\nlines|x$ 3:y|a\n\nb$ 6:z$ ");
}

static void test_crlf(void **state) {
    (void)state;
    assert_string_equal(recs("a,b\r\nc,d\r\n\r\ne\r\n"), "1:a|b$ 2:c|d$ 3:$ 4:e$ ");
    /* a lone CR is data; CRLF inside quotes is kept */
    assert_string_equal(recs("a\rb,c\r\n\"x\r\ny\"\r\n"), "1:a\rb|c$ 2:x\r\ny$ ");
    assert_string_equal(recs("a,b\r"), "1:a|b\r ");
}

static void test_unclosed_quote(void **state) {
    (void)state;
    char want[256];
    snprintf(want, sizeof want,
             "1:a|b$ 2:c|d\ne,f\n !%d:line 2: quoted field not closed before the end of the input",
             TMOE_EFORMAT);
    assert_string_equal(recs("a,b\nc,\"d\ne,f\n"), want);
    snprintf(want, sizeof want,
             "1: !%d:line 1: quoted field not closed before the end of the input", TMOE_EFORMAT);
    assert_string_equal(recs("\""), want);
}

/* A NUL byte is stored: it ends the field as a string, the record goes on. */
static void test_nul(void **state) {
    (void)state;
    static const char text[] = "a\0b,c\nd\n";
    assert_string_equal(records(text, sizeof text - 1, 0, 0), "1:a|c$ 2:d$ ");
}

static void test_limits(void **state) {
    (void)state;
    char want[256];
    assert_string_equal(records("a,b,c\n", 6, 3, 6), "1:a|b|c$ ");
    snprintf(want, sizeof want, "1:a|b$ !%d:line 2: more than 2 fields", TMOE_EFORMAT);
    assert_string_equal(records("a,b\nc,d,e\nf\n", 12, 2, 0), want);
    snprintf(want, sizeof want, "1:ab$ !%d:line 2: record longer than 3 bytes", TMOE_EFORMAT);
    assert_string_equal(records("ab\nabcd\nx\n", 10, 0, 3), want);
    /* a doubled quote across the limit */
    snprintf(want, sizeof want, "!%d:line 1: record longer than 4 bytes", TMOE_EFORMAT);
    assert_string_equal(records("\"a\"\"\n", 5, 0, 4), want);
    snprintf(want, sizeof want, "!%d:line 1: record longer than 3 bytes", TMOE_EFORMAT);
    assert_string_equal(records("\"a\"\"", 4, 0, 3), want);
}

/* Lines that are no CSV (a tool's messages) are passed over and still counted. */
static void test_peek_and_skip(void **state) {
    (void)state;
    const char *text = "==PROF== \"a, b\n\"x\",y\n==ERR== z";
    tmoe_csv c;
    tmoe_csv_init(&c, text, strlen(text));
    tmoe_error err = {0};
    size_t n;
    assert_true(strncmp(tmoe_csv_peek(&c, &n), "==", 2) == 0);
    assert_int_equal(n, strlen(text));
    tmoe_csv_skip_line(&c);
    ASSERT_OK(tmoe_csv_next(&c, &err), &err);
    assert_int_equal(c.nfields, 2);
    assert_int_equal(c.line, 2);
    assert_string_equal(tmoe_csv_field(&c, 0), "x");
    tmoe_csv_skip_line(&c); /* the last line, without newline */
    assert_int_equal(tmoe_csv_peek(&c, &n)[0], '\0');
    assert_int_equal(n, 0);
    ASSERT_OK(tmoe_csv_next(&c, &err), &err);
    assert_int_equal(c.nfields, 0);
    tmoe_csv_free(&c);
    tmoe_csv_free(NULL);
}

static void test_open_file(void **state) {
    (void)state;
    const char *path = tu_tmppath("csv_open.csv");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("h1,h2\r\n\"1\",\"x\ny\"\r\n", f);
    assert_int_equal(fclose(f), 0);
    tmoe_csv c;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_csv_open_file(&c, path, 1024, &err), &err);
    ASSERT_OK(tmoe_csv_next(&c, &err), &err);
    assert_int_equal(c.nfields, 2);
    ASSERT_OK(tmoe_csv_next(&c, &err), &err);
    assert_int_equal(c.line, 2);
    assert_string_equal(tmoe_csv_field(&c, 1), "x\ny");
    ASSERT_OK(tmoe_csv_next(&c, &err), &err);
    assert_int_equal(c.nfields, 0);
    tmoe_csv_free(&c);
    /* too big, absent, a directory: refused with the file's name; the reader is empty */
    assert_int_equal(tmoe_csv_open_file(&c, path, 4, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "csv_open.csv"));
    ASSERT_OK(tmoe_csv_next(&c, &err), &err);
    assert_int_equal(c.nfields, 0);
    tmoe_csv_free(&c);
    assert_int_equal(tmoe_csv_open_file(&c, tu_tmppath("csv_absent.csv"), 0, &err), TMOE_EIO);
    assert_int_equal(tmoe_csv_open_file(&c, tu_tmpdir(), 0, NULL), TMOE_EINVAL);
    tmoe_csv_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_empty),
        cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_unclosed_quote),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_peek_and_skip),
        cmocka_unit_test(test_open_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
