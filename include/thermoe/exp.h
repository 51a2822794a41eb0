/* Experiment harness pieces: the batch-row writer for batches.csv (flushed per row,
 * resumable), the Chrome trace-event writer, and the experiment runner. */
#ifndef THERMOE_EXP_H
#define THERMOE_EXP_H

#include <stdio.h>

#include "thermoe/core.h"
#include "thermoe/runlog.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- one CSV row, cells formatted per the column types of runlog.h ----------------- */
#define TMOE_RUNLOG_CELL 4096
typedef struct tmoe_runlog_row {
    char cell[TMOE_RL_NCOLS][TMOE_RUNLOG_CELL];
} tmoe_runlog_row;

void tmoe_runlog_row_clear(tmoe_runlog_row *r);            /* every cell unknown ("") */
void tmoe_runlog_row_str(tmoe_runlog_row *r, int col, const char *s);
void tmoe_runlog_row_int(tmoe_runlog_row *r, int col, long long v);
void tmoe_runlog_row_dbl(tmoe_runlog_row *r, int col, double v); /* NAN -> "nan" */
void tmoe_runlog_row_ints(tmoe_runlog_row *r, int col, const int32_t *v, int n);
void tmoe_runlog_row_dbls(tmoe_runlog_row *r, int col, const double *v, int n);

/* ---- batches.csv writer ------------------------------------------------------------ */
typedef struct tmoe_runlog_writer tmoe_runlog_writer;

/* Key of a combination: rows of one (repeat, workload, strategy) form one unit of resume. */
typedef struct tmoe_runlog_done {
    int repeat;
    char workload[64], strategy[64];
    int rows;    /* valid rows, batch_idx 0 .. rows - 1 in order */
    int invalid; /* a row of it was dropped (unparsable, another run's, out of order): rerun */
} tmoe_runlog_done;

/* Open path for writing (refused unless it is a regular file or absent). resume = 0: the
 * file is created (or replaced); resume = 1: existing rows are checked and the combinations
 * found are listed in *done (caller frees with free()). A torn last line is cut off; a line
 * that is not a valid row of run run_id (NULL: of any run; field count, every typed cell
 * parses, batch_idx in sequence) is reported with tmoe_log and marks its combination
 * invalid. The caller then calls tmoe_runlog_drop to remove unfinished combinations and
 * invalid lines before appending. */
int tmoe_runlog_open(const char *path, int resume, const char *run_id, tmoe_runlog_writer **out,
                     tmoe_runlog_done **done, int *ndone, tmoe_error *err);
/* Rewrite the file (through a temporary and a rename) keeping only the valid rows whose
 * combination is in keep[0..nkeep). */
int tmoe_runlog_drop(tmoe_runlog_writer *w, const tmoe_runlog_done *keep, int nkeep,
                     tmoe_error *err);
/* Append one row with one write (a killed process leaves whole lines); a failed write is
 * cut back off the file, which then ends with its last whole row. */
int tmoe_runlog_write(tmoe_runlog_writer *w, const tmoe_runlog_row *r, tmoe_error *err);
/* Data lines in the file: rows written, or after a resume scan every line found (valid or
 * not) until tmoe_runlog_drop. */
long tmoe_runlog_rows(const tmoe_runlog_writer *w);
/* Split one CSV line (no newline) into fields, RFC 4180 quoting. buf (strlen(line) + 1
 * bytes) receives the unquoted fields, fields[] points into it. Returns the field count
 * (max + 1 when there are more than max; 0 when out of memory). */
int tmoe_runlog_split(const char *line, char *buf, char **fields, int max);
/* Sync and close; reports a write error the system reports only now. NULL-safe. */
int tmoe_runlog_close(tmoe_runlog_writer *w, tmoe_error *err);

/* ---- Chrome trace-event JSON (Perfetto / chrome://tracing) ------------------------- */
typedef struct tmoe_trace tmoe_trace;
int tmoe_trace_open(const char *path, tmoe_trace **out, tmoe_error *err);
/* A complete event ("ph":"X"): ts and dur in microseconds. args_json: an object or NULL. */
void tmoe_trace_span(tmoe_trace *t, const char *name, const char *cat, int pid, int tid,
                     double ts_us, double dur_us, const char *args_json);
/* A counter sample ("ph":"C") of one series. */
void tmoe_trace_counter(tmoe_trace *t, const char *name, int pid, double ts_us,
                        const char *series, double value);
/* Name a process / thread track ("ph":"M"). */
void tmoe_trace_name(tmoe_trace *t, int pid, int tid, const char *name);
int tmoe_trace_close(tmoe_trace *t, tmoe_error *err); /* NULL-safe; reports a write error */

#ifdef __cplusplus
}
#endif
#endif
