/* A Hugging Face checkpoint directory: model.safetensors, or model.safetensors.index.json and
 * the shards it names. Every shard is memory-mapped and validated by the safetensors reader;
 * nothing is copied until the loader converts a tensor. */
#include "thermoe/model.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct tmoe_ckpt {
    tmoe_st_file **files;
    int nfiles;
};

void tmoe_ckpt_close(tmoe_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->nfiles; i++) tmoe_st_close(c->files[i]);
    free(c->files);
    free(c);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Index of the shard called name in c->files (opening it the first time), or -1. */
static int shard_index(tmoe_ckpt *c, const char *dir, const char *index_path, const char *name,
                       tmoe_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    for (int i = 0; i < c->nfiles; i++)
        if (strcmp(tmoe_st_path(c->files[i]), path) == 0) return i;
    if (strchr(name, '/') || name[0] == '\0' || strcmp(name, "..") == 0) {
        tmoe_errorf(err, TMOE_EFORMAT, "%s: shard name '%s' is not a file name in %s", index_path,
                    name, dir);
        return -1;
    }
    if (!exists(path)) {
        tmoe_errorf(err, TMOE_EFORMAT, "%s: points at %s, which does not exist", index_path, path);
        return -1;
    }
    tmoe_st_file **nf = realloc(c->files, sizeof *nf * (size_t)(c->nfiles + 1));
    if (!nf) {
        tmoe_errorf(err, TMOE_ENOMEM, "out of memory listing shards");
        return -1;
    }
    c->files = nf;
    int rc = tmoe_st_open(path, &c->files[c->nfiles], err);
    if (rc) {
        tmoe_error_prefix(err, rc, "shard named by %s", index_path);
        return -1;
    }
    return c->nfiles++;
}

static int open_index(tmoe_ckpt *c, const char *dir, const char *index_path, tmoe_error *err) {
    char *text = tmoe_file_read_all(index_path, 256u << 20, NULL, err);
    if (!text) return err ? err->code : TMOE_EIO;
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    free(text);
    if (!root)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: line %d: not valid JSON: %s", index_path,
                           je.line, je.text);
    int rc = TMOE_OK;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: no 'weight_map' object (tensor name -> shard)",
                         index_path);
        goto done;
    }
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v) {
        if (!json_is_string(v)) {
            rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: weight_map['%s'] is not a file name",
                             index_path, name);
            goto done;
        }
        int i = shard_index(c, dir, index_path, json_string_value(v), err);
        if (i < 0) {
            rc = err ? err->code : TMOE_EFORMAT;
            goto done;
        }
        if (!tmoe_st_find(c->files[i], name)) {
            rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: places tensor '%s' in %s, which lacks it",
                             index_path, name, tmoe_st_path(c->files[i]));
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

int tmoe_ckpt_open(const char *dir, tmoe_ckpt **out, tmoe_error *err) {
    *out = NULL;
    tmoe_ckpt *c = tmoe_calloc(1, sizeof *c, err);
    if (!c) return TMOE_ENOMEM;
    char single[4096], index[4096];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    int rc;
    if (exists(single)) {
        c->files = tmoe_calloc(1, sizeof *c->files, err);
        if (!c->files) {
            tmoe_ckpt_close(c);
            return TMOE_ENOMEM;
        }
        rc = tmoe_st_open(single, &c->files[0], err);
        if (rc == TMOE_OK) c->nfiles = 1;
    } else if (exists(index)) {
        rc = open_index(c, dir, index, err);
    } else {
        rc = tmoe_errorf(err, TMOE_EIO,
                         "%s: neither model.safetensors nor model.safetensors.index.json is there "
                         "(a Hugging Face model directory; docs/models.md)",
                         dir);
    }
    if (rc) {
        tmoe_ckpt_close(c);
        return rc;
    }
    *out = c;
    return TMOE_OK;
}

const tmoe_st_tensor *tmoe_ckpt_find(const tmoe_ckpt *c, const char *name, const char **file_out) {
    for (int i = 0; i < c->nfiles; i++) {
        const tmoe_st_tensor *t = tmoe_st_find(c->files[i], name);
        if (t) {
            if (file_out) *file_out = tmoe_st_path(c->files[i]);
            return t;
        }
    }
    return NULL;
}

int tmoe_ckpt_shards(const tmoe_ckpt *c) {
    return c->nfiles;
}

size_t tmoe_ckpt_bytes(const tmoe_ckpt *c) {
    size_t b = 0;
    for (int i = 0; i < c->nfiles; i++)
        for (int j = 0; j < tmoe_st_count(c->files[i]); j++)
            b += tmoe_st_at(c->files[i], j)->nbytes;
    return b;
}

const char *tmoe_ckpt_dtype(const tmoe_ckpt *c) {
    size_t by[TMOE_ST_DTYPE_COUNT] = {0};
    for (int i = 0; i < c->nfiles; i++)
        for (int j = 0; j < tmoe_st_count(c->files[i]); j++) {
            const tmoe_st_tensor *t = tmoe_st_at(c->files[i], j);
            by[t->dtype] += t->nbytes;
        }
    int best = TMOE_ST_F32;
    for (int d = 0; d < TMOE_ST_DTYPE_COUNT; d++)
        if (by[d] > by[best]) best = d;
    return tmoe_st_dtype_name((tmoe_st_dtype)best);
}
