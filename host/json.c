/* Small JSON writer and DOM reader (see json.h). */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/sf_check.h"

/* ---- writer ---------------------------------------------------------------------------- */

static void jw_put(json_writer *w, const char *s, size_t n)
{
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (w->len + n + 1 > cap)
            cap *= 2;
        char *nb = realloc(w->buf, cap);
        SF_CHECK(nb != NULL);
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void jw_puts(json_writer *w, const char *s) { jw_put(w, s, strlen(s)); }

static void jw_newline(json_writer *w)
{
    if (!w->pretty)
        return;
    jw_put(w, "\n", 1);
    for (int i = 0; i < w->depth; i++)
        jw_put(w, "  ", 2);
}

/* Separator before a value (or a key) at the current depth. */
static void jw_before_item(json_writer *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth > 0) {
        if (!w->first[w->depth - 1])
            jw_put(w, ",", 1);
        w->first[w->depth - 1] = 0;
        jw_newline(w);
    }
}

void jw_init(json_writer *w, int pretty)
{
    memset(w, 0, sizeof *w);
    w->pretty = pretty;
    jw_put(w, "", 0);
}

void jw_free(json_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static void jw_open(json_writer *w, const char *c)
{
    jw_before_item(w);
    jw_puts(w, c);
    SF_CHECK(w->depth < JSON_MAX_DEPTH);
    w->first[w->depth++] = 1;
}

static void jw_close(json_writer *w, const char *c)
{
    SF_CHECK(w->depth > 0);
    int empty = w->first[w->depth - 1];
    w->depth--;
    if (!empty)
        jw_newline(w);
    jw_puts(w, c);
}

void jw_obj_begin(json_writer *w) { jw_open(w, "{"); }
void jw_obj_end(json_writer *w) { jw_close(w, "}"); }
void jw_arr_begin(json_writer *w) { jw_open(w, "["); }
void jw_arr_end(json_writer *w) { jw_close(w, "]"); }

size_t json_escape(char *dst, size_t cap, const char *s)
{
    size_t need = 0, out = 0;
    int full = 0; /* stop writing at the first escape that does not fit: whole escapes only */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        size_t n;
        switch (*p) {
        case '"': n = 2; memcpy(tmp, "\\\"", 2); break;
        case '\\': n = 2; memcpy(tmp, "\\\\", 2); break;
        case '\n': n = 2; memcpy(tmp, "\\n", 2); break;
        case '\r': n = 2; memcpy(tmp, "\\r", 2); break;
        case '\t': n = 2; memcpy(tmp, "\\t", 2); break;
        case '\b': n = 2; memcpy(tmp, "\\b", 2); break;
        case '\f': n = 2; memcpy(tmp, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", *p);
                n = 6;
            } else {
                tmp[0] = (char)*p;
                n = 1;
            }
        }
        need += n;
        if (dst && !full && out + n < cap) {
            memcpy(dst + out, tmp, n);
            out += n;
        } else {
            full = 1;
        }
    }
    if (dst && cap > 0)
        dst[out] = '\0';
    return need;
}

static void jw_quoted(json_writer *w, const char *s)
{
    size_t need = json_escape(NULL, 0, s);
    char *tmp = malloc(need + 1);
    SF_CHECK(tmp != NULL);
    json_escape(tmp, need + 1, s);
    jw_put(w, "\"", 1);
    jw_put(w, tmp, need);
    jw_put(w, "\"", 1);
    free(tmp);
}

void jw_key(json_writer *w, const char *key)
{
    jw_before_item(w);
    jw_quoted(w, key);
    jw_puts(w, w->pretty ? ": " : ":");
    w->after_key = 1;
}

void jw_str(json_writer *w, const char *s)
{
    if (!s) {
        jw_null(w);
        return;
    }
    jw_before_item(w);
    jw_quoted(w, s);
}

void jw_int(json_writer *w, int64_t v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    jw_before_item(w);
    jw_puts(w, tmp);
}

void jw_num(json_writer *w, double v)
{
    if (!isfinite(v)) {
        jw_null(w);
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    /* JSON has no "1e+20" problem, but a bare integer-looking value is fine either way. */
    jw_before_item(w);
    jw_puts(w, tmp);
}

void jw_bool(json_writer *w, int v)
{
    jw_before_item(w);
    jw_puts(w, v ? "true" : "false");
}

void jw_null(json_writer *w)
{
    jw_before_item(w);
    jw_puts(w, "null");
}

void jw_raw(json_writer *w, const char *json)
{
    jw_before_item(w);
    jw_puts(w, json);
}

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct parser {
    const char *s;
    size_t len, pos;
    char *why;
    int why_len;
    int depth;
} parser;

static int p_fail(parser *p, const char *what)
{
    if (p->why && p->why_len > 0)
        snprintf(p->why, (size_t)p->why_len, "%s at byte %zu", what, p->pos);
    return -1;
}

static void p_ws(parser *p)
{
    while (p->pos < p->len &&
           (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int p_lit(parser *p, const char *lit)
{
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0)
        return p_fail(p, "invalid literal");
    p->pos += n;
    return 0;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *dst, unsigned cp)
{
    if (cp < 0x80) { dst[0] = (char)cp; return 1; }
    if (cp < 0x800) { dst[0] = (char)(0xC0 | (cp >> 6)); dst[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int p_string(parser *p, char **out)
{
    /* p->s[p->pos] == '"' */
    p->pos++;
    size_t start = p->pos;
    /* decoded text is never longer than the source */
    size_t end = start;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->len)
        return p_fail(p, "unterminated string");
    char *buf = malloc(end - start + 1);
    SF_CHECK(buf != NULL);
    size_t o = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(buf);
            return p_fail(p, "control character in string");
        }
        if (c != '\\') {
            buf[o++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (p->pos + 4 > end || hex4(p->s + p->pos, &cp)) {
                free(buf);
                return p_fail(p, "bad \\u escape");
            }
            p->pos += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= end && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                unsigned lo;
                if (!hex4(p->s + p->pos + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p->pos += 6;
                }
            }
            o += utf8_put(buf + o, cp); /* <= 4 bytes from >= 6 source bytes */
            break;
        }
        default:
            free(buf);
            return p_fail(p, "bad escape in string");
        }
    }
    buf[o] = '\0';
    p->pos = end + 1;
    *out = buf;
    return 0;
}

static int p_value(parser *p, json_value *v);

static int p_push(json_value *v, int *cap)
{
    if (v->n == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        json_value *ni = realloc(v->items, (size_t)*cap * sizeof *ni);
        SF_CHECK(ni != NULL);
        v->items = ni;
        if (v->type == JSON_OBJ) {
            char **nk = realloc(v->keys, (size_t)*cap * sizeof *nk);
            SF_CHECK(nk != NULL);
            v->keys = nk;
        }
    }
    memset(&v->items[v->n], 0, sizeof v->items[v->n]);
    return v->n++;
}

static int p_container(parser *p, json_value *v, int obj)
{
    v->type = obj ? JSON_OBJ : JSON_ARR;
    if (++p->depth > JSON_MAX_DEPTH * 4)
        return p_fail(p, "nesting too deep");
    p->pos++;
    int cap = 0;
    p_ws(p);
    if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        p_ws(p);
        char *key = NULL;
        if (obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return p_fail(p, "expected a key");
            if (p_string(p, &key))
                return -1;
            p_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return p_fail(p, "expected ':'");
            }
            p->pos++;
        }
        int i = p_push(v, &cap);
        if (obj)
            v->keys[i] = key;
        if (p_value(p, &v->items[i]))
            return -1;
        p_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
            p->pos++;
            p->depth--;
            return 0;
        }
        return p_fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int p_value(parser *p, json_value *v)
{
    memset(v, 0, sizeof *v);
    p_ws(p);
    if (p->pos >= p->len)
        return p_fail(p, "unexpected end");
    char c = p->s[p->pos];
    switch (c) {
    case '{': return p_container(p, v, 1);
    case '[': return p_container(p, v, 0);
    case '"': v->type = JSON_STR; return p_string(p, &v->str);
    case 't': v->type = JSON_BOOL; v->b = 1; return p_lit(p, "true");
    case 'f': v->type = JSON_BOOL; v->b = 0; return p_lit(p, "false");
    case 'n': v->type = JSON_NULL; return p_lit(p, "null");
    default: break;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        /* strtod needs a terminated buffer: copy the number's characters */
        char tmp[64];
        size_t n = 0;
        while (p->pos + n < p->len && n < sizeof tmp - 1 &&
               strchr("+-0123456789.eE", p->s[p->pos + n]))
            n++;
        memcpy(tmp, p->s + p->pos, n);
        tmp[n] = '\0';
        char *end;
        v->type = JSON_NUM;
        v->num = strtod(tmp, &end);
        if (end == tmp || (size_t)(end - tmp) != n)
            return p_fail(p, "bad number");
        p->pos += n;
        return 0;
    }
    return p_fail(p, "unexpected character");
}

int json_parse(const char *text, size_t len, json_value *out, char *why, int why_len)
{
    parser p = {text, len, 0, why, why_len, 0};
    if (p_value(&p, out)) {
        json_value_free(out);
        return -1;
    }
    p_ws(&p);
    if (p.pos != p.len) {
        json_value_free(out);
        return p_fail(&p, "trailing text");
    }
    return 0;
}

void json_value_free(json_value *v)
{
    if (!v)
        return;
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->items)
            json_value_free(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

const json_value *json_get(const json_value *v, const char *key)
{
    if (!v || v->type != JSON_OBJ)
        return NULL;
    for (int i = 0; i < v->n; i++)
        if (v->keys[i] && !strcmp(v->keys[i], key))
            return &v->items[i];
    return NULL;
}

const char *json_get_str(const json_value *v, const char *key, const char *def)
{
    const json_value *m = json_get(v, key);
    return m && m->type == JSON_STR ? m->str : def;
}

double json_get_num(const json_value *v, const char *key, double def)
{
    const json_value *m = json_get(v, key);
    return m && m->type == JSON_NUM ? m->num : def;
}

int json_get_int(const json_value *v, const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
    const json_value *m = json_get(v, key);
    if (!m) {
        *out = def;
        return 0;
    }
    /* the bounds as doubles are exact for |x| <= 2^53, which covers every field read this way */
    if (m->type != JSON_NUM || !(m->num >= (double)lo && m->num <= (double)hi) || m->num != floor(m->num))
        return -1;
    *out = (int64_t)m->num;
    return 0;
}
