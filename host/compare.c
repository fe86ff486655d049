/* `saeforge compare A B`: mean max cosine between two dictionaries' decoder rows, both ways,
 * and the fraction of rows matched at cosine >= 0.9 (SPEC §5). */
#include "compare.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/sf_check.h"
#include "cmd.h"
#include "export.h"
#include "json.h"
#include "sweep.h"

#define CMP_BLOCK 2048

/* Unit-norm copy of rows (zero rows stay zero). */
static float *normalized(const float *X, int n, int d)
{
    float *Y = malloc((size_t)n * d * sizeof(float) + 1);
    SF_CHECK(Y != NULL);
    for (int i = 0; i < n; i++) {
        const float *x = X + (size_t)i * d;
        double s = 0;
        for (int j = 0; j < d; j++)
            s += (double)x[j] * x[j];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int j = 0; j < d; j++)
            Y[(size_t)i * d + j] = x[j] * inv;
    }
    return Y;
}

compare_result compare_dicts_ex(const float *A, int na, const float *B, int nb, int d,
                                float *best_ab, float *best_ba)
{
    SF_CHECK(na >= 0 && nb >= 0 && d > 0);
    compare_result r;
    memset(&r, 0, sizeof r);
    r.na = na;
    r.nb = nb;
    if (na == 0 || nb == 0)
        return r;
    float *An = normalized(A, na, d), *Bn = normalized(B, nb, d);
    float *ma = malloc((size_t)na * sizeof(float)), *mb = malloc((size_t)nb * sizeof(float));
    float *C = malloc((size_t)CMP_BLOCK * CMP_BLOCK * sizeof(float));
    SF_CHECK(ma && mb && C);
    for (int i = 0; i < na; i++)
        ma[i] = -INFINITY;
    for (int j = 0; j < nb; j++)
        mb[j] = -INFINITY;
    for (int i0 = 0; i0 < na; i0 += CMP_BLOCK) {
        int bi = na - i0 < CMP_BLOCK ? na - i0 : CMP_BLOCK;
        for (int j0 = 0; j0 < nb; j0 += CMP_BLOCK) {
            int bj = nb - j0 < CMP_BLOCK ? nb - j0 : CMP_BLOCK;
            /* C (bi, bj) = A[i0:] · B[j0:]ᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bi, bj, d, 1.0f, An + (size_t)i0 * d, d,
                        Bn + (size_t)j0 * d, d, 0.0f, C, bj);
            for (int i = 0; i < bi; i++) {
                const float *c = C + (size_t)i * bj;
                float m = ma[i0 + i];
                for (int j = 0; j < bj; j++) {
                    if (c[j] > m)
                        m = c[j];
                    if (c[j] > mb[j0 + j])
                        mb[j0 + j] = c[j];
                }
                ma[i0 + i] = m;
            }
        }
    }
    double sa = 0, sb = 0;
    for (int i = 0; i < na; i++) {
        sa += ma[i];
        r.matched_a += ma[i] >= COMPARE_MATCH_COS;
    }
    for (int j = 0; j < nb; j++) {
        sb += mb[j];
        r.matched_b += mb[j] >= COMPARE_MATCH_COS;
    }
    r.mean_ab = sa / na;
    r.mean_ba = sb / nb;
    r.frac_a = (double)r.matched_a / na;
    r.frac_b = (double)r.matched_b / nb;
    if (best_ab)
        memcpy(best_ab, ma, (size_t)na * sizeof(float));
    if (best_ba)
        memcpy(best_ba, mb, (size_t)nb * sizeof(float));
    free(An);
    free(Bn);
    free(ma);
    free(mb);
    free(C);
    return r;
}

compare_result compare_dicts(const float *A, int na, const float *B, int nb, int d)
{
    return compare_dicts_ex(A, na, B, nb, d, NULL, NULL);
}

static void compare_usage(FILE *f)
{
    fprintf(f, "usage: saeforge compare A B [--json]\n"
               "  A, B: a run dir, checkpoint dir, SAELens or sparsify export (dir or sae.safetensors),\n"
               "        or a truth file / synth dir (truth.safetensors, W_dec [F, d]).\n"
               "  Prints the mean over rows of A of the max cosine to B's decoder rows and vice versa,\n"
               "  and the fraction of rows matched at cosine >= %.1f. When A and B have the same\n"
               "  shape (two runs of one config, e.g. on 1 and on N ranks) it also prints the largest\n"
               "  relative difference |A-B|/|A| of their weights.\n", COMPARE_MATCH_COS);
}

/* compare SWEEP B (or A SWEEP): one line per member against the other dictionary. */
static int compare_sweep(const char *sweep, const char *other, sf_err *err)
{
    char **names;
    int n;
    int rc = sweep_members_read(sweep, &names, &n, err);
    if (rc)
        return rc;
    sae_loaded b;
    if ((rc = sae_load(other, 0, &b, err))) {
        sweep_members_free(names, n);
        return rc;
    }
    printf("each member of %s against %s (%s, n=%d): mean max cos both ways, matched >= %.1f\n", sweep,
           b.source, b.kind, b.n, COMPARE_MATCH_COS);
    printf("%-28s %8s %8s %8s %10s %10s\n", "member", "n", "A->B", "B->A", "matched B", "matched A");
    for (int i = 0; i < n; i++) {
        char run[4096];
        snprintf(run, sizeof run, "%s/%s", sweep, names[i]);
        sae_loaded a;
        sf_err e = {0};
        if (sae_load(run, 0, &a, &e)) {
            printf("%-28s (no dictionary yet: %s)\n", names[i], e.msg);
            continue;
        }
        if (a.d != b.d) {
            printf("%-28s (width d=%d, but %s has d=%d)\n", names[i], a.d, other, b.d);
        } else {
            compare_result r = compare_dicts(a.p.W_dec, a.n, b.p.W_dec, b.n, a.d);
            printf("%-28s %8d %8.3f %8.3f %9.1f%% %9.1f%%\n", names[i], a.n, r.mean_ab, r.mean_ba,
                   100.0 * r.frac_b, 100.0 * r.frac_a);
        }
        sae_loaded_free(&a);
    }
    sae_loaded_free(&b);
    sweep_members_free(names, n);
    return SF_OK;
}

/* Same shapes, same latent order (two runs of one config, e.g. on 1 and N ranks): the largest
 * |A - B| / |A| (L2) over W_enc, b_enc, W_dec, b_dec; -1 when the shapes differ. */
static double weights_rel_diff(const sae_loaded *a, const sae_loaded *b, const char **which)
{
    if (a->n != b->n || a->d != b->d || a->dec_only || b->dec_only)
        return -1;
    const float *xa[] = {a->p.W_enc, a->p.b_enc, a->p.W_dec, a->p.b_dec};
    const float *xb[] = {b->p.W_enc, b->p.b_enc, b->p.W_dec, b->p.b_dec};
    static const char *names[] = {"W_enc", "b_enc", "W_dec", "b_dec"};
    size_t len[] = {(size_t)a->n * a->d, (size_t)a->n, (size_t)a->n * a->d, (size_t)a->d};
    double worst = 0;
    *which = names[0];
    for (int t = 0; t < 4; t++) {
        double num = 0, den = 0;
        for (size_t j = 0; j < len[t]; j++) {
            double e = (double)xa[t][j] - xb[t][j];
            num += e * e;
            den += (double)xa[t][j] * xa[t][j];
        }
        double r = den > 0 ? sqrt(num / den) : sqrt(num);
        if (r > worst) {
            worst = r;
            *which = names[t];
        }
    }
    return worst;
}

int cmd_compare(int argc, char **argv)
{
    const char *pa = NULL, *pb = NULL;
    int as_json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            compare_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_error(2, "compare: unknown option '%s'; see saeforge compare --help", argv[i]);
        } else if (!pa) {
            pa = argv[i];
        } else if (!pb) {
            pb = argv[i];
        } else {
            return cli_error(2, "compare: unexpected argument '%s'; give exactly two dictionaries", argv[i]);
        }
    }
    if (!pa || !pb)
        return cli_error(2, "compare: need two dictionaries A and B; see saeforge compare --help");
    sf_err err = {0};
    if (!as_json && (sweep_is_dir(pa) || sweep_is_dir(pb))) {
        int swap = !sweep_is_dir(pa);
        return compare_sweep(swap ? pb : pa, swap ? pa : pb, &err) ? cli_error(2, "%s", err.msg) : 0;
    }
    sae_loaded a, b;
    if (sae_load(pa, 0, &a, &err))
        return cli_error(2, "%s", err.msg);
    if (sae_load(pb, 0, &b, &err)) {
        sae_loaded_free(&a);
        return cli_error(2, "%s", err.msg);
    }
    if (a.d != b.d) {
        int da = a.d, db = b.d;
        sae_loaded_free(&a);
        sae_loaded_free(&b);
        return cli_error(2, "compare: %s has width d=%d but %s has d=%d; compare dictionaries of the same layer",
                         pa, da, pb, db);
    }
    compare_result r = compare_dicts(a.p.W_dec, a.n, b.p.W_dec, b.n, a.d);
    const char *which = "";
    double wdiff = weights_rel_diff(&a, &b, &which);
    if (as_json) {
        json_writer w;
        jw_init(&w, 0);
        jw_obj_begin(&w);
        jw_key(&w, "a"); jw_str(&w, a.source);
        jw_key(&w, "b"); jw_str(&w, b.source);
        jw_key(&w, "d"); jw_int(&w, a.d);
        jw_key(&w, "na"); jw_int(&w, r.na);
        jw_key(&w, "nb"); jw_int(&w, r.nb);
        jw_key(&w, "mean_max_cos_a_to_b"); jw_num(&w, r.mean_ab);
        jw_key(&w, "mean_max_cos_b_to_a"); jw_num(&w, r.mean_ba);
        jw_key(&w, "match_threshold"); jw_num(&w, COMPARE_MATCH_COS);
        jw_key(&w, "matched_a"); jw_int(&w, r.matched_a);
        jw_key(&w, "matched_b"); jw_int(&w, r.matched_b);
        jw_key(&w, "frac_matched_a"); jw_num(&w, r.frac_a);
        jw_key(&w, "frac_matched_b"); jw_num(&w, r.frac_b);
        if (wdiff >= 0) {
            jw_key(&w, "weights_rel_diff"); jw_num(&w, wdiff);
        }
        jw_obj_end(&w);
        printf("%s\n", w.buf);
        jw_free(&w);
    } else {
        printf("A = %s (%s, n=%d)\nB = %s (%s, n=%d)\n", a.source, a.kind, a.n, b.source, b.kind, b.n);
        printf("A→B mean max cos %.3f, B→A %.3f; matched ≥%.1f: %.1f%% of B (%d/%d), %.1f%% of A (%d/%d)\n",
               r.mean_ab, r.mean_ba, COMPARE_MATCH_COS, 100.0 * r.frac_b, r.matched_b, r.nb, 100.0 * r.frac_a,
               r.matched_a, r.na);
        if (wdiff >= 0)
            printf("same shape: largest relative weight difference %.3g (%s, |A-B|/|A|)\n", wdiff, which);
    }
    sae_loaded_free(&a);
    sae_loaded_free(&b);
    return 0;
}
