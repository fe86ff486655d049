/* The trainer's side of Slurm: am I a Slurm job, and requeueing myself after a preemption signal. */
#ifndef SLURM_ENV_H
#define SLURM_ENV_H

#include <stddef.h>

/* Copies $SLURM_JOB_ID into id and returns 1 when running under Slurm, else 0. */
int slurm_env_job_id(char *id, size_t cap);

/* Called once the checkpoint after a stop signal is written. Under Slurm, on SIGUSR1 or
 * SIGTERM, rank 0 ($SLURM_PROCID unset or 0) runs `scontrol requeue $SLURM_JOB_ID`, so the
 * job goes back to the queue and its next start resumes from that checkpoint. Writes what
 * the user should know next into note (one clause: "requeued Slurm job 42" or how to
 * resume by hand). Returns 1 if the job was requeued, 0 if not applicable, -1 if scontrol
 * failed (note says why). */
int slurm_env_requeue(int sig, char *note, size_t cap);

#endif
