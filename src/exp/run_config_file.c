/* Config files of `thermoe run` (--config FILE): a JSON object or an INI file whose keys
 * are long flag names, read into (key, value) settings that the command line parses before
 * its own flags. Hostile input is refused with a message naming the file and the place:
 * anything but a regular file of at most TMOE_RUN_CONFIG_MAX_BYTES, binary content, a JSON
 * value that is not an object, unknown keys, values longer than TMOE_RUN_CONFIG_VALUE_MAX
 * (never cut), and control characters. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/exp.h"

typedef struct entries {
    tmoe_run_config_entry *v;
    int n, cap;
} entries;

static const tmoe_run_config_key *find_key(const tmoe_run_config_key *keys, int nkeys,
                                           const char *name) {
    for (int i = 0; i < nkeys; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

/* "file:line" or "file" (line 0) into buf. */
static const char *where(char *buf, size_t n, const char *name, int line) {
    if (line > 0)
        snprintf(buf, n, "%s:%d", name, line);
    else
        snprintf(buf, n, "%s", name);
    return buf;
}

static int is(const char *val, size_t n, const char *word) {
    return n == strlen(word) && !memcmp(val, word, n);
}

/* Record key = val (val_len bytes, not necessarily NUL-terminated; val NULL: given without a
 * value) after checking it against the table. A switch takes true/false or 1/0 (off leaves
 * it out); a flag with a value needs one that fits TMOE_RUN_CONFIG_VALUE_MAX and holds no
 * control character. */
static int add(entries *es, const tmoe_run_config_key *keys, int nkeys, const char *name, int line,
               const char *key, const char *val, size_t val_len, tmoe_error *err) {
    char at[600];
    where(at, sizeof at, name, line);
    const tmoe_run_config_key *k = find_key(keys, nkeys, key);
    if (!k)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s: unknown key '%.64s%s' (keys are the long flag names)", at, key,
                           strlen(key) > 64 ? "..." : "");
    if (!k->has_value) {
        if (val && !is(val, val_len, "true") && !is(val, val_len, "1") &&
            !is(val, val_len, "false") && !is(val, val_len, "0"))
            return tmoe_errorf(err, TMOE_EINVAL, "%s: '%s' takes true or false, not '%.*s%s'", at,
                               k->name, (int)(val_len > 64 ? 64 : val_len), val,
                               val_len > 64 ? "..." : "");
        if (val && (is(val, val_len, "false") || is(val, val_len, "0"))) return TMOE_OK;
        val = NULL;
    } else {
        if (!val || val_len == 0)
            return tmoe_errorf(err, TMOE_EINVAL, "%s: '%s' needs a value", at, k->name);
        if (val_len > TMOE_RUN_CONFIG_VALUE_MAX)
            return tmoe_errorf(
                err, TMOE_EINVAL,
                "%s: '%s': a value of %zu bytes is longer than the limit of %d bytes", at, k->name,
                val_len, TMOE_RUN_CONFIG_VALUE_MAX);
        for (size_t i = 0; i < val_len; i++)
            if ((unsigned char)val[i] < 0x20 || val[i] == 0x7f)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "%s: '%s': a control character (0x%02x) in the value", at,
                                   k->name, (unsigned char)val[i]);
    }
    if (es->n == es->cap) {
        int cap = es->cap ? 2 * es->cap : 16;
        tmoe_run_config_entry *nv = realloc(es->v, sizeof *nv * (size_t)cap);
        if (!nv) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", at);
        es->v = nv;
        es->cap = cap;
    }
    tmoe_run_config_entry *e = &es->v[es->n];
    e->key = k->name;
    e->line = line;
    e->value = NULL;
    if (val) {
        e->value = malloc(val_len + 1);
        if (!e->value) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", at);
        memcpy(e->value, val, val_len);
        e->value[val_len] = '\0';
    }
    es->n++;
    return TMOE_OK;
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* One JSON member: strings, numbers and booleans as their text, a list of strings joined
 * with ','. */
static int json_member(entries *es, const tmoe_run_config_key *keys, int nkeys, const char *name,
                       const char *key, json_t *v, tmoe_error *err) {
    char num[64];
    if (json_is_string(v))
        return add(es, keys, nkeys, name, 0, key, json_string_value(v), json_string_length(v), err);
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        return add(es, keys, nkeys, name, 0, key, num, strlen(num), err);
    }
    if (json_is_real(v)) {
        snprintf(num, sizeof num, "%.17g", json_real_value(v));
        return add(es, keys, nkeys, name, 0, key, num, strlen(num), err);
    }
    if (json_is_boolean(v)) {
        const char *b = json_is_true(v) ? "true" : "false";
        return add(es, keys, nkeys, name, 0, key, b, strlen(b), err);
    }
    if (!json_is_array(v))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s: '%.64s': %s; expected a string, number, boolean or list of strings",
                           name, key, json_kind(v));
    /* the joined list, built up to one byte past the limit (add reports the length) */
    size_t total = 0, i;
    json_t *it;
    json_array_foreach(v, i, it) {
        if (!json_is_string(it))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "%s: '%.64s': item %zu is %s; list items must be strings", name, key,
                               i, json_kind(it));
        total += (i ? 1 : 0) + json_string_length(it);
    }
    char *joined = malloc(total + 1);
    if (!joined) return tmoe_errorf(err, TMOE_ENOMEM, "%s: out of memory", name);
    size_t at = 0;
    json_array_foreach(v, i, it) {
        if (i) joined[at++] = ',';
        memcpy(joined + at, json_string_value(it), json_string_length(it));
        at += json_string_length(it);
    }
    joined[at] = '\0';
    int rc = add(es, keys, nkeys, name, 0, key, joined, at, err);
    free(joined);
    return rc;
}

static int parse_json(const char *text, size_t len, const char *name,
                      const tmoe_run_config_key *keys, int nkeys, entries *es, tmoe_error *err) {
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d:%d: %s", name, je.line, je.column, je.text);
    int rc = TMOE_OK;
    if (!json_is_object(root)) {
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: is %s; a JSON config must be a JSON object of flag "
                         "names (\"repeats\": 3)",
                         name, json_kind(root));
    } else {
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            if ((rc = json_member(es, keys, nkeys, name, key, v, err))) break;
        }
    }
    json_decref(root);
    return rc;
}

static int is_space(char c) {
    return c == ' ' || c == '\t';
}

/* INI: "key = value" or "key" lines, '#' or ';' comments, [section] headers ignored. */
static int parse_ini(const char *text, size_t len, const char *name,
                     const tmoe_run_config_key *keys, int nkeys, entries *es, tmoe_error *err) {
    int lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        lineno++;
        if (n && s[n - 1] == '\r') n--;
        for (size_t i = 0; i < n; i++)
            if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
                return tmoe_errorf(err, TMOE_EFORMAT,
                                   "%s:%d: a control character (0x%02x) at column %zu: "
                                   "not a text config file",
                                   name, lineno, (unsigned char)s[i], i + 1);
        while (n && is_space(*s)) s++, n--;
        while (n && is_space(s[n - 1])) n--;
        if (!n || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            int ok = n >= 3 && s[n - 1] == ']';
            for (size_t i = 1; ok && i + 1 < n; i++)
                ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                     (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.' ||
                     s[i] == ' ';
            if (!ok)
                return tmoe_errorf(err, TMOE_EFORMAT,
                                   "%s:%d: expected a [section] header, 'key = value' "
                                   "or a comment",
                                   name, lineno);
            continue;
        }
        const char *eq = memchr(s, '=', n);
        size_t kn = eq ? (size_t)(eq - s) : n;
        while (kn && is_space(s[kn - 1])) kn--;
        if (!kn)
            return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d: a line with no key before '='", name,
                               lineno);
        char key[80];
        if (kn >= sizeof key) {
            snprintf(key, sizeof key, "%.*s...", 64, s);
        } else {
            memcpy(key, s, kn);
            key[kn] = '\0';
        }
        const char *val = NULL;
        size_t vn = 0;
        if (eq) {
            val = eq + 1;
            vn = n - (size_t)(val - s);
            while (vn && is_space(*val)) val++, vn--;
            if (vn >= 2 && val[0] == '"' && val[vn - 1] == '"') val++, vn -= 2;
        }
        int rc = add(es, keys, nkeys, name, lineno, key, val, vn, err);
        if (rc) return rc;
    }
    return TMOE_OK;
}

void tmoe_run_config_entries_free(tmoe_run_config_entry *e, int n) {
    for (int i = 0; i < n && e; i++) free(e[i].value);
    free(e);
}

int tmoe_run_config_parse(const char *text, size_t len, const char *name,
                          const tmoe_run_config_key *keys, int nkeys, tmoe_run_config_entry **out,
                          int *nout, tmoe_error *err) {
    *out = NULL;
    *nout = 0;
    if (len > TMOE_RUN_CONFIG_MAX_BYTES)
        return tmoe_errorf(err, TMOE_EINVAL, "%s: %zu bytes, more than the limit of %u bytes", name,
                           len, TMOE_RUN_CONFIG_MAX_BYTES);
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: a NUL byte at offset %zu: a binary file, not a JSON "
                           "object or an INI file",
                           name, (size_t)(nul - text));
    size_t b = len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3) ? 3 : 0; /* UTF-8 byte order mark */
    size_t p = b;
    while (p < len && (is_space(text[p]) || text[p] == '\n' || text[p] == '\r')) p++;
    entries es = {0};
    int rc;
    if (p < len && text[p] == '{') {
        rc = parse_json(text + b, len - b, name, keys, nkeys, &es, err);
    } else {
        /* '[' starts an INI section, or a JSON array: an array is refused by name */
        json_t *any =
            p < len && text[p] == '[' ? json_loadb(text + b, len - b, JSON_DECODE_ANY, NULL) : NULL;
        if (any) {
            rc = tmoe_errorf(err, TMOE_EFORMAT,
                             "%s: is %s; a JSON config must be a JSON object of "
                             "flag names (\"repeats\": 3)",
                             name, json_kind(any));
            json_decref(any);
        } else {
            rc = parse_ini(text + b, len - b, name, keys, nkeys, &es, err);
        }
    }
    if (rc) {
        tmoe_run_config_entries_free(es.v, es.n);
        return rc;
    }
    *out = es.v;
    *nout = es.n;
    return TMOE_OK;
}

int tmoe_run_config_read(const char *path, const tmoe_run_config_key *keys, int nkeys,
                         tmoe_run_config_entry **out, int *nout, tmoe_error *err) {
    *out = NULL;
    *nout = 0;
    size_t len = 0;
    char *text = tmoe_file_read_all(path, TMOE_RUN_CONFIG_MAX_BYTES, &len, err);
    if (!text) return err ? err->code : TMOE_EIO;
    int rc = tmoe_run_config_parse(text, len, path, keys, nkeys, out, nout, err);
    free(text);
    return rc;
}
