/* A small JSON writer (for cfg.json, metrics, CLI --json output) and a small DOM reader
 * (for reading cfg.json back). Not a general-purpose library: UTF-8 in, UTF-8 out. */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>
#include <stdint.h>

/* ---- writer ---------------------------------------------------------------------------
 * Builds a document in a growing buffer; commas are placed automatically. Nesting depth is
 * limited to JSON_MAX_DEPTH. With pretty = 1 objects/arrays are indented by two spaces. */
#define JSON_MAX_DEPTH 32

typedef struct json_writer {
    char *buf;      /* NUL-terminated text so far */
    size_t len, cap;
    int depth;
    unsigned char first[JSON_MAX_DEPTH]; /* no item yet at this depth */
    int after_key;  /* a key was just written: the next value follows it */
    int pretty;
} json_writer;

void jw_init(json_writer *w, int pretty);
void jw_free(json_writer *w);
void jw_obj_begin(json_writer *w);
void jw_obj_end(json_writer *w);
void jw_arr_begin(json_writer *w);
void jw_arr_end(json_writer *w);
void jw_key(json_writer *w, const char *key);
void jw_str(json_writer *w, const char *s);  /* NULL writes null */
void jw_int(json_writer *w, int64_t v);
void jw_num(json_writer *w, double v);       /* shortest round-trip form; NaN/Inf write null */
void jw_bool(json_writer *w, int v);
void jw_null(json_writer *w);
/* Writes raw, already valid JSON as one value. */
void jw_raw(json_writer *w, const char *json);

/* Escapes s as the body of a JSON string (no quotes) into dst (cap bytes, NUL-terminated,
 * truncated at a character boundary if too small). Returns the length it needed. */
size_t json_escape(char *dst, size_t cap, const char *s);

/* ---- reader ----------------------------------------------------------------------------- */
typedef enum { JSON_NULL = 0, JSON_BOOL, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ } json_type;

typedef struct json_value {
    json_type type;
    int b;                    /* JSON_BOOL */
    double num;               /* JSON_NUM */
    char *str;                /* JSON_STR (decoded, NUL-terminated) */
    int n;                    /* JSON_ARR / JSON_OBJ: number of items */
    struct json_value *items; /* (n) */
    char **keys;              /* JSON_OBJ: (n) */
} json_value;

/* Parses text[0..len). Returns 0 and fills out, or -1 with a short reason (with byte offset)
 * in why. Trailing non-space text is an error. Depth limit JSON_MAX_DEPTH * 4. */
int json_parse(const char *text, size_t len, json_value *out, char *why, int why_len);
void json_value_free(json_value *v);
/* Object member by key (first match), NULL if absent or v is not an object. */
const json_value *json_get(const json_value *v, const char *key);
/* Convenience: string / number member or a default when absent or of another type. */
const char *json_get_str(const json_value *v, const char *key, const char *def);
double json_get_num(const json_value *v, const char *key, double def);
/* An integer member checked before any conversion: 0 with *out = def when absent, 0 with the
 * value when it is a whole number in [lo, hi], -1 when it is present but of another type,
 * fractional or out of range (what a foreign file may hold: k: 1e300). */
int json_get_int(const json_value *v, const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out);

#endif
