/* Running a helper program (sbatch, squeue, scontrol) and capturing what it says. */
#ifndef PROC_H
#define PROC_H

#include <stddef.h>

/* Runs argv[0] (looked up on PATH) with argv, stdin from /dev/null. Its stdout goes to out and
 * its stderr to errout (each NUL-terminated, truncated to cap - 1; either may be NULL to drop).
 * Returns the exit status (128 + signal if killed), or -1 when the program could not be started
 * (errno_out, if non-NULL, gets the reason: ENOENT when it is not on PATH). */
int proc_run(const char *const *argv, char *out, size_t out_cap, char *errout, size_t err_cap,
             int *errno_out);

/* Joins the lines of s into one (newlines and tabs become "; " / " ", trailing space dropped),
 * in place within cap bytes: a helper's multi-line complaint fits the CLI's one-line error. */
void proc_one_line(char *s, size_t cap);

#endif
