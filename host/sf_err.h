/* Recoverable errors: a status code plus one human line (what, where, what to do) carried up to the CLI. */
#ifndef SF_ERR_H
#define SF_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum {
    SF_OK = 0,
    SF_EFAIL = 1,  /* training failure (NaN loss, I/O error mid-run): exit 1 */
    SF_EINPUT = 2, /* bad input (config, shard, checkpoint, CLI): exit 2 */
};

typedef struct sf_err {
    int code;       /* SF_OK, SF_EFAIL or SF_EINPUT */
    char msg[1024]; /* one line, no trailing newline, no control bytes */
} sf_err;

/* Sets err (if non-NULL) and returns code, so callers can write `return sf_fail(err, SF_EINPUT, ...)`.
 * The formatted line is passed through sf_escape, so it is one line whatever it quotes. */
int sf_fail(sf_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Room for a quoted snippet of input: what a message shows of a value it does not trust. */
#define SF_QUOTE_MAX 84

/* Writes bytes [0, len) of untrusted input to out as one printable line: printable ASCII and
 * valid UTF-8 (U+00A0 and up, except the U+2028/U+2029 line separators) stay, every other byte
 * becomes \xNN, and a backslash becomes \\. Cut with "..." to fit outsz (at least 8). Returns out. */
char *sf_quote(char *out, size_t outsz, const void *bytes, size_t len);

/* sf_quote of a NUL-terminated string (NULL reads as ""). */
char *sf_quote_str(char *out, size_t outsz, const char *s);

/* Like sf_quote but leaves backslashes alone: for whole messages whose quoted parts are already
 * escaped, so an escape is not escaped twice. */
char *sf_escape(char *out, size_t outsz, const char *s);

/* Decodes one strict UTF-8 sequence (no overlong forms, surrogates or code points past
 * U+10FFFF) at bytes: returns its length and sets *cp, or 0 when the bytes are not UTF-8. */
size_t sf_utf8_decode(const void *bytes, size_t left, uint32_t *cp);

#endif
