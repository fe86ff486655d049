/* Shared CLI plumbing: the one-line error printer. */
#include <stdarg.h>
#include <stdio.h>

#include "cmd.h"
#include "sf_err.h"

int cli_error(int code, const char *fmt, ...)
{
    /* messages quote arguments and file contents: escaped here so they stay one line */
    char raw[2048], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    fprintf(stderr, "saeforge: %s\n", sf_escape(line, sizeof line, raw));
    return code;
}
