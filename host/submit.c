/* `saeforge submit`: checks the run's input, writes <out_dir>/slurm/job.sbatch, submits it with
 * `sbatch --parsable` and records the job id in <out_dir>/slurm/jobs.txt. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "fsutil.h"
#include "proc.h"
#include "submit.h"
#include "sweep.h"

#define DEFAULT_GRACE 120

static void usage(FILE *f)
{
    fprintf(f,
        "usage: saeforge submit CONFIG [--set key=value]... [--dry-run] [--partition P]\n"
        "         [--time T] [--nodes N] [--ntasks-per-node T] [--gpus-per-node G]\n"
        "         [--cpus-per-task C] [--mem M] [--mpi TYPE] [--array] [--signal-grace S]\n"
        "         [--sbatch ARG]...\n"
        "  Checks CONFIG and its shards (bad input: exit 2, nothing submitted), writes the\n"
        "  batch script <out_dir>/slurm/job.sbatch, submits it with `sbatch --parsable`, prints\n"
        "  the job id and appends it to <out_dir>/slurm/jobs.txt. The job runs\n"
        "  `saeforge train CONFIG [--set ...] --resume`, so a fresh run starts and a requeued one\n"
        "  continues. Slurm sends USR1 S seconds before the time limit or a preemption; the\n"
        "  trainer checkpoints at the end of its step and requeues the job (scontrol requeue).\n"
        "  The log is <out_dir>/slurm/slurm-<jobid>.out, appended to across requeues.\n"
        "  --set key=value      override a config key, as for `saeforge train`\n"
        "  --dry-run            write the script and print its path; submit nothing\n"
        "  --partition P        #SBATCH --partition=P (default: the cluster's default)\n"
        "  --time T             #SBATCH --time=T, Slurm's formats (e.g. 4:00:00, 2-00:00:00)\n"
        "  --nodes N            #SBATCH --nodes=N; with N*T > 1 the ranks start through srun\n"
        "  --ntasks-per-node T  #SBATCH --ntasks-per-node=T (ranks per node)\n"
        "  --gpus-per-node G    #SBATCH --gpus-per-node=G\n"
        "  --cpus-per-task C    #SBATCH --cpus-per-task=C; the trainer uses C threads\n"
        "  --mem M              #SBATCH --mem=M (e.g. 32G)\n"
        "  --mpi TYPE           srun --mpi=TYPE for several ranks (default pmix, what OpenMPI\n"
        "                       4/5 start under; `--mpi site` leaves it to the cluster's MpiDefault)\n"
        "  --array              one array task per sweep member (CONFIG needs a sweep: block)\n"
        "  --signal-grace S     seconds of warning before the kill: --signal=B:USR1@S (default %d)\n"
        "  --sbatch ARG         an extra sbatch option, written as `#SBATCH ARG` (repeatable),\n"
        "                       e.g. --sbatch --account=myproj --sbatch --qos=low\n",
        DEFAULT_GRACE);
}

/* A Slurm option value goes on an #SBATCH line: one word, nothing a shell or sbatch would split. */
static int check_word(const char *opt, const char *v, sf_err *err)
{
    if (!*v || strpbrk(v, " \t\r\n'\"\\#"))
        return sf_fail(err, SF_EINPUT,
                       "submit: %s '%s' must be one word without spaces, quotes or '#'", opt, v);
    return SF_OK;
}

static int parse_count(const char *opt, const char *v, int lo, int hi, int *out, sf_err *err)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return sf_fail(err, SF_EINPUT, "submit: %s needs a whole number in [%d, %d], got '%s'",
                       opt, lo, hi, v);
    *out = (int)x;
    return SF_OK;
}

/* --opt V or --opt=V; returns the value (advancing *i) or NULL when argv[*i] is not opt. */
static const char *opt_value(const char *opt, int argc, char **argv, int *i, int *missing)
{
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n))
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n])
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static int parse_one(submit_opts *o, int argc, char **argv, int *i, sf_err *err)
{
    static const char *counts[] = {"--nodes", "--ntasks-per-node", "--gpus-per-node",
                                   "--cpus-per-task", "--signal-grace"};
    int *count_dst[] = {&o->nodes, &o->ntasks_per_node, &o->gpus_per_node, &o->cpus_per_task,
                        &o->signal_grace};
    const int count_hi[] = {100000, 4096, 64, 4096, 65535};
    const char **word_dst[] = {&o->partition, &o->time, &o->mem, &o->mpi};
    static const char *words[] = {"--partition", "--time", "--mem", "--mpi"};
    int missing = 0, rc;
    const char *v;
    const char *a = argv[*i];
    if ((v = opt_value("--set", argc, argv, i, &missing))) {
        if (o->n_sets == SUBMIT_MAX_SETS)
            return sf_fail(err, SF_EINPUT, "submit: more than %d --set options", SUBMIT_MAX_SETS);
        o->sets[o->n_sets++] = v;
        return SF_OK;
    }
    if (!missing && (v = opt_value("--sbatch", argc, argv, i, &missing))) {
        if (v[0] != '-' || strpbrk(v, "\r\n"))
            return sf_fail(err, SF_EINPUT,
                           "submit: --sbatch '%s' must be one sbatch option such as "
                           "--account=NAME (starting with '-', one line)", v);
        if (o->n_sbatch == SUBMIT_MAX_SBATCH)
            return sf_fail(err, SF_EINPUT, "submit: more than %d --sbatch options",
                           SUBMIT_MAX_SBATCH);
        o->sbatch[o->n_sbatch++] = v;
        return SF_OK;
    }
    for (size_t j = 0; !missing && j < sizeof counts / sizeof counts[0]; j++)
        if ((v = opt_value(counts[j], argc, argv, i, &missing)))
            return parse_count(counts[j], v, 1, count_hi[j], count_dst[j], err);
    for (size_t j = 0; !missing && j < sizeof words / sizeof words[0]; j++)
        if ((v = opt_value(words[j], argc, argv, i, &missing))) {
            if ((rc = check_word(words[j], v, err)))
                return rc;
            *word_dst[j] = v;
            return SF_OK;
        }
    if (missing)
        return sf_fail(err, SF_EINPUT, "submit: %s needs a value; see `saeforge submit --help`",
                       a);
    return sf_fail(err, SF_EINPUT, "submit: unknown option '%s'; see `saeforge submit --help`", a);
}

int submit_parse_args(submit_opts *o, int argc, char **argv, sf_err *err)
{
    memset(o, 0, sizeof *o);
    o->signal_grace = DEFAULT_GRACE;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int rc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--dry-run")) {
            o->dry_run = 1;
        } else if (!strcmp(a, "--array")) {
            o->array = 1;
        } else if (a[0] == '-') {
            if ((rc = parse_one(o, argc, argv, &i, err)))
                return rc;
        } else if (!o->config) {
            o->config = a;
        } else {
            return sf_fail(err, SF_EINPUT,
                           "submit: unexpected argument '%s'; one CONFIG file is expected", a);
        }
    }
    if (!o->config)
        return sf_fail(err, SF_EINPUT,
                       "submit: no CONFIG given; usage: saeforge submit CONFIG [options] "
                       "(see --help)");
    return SF_OK;
}

/* ---- the script ----------------------------------------------------------------------- */
typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = 2 * b->cap + (size_t)n + 64;
        b->s = realloc(b->s, b->cap);
        if (!b->s)
            abort();
    }
}

/* s as one shell word: single quotes, with ' written as '\''. */
static void sb_quoted(strbuf *b, const char *s)
{
    sb_printf(b, "'");
    for (; *s; s++)
        if (*s == '\'')
            sb_printf(b, "'\\''");
        else
            sb_printf(b, "%c", *s);
    sb_printf(b, "'");
}

static void render_header(strbuf *b, const submit_opts *o, const char *config,
                          const char *run_dir)
{
    const char *base = strrchr(config, '/');
    base = base ? base + 1 : config;
    char name[128];
    snprintf(name, sizeof name, "%s", base);
    char *dot = strrchr(name, '.');
    if (dot && dot != name)
        *dot = 0;
    for (char *p = name; *p; p++)
        if (strchr(" \t'\"\\#", *p))
            *p = '_';
    sb_printf(b, "#!/bin/bash\n"
                 "# saeforge training job, written by `saeforge submit`. Resubmit with:\n"
                 "#   sbatch %s/slurm/job.sbatch\n"
                 "# The job runs `saeforge train ... --resume`: a fresh run starts, a requeued or\n"
                 "# resubmitted one continues from its newest checkpoint.\n"
                 "#\n"
                 "# Preemption: Slurm signals USR1 to this script's process %d s before the time\n"
                 "# limit or a preemption (--signal=B:USR1@%d). The trainer then writes a checkpoint\n"
                 "# at the end of its current step and runs `scontrol requeue $SLURM_JOB_ID`;\n"
                 "# --requeue lets Slurm requeue it, --open-mode=append keeps one log per job id.\n",
              run_dir, o->signal_grace, o->signal_grace);
    sb_printf(b, "#SBATCH --job-name=saeforge-%s\n", name);
    if (o->array) {
        sb_printf(b, "# --array: task i trains sweep member i alone (its own pass over the data)\n");
        sb_printf(b, "#SBATCH --array=0-%d\n", o->n_members - 1);
        sb_printf(b, "#SBATCH --output=%s/slurm/slurm-%%A_%%a.out\n", run_dir);
    } else {
        sb_printf(b, "#SBATCH --output=%s/slurm/slurm-%%j.out\n", run_dir);
    }
    sb_printf(b, "#SBATCH --open-mode=append\n#SBATCH --requeue\n");
    sb_printf(b, "#SBATCH --signal=B:USR1@%d\n", o->signal_grace);
    if (o->partition)
        sb_printf(b, "#SBATCH --partition=%s\n", o->partition);
    if (o->time)
        sb_printf(b, "#SBATCH --time=%s\n", o->time);
    if (o->nodes)
        sb_printf(b, "#SBATCH --nodes=%d\n", o->nodes);
    if (o->ntasks_per_node)
        sb_printf(b, "#SBATCH --ntasks-per-node=%d\n", o->ntasks_per_node);
    if (o->gpus_per_node)
        sb_printf(b, "#SBATCH --gpus-per-node=%d\n", o->gpus_per_node);
    if (o->cpus_per_task)
        sb_printf(b, "#SBATCH --cpus-per-task=%d\n", o->cpus_per_task);
    if (o->mem)
        sb_printf(b, "#SBATCH --mem=%s\n", o->mem);
    if (o->n_sbatch)
        sb_printf(b, "# extra options given with --sbatch\n");
    for (int i = 0; i < o->n_sbatch; i++)
        sb_printf(b, "#SBATCH %s\n", o->sbatch[i]);
}

char *submit_render(const submit_opts *o, const char *bin, const char *config,
                    const char *workdir, const char *run_dir)
{
    strbuf b = {malloc(4096), 0, 4096};
    if (!b.s)
        abort();
    b.s[0] = 0;
    render_header(&b, o, config, run_dir);
    sb_printf(&b, "\nset -eu\n# Relative paths in the config (data.path, out_dir) are relative to "
                  "where submit ran.\ncd ");
    sb_quoted(&b, workdir);
    sb_printf(&b, "\n");
    if (o->cpus_per_task)
        sb_printf(&b, "export OMP_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"\n");
    int ranks = (o->nodes ? o->nodes : 1) * (o->ntasks_per_node ? o->ntasks_per_node : 1);
    if (ranks > 1) {
        sb_printf(&b, "# %d ranks, started by srun; srun passes USR1/TERM on to every rank and "
                      "rank 0 requeues.\n"
                      "# exec: srun replaces this shell, so the batch signal reaches it.\n"
                      "exec srun --kill-on-bad-exit=1 ",
                  ranks);
        if (!(o->mpi && !strcmp(o->mpi, "site")))
            sb_printf(&b, "--mpi=%s ", o->mpi ? o->mpi : "pmix");
    } else {
        sb_printf(&b, "# exec: the trainer replaces this shell, so Slurm's batch signal (USR1) "
                      "reaches it.\nexec ");
    }
    sb_quoted(&b, bin);
    sb_printf(&b, " train ");
    sb_quoted(&b, config);
    for (int i = 0; i < o->n_sets; i++) {
        sb_printf(&b, " --set ");
        sb_quoted(&b, o->sets[i]);
    }
    if (o->array)
        sb_printf(&b, " --member \"$SLURM_ARRAY_TASK_ID\"");
    sb_printf(&b, " --resume\n");
    return b.s;
}

/* ---- submitting ----------------------------------------------------------------------- */
/* Runs sbatch --parsable on the script; the job id goes to id. */
static int run_sbatch(const char *script, char *id, size_t cap, sf_err *err)
{
    const char *argv[] = {"sbatch", "--parsable", script, NULL};
    char out[4096], msg[4096];
    int e = 0;
    int st = proc_run(argv, out, sizeof out, msg, sizeof msg, &e);
    if (st < 0)
        return sf_fail(err, SF_EINPUT,
                       "submit: cannot run sbatch (%s); run on a Slurm login node (sbatch on "
                       "PATH) or use --dry-run and submit %s yourself",
                       e == ENOENT ? "not found on PATH" : strerror(e), script);
    proc_one_line(msg, sizeof msg);
    if (st != 0)
        return sf_fail(err, SF_EINPUT,
                       "submit: sbatch refused %s (exit %d): %s; fix the options and submit again",
                       script, st, *msg ? msg : "(no message)");
    /* --parsable prints "jobid" or "jobid;cluster". */
    size_t n = strspn(out, "0123456789_");
    if (n == 0 || n >= cap)
        return sf_fail(err, SF_EINPUT, "submit: sbatch printed no job id (got '%.200s'); check "
                                       "`squeue --me`", out);
    memcpy(id, out, n);
    id[n] = 0;
    return SF_OK;
}

/* Appends "<id> <UTC time>" to jobs.txt (rewritten whole, atomically). */
static int record_job(const char *path, const char *id, sf_err *err)
{
    char *old = NULL;
    size_t len = 0;
    if (fs_exists(path) && fs_read_all(path, &old, &len, err))
        return SF_EINPUT;
    char line[160], when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(line, sizeof line, "%s %s\n", id, when);
    char *all = malloc(len + (size_t)n + 1);
    if (!all)
        abort();
    if (len)
        memcpy(all, old, len);
    memcpy(all + len, line, (size_t)n + 1);
    int rc = fs_write_atomic(path, all, len + (size_t)n, err);
    free(all);
    free(old);
    return rc;
}

static int submit(const submit_opts *o, sf_err *err)
{
    sf_config *cfg = calloc(1, sizeof *cfg);
    int rc = train_check_input(o->config, o->sets, o->n_sets, cfg, err);
    submit_opts oa = *o;
    if (!rc && o->array) {
        sweep_spec *sp = calloc(1, sizeof *sp);
        rc = sweep_read(o->config, sp, err);
        if (!rc && sp->n_keys == 0)
            rc = sf_fail(err, SF_EINPUT,
                         "submit: --array: %s has no sweep: block, so there are no members to "
                         "spread over array tasks; drop --array or add a sweep", o->config);
        oa.n_members = sp->n_members;
        free(sp);
    }
    o = &oa;
    char bin[PATH_MAX], config[PATH_MAX], cwd[PATH_MAX], run_dir[PATH_MAX], dir[PATH_MAX + 16];
    if (!rc && !realpath("/proc/self/exe", bin))
        rc = sf_fail(err, SF_EINPUT, "submit: cannot find the saeforge binary (%s)",
                     strerror(errno));
    if (!rc && !realpath(o->config, config))
        rc = sf_fail(err, SF_EINPUT, "submit: %s: %s", o->config, strerror(errno));
    if (!rc && !getcwd(cwd, sizeof cwd))
        rc = sf_fail(err, SF_EINPUT, "submit: cannot read the working directory (%s)",
                     strerror(errno));
    if (!rc) {
        snprintf(dir, sizeof dir, "%s/slurm", cfg->out_dir);
        rc = fs_mkdirs(dir, err);
    }
    if (!rc && !realpath(cfg->out_dir, run_dir))
        rc = sf_fail(err, SF_EINPUT, "submit: %s: %s", cfg->out_dir, strerror(errno));
    free(cfg);
    if (rc)
        return rc;
    char script[PATH_MAX + 32], jobs[PATH_MAX + 32], id[64];
    snprintf(script, sizeof script, "%s/slurm/job.sbatch", run_dir);
    snprintf(jobs, sizeof jobs, "%s/slurm/jobs.txt", run_dir);
    char *text = submit_render(o, bin, config, cwd, run_dir);
    rc = fs_write_atomic(script, text, strlen(text), err);
    free(text);
    if (rc)
        return rc;
    if (o->dry_run) {
        printf("wrote %s (dry run: nothing submitted; submit it with `sbatch %s`)\n", script,
               script);
        return SF_OK;
    }
    if ((rc = run_sbatch(script, id, sizeof id, err)))
        return rc;
    if ((rc = record_job(jobs, id, err)))
        return sf_fail(err, SF_EFAIL, "submit: job %s was submitted but not recorded: %s", id,
                       err->msg);
    printf("%s\n", id);
    fprintf(stderr, "saeforge: submitted job %s (%s); log %s/slurm/slurm-%s.out; "
                    "`saeforge status %s` shows progress\n",
            id, script, run_dir, id, run_dir);
    return SF_OK;
}

int cmd_submit(int argc, char **argv)
{
    submit_opts o;
    sf_err err = {0};
    int rc = submit_parse_args(&o, argc, argv, &err);
    if (rc < 0)
        return 0;
    if (!rc)
        rc = submit(&o, &err);
    if (rc)
        return cli_error(rc == SF_EINPUT ? 2 : 1, "%s", err.msg);
    return 0;
}
