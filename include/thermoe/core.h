/* thermoe core: error reporting, logging, fp16/bf16 conversion, a portable RNG,
 * tensors, an arena for big buffers, checked files and percentiles. Everything else in
 * libthermoe builds on this. */
#ifndef THERMOE_CORE_H
#define THERMOE_CORE_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_VERSION "0.1.0"

/* ---- errors -------------------------------------------------------------------------
 * Two tiers: a broken invariant is TMOE_ASSERT (file:line, abort); anything a user or the
 * machine can cause returns a non-zero tmoe_code and fills a tmoe_error with a message that
 * says what was wrong and what to do. Functions take `tmoe_error *err` last; it may be NULL. */
typedef enum {
    TMOE_OK = 0,
    TMOE_EINVAL,  /* bad argument or configuration */
    TMOE_ENOMEM,  /* out of host or device memory */
    TMOE_EIO,     /* file could not be read or written */
    TMOE_EFORMAT, /* file read but its contents are malformed */
    TMOE_ENOTSUP, /* feature not available here (no GPU, library missing, ...) */
    TMOE_ENODEV,  /* device absent or lost */
    TMOE_EDEVICE, /* CUDA / cuBLAS / NVML / CUPTI call failed */
    TMOE_EINTR,   /* interrupted by the user */
    TMOE_ECODE_COUNT
} tmoe_code;

typedef struct tmoe_error {
    int code;       /* tmoe_code */
    char msg[1024]; /* human-readable, one line, no trailing newline */
} tmoe_error;

const char *tmoe_code_name(int code);
/* Fill err (if non-NULL) with code and a printf-style message; returns code. */
int tmoe_errorf(tmoe_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an existing message: "<prefix>: <old message>"; returns err->code (or code if err NULL).
 */
int tmoe_error_prefix(tmoe_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Free memory the library allocated and handed to the caller "to free()" (for bindings that
 * cannot call the C library's free themselves). NULL-safe. */
void tmoe_free(void *p);

void tmoe_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define TMOE_ASSERT(x) ((x) ? (void)0 : tmoe_assert_fail(#x, __FILE__, __LINE__))

/* ---- logging: library code never prints; it calls the installed callback ----------- */
typedef enum { TMOE_LOG_DEBUG, TMOE_LOG_INFO, TMOE_LOG_WARN, TMOE_LOG_ERROR } tmoe_log_level;
typedef void (*tmoe_log_fn)(tmoe_log_level level, const char *msg, void *user);
/* Install a log callback (NULL: discard). Not thread-safe against concurrent logging. */
void tmoe_log_set(tmoe_log_fn fn, void *user);
void tmoe_log(tmoe_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- half precision ----------------------------------------------------------------- */
typedef uint16_t tmoe_f16;         /* IEEE binary16 bits */
typedef uint16_t tmoe_bf16;        /* bfloat16 bits */
tmoe_f16 tmoe_f32_to_f16(float f); /* round to nearest even, overflow -> inf, NaN kept */
float tmoe_f16_to_f32(tmoe_f16 h);
tmoe_bf16 tmoe_f32_to_bf16(float f); /* round to nearest even */
float tmoe_bf16_to_f32(tmoe_bf16 h);
/* 65536-entry fp16 -> fp32 table (built once, thread-safe), for fast row conversion. */
const float *tmoe_f16_table(void);
/* Round a float through fp16 and back (what storing it as fp16 does). */
static inline float tmoe_round_f16(float f) {
    return tmoe_f16_to_f32(tmoe_f32_to_f16(f));
}

/* ---- RNG: xoshiro256** seeded by splitmix64; integer-only, so the same seed gives the
 * same bits on every machine. ------------------------------------------------------- */
typedef struct tmoe_rng {
    uint64_t s[4];
} tmoe_rng;
void tmoe_rng_seed(tmoe_rng *r, uint64_t seed);
/* Derive an independent stream: same (seed, stream) -> same sequence. */
void tmoe_rng_seed_stream(tmoe_rng *r, uint64_t seed, uint64_t stream);
uint64_t tmoe_rng_u64(tmoe_rng *r);
double tmoe_rng_uniform(tmoe_rng *r);             /* [0, 1), 53 bits */
float tmoe_rng_uniform_sym(tmoe_rng *r, float a); /* [-a, a), exact for a given seed */
uint32_t tmoe_rng_below(tmoe_rng *r, uint32_t n); /* [0, n), unbiased */
double tmoe_rng_normal(tmoe_rng *r);              /* Box-Muller; uses libm (not bit-portable) */

/* ---- tensors ------------------------------------------------------------------------ */
typedef enum {
    TMOE_F32,
    TMOE_F16,
    TMOE_BF16,
    TMOE_Q4,
    TMOE_Q2,
    TMOE_I32,
    TMOE_DTYPE_COUNT
} tmoe_dtype;
typedef enum { TMOE_DEV_CPU, TMOE_DEV_CUDA } tmoe_devkind;

const char *tmoe_dtype_name(tmoe_dtype t);
/* Bytes for n elements of dtype t (packed types round up to whole bytes). */
size_t tmoe_dtype_bytes(tmoe_dtype t, int64_t n);

#define TMOE_MAX_DIMS 4
typedef struct tmoe_tensor {
    tmoe_dtype dtype;
    tmoe_devkind dev;
    int ndim;
    int64_t shape[TMOE_MAX_DIMS]; /* row-major, shape[ndim-1] contiguous */
    void *data;                   /* not owned by the struct */
} tmoe_tensor;

tmoe_tensor tmoe_tensor_make(tmoe_dtype dt, void *data, int ndim, const int64_t *shape);
int64_t tmoe_tensor_numel(const tmoe_tensor *t);
size_t tmoe_tensor_nbytes(const tmoe_tensor *t);

/* ---- arena: one big allocation carved into 64-byte aligned pieces ----------------- */
typedef struct tmoe_arena {
    uint8_t *base;
    size_t cap, used;
} tmoe_arena;
/* Reserve cap bytes. Returns TMOE_ENOMEM with the size in the message on failure. */
int tmoe_arena_init(tmoe_arena *a, size_t cap, tmoe_error *err);
/* Bump-allocate n bytes (64-aligned); NULL when the arena is full. Memory is not zeroed. */
void *tmoe_arena_alloc(tmoe_arena *a, size_t n);
void tmoe_arena_reset(tmoe_arena *a);
void tmoe_arena_free(tmoe_arena *a); /* NULL-safe; frees base */

/* ---- buffer tables: one allocation carved into named buffers -------------------------
 * Each entry keeps a buffer's slot beside its size, so a table written once both sizes the
 * allocation and carves it:
 *     tmoe_buf bufs[] = {TMOE_BUF(s->x, T * D * 4), TMOE_BUF(s->idx, T * k * 4)};
 *     size_t total = tmoe_bufs_total(bufs, n, 64);   ... allocate total bytes at base ...
 *     tmoe_bufs_carve(bufs, n, base, 64);
 * Buffers are laid out in table order, each starting at a multiple of align (a power of two)
 * from base; they do not overlap. The memory is not zeroed. */
typedef struct tmoe_buf {
    void **slot;      /* receives the buffer's address */
    size_t bytes;     /* its size */
    const char *name; /* what it holds, for messages */
} tmoe_buf;
/* An entry for pointer lvalue p of n bytes, named by the expression. */
#define TMOE_BUF(p, n)                                                                             \
    { (void **)&(p), (n), #p }
/* Bytes the buffers need from an align-aligned base (each size rounded up to align);
 * SIZE_MAX if that does not fit in a size_t. */
size_t tmoe_bufs_total(const tmoe_buf *b, int n, size_t align);
/* Point every slot into base (align-aligned, at least tmoe_bufs_total bytes). Works on
 * device memory too: base is only offset, never touched. */
void tmoe_bufs_carve(const tmoe_buf *b, int n, void *base, size_t align);

/* ---- files: reading with type and size checks, writing through a temporary + rename --
 * Reading: the file type is checked on a descriptor opened with O_NONBLOCK, so a FIFO,
 * a directory or a device (/dev/zero) is refused at once instead of blocking or growing
 * without end; a regular file larger than max_bytes is refused with its size. */
/* Open path for reading; fails (TMOE_EIO / TMOE_EINVAL, message naming the file and why)
 * unless it is a regular file of at most max_bytes (0 = no limit). *size_out (may be NULL)
 * gets its size. The caller fcloses the returned stream. */
FILE *tmoe_file_open_read(const char *path, size_t max_bytes, size_t *size_out, tmoe_error *err);
/* Read a whole regular file of at most max_bytes into a malloc'd, NUL-terminated buffer
 * (owned by the caller); *len_out (may be NULL) gets its length without the NUL. */
char *tmoe_file_read_all(const char *path, size_t max_bytes, size_t *len_out, tmoe_error *err);
/* Refuse to write to path if it exists and is not a regular file (a device node, FIFO,
 * directory): TMOE_EINVAL naming it; TMOE_OK if absent or regular. */
int tmoe_file_check_writable(const char *path, tmoe_error *err);

/* An output written whole or not at all: the data goes to "<path>.tmp.<pid>" beside it and
 * is renamed over path only after every write, fflush, fsync and fclose succeeded; on any
 * failure the temporary is removed and path keeps its old contents. */
typedef struct tmoe_atomic_file {
    FILE *f;         /* write through this */
    char path[4096]; /* final name */
    char tmp[4096];  /* temporary name */
} tmoe_atomic_file;
/* Open the temporary for path (refused if path exists and is not a regular file). */
int tmoe_atomic_open(tmoe_atomic_file *af, const char *path, tmoe_error *err);
/* Finish: check the stream, flush, sync, close and rename. TMOE_EIO names the file and the
 * system's reason (e.g. "No space left on device"); the temporary is removed then. */
int tmoe_atomic_commit(tmoe_atomic_file *af, tmoe_error *err);
/* Give up: close and remove the temporary. NULL-safe and safe after commit. */
void tmoe_atomic_abort(tmoe_atomic_file *af);
/* Create a directory and its parents (mode 0755); existing directories are fine. */
int tmoe_mkdir_p(const char *path, tmoe_error *err);

/* ---- order statistics --------------------------------------------------------------- */
/* Percentile p in [0, 100] of sorted (ascending, n >= 1; both asserted) by linear
 * interpolation between order statistics: h = (n - 1) p / 100, then
 * sorted[floor h] + (h - floor h) (sorted[floor h + 1] - sorted[floor h]). This is R's
 * quantile type 7 and numpy's default; p = 0 is the minimum, p = 100 the maximum, and n = 1
 * gives the one value for every p. The one percentile of thermoe: the profiler's latency
 * median and p90, the run summary and the analysis all use it. */
double tmoe_percentile_sorted(const double *sorted, int n, double p);
/* qsort comparator of doubles, ascending; -0 and +0 are equal, NaNs sort after every
 * number (a total order, so sorting data with NaNs is well defined). */
int tmoe_cmp_double(const void *a, const void *b);

/* ---- CSV: the one RFC 4180 reader behind every CSV file thermoe reads ---------------
 * Records of fields separated by ',' and ended by "\n" or "\r\n" (a lone '\r' is data);
 * the last record may lack its newline. A field that starts with '"' is quoted: it may hold
 * ',', newlines and "" (one '"'); text after its closing quote, up to the next ',' or the
 * end of the record, is kept as it is. A '"' inside an unquoted field is data. A NUL byte is
 * stored like any other, so it ends the field as a C string (compare begin..end with memchr
 * to find one). Lines are 1-based and count every newline, quoted ones too.
 *
 *     tmoe_csv c;
 *     tmoe_csv_init(&c, text, len);
 *     while ((rc = tmoe_csv_next(&c, err)) == TMOE_OK && c.nfields > 0)
 *         ... tmoe_csv_field(&c, i) for i < c.nfields, c.line ...
 *     tmoe_csv_free(&c);
 */
typedef struct tmoe_csv {
    const char *data; /* the input (read-only) */
    size_t len;
    /* the record read last: valid until the next tmoe_csv_next */
    int nfields;       /* 1 or more; 0 at the end of the input */
    int line;          /* 1-based line where it starts */
    size_t begin, end; /* its bytes: data[begin, end), its newline included */
    int terminated;    /* 1: ended by a newline; 0: by the end of the input */
    int unclosed;      /* 1: a quoted field ran to the end of the input */
    /* limits, 0 = none; set them after init, before the first record */
    int max_fields;          /* fields in one record */
    size_t max_record_bytes; /* bytes of one record's input */
    /* private */
    size_t pos;
    int next_line;
    char *owned; /* the input, when tmoe_csv_open_file read it */
    char *buf;   /* the fields' text, each NUL-terminated */
    size_t blen, bcap;
    size_t *off; /* (ocap) where each field starts in buf */
    int ocap;
} tmoe_csv;

/* Read data (len bytes, not copied: it must outlive the reader) from its start, line 1. */
void tmoe_csv_init(tmoe_csv *c, const char *data, size_t len);
/* Read a whole regular file of at most max_bytes (0 = no limit) through tmoe_file_read_all
 * and init c over it; the text is owned by c. On failure c is empty (its free is safe). */
int tmoe_csv_open_file(tmoe_csv *c, const char *path, size_t max_bytes, tmoe_error *err);
/* Read the next record. TMOE_OK with c->nfields > 0, or c->nfields == 0 at the end.
 * TMOE_EFORMAT when a quoted field is not closed before the end of the input: the record,
 * as far as the input goes, is filled in all the same (c->unclosed = 1), and the message is
 * "line N: quoted field not closed before the end of the input". TMOE_EFORMAT also when a
 * record passes a limit, or the input has more than INT_MAX lines (nothing filled in);
 * TMOE_ENOMEM. Messages start "line N:" for the caller to prefix with the file's name.
 * After an error the reader is at the end of the input. */
int tmoe_csv_next(tmoe_csv *c, tmoe_error *err);
/* Field i (0 <= i < c->nfields) of the record read last, NUL-terminated, owned by c. */
const char *tmoe_csv_field(const tmoe_csv *c, int i);
/* The input not read yet: its address, and its length in *n. To look at a line before
 * reading it (a tool's message line, a blank line). */
const char *tmoe_csv_peek(const tmoe_csv *c, size_t *n);
/* Pass over the rest of the current line, up to and with its newline, as no record: for
 * lines that are not CSV (a tool's messages). Its line counts. */
void tmoe_csv_skip_line(tmoe_csv *c);
/* Free the reader's memory (and the text tmoe_csv_open_file read). NULL-safe. */
void tmoe_csv_free(tmoe_csv *c);

/* ---- misc --------------------------------------------------------------------------- */
int64_t tmoe_now_ns(void); /* CLOCK_MONOTONIC */
/* Checked allocation helpers: return NULL and fill err on failure (size in message). */
void *tmoe_malloc(size_t n, tmoe_error *err);
void *tmoe_calloc(size_t n, size_t size, tmoe_error *err);

/* ============================== ops =================================================== */
/* The one table of op types, expert types, implementations and activations.
 * Every module (model, profiler, cost model, router, logs) names ops through this table. */

typedef enum {
    TMOE_OP_GATE_LINEAR,    /* router logits, tokens x d_model -> tokens x E */
    TMOE_OP_GATE_TOPK,      /* softmax + bias + top-k selection + combine weights */
    TMOE_OP_PERMUTE,        /* group token copies by expert (histogram, scan, scatter) */
    TMOE_OP_DEQUANT_UNPACK, /* unpack q4/q2 weights to fp16 (unfused path only) */
    TMOE_OP_LINEAR_FC1,     /* expert up projection (fused dequant when impl = fused) */
    TMOE_OP_RELU,           /* activation (swiglu for gated experts) */
    TMOE_OP_LINEAR_FC2,     /* expert down projection */
    TMOE_OP_COMBINE,        /* weighted sum of expert outputs back to token order */
    TMOE_OP_NORM,           /* RMSNorm */
    TMOE_OP_ATTN_QKV,       /* fused q, k, v projection */
    TMOE_OP_ATTN_CORE,      /* causal softmax(q k^T / sqrt(dh)) v */
    TMOE_OP_ATTN_OUT,       /* output projection */
    TMOE_OP_COUNT
} tmoe_op;

/* Expert weight types: fp16, packed q4 / q2 (thermoe/model.h "quant"), and bf16 (the dtype of
 * real checkpoints, kept as loaded). bf16 comes last so the other values keep their numbers. */
typedef enum { TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2, TMOE_ET_BF16, TMOE_ET_COUNT } tmoe_etype;
typedef enum { TMOE_IMPL_UNFUSED, TMOE_IMPL_FUSED, TMOE_IMPL_COUNT } tmoe_impl;
typedef enum { TMOE_ACT_RELU, TMOE_ACT_SWIGLU, TMOE_ACT_COUNT } tmoe_act;

const char *tmoe_op_name(tmoe_op op);
const char *tmoe_etype_name(tmoe_etype t);
const char *tmoe_impl_name(tmoe_impl i);
const char *tmoe_act_name(tmoe_act a);

/* Parse a name; return 0 and set *out, or -1 when the name is unknown. */
int tmoe_op_parse(const char *s, tmoe_op *out);
int tmoe_etype_parse(const char *s, tmoe_etype *out);
int tmoe_impl_parse(const char *s, tmoe_impl *out);
int tmoe_act_parse(const char *s, tmoe_act *out);

/* Bits per weight of an expert type (16, 4, 2, 16). */
int tmoe_etype_bits(tmoe_etype t);
/* 1 for the packed types with group scales (q4, q2), 0 for the 16-bit float types (fp16, bf16):
 * only quantized types have a dequant_unpack step and an unfused / fused choice. */
int tmoe_etype_is_quant(tmoe_etype t);

/* An expert's forward as the ordered op list of DESIGN.md:
 * dequant_unpack (quantized and unfused only) -> linear_fc1 -> relu -> linear_fc2.
 * Writes up to 4 ops to out; returns how many. */
int tmoe_expert_op_sequence(tmoe_etype t, tmoe_impl impl, tmoe_op out[4]);

#ifdef __cplusplus
}
#endif
#endif
