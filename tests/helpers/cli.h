/* Test helpers for driving the saeforge binary: run a command, capture output and exit code. */
#ifndef TEST_CLI_H
#define TEST_CLI_H

#include <stddef.h>

/* Path of the saeforge binary under test ($SF_BUILD/saeforge, default build/saeforge). */
const char *tcli_bin(void);

/* Runs `sh -c cmd`, stores combined stdout+stderr (truncated to cap-1, NUL-ended) in out if
 * non-NULL; returns the exit status (128+signal if killed). */
int tcli_run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); the path is static storage
 * per call slot (slot 0..7). */
const char *tcli_tmpdir(int slot);

/* Writes text to path (abort on failure). */
void tcli_write(const char *path, const char *text);

/* Number of lines in s that are non-empty. */
int tcli_count_lines(const char *s);

#endif
