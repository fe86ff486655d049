/* Minimal SVG line charts (axes with round ticks, labels, legend) for curves.svg/frontier.svg. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fsutil.h"
#include "json.h"
#include "plot.h"

#define MAXS 8 /* series per panel */

typedef struct series {
    const char *name;
    const double *x, *y; /* (n) */
    int n;
    int markers, line;
    char (*labels)[64]; /* (n) text beside each marker, or NULL */
} series;

static const char *const COLORS[MAXS] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                         "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};

/* A round tick step giving about 5 ticks over span. */
static double tick_step(double span)
{
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

static void range(const series *s, int ns, int use_x, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int j = 0; j < s[i].n; j++) {
            double v = use_x ? s[i].x[j] : s[i].y[j];
            if (isfinite(v)) {
                *lo = v < *lo ? v : *lo;
                *hi = v > *hi ? v : *hi;
            }
        }
    if (!isfinite(*lo)) {
        *lo = 0;
        *hi = 1;
    }
    if (*hi - *lo < 1e-12 * (fabs(*hi) + 1)) { /* a flat series: show it from 0 when it is >= 0 */
        *hi = *hi > 0 ? 1.25 * *hi : *hi < 0 ? 0 : 1;
        *lo = *lo >= 0 ? 0 : 1.25 * *lo;
    }
    double st = tick_step(*hi - *lo);
    *lo = floor(*lo / st) * st;
    *hi = ceil(*hi / st) * st;
}

static void fmt_tick(char *b, size_t n, double v)
{
    double a = fabs(v);
    if (a != 0 && (a >= 1e5 || a < 1e-3))
        snprintf(b, n, "%.3g", v);
    else
        snprintf(b, n, "%.6g", v);
}

/* One panel at (ox, oy) of size (w, h): frame, ticks, labels, series, legend. */
static void panel(FILE *f, double ox, double oy, double w, double h, const char *title,
                  const char *xl, const char *yl, const series *s, int ns)
{
    double L = 70, R = 15, T = 30, Bm = 45;
    double pw = w - L - R, ph = h - T - Bm, x0, x1, y0, y1;
    range(s, ns, 1, &x0, &x1);
    range(s, ns, 0, &y0, &y1);
#define PX(v) (ox + L + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (oy + T + ph - ((v) - y0) / (y1 - y0) * ph)
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='15' font-weight='bold'>%s</text>\n",
            ox + L + pw / 2, oy + 20, title);
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='white' stroke='#333'/>\n",
            ox + L, oy + T, pw, ph);
    char b[32];
    double st = tick_step(x1 - x0);
    for (double v = x0; v <= x1 + st * 1e-6; v += st) {
        fmt_tick(b, sizeof b, fabs(v) < st * 1e-9 ? 0 : v);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>"
                   "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='11'>%s</text>\n",
                PX(v), oy + T, PX(v), oy + T + ph, PX(v), oy + T + ph + 15, b);
    }
    st = tick_step(y1 - y0);
    for (double v = y0; v <= y1 + st * 1e-6; v += st) {
        fmt_tick(b, sizeof b, fabs(v) < st * 1e-9 ? 0 : v);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>"
                   "<text x='%.1f' y='%.1f' text-anchor='end' font-size='11'>%s</text>\n",
                ox + L, PY(v), ox + L + pw, PY(v), ox + L - 5, PY(v) + 4, b);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='13'>%s</text>\n", ox + L + pw / 2,
            oy + h - 8, xl);
    fprintf(f, "<text transform='translate(%.1f,%.1f) rotate(-90)' text-anchor='middle' font-size='13'>%s</text>\n",
            ox + 16, oy + T + ph / 2, yl);
    for (int i = 0; i < ns; i++) {
        const char *c = COLORS[i % MAXS];
        if (s[i].line && s[i].n > 1) {
            fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1.8' points='", c);
            for (int j = 0; j < s[i].n; j++)
                if (isfinite(s[i].y[j]))
                    fprintf(f, "%.1f,%.1f ", PX(s[i].x[j]), PY(s[i].y[j]));
            fprintf(f, "'/>\n");
        }
        if (s[i].markers)
            for (int j = 0; j < s[i].n; j++)
                if (isfinite(s[i].y[j]))
                {
                    fprintf(f, "<circle cx='%.1f' cy='%.1f' r='4.5' fill='%s' stroke='black' stroke-width='0.6'/>\n",
                            PX(s[i].x[j]), PY(s[i].y[j]), c);
                    if (s[i].labels)
                    {
                        int right = PX(s[i].x[j]) > ox + L + 0.7 * pw; /* keep labels inside */
                        fprintf(f, "<text x='%.1f' y='%.1f' font-size='10' fill='#333' text-anchor='%s'>%s</text>\n",
                                PX(s[i].x[j]) + (right ? -6 : 6), PY(s[i].y[j]) - 7, right ? "end" : "start",
                                s[i].labels[j]);
                    }
                }
        if (s[i].name) { /* legend, top right inside the frame */
            double ly = oy + T + 16 + 17 * i, lx = ox + L + pw - 130;
            fprintf(f, "<rect x='%.1f' y='%.1f' width='12' height='12' fill='%s'/>"
                       "<text x='%.1f' y='%.1f' font-size='12'>%s</text>\n",
                    lx, ly - 10, c, lx + 17, ly, s[i].name);
        }
    }
#undef PX
#undef PY
}

static int write_svg(const char *path, char *buf, size_t len, sf_err *err)
{
    int rc = fs_write_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

/* The training lines of a metrics.jsonl into columns (tokens, loss, fvu, l0, dead_frac). */
static int read_metrics(const char *run_dir, double **cols, int *n, double *last_eval, sf_err *err)
{
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    static const char *const keys[5] = {"tokens", "loss", "fvu", "l0", "dead_frac"};
    int cap = 1024;
    *n = 0;
    for (int c = 0; c < 5; c++)
        cols[c] = malloc(sizeof(double) * cap);
    last_eval[0] = last_eval[1] = NAN;
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        json_value v;
        char why[64];
        if (json_parse(line, ll, &v, why, sizeof why))
            continue;
        if (json_get(&v, "eval")) {
            last_eval[0] = json_get_num(&v, "l0", NAN);
            last_eval[1] = json_get_num(&v, "fvu", NAN);
        } else {
            if (*n == cap) {
                cap *= 2;
                for (int c = 0; c < 5; c++)
                    cols[c] = realloc(cols[c], sizeof(double) * cap);
            }
            for (int c = 0; c < 5; c++)
                cols[c][*n] = json_get_num(&v, keys[c], NAN);
            (*n)++;
        }
        json_value_free(&v);
    }
    free(text);
    return SF_OK;
}

int plot_curves(const char *run_dir, sf_err *err)
{
    double *cols[5], ev[2];
    int n;
    int rc = read_metrics(run_dir, cols, &n, ev, err);
    if (rc)
        return rc;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    const double W = 1000, H = 720;
    const char *base = strrchr(run_dir, '/') && strrchr(run_dir, '/')[1] ? strrchr(run_dir, '/') + 1 : run_dir;
    char esc[128]; /* the run name goes into SVG text */
    int e = 0;
    for (const char *q = base; *q && e < (int)sizeof esc - 1; q++)
        esc[e++] = *q == '<' || *q == '>' || *q == '&' || *q == '\'' ? '_' : *q;
    esc[e] = 0;
    base = esc;
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif'>\n"
               "<rect width='100%%' height='100%%' fill='white'/>\n", W, H);
    static const char *const titles[4] = {"loss", "FVU (training batch)", "L0 (active latents per token)",
                                          "dead fraction"};
    for (int p = 0; p < 4; p++) {
        series s = {.name = NULL, .x = cols[0], .y = cols[p + 1], .n = n, .line = 1};
        char title[200];
        snprintf(title, sizeof title, "%s: %s", base, titles[p]);
        panel(f, (p % 2) * W / 2, (p / 2) * H / 2, W / 2, H / 2, title, "tokens", titles[p], &s, 1);
    }
    fprintf(f, "</svg>\n");
    fclose(f);
    for (int c = 0; c < 5; c++)
        free(cols[c]);
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/curves.svg", run_dir);
    return write_svg(path, buf, len, err);
}

typedef struct point {
    double l0, fvu;
    int arch;
    char label[64];
} point;

static int cmp_l0(const void *a, const void *b)
{
    double x = ((const point *)a)->l0, y = ((const point *)b)->l0;
    return (x > y) - (x < y);
}

int plot_frontier(const char *sweep_dir, sf_err *err)
{
    char path[SF_PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/sweep.json", sweep_dir);
    char *text = NULL, why[128];
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    json_value v;
    if (json_parse(text, len, &v, why, sizeof why)) {
        free(text);
        return sf_fail(err, SF_EINPUT, "%s: not a sweep.json (%s)", path, why);
    }
    free(text);
    const json_value *mem = json_get(&v, "members");
    int nm = mem && mem->type == JSON_OBJ ? mem->n : 0;
    point *pt = calloc((size_t)nm + 1, sizeof *pt);
    int np = 0;
    for (int i = 0; i < nm; i++) {
        char run[SF_PATH_MAX + 200];
        snprintf(run, sizeof run, "%s/%s", sweep_dir, mem->keys[i]);
        snprintf(path, sizeof path, "%s/config.yaml", run);
        sf_config c;
        sf_err e = {0};
        double *cols[5], ev[2];
        int n = 0;
        if (config_load(path, NULL, 0, &c, &e) || read_metrics(run, cols, &n, ev, &e))
            continue; /* a member not started yet has no point */
        pt[np].arch = c.sae.arch;
        snprintf(pt[np].label, sizeof pt[np].label, "%.63s", mem->keys[i]);
        pt[np].l0 = isfinite(ev[0]) ? ev[0] : n ? cols[3][n - 1] : NAN;
        pt[np].fvu = isfinite(ev[1]) ? ev[1] : n ? cols[2][n - 1] : NAN;
        np += isfinite(pt[np].l0) && isfinite(pt[np].fvu);
        for (int q = 0; q < 5; q++)
            free(cols[q]);
    }
    json_value_free(&v);
    qsort(pt, (size_t)np, sizeof *pt, cmp_l0);
    series s[MAXS];
    double *xs = calloc((size_t)np + 1, sizeof(double)), *ys = calloc((size_t)np + 1, sizeof(double));
    char(*lab)[64] = calloc((size_t)np + 1, 64);
    int ns = 0, off = 0;
    for (int a = 0; a <= SAE_ARCH_MATRYOSHKA && ns < MAXS; a++) {
        int start = off;
        for (int i = 0; i < np; i++)
            if (pt[i].arch == a) {
                xs[off] = pt[i].l0;
                memcpy(lab[off], pt[i].label, 64);
                ys[off++] = pt[i].fvu;
            }
        if (off > start)
            s[ns++] = (series){config_arch_name((sae_arch)a), xs + start, ys + start, off - start, 1, 1, lab + start};
    }
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='760' height='560' font-family='sans-serif'>\n"
               "<rect width='100%%' height='100%%' fill='white'/>\n");
    panel(f, 0, 0, 760, 560, "Sparsity / reconstruction frontier (lower left is better)",
          "L0 (active latents per token)", "FVU (fraction of variance unexplained)", s, ns);
    fprintf(f, "</svg>\n");
    fclose(f);
    free(xs);
    free(ys);
    free(lab);
    free(pt);
    snprintf(path, sizeof path, "%s/frontier.svg", sweep_dir);
    return write_svg(path, buf, blen, err);
}
