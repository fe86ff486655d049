/* Requeue-on-preemption for the trainer: a stop signal under Slurm puts the job back in the queue. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proc.h"
#include "slurm_env.h"

int slurm_env_job_id(char *id, size_t cap)
{
    const char *j = getenv("SLURM_JOB_ID");
    if (!j || !*j)
        return 0;
    snprintf(id, cap, "%s", j);
    return 1;
}

int slurm_env_requeue(int sig, char *note, size_t cap)
{
    const char *resume = "continue with `saeforge train CONFIG --resume`";
    char id[64];
    if ((sig != SIGUSR1 && sig != SIGTERM) || !slurm_env_job_id(id, sizeof id)) {
        snprintf(note, cap, "%s", resume);
        return 0;
    }
    /* Other ranks stop too, but one requeue is enough (a second one can fail as "pending"). */
    const char *rank = getenv("SLURM_PROCID");
    if (rank && *rank && strcmp(rank, "0")) {
        snprintf(note, cap, "rank %s stops; rank 0 requeues Slurm job %s", rank, id);
        return 0;
    }
    const char *argv[] = {"scontrol", "requeue", id, NULL};
    char msg[512];
    int e = 0;
    int st = proc_run(argv, NULL, 0, msg, sizeof msg, &e);
    if (st == 0) {
        snprintf(note, cap, "requeued Slurm job %s; it resumes from this checkpoint", id);
        return 1;
    }
    if (st < 0)
        snprintf(msg, sizeof msg, "%s", strerror(e));
    proc_one_line(msg, sizeof msg);
    snprintf(note, cap, "`scontrol requeue %s` failed (%s); resubmit the job (it runs --resume)",
             id, msg);
    return -1;
}
