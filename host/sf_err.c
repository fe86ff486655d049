/* Recoverable error reporting (see sf_err.h). */
#include "sf_err.h"

#include <stdio.h>

int sf_fail(sf_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}
