/* Shared pieces of the benchmark programs (see bench_util.h). */
#include "bench_util.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../kernels/sf_check.h"
#ifdef SF_WITH_CUDA
#include "../kernels/cuda_compat.h"
#endif

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_min(const double *v, int n)
{
    double m = INFINITY;
    for (int i = 0; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return n > 0 ? m : NAN;
}

double bench_rss_peak_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1.0;
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

int64_t bench_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    int64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", (long long *)&kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

double bench_loadavg(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    memmove(s, s + i, strlen(s + i) + 1);
}

void bench_machine_init(bench_machine *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->cpu, sizeof m->cpu, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    snprintf(m->cpu, sizeof m->cpu, "%s", c + 1);
                    trim(m->cpu);
                }
                break;
            }
        }
        fclose(f);
    }
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    m->cores = nc > 0 ? (int)nc : 1;
    snprintf(m->gpu, sizeof m->gpu, "none");
    snprintf(m->driver, sizeof m->driver, "none");
    if (gethostname(m->host, sizeof m->host - 1) != 0)
        snprintf(m->host, sizeof m->host, "unknown");
    snprintf(m->commit, sizeof m->commit, "unknown");
    FILE *p = popen("git rev-parse HEAD 2>/dev/null", "r");
    if (p) {
        char buf[64] = {0};
        if (fgets(buf, sizeof buf, p)) {
            trim(buf);
            if (strlen(buf) == 40)
                snprintf(m->commit, sizeof m->commit, "%s", buf);
        }
        pclose(p);
    }
    /* A copy of the tree without .git (e.g. on a GPU host) can name its commit in the environment */
    const char *env_commit = getenv("SF_BENCH_COMMIT");
    if (!strcmp(m->commit, "unknown") && env_commit && env_commit[0])
        snprintf(m->commit, sizeof m->commit, "%s", env_commit);
    /* Uncommitted work is what usually gets measured while developing: say so. */
    p = popen("git status --porcelain --untracked-files=no 2>/dev/null | head -1", "r");
    if (p) {
        char buf[8] = {0};
        if (fgets(buf, sizeof buf, p) && buf[0] && strcmp(m->commit, "unknown"))
            strncat(m->commit, "-dirty", sizeof m->commit - strlen(m->commit) - 1);
        pclose(p);
    }
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(m->date, sizeof m->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

#ifdef SF_WITH_CUDA
void bench_machine_fill_gpu(bench_machine *m)
{
    int dev = 0, drv = 0;
    struct cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return;
    snprintf(m->gpu, sizeof m->gpu, "%s", prop.name);
    if (cudaDriverGetVersion(&drv) == cudaSuccess)
        snprintf(m->driver, sizeof m->driver, "%d.%d", drv / 1000, (drv % 1000) / 10);
}
#endif

static void slugify(const char *in, char *out, size_t len)
{
    size_t o = 0;
    int dash = 1;
    for (const char *c = in; *c && o + 1 < len; c++) {
        if (isalnum((unsigned char)*c)) {
            out[o++] = (char)tolower((unsigned char)*c);
            dash = 0;
        } else if (!dash) {
            out[o++] = '-';
            dash = 1;
        }
    }
    while (o && out[o - 1] == '-')
        o--;
    out[o] = '\0';
}

void bench_machine_slug(const bench_machine *m, char *out, size_t len)
{
    char a[128];
    if (strcmp(m->gpu, "none")) {
        slugify(m->gpu, out, len);
        return;
    }
    slugify(m->cpu, a, sizeof a);
    snprintf(out, len, "%s-%dc", a[0] ? a : "cpu", m->cores);
}

/* ---- JSON lines ---------------------------------------------------------------------------- */
static void j_raw_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

static void j_key(jw *w, const char *key)
{
    if (!w->first)
        fputc(',', w->f);
    w->first = 0;
    j_raw_str(w->f, key);
    fputc(':', w->f);
}

void j_begin(jw *w, FILE *f)
{
    w->f = f;
    w->first = 1;
    fputc('{', f);
}

void j_str(jw *w, const char *key, const char *val)
{
    j_key(w, key);
    j_raw_str(w->f, val);
}

void j_num(jw *w, const char *key, double val)
{
    j_key(w, key);
    if (isfinite(val))
        fprintf(w->f, "%.6g", val);
    else
        fputs("null", w->f);
}

void j_int(jw *w, const char *key, int64_t val)
{
    j_key(w, key);
    fprintf(w->f, "%lld", (long long)val);
}

void j_obj(jw *w, const char *key)
{
    j_key(w, key);
    fputc('{', w->f);
    w->first = 1;
}

void j_close(jw *w)
{
    fputc('}', w->f);
    w->first = 0;
}

void j_end(jw *w)
{
    fputs("}\n", w->f);
    fflush(w->f);
}

void j_common(jw *w, const bench_machine *m, const char *run_id)
{
    j_obj(w, "machine");
    j_str(w, "cpu", m->cpu);
    j_int(w, "cores", m->cores);
    j_str(w, "gpu", m->gpu);
    j_str(w, "driver", m->driver);
    j_str(w, "host", m->host);
    j_close(w);
    j_str(w, "commit", m->commit);
    j_str(w, "date", m->date);
    j_str(w, "run", run_id ? run_id : m->date);
    j_num(w, "loadavg", bench_loadavg());
}

/* ---- configurations ------------------------------------------------------------------------ */
static const char *arch_names[4] = {"topk", "gsae", "batchtopk", "matryoshka"};

int bench_arch_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, arch_names[i]))
            return i;
    return -1;
}

const char *bench_arch_name(int arch)
{
    return arch >= 0 && arch < 4 ? arch_names[arch] : "unknown";
}

sae_hparams bench_hparams(int arch, int d, int n, int k, sae_precision prec)
{
    sae_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = (sae_arch)arch;
    hp.d = d;
    hp.n = n;
    hp.k = k;
    hp.gsae_beta = 1.0f;
    if (arch == SAE_ARCH_MATRYOSHKA) {
        int cand[3] = {(int)lround(n / 16.0), (int)lround(n / 4.0), n};
        int g = 0;
        for (int i = 0; i < 3; i++)
            if (cand[i] >= 1 && (g == 0 || cand[i] > hp.prefixes[g - 1]))
                hp.prefixes[g++] = cand[i];
        hp.n_prefixes = g;
    } else {
        hp.n_prefixes = 1;
        hp.prefixes[0] = n;
    }
    hp.aux_k = d / 2 > 0 ? d / 2 : 1;
    hp.aux_alpha = 1.0f / 32.0f;
    hp.dead_tokens = 10000000;
    hp.adam_b1 = 0.9f;
    hp.adam_b2 = 0.999f;
    hp.adam_eps = 1e-8f;
    hp.grad_clip = 0.0f;
    hp.precision = prec;
    hp.theta_ema = 0.99f;
    return hp;
}

/* ---- synthetic activations ----------------------------------------------------------------- */
void *bench_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    SF_CHECK(p != NULL);
    return p;
}

void bench_gen_init(bench_gen *gn, int d, uint64_t seed)
{
    gn->d = d;
    gn->F = 4 * d;
    gn->active = 24;
    rng_seed(&gn->rng, seed, 77);
    gn->dict = bench_alloc((size_t)gn->F * d * sizeof(float));
    gn->mu = bench_alloc((size_t)d * sizeof(float));
    for (int f = 0; f < gn->F; f++) {
        float *r = gn->dict + (size_t)f * d;
        double ss = 0;
        for (int j = 0; j < d; j++) {
            r[j] = (float)rng_normal(&gn->rng);
            ss += (double)r[j] * r[j];
        }
        float inv = (float)(1.0 / sqrt(ss));
        for (int j = 0; j < d; j++)
            r[j] *= inv;
    }
    /* A residual stream has a sizeable mean direction. */
    for (int j = 0; j < d; j++)
        gn->mu[j] = (float)(0.5 * rng_normal(&gn->rng));
}

void bench_gen_batch(bench_gen *gn, int B, float *x, float *g)
{
    int d = gn->d;
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * d;
        float *gb = g ? g + (size_t)b * d : NULL;
        /* token scale: log-normal, so a few tokens carry large norms */
        float scale = (float)exp(0.3 * rng_normal(&gn->rng));
        for (int j = 0; j < d; j++)
            xb[j] = gn->mu[j] + 0.05f * (float)rng_normal(&gn->rng);
        if (gb)
            for (int j = 0; j < d; j++)
                gb[j] = 1e-3f * (float)rng_normal(&gn->rng);
        for (int a = 0; a < gn->active; a++) {
            /* Zipf-like feature popularity: low indices are common */
            double u = rng_uniform(&gn->rng);
            int f = (int)((double)gn->F * u * u * u);
            if (f >= gn->F)
                f = gn->F - 1;
            float c = scale * (float)(-log(1.0 - rng_uniform(&gn->rng)));
            const float *r = gn->dict + (size_t)f * d;
            for (int j = 0; j < d; j++)
                xb[j] += c * r[j];
            if (gb) {
                float cg = 2e-3f * (float)rng_normal(&gn->rng);
                for (int j = 0; j < d; j++)
                    gb[j] += cg * r[j];
            }
        }
    }
}

void bench_gen_free(bench_gen *gn)
{
    free(gn->dict);
    free(gn->mu);
    memset(gn, 0, sizeof *gn);
}
