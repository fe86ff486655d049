/* Recoverable error reporting and the quoting of untrusted bytes in messages (see sf_err.h). */
#include "sf_err.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

size_t sf_utf8_decode(const void *bytes, size_t left, uint32_t *cp)
{
    const unsigned char *p = bytes;
    if (left == 0)
        return 0;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if (p[0] < 0xc2 || p[0] > 0xf4)
        return 0;
    size_t n = p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
    if (left < n)
        return 0;
    uint32_t c = p[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* Length of the valid UTF-8 sequence at p when it is a code point a terminal shows as text
 * (not C1 controls, line separators, BOM or specials), else 0. */
static size_t utf8_printable(const unsigned char *p, size_t left)
{
    uint32_t cp;
    size_t n = sf_utf8_decode(p, left, &cp);
    if (n < 2 || cp < 0xa0 || cp == 0x2028 || cp == 0x2029 || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xffff))
        return 0;
    return n;
}

static char *escape_impl(char *out, size_t outsz, const unsigned char *p, size_t len, int esc_backslash)
{
    if (outsz == 0)
        return out;
    size_t o = 0, i = 0;
    const size_t room = outsz - 1; /* for the NUL */
    while (i < len) {
        char piece[8];
        size_t pn, take = 1;
        size_t u = p[i] >= 0x80 ? utf8_printable(p + i, len - i) : 0;
        if (u) {
            memcpy(piece, p + i, u);
            pn = take = u;
        } else if (p[i] == '\\' && esc_backslash) {
            memcpy(piece, "\\\\", 2);
            pn = 2;
        } else if (p[i] >= 0x20 && p[i] < 0x7f) {
            piece[0] = (char)p[i];
            pn = 1;
        } else {
            snprintf(piece, sizeof piece, "\\x%02x", p[i]);
            pn = 4;
        }
        /* keep room for "..." unless this piece ends the input */
        size_t need = pn + (i + take < len ? 3 : 0);
        if (o + need > room) {
            const char *dots = "...";
            size_t dn = room - o < 3 ? room - o : 3;
            memcpy(out + o, dots, dn);
            o += dn;
            break;
        }
        memcpy(out + o, piece, pn);
        o += pn;
        i += take;
    }
    out[o] = 0;
    return out;
}

char *sf_quote(char *out, size_t outsz, const void *bytes, size_t len)
{
    return escape_impl(out, outsz, bytes, len, 1);
}

char *sf_quote_str(char *out, size_t outsz, const char *s)
{
    return s ? sf_quote(out, outsz, s, strlen(s)) : sf_quote(out, outsz, "", 0);
}

char *sf_escape(char *out, size_t outsz, const char *s)
{
    return escape_impl(out, outsz, (const unsigned char *)s, strlen(s), 0);
}

int sf_fail(sf_err *err, int code, const char *fmt, ...)
{
    if (err) {
        char raw[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        sf_escape(err->msg, sizeof err->msg, raw);
        err->code = code;
    }
    return code;
}
