/* Shared plumbing of the fuzz harnesses: a temp dir, input files, defect reports. */
#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/fsutil.h"

static char tmpdir[256];
static const char *input_name = "(libFuzzer input)";

static void remove_tmpdir(void)
{
    if (tmpdir[0])
        fs_remove_tree(tmpdir);
}

const char *fuzz_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/sf_fuzz_XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

void fuzz_put_file(const char *name, const void *bytes, size_t len, char *path, size_t pathsz)
{
    snprintf(path, pathsz, "%s/%s", fuzz_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(bytes, 1, len, f) != len) || fclose(f) != 0) {
        perror("fuzz: writing the input file");
        abort();
    }
}

void fuzz_set_input_name(const char *name) { input_name = name; }

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz: %s: ", input_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void fuzz_check_err(int rc, const sf_err *err, const char *what)
{
    if (rc != SF_EINPUT || err->code != SF_EINPUT)
        fuzz_fail("%s returned %d (err code %d, '%s'), expected SF_EINPUT", what, rc, err->code, err->msg);
    size_t n = strlen(err->msg);
    if (n == 0)
        fuzz_fail("%s failed with an empty message", what);
    /* the message must be what sf_escape leaves: escaping it again changes nothing */
    char again[2 * sizeof err->msg]; /* room enough that nothing is cut */
    sf_escape(again, sizeof again, err->msg);
    if (strcmp(again, err->msg) != 0)
        fuzz_fail("%s: message holds unescaped bytes: %s", what, again);
}
