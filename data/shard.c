/* Activation shards (SPEC §3): expanding a path spec, validating every HDF5 file up front, and
 * reading rows as float32 chunk-aligned through a cache of open handles. HDF5 (serial build) is
 * not thread-safe, so every HDF5 call is made under one process-wide recursive mutex. */
#include "shard.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/sf_check.h"

/* Bytes of shard data read by this process (x and g, whole chunks as HDF5 reads them). */
static _Atomic int64_t g_bytes_read;

/* ---------------------------------------------------------------- half conversions */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float shard_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in float32 */
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (man << 13)); /* inf, or NaN keeping its payload */
    return u2f(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

float shard_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t shard_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        if (a > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
            return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
        return (uint16_t)(sign | 0x7c00);
    }
    if (a >= 0x477ff000u) /* >= 65520 rounds (ties to even) past 65504 to inf */
        return (uint16_t)(sign | 0x7c00);
    if (a < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        int e = (int)(a >> 23) - 127;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        int shift = -(e + 1); /* value = m * 2^(e+1) units of 2^-24 */
        if (shift >= 25)
            return sign; /* < 2^-25, or exactly 2^-25 (a tie that rounds to even 0) */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t base = (a >> 13) - ((uint32_t)(127 - 15) << 10);
    uint32_t rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (base & 1)))
        base++; /* a mantissa carry moves into the exponent, which is the right result */
    return (uint16_t)(sign | base);
}

uint16_t shard_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN (quiet) even if payload is low */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

const char *shard_dtype_name(shard_dtype t)
{
    switch (t) {
    case SHARD_F32: return "float32";
    case SHARD_F16: return "float16";
    case SHARD_BF16: return "bfloat16";
    }
    return "unknown";
}

/* Lookup tables make the f16/bf16 -> f32 hot loop one load per value; built from the exact
 * scalar functions above. */
static float g_f16_table[65536];
static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;
static void build_tables(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        g_f16_table[i] = shard_f16_to_f32((uint16_t)i);
}

/* ---------------------------------------------------------------- HDF5 lock */

static pthread_mutex_t g_h5_mutex;
static pthread_once_t g_h5_once = PTHREAD_ONCE_INIT;

static void h5_init(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_h5_mutex, &a);
    pthread_mutexattr_destroy(&a);
    /* Our own one-line messages replace HDF5's error-stack dumps. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void shard_hdf5_lock(void)
{
    pthread_once(&g_h5_once, h5_init);
    pthread_mutex_lock(&g_h5_mutex);
}

void shard_hdf5_unlock(void) { pthread_mutex_unlock(&g_h5_mutex); }

/* ---------------------------------------------------------------- dtype detection */

/* -1: not a supported float type. */
static int detect_dtype(hid_t t)
{
    if (H5Tget_class(t) != H5T_FLOAT)
        return -1;
    size_t size = H5Tget_size(t), spos, epos, esize, mpos, msize;
    if (H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) < 0)
        return -1;
    size_t ebias = H5Tget_ebias(t);
    int off = H5Tget_offset(t);
    size_t prec = H5Tget_precision(t);
    if (off != 0 || prec != 8 * size)
        return -1;
    if (size == 4 && spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23 && ebias == 127)
        return SHARD_F32;
    if (size == 2 && spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && ebias == 15)
        return SHARD_F16;
    if (size == 2 && spos == 15 && epos == 7 && esize == 8 && mpos == 0 && msize == 7 && ebias == 127)
        return SHARD_BF16;
    return -1;
}

static const char *describe_type(hid_t t, char *buf, size_t cap)
{
    H5T_class_t c = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    const char *cls = c == H5T_FLOAT ? "float" : c == H5T_INTEGER ? "integer" : c == H5T_STRING ? "string" : "non-numeric";
    snprintf(buf, cap, "%s of %zu bits", cls, 8 * size);
    return buf;
}

/* ---------------------------------------------------------------- handle cache */

typedef struct h5_handle {
    char *path;
    hid_t file, act, grad;
    uint64_t last_use;
} h5_handle;

#define H5_CACHE_MAX 32
static h5_handle g_cache[H5_CACHE_MAX];
static int g_cache_n;
static uint64_t g_cache_tick;

/* Scratch for raw (pre-conversion) rows; reused under the lock. */
static void *g_scratch;
static size_t g_scratch_cap;

static void handle_close(h5_handle *h)
{
    if (h->grad >= 0)
        H5Dclose(h->grad);
    if (h->act >= 0)
        H5Dclose(h->act);
    if (h->file >= 0)
        H5Fclose(h->file);
    free(h->path);
}

/* Called with the lock held. */
static void cache_drop(const char *path)
{
    for (int i = 0; i < g_cache_n; i++) {
        if (!strcmp(g_cache[i].path, path)) {
            handle_close(&g_cache[i]);
            g_cache[i] = g_cache[--g_cache_n];
            return;
        }
    }
}

/* Called with the lock held; NULL with err set on failure. */
static h5_handle *cache_get(const char *path, sf_err *err)
{
    for (int i = 0; i < g_cache_n; i++) {
        if (!strcmp(g_cache[i].path, path)) {
            g_cache[i].last_use = ++g_cache_tick;
            return &g_cache[i];
        }
    }
    if (g_cache_n == H5_CACHE_MAX) {
        int lru = 0;
        for (int i = 1; i < g_cache_n; i++)
            if (g_cache[i].last_use < g_cache[lru].last_use)
                lru = i;
        handle_close(&g_cache[lru]);
        g_cache[lru] = g_cache[--g_cache_n];
    }
    h5_handle h = {NULL, -1, -1, -1, 0};
    h.file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (h.file < 0) {
        sf_fail(err, SF_EINPUT, "%s: cannot reopen shard (removed or damaged since validation?); check the file", path);
        return NULL;
    }
    h.act = H5Dopen2(h.file, "activations", H5P_DEFAULT);
    if (H5Lexists(h.file, "gradients", H5P_DEFAULT) > 0)
        h.grad = H5Dopen2(h.file, "gradients", H5P_DEFAULT);
    if (h.act < 0) {
        handle_close(&h);
        sf_fail(err, SF_EINPUT, "%s: cannot reopen `activations` (file changed since validation?); check the file", path);
        return NULL;
    }
    size_t n = strlen(path) + 1;
    h.path = malloc(n);
    SF_CHECK(h.path);
    memcpy(h.path, path, n);
    h.last_use = ++g_cache_tick;
    g_cache[g_cache_n] = h;
    return &g_cache[g_cache_n++];
}

/* ---------------------------------------------------------------- validation */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    SF_CHECK(p);
    memcpy(p, s, n);
    return p;
}

typedef struct file_info {
    int64_t rows, chunk_rows;
    int d;
    int dtype;
    int has_grad, has_tokens;
} file_info;

static const char *const k_fix = "re-create it or remove it from data.path";

/* Reads a string attribute (fixed or variable length) into out; absent or unreadable -> "". */
static void read_str_attr(hid_t file, const char *name, char *out, size_t cap)
{
    out[0] = 0;
    if (H5Aexists(file, name) <= 0)
        return;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0)
        return;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    /* one string only: H5Aread writes every element of the attribute's dataspace, and an array
     * of strings would overrun the single pointer or buffer read into */
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(t) > 0) {
            hid_t m = H5Tcopy(H5T_C_S1);
            H5Tset_size(m, H5T_VARIABLE);
            H5Tset_cset(m, H5Tget_cset(t));
            char *s = NULL;
            if (H5Aread(a, m, &s) >= 0 && s) {
                snprintf(out, cap, "%s", s);
                H5free_memory(s);
            }
            H5Tclose(m);
        } else {
            size_t n = H5Tget_size(t);
            char *buf = calloc(n + 1, 1);
            SF_CHECK(buf);
            hid_t m = H5Tcopy(H5T_C_S1);
            H5Tset_size(m, n);
            H5Tset_strpad(m, H5T_STR_NULLTERM);
            if (n < 1 || H5Tset_size(m, n + 1) < 0 || H5Aread(a, m, buf) < 0)
                buf[0] = 0;
            snprintf(out, cap, "%s", buf);
            free(buf);
            H5Tclose(m);
        }
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    H5Aclose(a);
}

static int64_t read_int_attr(hid_t file, const char *name)
{
    int64_t v = -1;
    if (H5Aexists(file, name) <= 0)
        return -1;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
            v = -1;
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    H5Aclose(a);
    return v;
}

/* Checks one 2-D float dataset; fills rows/d/dtype/chunk_rows. */
static int check_matrix(hid_t file, const char *path, const char *name, file_info *fi, sf_err *err)
{
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0)
        return sf_fail(err, SF_EINPUT, "%s: cannot open dataset `%s` (damaged file?); %s", path, name, k_fix);
    int rc = SF_OK;
    hid_t sp = H5Dget_space(ds), t = H5Dget_type(ds), pl = H5Dget_create_plist(ds);
    hsize_t dims[2];
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (sp < 0 || t < 0 || pl < 0) {
        rc = sf_fail(err, SF_EINPUT, "%s: cannot read the description of `%s` (damaged file?); %s", path, name, k_fix);
    } else if (rank != 2) {
        rc = sf_fail(err, SF_EINPUT, "%s: `%s` has %d dimensions, expected 2 [rows, d]; write it as a 2-D array",
                     path, name, rank);
    } else if (H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        rc = sf_fail(err, SF_EINPUT, "%s: cannot read the shape of `%s` (damaged file?); %s", path, name, k_fix);
    } else if (dims[1] < 1 || dims[1] > (1u << 24)) {
        rc = sf_fail(err, SF_EINPUT, "%s: `%s` has width %llu; expected 1..16777216 columns", path, name,
                     (unsigned long long)dims[1]);
    } else if ((fi->dtype = detect_dtype(t)) < 0) {
        char desc[64];
        rc = sf_fail(err, SF_EINPUT,
                     "%s: `%s` has unsupported element type (%s); write float32, float16 or bfloat16", path, name,
                     describe_type(t, desc, sizeof desc));
    } else {
        fi->rows = (int64_t)dims[0];
        fi->d = (int)dims[1];
        fi->chunk_rows = 0;
        if (H5Pget_layout(pl) == H5D_CHUNKED) {
            hsize_t cd[2];
            if (H5Pget_chunk(pl, 2, cd) == 2)
                fi->chunk_rows = (int64_t)cd[0];
        }
    }
    if (pl >= 0)
        H5Pclose(pl);
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

static int validate_file(const char *path, int need_gradients, file_info *fi, char *model, char *hook,
                         int64_t *context_size, sf_err *err)
{
    memset(fi, 0, sizeof *fi);
    struct stat st;
    if (stat(path, &st) != 0)
        return sf_fail(err, SF_EINPUT, "%s: no such shard file; check data.path", path);
    if (access(path, R_OK) != 0)
        return sf_fail(err, SF_EINPUT, "%s: shard is not readable (%s); fix its permissions", path, strerror(errno));
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        return sf_fail(err, SF_EINPUT, "%s: not a readable HDF5 file (truncated or damaged?); %s", path, k_fix);
    int rc = SF_OK;
    if (H5Lexists(file, "activations", H5P_DEFAULT) <= 0) {
        rc = sf_fail(err, SF_EINPUT, "%s: has no `activations` dataset; write activations as a 2-D [rows, d] dataset",
                     path);
        goto done;
    }
    if ((rc = check_matrix(file, path, "activations", fi, err)) != SF_OK)
        goto done;
    fi->has_grad = H5Lexists(file, "gradients", H5P_DEFAULT) > 0;
    if (fi->has_grad) {
        file_info gi;
        memset(&gi, 0, sizeof gi);
        if ((rc = check_matrix(file, path, "gradients", &gi, err)) != SF_OK)
            goto done;
        if (gi.rows != fi->rows || gi.d != fi->d || gi.dtype != fi->dtype) {
            rc = sf_fail(err, SF_EINPUT,
                         "%s: `gradients` is [%lld, %d] %s but `activations` is [%lld, %d] %s; write both with the "
                         "same shape and dtype",
                         path, (long long)gi.rows, gi.d, shard_dtype_name(gi.dtype), (long long)fi->rows, fi->d,
                         shard_dtype_name(fi->dtype));
            goto done;
        }
    } else if (need_gradients) {
        rc = sf_fail(err, SF_EINPUT,
                     "%s: has no `gradients` dataset; gsae needs shards written with gradients (saeforge synth "
                     "--gradients)",
                     path);
        goto done;
    }
    fi->has_tokens = H5Lexists(file, "tokens", H5P_DEFAULT) > 0;
    if (fi->has_tokens) {
        hid_t ds = H5Dopen2(file, "tokens", H5P_DEFAULT);
        hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1, t = ds >= 0 ? H5Dget_type(ds) : -1;
        hsize_t n = 0;
        int ok = sp >= 0 && t >= 0 && H5Sget_simple_extent_ndims(sp) == 1 &&
                 H5Sget_simple_extent_dims(sp, &n, NULL) == 1 && H5Tget_class(t) == H5T_INTEGER &&
                 H5Tget_size(t) == 4 && (int64_t)n == fi->rows;
        if (t >= 0)
            H5Tclose(t);
        if (sp >= 0)
            H5Sclose(sp);
        if (ds >= 0)
            H5Dclose(ds);
        if (!ok) {
            rc = sf_fail(err, SF_EINPUT, "%s: `tokens` must be a 1-D int32 dataset of %lld rows; fix or drop it", path,
                         (long long)fi->rows);
            goto done;
        }
    }
    if (model) {
        read_str_attr(file, "model", model, 256);
        read_str_attr(file, "hook", hook, 256);
        *context_size = read_int_attr(file, "context_size");
    }
done:
    H5Fclose(file);
    return rc;
}

/* ---------------------------------------------------------------- spec expansion */

typedef struct strlist {
    char **v;
    int n, cap;
} strlist;

static void sl_push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
        SF_CHECK(l->v);
    }
    l->v[l->n++] = xstrdup(s);
}

static void sl_free(strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with_h5(const char *s)
{
    size_t n = strlen(s);
    return n >= 3 && !strcmp(s + n - 3, ".h5");
}

static int expand_spec(const char *spec, strlist *out, sf_err *err)
{
    struct stat st;
    if (!spec || !*spec)
        return sf_fail(err, SF_EINPUT, "data.path is empty; set it to a shard file, directory or glob");
    if (stat(spec, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(spec);
        if (!d)
            return sf_fail(err, SF_EINPUT, "%s: cannot list directory (%s); check permissions", spec, strerror(errno));
        struct dirent *e;
        size_t sl = strlen(spec);
        int slash = sl > 0 && spec[sl - 1] == '/';
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || !ends_with_h5(e->d_name))
                continue;
            size_t cap = sl + strlen(e->d_name) + 2;
            char *p = malloc(cap);
            SF_CHECK(p);
            snprintf(p, cap, "%s%s%s", spec, slash ? "" : "/", e->d_name);
            struct stat fst;
            if (stat(p, &fst) == 0 && S_ISREG(fst.st_mode))
                sl_push(out, p);
            free(p);
        }
        closedir(d);
        if (out->n == 0)
            return sf_fail(err, SF_EINPUT, "%s: directory has no *.h5 shards; point data.path to the shards", spec);
    } else if (stat(spec, &st) == 0) {
        sl_push(out, spec);
    } else if (strpbrk(spec, "*?[")) {
        glob_t g;
        int r = glob(spec, 0, NULL, &g);
        if (r == GLOB_NOMATCH || (r == 0 && g.gl_pathc == 0)) {
            if (r == 0)
                globfree(&g);
            return sf_fail(err, SF_EINPUT, "%s: pattern matches no files; check data.path", spec);
        }
        if (r != 0)
            return sf_fail(err, SF_EINPUT, "%s: cannot expand pattern; check data.path", spec);
        for (size_t i = 0; i < g.gl_pathc; i++) {
            struct stat fst;
            if (stat(g.gl_pathv[i], &fst) == 0 && S_ISREG(fst.st_mode))
                sl_push(out, g.gl_pathv[i]);
        }
        globfree(&g);
        if (out->n == 0)
            return sf_fail(err, SF_EINPUT, "%s: pattern matches no regular files; check data.path", spec);
    } else {
        return sf_fail(err, SF_EINPUT, "%s: no such file or directory; check data.path", spec);
    }
    qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    return SF_OK;
}

int shard_set_open(shard_set *set, const char *spec, int need_gradients, sf_err *err)
{
    memset(set, 0, sizeof *set);
    set->context_size = -1;
    strlist paths = {0};
    int rc = expand_spec(spec, &paths, err);
    if (rc != SF_OK) {
        sl_free(&paths);
        return rc;
    }
    set->files = calloc((size_t)paths.n, sizeof *set->files);
    SF_CHECK(set->files);
    set->has_gradients = 1;
    set->has_tokens = 1;
    shard_hdf5_lock();
    for (int i = 0; i < paths.n && rc == SF_OK; i++) {
        file_info fi;
        cache_drop(paths.v[i]); /* the file may have been replaced since a handle was cached */
        rc = validate_file(paths.v[i], need_gradients, &fi, i == 0 ? set->model : NULL, set->hook,
                           &set->context_size, err);
        if (rc != SF_OK)
            break;
        if (i == 0) {
            set->d = fi.d;
            set->dtype = (shard_dtype)fi.dtype;
        } else if (fi.d != set->d || fi.dtype != (int)set->dtype) {
            rc = sf_fail(err, SF_EINPUT,
                         "%s has d=%d %s but %s has d=%d %s; all shards of a run must have the same width and dtype",
                         paths.v[i], fi.d, shard_dtype_name(fi.dtype), paths.v[0], set->d,
                         shard_dtype_name(set->dtype));
            break;
        }
        shard_file *f = &set->files[set->n_files++];
        f->path = xstrdup(paths.v[i]);
        f->rows = fi.rows;
        f->row0 = set->rows;
        f->chunk_rows = fi.chunk_rows;
        set->rows += fi.rows;
        set->has_gradients &= fi.has_grad;
        set->has_tokens &= fi.has_tokens;
    }
    shard_hdf5_unlock();
    if (rc == SF_OK && set->rows == 0)
        rc = sf_fail(err, SF_EINPUT, "%s: the shards hold no rows; point data.path to non-empty shards", spec);
    sl_free(&paths);
    if (rc != SF_OK)
        shard_set_free(set);
    return rc;
}

void shard_set_free(shard_set *set)
{
    if (set->files) {
        shard_hdf5_lock();
        for (int i = 0; i < set->n_files; i++)
            cache_drop(set->files[i].path);
        shard_hdf5_unlock();
    }
    for (int i = 0; i < set->n_files; i++)
        free(set->files[i].path);
    free(set->files);
    memset(set, 0, sizeof *set);
    set->context_size = -1;
}

/* ---------------------------------------------------------------- reading */

static void *scratch(size_t bytes)
{
    if (bytes > g_scratch_cap) {
        free(g_scratch);
        g_scratch_cap = bytes + bytes / 4;
        g_scratch = malloc(g_scratch_cap);
        SF_CHECK(g_scratch);
    }
    return g_scratch;
}

static void convert_rows(shard_dtype t, const void *src, float *dst, size_t n)
{
    if (t == SHARD_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (t == SHARD_F16) {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = g_f16_table[s[i]];
    } else {
        const uint16_t *s = src;
        uint32_t *o = (uint32_t *)(void *)dst;
        for (size_t i = 0; i < n; i++)
            o[i] = (uint32_t)s[i] << 16;
    }
}

/* Reads rows [r0, r0+n) of one dataset, expanded to whole chunks, converting into out. Lock held. */
static int read_piece(const shard_set *set, const shard_file *f, hid_t ds, const char *name, int64_t r0,
                      int64_t n, float *out, sf_err *err)
{
    int d = set->d;
    int64_t a0 = r0, a1 = r0 + n;
    if (f->chunk_rows > 0) {
        a0 = r0 / f->chunk_rows * f->chunk_rows;
        a1 = (r0 + n + f->chunk_rows - 1) / f->chunk_rows * f->chunk_rows;
        if (a1 > f->rows)
            a1 = f->rows;
    }
    size_t esz = set->dtype == SHARD_F32 ? 4 : 2;
    int direct = set->dtype == SHARD_F32 && a0 == r0 && a1 == r0 + n;
    void *buf = direct ? (void *)out : scratch((size_t)(a1 - a0) * (size_t)d * esz);
    hsize_t start[2] = {(hsize_t)a0, 0}, count[2] = {(hsize_t)(a1 - a0), (hsize_t)d};
    hid_t fsp = H5Dget_space(ds);
    hid_t msp = H5Screate_simple(2, count, NULL);
    hid_t mt;
    if (set->dtype == SHARD_F32) {
        mt = H5Tcopy(H5T_NATIVE_FLOAT);
    } else {
        /* Same layout as the file, little-endian: HDF5 only swaps bytes if the file is big-endian. */
        hid_t ft = H5Dget_type(ds);
        mt = ft >= 0 ? H5Tcopy(ft) : -1;
        if (mt >= 0)
            H5Tset_order(mt, H5T_ORDER_LE);
        if (ft >= 0)
            H5Tclose(ft);
    }
    int ok = fsp >= 0 && msp >= 0 && mt >= 0 &&
             H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
             H5Dread(ds, mt, msp, fsp, H5P_DEFAULT, buf) >= 0;
    if (mt >= 0)
        H5Tclose(mt);
    if (msp >= 0)
        H5Sclose(msp);
    if (fsp >= 0)
        H5Sclose(fsp);
    if (!ok)
        return sf_fail(err, SF_EINPUT, "%s: cannot read rows %lld..%lld of `%s` (damaged file?); %s", f->path,
                       (long long)r0, (long long)(r0 + n - 1), name, k_fix);
    atomic_fetch_add(&g_bytes_read, (int64_t)(a1 - a0) * d * (int64_t)esz);
    if (!direct)
        convert_rows(set->dtype, (const char *)buf + (size_t)(r0 - a0) * (size_t)d * esz, out, (size_t)n * (size_t)d);
    return SF_OK;
}

int64_t shard_bytes_read(void) { return atomic_load(&g_bytes_read); }

static int find_file(const shard_set *set, int64_t row)
{
    int lo = 0, hi = set->n_files - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (set->files[mid].row0 <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

int shard_set_read(const shard_set *set, int64_t row, int64_t count, float *x, float *g, sf_err *err)
{
    SF_CHECK(row >= 0 && count >= 0 && row + count <= set->rows);
    if (g && !set->has_gradients)
        return sf_fail(err, SF_EINPUT, "the shards have no `gradients` dataset; gsae needs shards written with "
                                       "gradients (saeforge synth --gradients)");
    pthread_once(&g_table_once, build_tables);
    int fi = count > 0 ? find_file(set, row) : 0;
    int64_t done = 0;
    int rc = SF_OK;
    shard_hdf5_lock();
    while (done < count && rc == SF_OK) {
        const shard_file *f = &set->files[fi];
        int64_t local = row + done - f->row0;
        int64_t n = f->rows - local;
        if (n > count - done)
            n = count - done;
        if (n <= 0) {
            fi++;
            continue;
        }
        h5_handle *h = cache_get(f->path, err);
        if (!h) {
            rc = err ? err->code : SF_EINPUT;
            break;
        }
        size_t off = (size_t)done * (size_t)set->d;
        rc = read_piece(set, f, h->act, "activations", local, n, x + off, err);
        if (rc == SF_OK && g) {
            if (h->grad < 0)
                rc = sf_fail(err, SF_EINPUT, "%s: has no `gradients` dataset; gsae needs shards written with "
                                             "gradients (saeforge synth --gradients)", f->path);
            else
                rc = read_piece(set, f, h->grad, "gradients", local, n, g + off, err);
        }
        done += n;
        fi++;
    }
    shard_hdf5_unlock();
    return rc;
}
