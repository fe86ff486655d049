/* `saeforge submit`: a Slurm batch script for a training run, written and handed to sbatch. */
#ifndef SUBMIT_H
#define SUBMIT_H

#include "sf_err.h"

#define SUBMIT_MAX_SETS 64
#define SUBMIT_MAX_SBATCH 32

typedef struct submit_opts {
    const char *config;                     /* CONFIG as given */
    const char *sets[SUBMIT_MAX_SETS];      /* --set key=value, in order */
    int n_sets;
    const char *sbatch[SUBMIT_MAX_SBATCH];  /* --sbatch ARG: extra #SBATCH lines, verbatim */
    int n_sbatch;
    const char *partition, *time, *mem;     /* NULL = the cluster's default */
    const char *mpi;                        /* srun --mpi= for several ranks (NULL = pmix) */
    int nodes, ntasks_per_node;             /* 0 = not asked (one rank) */
    int gpus_per_node, cpus_per_task;       /* 0 = not asked */
    int signal_grace;                       /* seconds of warning before preemption/time limit */
    int array, dry_run;
    int n_members;                          /* --array: sweep members (set by submit) */
} submit_opts;

/* Parses the arguments after the verb into o. Returns SF_OK, SF_EINPUT (err says which
 * option is wrong), or -1 when --help was asked (usage already printed). */
int submit_parse_args(submit_opts *o, int argc, char **argv, sf_err *err);

/* The job script text for o (malloc'd). bin, config and workdir are absolute paths;
 * run_dir is the absolute out_dir of the config. */
char *submit_render(const submit_opts *o, const char *bin, const char *config,
                    const char *workdir, const char *run_dir);

#endif
