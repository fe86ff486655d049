/* Recoverable errors: a status code plus one human line (what, where, what to do) carried up to the CLI. */
#ifndef SF_ERR_H
#define SF_ERR_H

#include <stdarg.h>

enum {
    SF_OK = 0,
    SF_EFAIL = 1,  /* training failure (NaN loss, I/O error mid-run): exit 1 */
    SF_EINPUT = 2, /* bad input (config, shard, checkpoint, CLI): exit 2 */
};

typedef struct sf_err {
    int code;       /* SF_OK, SF_EFAIL or SF_EINPUT */
    char msg[1024]; /* one line, no trailing newline */
} sf_err;

/* Sets err (if non-NULL) and returns code, so callers can write `return sf_fail(err, SF_EINPUT, ...)`. */
int sf_fail(sf_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
