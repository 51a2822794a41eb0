/* thermoe sweep: write the combinations of a `thermoe run` (repeat x workload x strategy) as
 * independent tasks, each a `thermoe run --repeats 1` of one combination with its own output
 * directory and seed: a Slurm array script (--emit slurm) or a plain bash loop (--emit bash),
 * and the task table DIR/tasks.tsv. `thermoe analyze DIR/task_*` merges the results.
 *
 * Seed rule (--seed-rule), with S the base --seed:
 *   repeat (default): seed = S + repeat. The tasks of one repeat share weights, inputs and
 *                     arrival times (common random numbers across strategies, as inside one
 *                     run); repeats are independent replicates of all of them.
 *   task:             seed = S + task id: every task its own model and inputs.
 *   same:             seed = S for every task: the weights and inputs of one `thermoe run`.
 * Each task also gets --first-repeat <repeat>, so its rows carry their repeat number and its
 * router seeds are those of that repeat.
 *
 * Every value written into the script is one single-quoted shell word (cli_shell_quote); a
 * value with a control character is refused (exit 2) before anything is written, since it
 * would end a comment or an #SBATCH line; the values of #SBATCH lines, which Slurm splits
 * itself, may not hold whitespace, quotes or backslashes either. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "thermoe/route.h"
#include "thermoe/exp.h"

#define SWEEP_MAX_PASS 256
#define SWEEP_MAX_SBATCH 16

/* print "thermoe sweep: ..." and return the usage-error exit code */
#define FAIL2(...)                                                                                 \
    do {                                                                                           \
        cli_fail(__VA_ARGS__);                                                                     \
        return 2;                                                                                  \
    } while (0)

typedef enum { SEED_REPEAT, SEED_TASK, SEED_SAME } seed_rule;
static const char *const seed_rule_names[] = {"repeat", "task", "same"};

typedef struct sweep_config {
    const char *emit; /* "slurm" or "bash" */
    const char *out;  /* sweep directory */
    seed_rule rule;
    const char *job_name, *partition, *time_limit, *thermoe;
    int gpus, cpus, max_parallel, force;
    int ranks;            /* processes per task (expert parallelism when > 1) */
    const char *launcher; /* what starts a task's ranks; NULL = srun (slurm), mpirun -np N */
    const char *sbatch_opts[SWEEP_MAX_SBATCH];
    int n_sbatch_opts;
    /* the run flags the sweep takes apart */
    int strategies[TMOE_ROUTE_STRATEGY_COUNT];
    int workloads[TMOE_WL_COUNT];
    int repeats, first_repeat;
    uint64_t seed;
    /* every other run flag, passed to each task unchanged */
    char *pass[SWEEP_MAX_PASS];
    int npass;
} sweep_config;

typedef struct sweep_task {
    int repeat;
    tmoe_workload_kind wl;
    tmoe_route_strategy st;
    uint64_t seed;
} sweep_task;

static void sweep_help(void) {
    tmoe_run_config d = tmoe_run_config_default();
    printf(
        "usage: thermoe sweep --emit slurm|bash --out DIR [sweep flags] [run flags]\n\n"
        "Write the repeat x workload x strategy combinations of a 'thermoe run' as independent\n"
        "tasks: each runs 'thermoe run --repeats 1' of one combination, with its own output\n"
        "directory DIR/task_<id> and seed, and the same other flags. Merge the results with\n"
        "'thermoe analyze DIR/task_*'. The task table is DIR/tasks.tsv.\n\n"
        "sweep flags:\n"
        "  --emit slurm|bash         slurm: DIR/sweep.sbatch, an sbatch array script (one array\n"
        "                            task per combination); bash: DIR/sweep.sh, a local loop\n"
        "                            ('bash DIR/sweep.sh [ID...]' runs the listed tasks or all)\n"
        "  --out DIR                 sweep directory (required; created)\n"
        "  --seed-rule R             repeat, task or same (default repeat): the seed of a task is\n"
        "                            --seed + repeat, --seed + task id, or --seed\n"
        "  --thermoe PATH            program the tasks run (default: this program; the THERMOE\n"
        "                            environment variable overrides it when the script runs)\n"
        "  --job-name NAME           Slurm job name (default thermoe-sweep)\n"
        "  --partition P             Slurm partition (default: the cluster's default)\n"
        "  --time T                  Slurm time limit per task, e.g. 02:00:00 (default: none)\n"
        "  --gpus N                  GPUs per task, --gres=gpu:N (default 1; 0 = no request)\n"
        "  --cpus-per-task N         Slurm CPUs per task (default: not set)\n"
        "  --max-parallel N          at most N tasks at once (array %%N; default 0 = no limit)\n"
        "  --sbatch-opt OPT          an extra '#SBATCH OPT' line (repeatable, up to %d)\n"
        "  --ranks N                 processes per task (default 1): N > 1 runs each task with\n"
        "                            --expert-parallel over N ranks (--ntasks=N; one GPU each,\n"
        "                            so set --gpus to the GPUs per node); merge DIR/task_*/rank0\n"
        "  --launcher CMD            what starts a task's ranks (default: srun with --emit slurm,\n"
        "                            'mpirun -np N' with --emit bash), split at spaces\n"
        "  --force                   write into a DIR that already holds a sweep\n"
        "  -h, --help\n\n"
        "run flags taken apart per task:\n"
        "  --repeats N (default %d)  --first-repeat N (default 0)  --seed N (default %llu)\n"
        "  --workloads LIST, --routing-strategy LIST (default all)\n"
        "every other 'thermoe run' flag goes to each task unchanged ('thermoe run --help');\n"
        "(--out is the sweep directory); not allowed: --log-file, --resume, --config. Each task\n"
        "also gets --no-analyze, and --resume when its directory already holds a run (a\n"
        "requeued or killed task continues where it stopped).\n",
        SWEEP_MAX_SBATCH, d.repeats, (unsigned long long)d.seed);
}

static const char *strategy_name(int i) {
    return tmoe_route_strategy_name((tmoe_route_strategy)i);
}
static const char *workload_name(int i) {
    return tmoe_workload_name((tmoe_workload_kind)i);
}

/* A sweep flag: returns 0 handled, 1 error (printed), 2 usage error, -1 not a sweep flag. */
static int sweep_flag(sweep_config *c, const char *name, const char *val) {
    long lv;
    if (!strcmp(name, "emit")) {
        if (strcmp(val, "slurm") && strcmp(val, "bash"))
            FAIL2("sweep", "--emit: '%s' (expected slurm or bash)", val);
        c->emit = val;
    } else if (!strcmp(name, "out")) {
        c->out = val;
    } else if (!strcmp(name, "seed-rule")) {
        int i = 0;
        while (i < 3 && strcmp(val, seed_rule_names[i])) i++;
        if (i == 3) FAIL2("sweep", "--seed-rule: '%s' (expected repeat, task or same)", val);
        c->rule = (seed_rule)i;
    } else if (!strcmp(name, "thermoe")) {
        c->thermoe = val;
    } else if (!strcmp(name, "job-name")) {
        c->job_name = val;
    } else if (!strcmp(name, "partition")) {
        c->partition = val;
    } else if (!strcmp(name, "time")) {
        c->time_limit = val;
    } else if (!strcmp(name, "gpus")) {
        if (cli_int("sweep", "gpus", val, 0, 64, &lv)) return 2;
        c->gpus = (int)lv;
    } else if (!strcmp(name, "cpus-per-task")) {
        if (cli_int("sweep", "cpus-per-task", val, 1, 4096, &lv)) return 2;
        c->cpus = (int)lv;
    } else if (!strcmp(name, "max-parallel")) {
        if (cli_int("sweep", "max-parallel", val, 0, 1000000, &lv)) return 2;
        c->max_parallel = (int)lv;
    } else if (!strcmp(name, "ranks")) {
        if (cli_int("sweep", "ranks", val, 1, 64, &lv)) return 2;
        c->ranks = (int)lv;
    } else if (!strcmp(name, "launcher")) {
        if (strpbrk(val, "'\"")) FAIL2("sweep", "--launcher: no quotes (it is split at spaces)");
        c->launcher = val;
    } else if (!strcmp(name, "sbatch-opt")) {
        if (c->n_sbatch_opts == SWEEP_MAX_SBATCH)
            FAIL2("sweep", "--sbatch-opt: at most %d", SWEEP_MAX_SBATCH);
        c->sbatch_opts[c->n_sbatch_opts++] = val;
    } else if (!strcmp(name, "repeats")) {
        if (cli_int("sweep", "repeats", val, 1, 10000, &lv)) return 2;
        c->repeats = (int)lv;
    } else if (!strcmp(name, "first-repeat")) {
        if (cli_int("sweep", "first-repeat", val, 0, 1000000, &lv)) return 2;
        c->first_repeat = (int)lv;
    } else if (!strcmp(name, "seed")) {
        if (cli_u64("sweep", "seed", val, &c->seed)) return 2;
    } else if (!strcmp(name, "workloads")) {
        if (cli_name_list("sweep", "workloads", val, c->workloads, TMOE_WL_COUNT, workload_name))
            return 2;
    } else if (!strcmp(name, "routing-strategy")) {
        if (cli_name_list("sweep", "routing-strategy", val, c->strategies,
                          TMOE_ROUTE_STRATEGY_COUNT, strategy_name))
            return 2;
        if (!strcmp(val, "all")) /* the six, as thermoe run; the comparisons by name */
            for (int s = TMOE_ROUTE_FIRST_COMPARISON; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
                c->strategies[s] = 0;
    } else {
        return -1;
    }
    return 0;
}

static int takes_value(const char *name) {
    static const char *const with_value[] = {
        "emit", "out",           "seed-rule",    "thermoe",    "job-name", "partition", "time",
        "gpus", "cpus-per-task", "max-parallel", "sbatch-opt", "ranks",    "launcher"};
    for (size_t i = 0; i < sizeof with_value / sizeof *with_value; i++)
        if (!strcmp(name, with_value[i])) return 1;
    return cmd_run_flag_arity(name);
}

/* Returns 0, -1 (help), or an exit code. */
static int parse_sweep(int argc, char **argv, sweep_config *c) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return -1;
        if (!strcmp(a, "-v")) {
            if (c->npass == SWEEP_MAX_PASS) FAIL2("sweep", "too many run flags");
            c->pass[c->npass++] = argv[i];
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            cli_fail("sweep", "unexpected argument '%s'", a);
            return cli_usage_error("sweep");
        }
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (len >= sizeof name) FAIL2("sweep", "unknown flag '%s'", a);
        memcpy(name, a + 2, len);
        name[len] = '\0';
        if (!strcmp(name, "force")) {
            c->force = 1;
            continue;
        }
        if (!strcmp(name, "log-file") || !strcmp(name, "resume") || !strcmp(name, "config")) {
            cli_fail("sweep",
                     "--%s cannot be used in a sweep (each task has its own directory; "
                     "pass the flags themselves)",
                     name);
            return 2;
        }
        int arity = takes_value(name);
        if (arity < 0) {
            cli_fail("sweep", "unknown flag '--%s' (neither a sweep flag nor a 'thermoe run' flag)",
                     name);
            return cli_usage_error("sweep");
        }
        const char *val = NULL;
        int own_token = 0;
        if (arity == 1) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
                own_token = 1;
            } else {
                cli_fail("sweep", "--%s needs a value", name);
                return cli_usage_error("sweep");
            }
        } else if (eq) {
            cli_fail("sweep", "--%s takes no value", name);
            return cli_usage_error("sweep");
        }
        if (val) {
            char what[160];
            snprintf(what, sizeof what, "--%s", name);
            if (!cli_script_value_ok("sweep", what, val)) return 2;
        }
        int r = arity == 1 ? sweep_flag(c, name, val) : -1;
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        if (c->npass + 2 > SWEEP_MAX_PASS) return cli_fail("sweep", "too many run flags");
        c->pass[c->npass++] = own_token ? argv[i - 1] : argv[i];
        if (own_token) c->pass[c->npass++] = argv[i];
    }
    if (!c->emit) {
        cli_fail("sweep", "--emit slurm|bash is required");
        return cli_usage_error("sweep");
    }
    if (!c->out) {
        cli_fail("sweep", "--out DIR is required");
        return cli_usage_error("sweep");
    }
    return 0;
}

/* 1 when s can be one argument of an #SBATCH line; else print why and return 0. Slurm splits
 * those lines at whitespace and reads quotes and backslashes itself, and expands '%' in a
 * file name (%a, %j, ...), so none of them may be in it. */
static int slurm_word_ok(const char *what, const char *s, int file_name) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '"' || *p == '\'' || *p == '\\' ||
            (file_name && *p == '%')) {
            cli_fail("sweep",
                     "%s: '%s' cannot go into an #SBATCH line: Slurm splits it at "
                     "whitespace and reads %s itself (byte %d); choose a value without them",
                     what, s, file_name ? "quotes, backslashes and '%'" : "quotes and backslashes",
                     (int)(p - (const unsigned char *)s) + 1);
            return 0;
        }
    return 1;
}

/* A comment line's text: the values in it were checked, but a control character would end
 * the comment, so none is written whatever comes. */
static void put_comment_text(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < ' ' || *p == 0x7f ? '?' : *p, f);
}

static uint64_t task_seed(const sweep_config *c, int id, int repeat) {
    switch (c->rule) {
    case SEED_REPEAT: return c->seed + (uint64_t)repeat;
    case SEED_TASK: return c->seed + (uint64_t)id;
    case SEED_SAME: return c->seed;
    }
    return c->seed;
}

/* The task table: repeats in order; within a repeat the workload x strategy combinations in
 * an order shuffled with the base seed and the repeat (run one after another on one GPU, heat
 * from one combination is then not always billed to the same next one). */
static int make_tasks(const sweep_config *c, sweep_task **out) {
    int nwl = 0, nst = 0;
    for (int w = 0; w < TMOE_WL_COUNT; w++) nwl += c->workloads[w] != 0;
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) nst += c->strategies[s] != 0;
    int n = c->repeats * nwl * nst;
    sweep_task *t = calloc((size_t)n, sizeof *t);
    if (!t) return -1;
    int k = 0;
    for (int r = c->first_repeat; r < c->first_repeat + c->repeats; r++) {
        int first = k;
        for (int w = 0; w < TMOE_WL_COUNT; w++)
            for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
                if (c->workloads[w] && c->strategies[s])
                    t[k++] = (sweep_task){r, (tmoe_workload_kind)w, (tmoe_route_strategy)s, 0};
        tmoe_rng o;
        tmoe_rng_seed_stream(&o, c->seed, 0x5eeb0000u + (uint64_t)r);
        for (int i = k - 1; i > first; i--) {
            int j = first + (int)tmoe_rng_below(&o, (uint32_t)(i - first + 1));
            sweep_task x = t[i];
            t[i] = t[j];
            t[j] = x;
        }
    }
    for (int i = 0; i < n; i++) t[i].seed = task_seed(c, i, t[i].repeat);
    *out = t;
    return n;
}

/* Write the sbatch or bash script to path (whole or nothing). Every value in it was checked
 * for control characters (and #SBATCH values for Slurm's own syntax) by the caller. */
static int write_script(const sweep_config *c, const char *dir, const char *exe, const char *cwd,
                        const sweep_task *t, int n, const char *cmdline, const char *path) {
    int slurm = !strcmp(c->emit, "slurm");
    tmoe_error err = {0};
    tmoe_atomic_file af;
    if (tmoe_atomic_open(&af, path, &err)) return cli_fail_err("sweep", &err);
    FILE *f = af.f;
    int bad = 0; /* a value that cli_shell_quote refused */
    fprintf(f, "#!/bin/bash\n");
    if (slurm) {
        fprintf(f, "#SBATCH --job-name=%s\n", c->job_name);
        fprintf(f, "#SBATCH --array=0-%d", n - 1);
        if (c->max_parallel > 0) fprintf(f, "%%%d", c->max_parallel);
        fprintf(f, "\n#SBATCH --output=%s/logs/task_%%a.out\n", dir);
        fprintf(f, "#SBATCH --ntasks=%d\n", c->ranks);
        if (c->gpus > 0) fprintf(f, "#SBATCH --gres=gpu:%d\n", c->gpus);
        if (c->cpus > 0) fprintf(f, "#SBATCH --cpus-per-task=%d\n", c->cpus);
        if (c->partition) fprintf(f, "#SBATCH --partition=%s\n", c->partition);
        if (c->time_limit) fprintf(f, "#SBATCH --time=%s\n", c->time_limit);
        for (int i = 0; i < c->n_sbatch_opts; i++) fprintf(f, "#SBATCH %s\n", c->sbatch_opts[i]);
    }
    fprintf(
        f,
        "# thermoe sweep: %d tasks (repeat x workload x strategy), one 'thermoe run --repeats 1'\n"
        "# each, writing %s/task_<id>. Task table: %s/tasks.tsv.\n",
        n, dir, dir);
    fprintf(f, "# Seed rule '%s': seed = %llu%s.\n", seed_rule_names[c->rule],
            (unsigned long long)c->seed,
            c->rule == SEED_REPEAT ? " + repeat"
            : c->rule == SEED_TASK ? " + task id"
                                   : " for every task");
    fprintf(f, "# Merge: %s analyze %s/task_*%s\n", exe, dir, c->ranks > 1 ? "/rank0" : "");
    if (c->ranks > 1)
        fprintf(f, "# Each task: %d ranks (--expert-parallel), rank r writes task_<id>/rank<r>.\n",
                c->ranks);
    if (slurm)
        fprintf(f,
                "# Submit: sbatch %s/sweep.sbatch   (one task by hand: SLURM_ARRAY_TASK_ID=ID bash "
                "%s/sweep.sbatch)\n",
                dir, dir);
    else
        fprintf(f, "# Run: bash %s/sweep.sh [ID...]   (no ID: every task in order)\n", dir);
    fprintf(f, "# Generated by: ");
    put_comment_text(f, cmdline);
    fprintf(f, "\nset -euo pipefail\nTHERMOE=${THERMOE:-");
    bad |= cli_shell_quote(f, exe) != 0;
    fprintf(f, "}\ncd ");
    bad |= cli_shell_quote(f, cwd) != 0;
    fprintf(f, "\nlaunch=(");
    if (c->launcher) {
        char buf[1024], *save = NULL;
        if (snprintf(buf, sizeof buf, "%s", c->launcher) >= (int)sizeof buf) bad = 1;
        for (char *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
            bad |= cli_shell_quote(f, tok) != 0;
            fputc(' ', f);
        }
    } else if (c->ranks > 1) {
        if (slurm)
            fprintf(f, "srun");
        else
            fprintf(f, "mpirun -np %d", c->ranks);
    }
    fprintf(f, ")");
    fprintf(f, "\ncommon=(");
    for (int i = 0; i < c->npass; i++) {
        bad |= cli_shell_quote(f, c->pass[i]) != 0;
        fputc(' ', f);
    }
    fprintf(f, "--repeats 1 --no-analyze%s)\n\ntask_args() {\n    case \"$1\" in\n",
            c->ranks > 1 ? " --expert-parallel" : "");
    for (int i = 0; i < n; i++) {
        char out[PATH_MAX + 32];
        snprintf(out, sizeof out, "%s/task_%d", dir, i);
        fprintf(f, "    %d) out=", i);
        bad |= cli_shell_quote(f, out) != 0;
        fprintf(f,
                "; args=(--first-repeat %d --workloads %s --routing-strategy %s --seed %llu) ;;\n",
                t[i].repeat, tmoe_workload_name(t[i].wl), tmoe_route_strategy_name(t[i].st),
                (unsigned long long)t[i].seed);
    }
    fprintf(f,
            "    *) echo \"thermoe sweep: no task '$1' (tasks are 0..%d)\" >&2; return 2 ;;\n"
            "    esac\n}\n\n",
            n - 1);
    fprintf(f, "# one task; a directory that already holds a run is continued with --resume\n"
               "run_task() {\n"
               "    local out args\n"
               "    task_args \"$1\" || return $?\n"
               "    local extra=()\n"
               "    if [ -e \"$out/metadata.json\" ] || [ -e \"$out/rank0/metadata.json\" ]; then "
               "extra=(--resume); fi\n"
               "    ${launch[@]+\"${launch[@]}\"} \"$THERMOE\" run \"${common[@]}\" \"${args[@]}\" "
               "--out \"$out\" ${extra[@]+\"${extra[@]}\"}\n"
               "}\n\n");
    if (slurm) {
        fprintf(f, "run_task \"${SLURM_ARRAY_TASK_ID:?not set: submit with sbatch, or set it to "
                   "run one task}\"\n");
    } else {
        fprintf(f,
                "if [ $# -gt 0 ]; then ids=(\"$@\"); else ids=($(seq 0 %d)); fi\n"
                "failed=0\n"
                "for id in \"${ids[@]}\"; do\n"
                "    echo \"thermoe sweep: task $id\" >&2\n"
                "    run_task \"$id\" || { echo \"thermoe sweep: task $id failed\" >&2; "
                "failed=$((failed + 1)); }\n"
                "done\n"
                "[ \"$failed\" -eq 0 ] || { echo \"thermoe sweep: $failed task(s) failed\" >&2; "
                "exit 1; }\n",
                n - 1);
    }
    if (bad && !ferror(f)) {
        tmoe_atomic_abort(&af);
        return cli_fail("sweep", "%s: a value could not be quoted for the script (not written)",
                        path);
    }
    if (tmoe_atomic_commit(&af, &err)) return cli_fail_err("sweep", &err);
    if (chmod(path, 0755) != 0)
        return cli_fail("sweep", "cannot make %s executable: %s", path, strerror(errno));
    return 0;
}

static int write_table(const char *dir, const sweep_task *t, int n) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/tasks.tsv", dir);
    tmoe_error err = {0};
    tmoe_atomic_file af;
    if (tmoe_atomic_open(&af, path, &err)) return cli_fail_err("sweep", &err);
    fprintf(af.f, "task\trepeat\tworkload\tstrategy\tseed\tout\n");
    for (int i = 0; i < n; i++)
        fprintf(af.f, "%d\t%d\t%s\t%s\t%llu\t%s/task_%d\n", i, t[i].repeat,
                tmoe_workload_name(t[i].wl), tmoe_route_strategy_name(t[i].st),
                (unsigned long long)t[i].seed, dir, i);
    /* commit checks the stream: a failed fprintf above fails it, the old table is kept */
    return tmoe_atomic_commit(&af, &err) ? cli_fail_err("sweep", &err) : 0;
}

int cmd_sweep(int argc, char **argv) {
    tmoe_run_config d = tmoe_run_config_default();
    sweep_config c;
    memset(&c, 0, sizeof c);
    c.rule = SEED_REPEAT;
    c.job_name = "thermoe-sweep";
    c.gpus = 1;
    c.ranks = 1;
    c.repeats = d.repeats;
    c.seed = d.seed;
    memcpy(c.strategies, d.strategies, sizeof c.strategies);
    memcpy(c.workloads, d.workloads, sizeof c.workloads);
    int pr = parse_sweep(argc, argv, &c);
    if (pr == -1) {
        sweep_help();
        return 0;
    }
    if (pr) return pr;
    /* the values of #SBATCH lines (control characters were refused with every value) */
    if (!slurm_word_ok("--job-name", c.job_name, 0) ||
        (c.partition && !slurm_word_ok("--partition", c.partition, 0)) ||
        (c.time_limit && !slurm_word_ok("--time", c.time_limit, 0)))
        return 2;
    int slurm = !strcmp(c.emit, "slurm");

    /* check every run flag now, not on the cluster: parse them as 'thermoe run' would */
    char *chk[SWEEP_MAX_PASS + 2];
    int nc = 0;
    chk[nc++] = "run";
    for (int i = 0; i < c.npass; i++) chk[nc++] = c.pass[i];
    chk[nc] = NULL;
    for (int i = 0; i < c.npass; i++)
        if (!strcmp(c.pass[i], "--expert-parallel"))
            return cli_fail("sweep", "--expert-parallel: use --ranks N, which starts each task's N "
                                     "ranks (srun or mpirun) and passes --expert-parallel");
    int rr = cmd_run_check(nc, chk);
    if (rr) return rr;

    char exe[PATH_MAX], dir[PATH_MAX], cwd[PATH_MAX];
    if (c.thermoe) {
        if (snprintf(exe, sizeof exe, "%s", c.thermoe) >= (int)sizeof exe)
            return cli_fail("sweep", "--thermoe: path too long");
    } else if (!realpath("/proc/self/exe", exe)) {
        return cli_fail("sweep", "cannot find this program's path (%s): pass --thermoe PATH",
                        strerror(errno));
    } else if (!cli_script_value_ok("sweep", "this program's path (pass --thermoe PATH)", exe)) {
        return 1;
    }
    if (!getcwd(cwd, sizeof cwd))
        return cli_fail("sweep", "cannot read the working directory: %s", strerror(errno));
    if (!cli_script_value_ok("sweep", "the working directory", cwd)) return 1;
    /* the sweep directory goes into #SBATCH --output: check it before creating anything,
     * and again once resolved (a symbolic link may lead elsewhere) */
    if (slurm && (!slurm_word_ok("--out", c.out, 1) ||
                  (c.out[0] != '/' && !slurm_word_ok("--out (in the working directory)", cwd, 1))))
        return 2;
    tmoe_error err = {0};
    if (tmoe_mkdir_p(c.out, &err)) return cli_fail_err("sweep", &err);
    if (!realpath(c.out, dir)) return cli_fail("sweep", "--out %s: %s", c.out, strerror(errno));
    if (!cli_script_value_ok("sweep", "--out (resolved)", dir) ||
        (slurm && !slurm_word_ok("--out (resolved)", dir, 1)))
        return 2;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/tasks.tsv", dir);
    if (!c.force && access(path, F_OK) == 0)
        return cli_fail(
            "sweep", "%s already holds a sweep (tasks.tsv): choose another --out, or --force", dir);
    snprintf(path, sizeof path, "%s/logs", dir);
    if (tmoe_mkdir_p(path, &err)) return cli_fail_err("sweep", &err);

    sweep_task *tasks = NULL;
    int n = make_tasks(&c, &tasks);
    if (n < 0) return cli_fail("sweep", "out of memory");
    if (n == 0) {
        free(tasks);
        return cli_fail("sweep", "no combinations: choose at least one workload and strategy");
    }
    char cmdline[8192] = "thermoe";
    for (int i = 0; i < argc; i++) {
        strncat(cmdline, " ", sizeof cmdline - strlen(cmdline) - 1);
        strncat(cmdline, argv[i], sizeof cmdline - strlen(cmdline) - 1);
    }
    snprintf(path, sizeof path, "%s/%s", dir, slurm ? "sweep.sbatch" : "sweep.sh");
    /* the table last: it marks the directory as holding a sweep */
    int rc = write_script(&c, dir, exe, cwd, tasks, n, cmdline, path);
    if (!rc) rc = write_table(dir, tasks, n);
    free(tasks);
    if (rc) return rc;
    printf("%d tasks (%d repeats; seed rule %s) -> %s\n", n, c.repeats, seed_rule_names[c.rule],
           path);
    printf("task table: %s/tasks.tsv\n", dir);
    if (slurm)
        printf("submit: sbatch %s\n", path);
    else
        printf("run: bash %s\n", path);
    printf("merge: thermoe analyze %s/task_*%s\n", dir, c.ranks > 1 ? "/rank0" : "");
    return 0;
}
