/* safetensors files (the format real checkpoints ship in): a reader that validates the whole
 * header before any tensor is used, a writer, and saving / loading a transformer block with
 * our own tensor names or a Mixtral-style checkpoint's names (docs/safetensors.md).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON (an object: tensor name ->
 * {"dtype", "shape", "data_offsets": [begin, end]} relative to the byte buffer, plus an
 * optional "__metadata__" object of string values), then the byte buffer. */
#ifndef THERMOE_SAFETENSORS_H
#define THERMOE_SAFETENSORS_H

#include "thermoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TMOE_ST_BOOL,
    TMOE_ST_U8,
    TMOE_ST_I8,
    TMOE_ST_F8_E5M2,
    TMOE_ST_F8_E4M3,
    TMOE_ST_I16,
    TMOE_ST_U16,
    TMOE_ST_F16,
    TMOE_ST_BF16,
    TMOE_ST_I32,
    TMOE_ST_U32,
    TMOE_ST_F32,
    TMOE_ST_F64,
    TMOE_ST_I64,
    TMOE_ST_U64,
    TMOE_ST_DTYPE_COUNT
} tmoe_st_dtype;

const char *tmoe_st_dtype_name(tmoe_st_dtype t);            /* "F16", "BF16", ... as in the file */
int tmoe_st_dtype_parse(const char *s, tmoe_st_dtype *out); /* 0, or -1 when unknown */
size_t tmoe_st_dtype_size(tmoe_st_dtype t);                 /* bytes per element */

#define TMOE_ST_MAX_DIMS 8
#define TMOE_ST_MAX_HEADER (100u << 20) /* the reference implementation's limit */

typedef struct tmoe_st_tensor {
    const char *name; /* owned by the file */
    tmoe_st_dtype dtype;
    int ndim;
    int64_t shape[TMOE_ST_MAX_DIMS];
    const void *data; /* inside the file's mapping; not aligned in general */
    size_t nbytes;
} tmoe_st_tensor;

/* ---- reading ------------------------------------------------------------------------ */
typedef struct tmoe_st_file tmoe_st_file;

/* Map path read-only and validate it: header length in range, JSON object, every entry with a
 * known dtype, a shape of non-negative sizes, offsets inside the buffer that do not overlap
 * and whose length is numel x dtype size; __metadata__ values are strings. Any problem is
 * TMOE_EFORMAT (TMOE_EIO when the file cannot be read) with a message naming the file, the
 * tensor and the problem. */
int tmoe_st_open(const char *path, tmoe_st_file **out, tmoe_error *err);
/* The same checks on len bytes in memory, copied (data may be freed after the call); `name`
 * stands for the path in messages and tmoe_st_path. */
int tmoe_st_open_buffer(const void *data, size_t len, const char *name, tmoe_st_file **out,
                        tmoe_error *err);
void tmoe_st_close(tmoe_st_file *f); /* NULL-safe; tensors and strings become invalid */
const char *tmoe_st_path(const tmoe_st_file *f);
int tmoe_st_count(const tmoe_st_file *f);
const tmoe_st_tensor *tmoe_st_at(const tmoe_st_file *f, int i);              /* in header order */
const tmoe_st_tensor *tmoe_st_find(const tmoe_st_file *f, const char *name); /* or NULL */
/* A __metadata__ value, or NULL when the key is absent. */
const char *tmoe_st_meta(const tmoe_st_file *f, const char *key);
int tmoe_st_meta_count(const tmoe_st_file *f);
const char *tmoe_st_meta_key(const tmoe_st_file *f, int i);

/* Fetch a named tensor that must exist with exactly this shape, converted to fp32 (from F32,
 * F16 or BF16) or copied as fp16 bits (from F16; F32 / BF16 are rounded to fp16). out holds
 * numel values. Message names file, tensor and what did not match. */
int tmoe_st_read_f32(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                     float *out, tmoe_error *err);
int tmoe_st_read_f16(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                     tmoe_f16 *out, tmoe_error *err);

/* ---- writing ------------------------------------------------------------------------ */
typedef struct tmoe_st_writer tmoe_st_writer;

int tmoe_st_writer_create(tmoe_st_writer **out, tmoe_error *err);
void tmoe_st_writer_free(tmoe_st_writer *w); /* NULL-safe */
/* Add a tensor; data (numel x dtype size bytes) is borrowed until tmoe_st_writer_write.
 * Names must be unique and must not be "__metadata__". */
int tmoe_st_writer_add(tmoe_st_writer *w, const char *name, tmoe_st_dtype dt, int ndim,
                       const int64_t *shape, const void *data, tmoe_error *err);
int tmoe_st_writer_meta(tmoe_st_writer *w, const char *key, const char *value, tmoe_error *err);
/* Write the file: tensors in the order added, the header padded with spaces to a multiple of
 * 8 bytes so the buffer starts aligned. Whole or nothing (tmoe_atomic_*): written to a
 * temporary beside path and renamed into place; on failure path keeps its old contents. A
 * path that exists and is not a regular file (device, FIFO, directory) is refused. */
int tmoe_st_writer_write(tmoe_st_writer *w, const char *path, tmoe_error *err);

/* ---- blocks ------------------------------------------------------------------------- */
typedef enum {
    TMOE_LAYOUT_AUTO,    /* thermoe when __metadata__ format is thermoe.block/1, else mixtral */
    TMOE_LAYOUT_THERMOE, /* our names, config in __metadata__ (docs/safetensors.md) */
    TMOE_LAYOUT_MIXTRAL, /* model.layers.{L}.block_sparse_moe.experts.{e}.w1/w2/w3 ... */
    TMOE_LAYOUT_COUNT
} tmoe_layout;
const char *tmoe_layout_name(tmoe_layout l);
int tmoe_layout_parse(const char *s, tmoe_layout *out);

#define TMOE_BLOCK_FORMAT "thermoe.block/1"

/* Save every tensor of b with our names (fp16 weights as F16; q4/q2 as U8 .qweight + F16
 * .scales; norms F32) and the config in __metadata__. */
int tmoe_block_save(const tmoe_block *b, const char *path, tmoe_error *err);

/* What the file says about the config. thermoe layout: every field from __metadata__, with
 * the per-expert types written to types (TMOE_MAX_EXPERTS) and cfg->expert_types = types.
 * mixtral layout: d_model, d_ff and num_experts from the shapes of layer `layer`, act =
 * swiglu; the other fields of *cfg are left as they are (types may be NULL then).
 * *found (may be NULL): the layout detected. */
int tmoe_block_file_config(const char *path, tmoe_layout layout, int layer, tmoe_block_config *cfg,
                           tmoe_etype *types, tmoe_layout *found, tmoe_error *err);

/* Load a block: cfg gives the shape and the expert types wanted; every tensor the block needs
 * must be present with the shape cfg implies (extra tensors and metadata are ignored).
 * Weights stored as F16 load bit-exactly into fp16 linears; F32 / BF16 are rounded to fp16;
 * experts wanted as q4 / q2 are quantized on load from float weights, copied bit-exactly from
 * .qweight / .scales of the same type and group, else dequantized and requantized. */
int tmoe_block_load(const char *path, tmoe_layout layout, int layer, const tmoe_block_config *cfg,
                    tmoe_block **out, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
