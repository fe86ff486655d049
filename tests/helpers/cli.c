/* Test helpers for driving the saeforge binary (see cli.h). */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

const char *tcli_bin(void)
{
    static char path[1024];
    const char *b = getenv("SF_BUILD");
    snprintf(path, sizeof path, "%s/saeforge", b && *b ? b : "build");
    return path;
}

int tcli_run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8300];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p)
        abort();
    size_t n = 0;
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
        if (out && n + 1 < cap) {
            size_t take = r < cap - 1 - n ? r : cap - 1 - n;
            memcpy(out + n, buf, take);
            n += take;
        }
    }
    if (out && cap)
        out[n] = 0;
    int st = pclose(p);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

const char *tcli_tmpdir(int slot)
{
    static char dirs[8][512];
    const char *base = getenv("TMPDIR");
    snprintf(dirs[slot], sizeof dirs[slot], "%s/sftest.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dirs[slot]))
        abort();
    return dirs[slot];
}

void tcli_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
}

int tcli_count_lines(const char *s)
{
    int n = 0, in = 0;
    for (; *s; s++) {
        if (*s == '\n') {
            n += in;
            in = 0;
        } else {
            in = 1;
        }
    }
    return n + in;
}
