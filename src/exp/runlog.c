/* The run log schema: one table of columns, shared by the writer (exp) and every reader. */
#include <string.h>

#include "thermoe/exp.h"

#define TMOE_RUNLOG_ROW_(id, name, type, unit) {name, type, unit},
const tmoe_runlog_col tmoe_runlog_cols[TMOE_RL_NCOLS] = {TMOE_RUNLOG_COLUMNS(TMOE_RUNLOG_ROW_)};
#undef TMOE_RUNLOG_ROW_

int tmoe_runlog_col_find(const char *name) {
    for (int i = 0; i < TMOE_RL_NCOLS; i++)
        if (strcmp(tmoe_runlog_cols[i].name, name) == 0) return i;
    return -1;
}
