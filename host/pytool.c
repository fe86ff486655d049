/* `saeforge extract` and `saeforge eval`: hand off to the Python tools (py/saeforge_py) in the
 * venv that `make py` builds beside the binary, found from /proc/self/exe. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"

/* dir of the running binary, e.g. /repo/build */
static int exe_dir(char *buf, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash)
        return -1;
    *slash = 0;
    return 0;
}

static int run_tool(const char *verb, const char *module, int argc, char **argv)
{
    char dir[PATH_MAX], py[PATH_MAX + 32];
    if (exe_dir(dir, sizeof dir))
        return cli_error(2, "%s: cannot find the saeforge binary's directory through /proc/self/exe", verb);
    /* the venv sits beside the binary: build/venv for build/saeforge, build/venv for build/cuda/saeforge */
    snprintf(py, sizeof py, "%s/venv/bin/python", dir);
    if (access(py, X_OK)) {
        char *up = strrchr(dir, '/');
        if (up && !strcmp(up, "/cuda")) {
            *up = 0;
            snprintf(py, sizeof py, "%s/venv/bin/python", dir);
        }
    }
    if (access(py, X_OK))
        return cli_error(2, "%s needs the Python tools, and %s is missing; run `make py` in the "
                         "saeforge checkout (it builds the venv with torch and transformers)", verb, py);
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args)
        return cli_error(2, "%s: out of memory", verb);
    args[0] = py;
    args[1] = "-m";
    args[2] = (char *)module;
    for (int i = 0; i < argc; i++)
        args[3 + i] = argv[i];
    execv(py, args);
    free(args);
    return cli_error(2, "%s: could not start %s; run `make py` again", verb, py);
}

int cmd_extract(int argc, char **argv) { return run_tool("extract", "saeforge_py.extract", argc, argv); }

int cmd_eval(int argc, char **argv) { return run_tool("eval", "saeforge_py.evaluate", argc, argv); }
