/* Fuzz target: the config file reader of `thermoe run --config` (JSON object or INI). Any
 * input must be refused with a message naming the file, or give settings whose keys are in
 * the table, whose switches have no value and whose values fit the limit, hold no control
 * character and are NUL-terminated where their length says. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_driver.h"
#include "thermoe/exp.h"

static const tmoe_run_config_key keys[] = {
    {"repeats", 1},      {"workloads", 1},     {"routing-strategy", 1}, {"out", 1},    {"seed", 1},
    {"arrival-rate", 1}, {"load-balancer", 0}, {"moe-only", 0},         {"resume", 0},
};
#define NKEYS ((int)(sizeof keys / sizeof *keys))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tmoe_error err = {0};
    tmoe_run_config_entry *e = (tmoe_run_config_entry *)&err; /* must be reset */
    int n = -1;
    if (tmoe_run_config_parse((const char *)data, size, "fuzz.cfg", keys, NKEYS, &e, &n, &err) !=
        TMOE_OK) {
        TMOE_ASSERT(e == NULL && n == 0 && err.msg[0] && strstr(err.msg, "fuzz.cfg"));
        return 0;
    }
    TMOE_ASSERT(n >= 0 && (n == 0 || e != NULL));
    for (int i = 0; i < n; i++) {
        const tmoe_run_config_key *k = NULL;
        for (int j = 0; j < NKEYS; j++)
            if (e[i].key == keys[j].name) k = &keys[j];
        TMOE_ASSERT(k != NULL);
        TMOE_ASSERT(k->has_value ? e[i].value != NULL : e[i].value == NULL);
        if (!e[i].value) continue;
        size_t len = strlen(e[i].value);
        TMOE_ASSERT(len > 0 && len <= TMOE_RUN_CONFIG_VALUE_MAX);
        for (size_t c = 0; c < len; c++)
            TMOE_ASSERT((unsigned char)e[i].value[c] >= 0x20 && e[i].value[c] != 0x7f);
        TMOE_ASSERT(e[i].line >= 0);
    }
    tmoe_run_config_entries_free(e, n);
    return 0;
}

#ifndef THERMOE_LIBFUZZER
static const char *const *fuzz_tokens(void) {
    static const char *const t[] = {"{",
                                    "}",
                                    "[",
                                    "]",
                                    "\"",
                                    ",",
                                    ":",
                                    "=",
                                    "\n",
                                    "\r\n",
                                    "#",
                                    ";",
                                    "\\u0000",
                                    "\"repeats\": ",
                                    "repeats = ",
                                    "\"load-balancer\": true",
                                    "load-balancer",
                                    "[run]",
                                    "\"workloads\": [\"standard\", \"skewed\"]",
                                    "null",
                                    "1e999",
                                    "\xef\xbb\xbf",
                                    "\x01",
                                    "true",
                                    "false",
                                    NULL};
    return t;
}

static int fuzz_seeds(fuzz_seed *seeds, int max) {
    /* the same texts as tests/fuzz/corpus/fuzz_config/ */
    static const char *const texts[] = {
        "{\n  \"repeats\": 3,\n  \"workloads\": [\"standard\", \"skewed\"],\n  "
        "\"routing-strategy\": \"all\",\n"
        "  \"load-balancer\": true,\n  \"arrival-rate\": 2.5e4,\n  \"seed\": 7\n}\n",
        "# a run\n[run]\nrepeats = 2\nworkloads = standard,skewed\nout = \"results/a "
        "b\"\nload-balancer = true\n"
        "moe-only\nresume = false\n; done\n",
        "[\"--repeats\", \"2\"]\n",
        "{\"out\": \"x\", \"out\": \"y\", \"seed\": -1, \"moe-only\": 0, \"workloads\": []}\n",
    };
    int n = 0;
    for (size_t i = 0; i < sizeof texts / sizeof *texts && n < max; i++)
        seeds[n++] = fuzz_from_string(texts[i]);
    return n;
}

int main(void) {
    return fuzz_main("fuzz_config");
}
#endif
