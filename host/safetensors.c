/* safetensors reader/writer (SPEC §4): a small JSON header parser with full validation and a
 * durable writer; no external JSON library so the format rules are checked exactly here. */
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/sf_check.h"
#include "fsutil.h"

static const char *const dtype_names[] = {"F32", "F16", "BF16", "I32", "I64", "U8", "F64"};
static const size_t dtype_sizes[] = {4, 2, 2, 4, 8, 1, 8};
#define N_DTYPES ((int)(sizeof dtype_sizes / sizeof dtype_sizes[0]))

size_t st_dtype_size(st_dtype t)
{
    SF_CHECK((int)t >= 0 && (int)t < N_DTYPES);
    return dtype_sizes[t];
}

const char *st_dtype_name(st_dtype t)
{
    SF_CHECK((int)t >= 0 && (int)t < N_DTYPES);
    return dtype_names[t];
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    SF_CHECK(p);
    memcpy(p, s, n);
    return p;
}

/* ---------------------------------------------------------------- writer */

void st_writer_init(st_writer *w) { memset(w, 0, sizeof *w); }

void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data)
{
    SF_CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 8;
        w->t = realloc(w->t, (size_t)w->cap * sizeof *w->t);
        SF_CHECK(w->t);
    }
    st_tensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        SF_CHECK(shape[i] >= 0);
        t->shape[i] = shape[i];
        count *= (size_t)shape[i];
    }
    t->data = data;
    t->nbytes = count * st_dtype_size(dtype);
    SF_CHECK(t->nbytes == 0 || data != NULL);
}

void st_writer_meta(st_writer *w, const char *key, const char *value)
{
    for (int i = 0; i < w->n_meta; i++) {
        if (!strcmp(w->meta[i].key, key)) {
            free(w->meta[i].value);
            w->meta[i].value = xstrdup(value);
            return;
        }
    }
    if (w->n_meta == w->cap_meta) {
        w->cap_meta = w->cap_meta ? 2 * w->cap_meta : 8;
        w->meta = realloc(w->meta, (size_t)w->cap_meta * sizeof *w->meta);
        SF_CHECK(w->meta);
    }
    w->meta[w->n_meta].key = xstrdup(key);
    w->meta[w->n_meta].value = xstrdup(value);
    w->n_meta++;
}

void st_writer_free(st_writer *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->t[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    memset(w, 0, sizeof *w);
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap)
            b->cap = b->cap ? 2 * b->cap : 256;
        b->p = realloc(b->p, b->cap);
        SF_CHECK(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_json_str(sbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char tmp[8];
        if (*c == '"')
            sb_puts(b, "\\\"");
        else if (*c == '\\')
            sb_puts(b, "\\\\");
        else if (*c == '\n')
            sb_puts(b, "\\n");
        else if (*c == '\t')
            sb_puts(b, "\\t");
        else if (*c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *c);
            sb_puts(b, tmp);
        } else
            sb_putn(b, (const char *)c, 1);
    }
    sb_puts(b, "\"");
}

int st_writer_commit(st_writer *w, const char *path, sf_err *err)
{
    /* Larger element sizes first (stable), so every tensor starts aligned to its element size. */
    int *order = malloc((size_t)(w->n ? w->n : 1) * sizeof *order);
    SF_CHECK(order);
    int m = 0;
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (int i = 0; i < w->n; i++)
            if (st_dtype_size(w->t[i].dtype) == sz)
                order[m++] = i;
    SF_CHECK(m == w->n);

    sbuf h = {0};
    sb_puts(&h, "{");
    int first = 1;
    if (w->n_meta > 0) {
        sb_json_str(&h, "__metadata__");
        sb_puts(&h, ":{");
        for (int i = 0; i < w->n_meta; i++) {
            if (i)
                sb_puts(&h, ",");
            sb_json_str(&h, w->meta[i].key);
            sb_puts(&h, ":");
            sb_json_str(&h, w->meta[i].value);
        }
        sb_puts(&h, "}");
        first = 0;
    }
    size_t off = 0;
    for (int j = 0; j < m; j++) {
        const st_tensor *t = &w->t[order[j]];
        char num[64];
        if (!first)
            sb_puts(&h, ",");
        first = 0;
        sb_json_str(&h, t->name);
        sb_puts(&h, ":{\"dtype\":\"");
        sb_puts(&h, st_dtype_name(t->dtype));
        sb_puts(&h, "\",\"shape\":[");
        for (int i = 0; i < t->ndim; i++) {
            snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)t->shape[i]);
            sb_puts(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        sb_puts(&h, num);
        off += t->nbytes;
    }
    sb_puts(&h, "}");
    while (h.n % 8 != 0)
        sb_puts(&h, " ");

    size_t total = 8 + h.n + off;
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf) {
        free(h.p);
        free(order);
        return sf_fail(err, SF_EFAIL, "%s: out of memory writing safetensors file", path);
    }
    uint64_t hl = h.n;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hl >> (8 * i));
    memcpy(buf + 8, h.p, h.n);
    size_t pos = 8 + h.n;
    for (int j = 0; j < m; j++) {
        const st_tensor *t = &w->t[order[j]];
        if (t->nbytes)
            memcpy(buf + pos, t->data, t->nbytes);
        pos += t->nbytes;
    }
    int rc = fs_write_atomic(path, buf, total, err);
    free(buf);
    free(h.p);
    free(order);
    return rc;
}

/* ---------------------------------------------------------------- JSON */

typedef enum { JV_OBJ, JV_ARR, JV_STR, JV_INT } jv_kind;

typedef struct jv {
    jv_kind kind;
    int n;            /* members (object) or elements (array) */
    char **keys;      /* object */
    struct jv *items; /* object values or array elements */
    char *str;
    int64_t num;
} jv;

typedef struct jparser {
    const char *p, *end;
    const char *what; /* first error */
} jparser;

static void jv_free(jv *v)
{
    for (int i = 0; i < v->n; i++) {
        if (v->keys)
            free(v->keys[i]);
        jv_free(&v->items[i]);
    }
    free(v->keys);
    free(v->items);
    free(v->str);
}

static void jskip(jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jfail(jparser *j, const char *what)
{
    if (!j->what)
        j->what = what;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void put_utf8(sbuf *b, unsigned cp)
{
    char t[4];
    int n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_putn(b, t, (size_t)n);
}

static int read_hex4(jparser *j, unsigned *out)
{
    if (j->end - j->p < 4)
        return jfail(j, "bad \\u escape in header JSON");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0)
            return jfail(j, "bad \\u escape in header JSON");
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return 0;
}

static int jparse_str(jparser *j, char **out)
{
    if (j->p >= j->end || *j->p != '"')
        return jfail(j, "expected a string in header JSON");
    j->p++;
    sbuf b = {0};
    sb_puts(&b, "");
    while (1) {
        if (j->p >= j->end) {
            free(b.p);
            return jfail(j, "unterminated string in header JSON");
        }
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            break;
        if (c < 0x20) {
            free(b.p);
            return jfail(j, "control character in header JSON string");
        }
        if (c != '\\') {
            sb_putn(&b, (const char *)&c, 1);
            continue;
        }
        if (j->p >= j->end) {
            free(b.p);
            return jfail(j, "unterminated string in header JSON");
        }
        char e = *j->p++;
        char lit;
        switch (e) {
        case '"': lit = '"'; break;
        case '\\': lit = '\\'; break;
        case '/': lit = '/'; break;
        case 'b': lit = '\b'; break;
        case 'f': lit = '\f'; break;
        case 'n': lit = '\n'; break;
        case 'r': lit = '\r'; break;
        case 't': lit = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_hex4(j, &cp) < 0) {
                free(b.p);
                return -1;
            }
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') {
                    free(b.p);
                    return jfail(j, "unpaired surrogate in header JSON");
                }
                j->p += 2;
                if (read_hex4(j, &lo) < 0 || lo < 0xDC00 || lo >= 0xE000) {
                    free(b.p);
                    return jfail(j, "unpaired surrogate in header JSON");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                free(b.p);
                return jfail(j, "unpaired surrogate in header JSON");
            }
            if (cp == 0) {
                free(b.p);
                return jfail(j, "NUL character in header JSON string");
            }
            put_utf8(&b, cp);
            continue;
        }
        default:
            free(b.p);
            return jfail(j, "bad escape in header JSON string");
        }
        sb_putn(&b, &lit, 1);
    }
    *out = b.p;
    return 0;
}

static int jparse_value(jparser *j, jv *v, int depth);

static int jparse_int(jparser *j, jv *v)
{
    int neg = 0;
    if (j->p < j->end && *j->p == '-') {
        neg = 1;
        j->p++;
    }
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return jfail(j, "bad number in header JSON");
    uint64_t x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (x > (uint64_t)INT64_MAX / 10)
            return jfail(j, "number too large in header JSON");
        x = x * 10 + (uint64_t)(*j->p - '0');
        if (x > (uint64_t)INT64_MAX)
            return jfail(j, "number too large in header JSON");
        j->p++;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return jfail(j, "non-integer number in header JSON");
    v->kind = JV_INT;
    v->num = neg ? -(int64_t)x : (int64_t)x;
    return 0;
}

static int jpush(jv *v, int *cap)
{
    if (v->n == *cap) {
        *cap = *cap ? 2 * *cap : 4;
        v->items = realloc(v->items, (size_t)*cap * sizeof *v->items);
        SF_CHECK(v->items);
        if (v->kind == JV_OBJ) {
            v->keys = realloc(v->keys, (size_t)*cap * sizeof *v->keys);
            SF_CHECK(v->keys);
        }
    }
    memset(&v->items[v->n], 0, sizeof v->items[0]);
    if (v->kind == JV_OBJ)
        v->keys[v->n] = NULL;
    return v->n++;
}

static int jparse_value(jparser *j, jv *v, int depth)
{
    memset(v, 0, sizeof *v);
    if (depth > 16)
        return jfail(j, "header JSON nested too deeply");
    jskip(j);
    if (j->p >= j->end)
        return jfail(j, "header JSON ends early");
    char c = *j->p;
    if (c == '"') {
        v->kind = JV_STR;
        return jparse_str(j, &v->str);
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return jparse_int(j, v);
    if (c != '{' && c != '[')
        return jfail(j, "unexpected character in header JSON");
    int obj = c == '{';
    char close = obj ? '}' : ']';
    v->kind = obj ? JV_OBJ : JV_ARR;
    j->p++;
    int cap = 0;
    jskip(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    while (1) {
        int i = jpush(v, &cap);
        jskip(j);
        if (obj) {
            if (jparse_str(j, &v->keys[i]) < 0)
                return -1;
            jskip(j);
            if (j->p >= j->end || *j->p != ':')
                return jfail(j, "expected ':' in header JSON");
            j->p++;
        }
        if (jparse_value(j, &v->items[i], depth + 1) < 0)
            return -1;
        jskip(j);
        if (j->p >= j->end)
            return jfail(j, "header JSON ends early");
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == close) {
            j->p++;
            return 0;
        }
        return jfail(j, "expected ',' or a closing bracket in header JSON");
    }
}

static const jv *jget(const jv *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key))
            return &o->items[i];
    return NULL;
}

/* ---------------------------------------------------------------- reader */

static int damaged(sf_err *err, const char *path, const char *what, const char *name)
{
    char q[SF_QUOTE_MAX];
    if (name)
        return sf_fail(err, SF_EINPUT,
                       "%s: damaged safetensors file (tensor `%s`: %s); re-create it or point to another file",
                       path, sf_quote_str(q, sizeof q, name), what);
    return sf_fail(err, SF_EINPUT, "%s: damaged safetensors file (%s); re-create it or point to another file",
                   path, what);
}

static int cmp_by_begin(const void *a, const void *b, void *ctx)
{
    const st_tensor *t = ctx;
    const st_tensor *x = &t[*(const int *)a], *y = &t[*(const int *)b];
    const uint8_t *px = x->data, *py = y->data;
    if (px != py)
        return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

void st_file_free(st_file *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->t[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->t);
    free(f->meta);
    free(f->buf);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int parse_header(st_file *f, const char *path, const char *hdr, size_t hlen, size_t data_len,
                        const uint8_t *data, sf_err *err)
{
    jparser j = {hdr, hdr + hlen, NULL};
    jv root;
    if (jparse_value(&j, &root, 0) < 0) {
        jv_free(&root);
        return damaged(err, path, j.what, NULL);
    }
    jskip(&j);
    if (j.p != j.end) {
        jv_free(&root);
        return damaged(err, path, "trailing bytes after header JSON", NULL);
    }
    if (root.kind != JV_OBJ) {
        jv_free(&root);
        return damaged(err, path, "header JSON is not an object", NULL);
    }
    int rc = SF_OK;
    f->t = calloc((size_t)(root.n ? root.n : 1), sizeof *f->t);
    SF_CHECK(f->t);
    for (int i = 0; i < root.n && rc == SF_OK; i++) {
        const char *name = root.keys[i];
        const jv *v = &root.items[i];
        for (int k = 0; k < i; k++)
            if (!strcmp(root.keys[k], name)) {
                rc = damaged(err, path, "duplicate name in header", name);
                break;
            }
        if (rc != SF_OK)
            break;
        if (!strcmp(name, "__metadata__")) {
            if (v->kind != JV_OBJ) {
                rc = damaged(err, path, "__metadata__ is not an object", NULL);
                break;
            }
            f->meta = calloc((size_t)(v->n ? v->n : 1), sizeof *f->meta);
            SF_CHECK(f->meta);
            for (int k = 0; k < v->n; k++) {
                /* a lookup finds the first of two equal keys, a rewrite keeps the last */
                for (int q = 0; q < k && rc == SF_OK; q++)
                    if (!strcmp(v->keys[q], v->keys[k]))
                        rc = damaged(err, path, "duplicate key in __metadata__", v->keys[k]);
                if (rc != SF_OK)
                    break;
                if (v->items[k].kind != JV_STR) {
                    rc = damaged(err, path, "__metadata__ value is not a string", NULL);
                    break;
                }
                f->meta[f->n_meta].key = xstrdup(v->keys[k]);
                f->meta[f->n_meta].value = xstrdup(v->items[k].str);
                f->n_meta++;
            }
            continue;
        }
        if (v->kind != JV_OBJ) {
            rc = damaged(err, path, "entry is not an object", name);
            break;
        }
        const jv *dt = jget(v, "dtype"), *sh = jget(v, "shape"), *of = jget(v, "data_offsets");
        if (!dt || dt->kind != JV_STR) {
            rc = damaged(err, path, "missing or bad dtype", name);
            break;
        }
        int dtype = -1;
        for (int k = 0; k < N_DTYPES; k++)
            if (!strcmp(dt->str, dtype_names[k]))
                dtype = k;
        if (dtype < 0) {
            rc = damaged(err, path, "unknown dtype", name);
            break;
        }
        if (!sh || sh->kind != JV_ARR || sh->n > ST_MAX_DIMS) {
            rc = damaged(err, path, "missing or bad shape", name);
            break;
        }
        if (!of || of->kind != JV_ARR || of->n != 2 || of->items[0].kind != JV_INT ||
            of->items[1].kind != JV_INT) {
            rc = damaged(err, path, "missing or bad data_offsets", name);
            break;
        }
        st_tensor *t = &f->t[f->n];
        t->name = xstrdup(name);
        f->n++;
        t->dtype = (st_dtype)dtype;
        t->ndim = sh->n;
        uint64_t count = 1;
        int bad_shape = 0;
        for (int k = 0; k < sh->n; k++) {
            if (sh->items[k].kind != JV_INT || sh->items[k].num < 0) {
                bad_shape = 1;
                break;
            }
            t->shape[k] = sh->items[k].num;
            uint64_t dim = (uint64_t)sh->items[k].num;
            if (dim != 0 && count > UINT64_MAX / 16 / dim) {
                bad_shape = 1;
                break;
            }
            count *= dim;
        }
        if (bad_shape) {
            rc = damaged(err, path, "bad shape", name);
            break;
        }
        int64_t b = of->items[0].num, e = of->items[1].num;
        if (b < 0 || e < b || (uint64_t)e > data_len) {
            rc = damaged(err, path, "data_offsets out of bounds", name);
            break;
        }
        if (count * dtype_sizes[dtype] != (uint64_t)(e - b)) {
            rc = damaged(err, path, "shape and dtype do not match data_offsets size", name);
            break;
        }
        t->data = data + b;
        t->nbytes = (size_t)(e - b);
    }
    jv_free(&root);
    if (rc != SF_OK)
        return rc;
    /* Tensors sorted by offset must tile the data section exactly: no overlap, no hole. */
    int *idx = malloc((size_t)(f->n ? f->n : 1) * sizeof *idx);
    SF_CHECK(idx);
    for (int i = 0; i < f->n; i++)
        idx[i] = i;
    qsort_r(idx, (size_t)f->n, sizeof *idx, cmp_by_begin, f->t);
    size_t pos = 0;
    for (int i = 0; i < f->n && rc == SF_OK; i++) {
        const st_tensor *t = &f->t[idx[i]];
        size_t b = (size_t)((const uint8_t *)t->data - data);
        if (b < pos)
            rc = damaged(err, path, "overlapping data_offsets", t->name);
        else if (b > pos)
            rc = damaged(err, path, "gap between tensors in data", t->name);
        pos = b + t->nbytes;
    }
    free(idx);
    if (rc == SF_OK && pos != data_len)
        rc = damaged(err, path, "data section size does not match the tensors", NULL);
    return rc;
}

int st_read(const char *path, st_file *f, sf_err *err)
{
    memset(f, 0, sizeof *f);
    char *raw;
    size_t len;
    int rc = fs_read_all(path, &raw, &len, err);
    if (rc != SF_OK)
        return rc;
    f->path = xstrdup(path);
    f->buf = (uint8_t *)raw;
    f->len = len;
    if (len < 8) {
        rc = damaged(err, path, "shorter than the 8-byte header length", NULL);
        goto fail;
    }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)f->buf[i] << (8 * i);
    if (hl < 2 || hl > len - 8) {
        rc = damaged(err, path, "header length exceeds the file size", NULL);
        goto fail;
    }
    rc = parse_header(f, path, raw + 8, (size_t)hl, len - 8 - (size_t)hl, f->buf + 8 + hl, err);
    if (rc != SF_OK)
        goto fail;
    return SF_OK;
fail:
    st_file_free(f);
    return rc;
}

const st_tensor *st_get(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name))
            return &f->t[i];
    return NULL;
}

const char *st_get_meta(const st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key))
            return f->meta[i].value;
    return NULL;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

int st_expect(const st_file *f, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
              const st_tensor **out, sf_err *err)
{
    const st_tensor *t = st_get(f, name);
    if (out)
        *out = NULL;
    if (!t)
        return sf_fail(err, SF_EINPUT, "%s: tensor `%s` is missing; point to a file written by saeforge",
                       f->path, name);
    if (t->dtype != dtype)
        return sf_fail(err, SF_EINPUT, "%s: tensor `%s` has dtype %s, expected %s; point to a matching file",
                       f->path, name, st_dtype_name(t->dtype), st_dtype_name(dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = shape[i] < 0 || t->shape[i] == shape[i]; /* negative: any size */
    if (!same) {
        char got[128], want[128];
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        fmt_shape(want, sizeof want, ndim, shape);
        return sf_fail(err, SF_EINPUT, "%s: tensor `%s` has shape %s, expected %s; point to a matching file",
                       f->path, name, got, want);
    }
    if (out)
        *out = t;
    return SF_OK;
}
