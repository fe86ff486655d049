/* Dictionary matching (`saeforge compare`): how well two sets of decoder directions agree. */
#ifndef COMPARE_H
#define COMPARE_H

#include <stdint.h>

#define COMPARE_MATCH_COS 0.9

typedef struct compare_result {
    int na, nb;
    double mean_ab;   /* mean over rows of A of the max cosine to any row of B */
    double mean_ba;   /* mean over rows of B of the max cosine to any row of A */
    int matched_a;    /* rows of A whose max cosine to B is >= COMPARE_MATCH_COS */
    int matched_b;    /* rows of B whose max cosine to A is >= COMPARE_MATCH_COS */
    double frac_a, frac_b; /* matched_a / na, matched_b / nb */
} compare_result;

/* Rows are normalised first (a zero row has cosine 0 with everything); cosines are signed.
 * A·Bᵀ runs through OpenBLAS sgemm in blocks, so memory stays O(block²) for any na, nb. */
compare_result compare_dicts(const float *A, int na, // (na, d)
                             const float *B, int nb, // (nb, d)
                             int d);

/* The same, also returning each row's max cosine (best_ab (na), best_ba (nb); either may be NULL). */
compare_result compare_dicts_ex(const float *A, int na, const float *B, int nb, int d,
                                float *best_ab, float *best_ba);

#endif
