/* Host memory limits as a process sees them (Linux: /proc/meminfo, cgroup v2, rlimits). */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "../kernels/backend.h"
#include "memcheck.h"

/* The value after `key` in a "Key:   123 kB" file, in bytes; -1 if absent. */
static int64_t proc_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) {
            long long kb;
            if (sscanf(line + kl, " %lld", &kb) == 1)
                v = (int64_t)kb * 1024;
            break;
        }
    fclose(f);
    return v;
}

static int64_t file_i64(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long v;
    int ok = fscanf(f, "%lld", &v) == 1; /* "max" fails to scan: no limit */
    fclose(f);
    return ok ? (int64_t)v : -1;
}

static void take(int64_t v, const char *what, int64_t *best, char *src, int len)
{
    if (v >= 0 && (*best < 0 || v < *best)) {
        *best = v;
        snprintf(src, (size_t)len, "%s", what);
    }
}

int64_t memcheck_host_available(char *src, int len)
{
    int64_t best = -1;
    snprintf(src, (size_t)len, "unknown");
    take(proc_kb("/proc/meminfo", "MemAvailable:"), "MemAvailable", &best, src, len);
    int64_t max = file_i64("/sys/fs/cgroup/memory.max");
    int64_t cur = file_i64("/sys/fs/cgroup/memory.current");
    if (max >= 0 && cur >= 0)
        take(max > cur ? max - cur : 0, "cgroup memory.max", &best, src, len);
    struct rlimit rl;
    int64_t mapped = proc_kb("/proc/self/status", "VmSize:");
    if (!getrlimit(RLIMIT_AS, &rl) && rl.rlim_cur != RLIM_INFINITY && mapped >= 0) {
        int64_t lim = (int64_t)rl.rlim_cur;
        take(lim > mapped ? lim - mapped : 0, "ulimit -v", &best, src, len);
    }
    return best;
}


