/* Writing values into the shell scripts thermoe generates (sweep, profile --emit-scripts):
 * one quoting rule for every value, and the check that refuses what no quoting can carry. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

const char *cli_script_bad_char(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return (const char *)p;
    return NULL;
}

static const char *char_name(unsigned char c) {
    switch (c) {
    case '\n': return "a newline";
    case '\r': return "a carriage return";
    case '\t': return "a tab";
    case 0x1b: return "an escape character";
    default: return "a control character";
    }
}

int cli_script_value_ok(const char *cmd, const char *what, const char *s) {
    const char *bad = cli_script_bad_char(s);
    if (!bad) return 1;
    cli_fail(cmd,
             "%s holds %s (0x%02x at byte %d); a value written into a generated script must "
             "be printable text on one line",
             what, char_name((unsigned char)*bad), (unsigned)(unsigned char)*bad,
             (int)(bad - s) + 1);
    return 0;
}

int cli_shell_quote(FILE *f, const char *s) {
    if (cli_script_bad_char(s)) return -1;
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
    return ferror(f) ? -1 : 0;
}
