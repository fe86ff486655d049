/* Shared CLI plumbing: the one-line error printer. */
#include <stdarg.h>
#include <stdio.h>

#include "cmd.h"

int cli_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("saeforge: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}
