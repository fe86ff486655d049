/* Batch top-k over ranks (bselect_dist.c): with no ranks it equals select_batch_cpu exactly; over
 * 2 and 3 in-process "ranks" (threads with a barrier standing in for MPI) holding consecutive row
 * blocks, the union of their codes equals the one-rank code of the stacked rows, ties included. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "host/rng.h"
#include "kernels/bselect_dist.h"
#include "kernels/select.h"

#define MAX_RANKS 3

/* The thread ranks' meeting place: each puts its buffer in its slot, all combine all slots. */
typedef struct fake_world {
    pthread_barrier_t bar;
    int world;
    int64_t *slot[MAX_RANKS];
} fake_world;

typedef struct fake_rank {
    sae_dist dd;
    fake_world *w;
} fake_rank;

static void combine_i64(const sae_dist *dd, int64_t *buf, int64_t count, int is_max)
{
    fake_world *w = ((const fake_rank *)dd->ctx)->w;
    w->slot[dd->rank] = malloc(sizeof(int64_t) * (size_t)count);
    memcpy(w->slot[dd->rank], buf, sizeof(int64_t) * (size_t)count);
    pthread_barrier_wait(&w->bar);
    for (int64_t i = 0; i < count; i++) {
        int64_t v = w->slot[0][i];
        for (int r = 1; r < w->world; r++)
            v = is_max ? (w->slot[r][i] > v ? w->slot[r][i] : v) : v + w->slot[r][i];
        buf[i] = v;
    }
    pthread_barrier_wait(&w->bar);
    free(w->slot[dd->rank]);
    pthread_barrier_wait(&w->bar);
}

static void f_sum_i64(const sae_dist *dd, int64_t *buf, int64_t count) { combine_i64(dd, buf, count, 0); }
static void f_max_i64(const sae_dist *dd, int64_t *buf, int64_t count) { combine_i64(dd, buf, count, 1); }

static void f_gather(const sae_dist *dd, int64_t mine, int64_t *all)
{
    int64_t buf[MAX_RANKS] = {0};
    buf[dd->rank] = mine;
    combine_i64(dd, buf, dd->world, 0);
    memcpy(all, buf, sizeof(int64_t) * (size_t)dd->world);
}

typedef struct job {
    fake_rank fr;
    const float *pre;
    int B, n;
    int64_t K;
    int *row_ptr, *lat;
    float *val, min_kept;
    int kept;
} job;

static void *run_rank(void *arg)
{
    job *j = arg;
    j->kept = select_batch_dist_cpu(j->pre, j->B, j->n, j->K, &j->fr.dd, j->row_ptr, j->lat, j->val,
                                    &j->min_kept);
    return NULL;
}

/* mode 0: normal values; 1: quantised to quarters (many ties at the threshold) */
static float *make_pre(int B, int n, int mode, uint64_t seed)
{
    float *v = malloc(sizeof(float) * (size_t)B * n);
    sf_rng r;
    rng_seed(&r, seed, 3);
    for (size_t t = 0; t < (size_t)B * n; t++) {
        double z = rng_normal(&r);
        v[t] = (float)(mode ? (double)(int)(z * 4.0) / 4.0 : z);
    }
    return v;
}

/* Rows split into `world` consecutive blocks (the last may be empty); codes compared entry by
 * entry with the one-rank selection of all rows. */
static void check_split(int B, int n, int64_t K, int mode, int world, const int *rows, uint64_t seed)
{
    float *pre = make_pre(B, n, mode, seed);
    int64_t cap = K < (int64_t)B * n ? K : (int64_t)B * n;
    int *rp = malloc(sizeof(int) * ((size_t)B + 1)), *lat = malloc(sizeof(int) * (size_t)cap + 4);
    float *val = malloc(sizeof(float) * (size_t)cap + 4), mk;
    int kept = select_batch_cpu(pre, B, n, K, rp, lat, val, &mk);

    fake_world w = {.world = world};
    pthread_barrier_init(&w.bar, NULL, (unsigned)world);
    job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    int b0 = 0;
    for (int r = 0; r < world; r++) {
        job *j = &jobs[r];
        memset(j, 0, sizeof *j);
        j->fr.w = &w;
        j->fr.dd = (sae_dist){.rank = r, .world = world, .sum_i64 = f_sum_i64, .max_i64 = f_max_i64,
                              .gather_i64 = f_gather, .ctx = &j->fr};
        j->pre = pre + (size_t)b0 * n;
        j->B = rows[r];
        j->n = n;
        j->K = K;
        j->row_ptr = malloc(sizeof(int) * ((size_t)rows[r] + 1));
        j->lat = malloc(sizeof(int) * (size_t)cap + 4);
        j->val = malloc(sizeof(float) * (size_t)cap + 4);
        b0 += rows[r];
        pthread_create(&th[r], NULL, run_rank, j);
    }
    cr_assert_eq(b0, B);
    for (int r = 0; r < world; r++)
        pthread_join(th[r], NULL);
    int total = 0;
    b0 = 0;
    for (int r = 0; r < world; r++) {
        job *j = &jobs[r];
        cr_assert_eq(j->min_kept, mk, "rank %d: min_kept %g vs %g", r, j->min_kept, mk);
        for (int b = 0; b < j->B; b++) {
            int gb = b0 + b;
            int len = j->row_ptr[b + 1] - j->row_ptr[b];
            cr_assert_eq(len, rp[gb + 1] - rp[gb], "row %d: %d entries vs %d", gb, len, rp[gb + 1] - rp[gb]);
            for (int e = 0; e < len; e++) {
                cr_assert_eq(j->lat[j->row_ptr[b] + e], lat[rp[gb] + e], "row %d entry %d", gb, e);
                cr_assert_eq(j->val[j->row_ptr[b] + e], val[rp[gb] + e]);
            }
        }
        total += j->kept;
        b0 += j->B;
        free(j->row_ptr);
        free(j->lat);
        free(j->val);
    }
    cr_assert_eq(total, kept);
    pthread_barrier_destroy(&w.bar);
    free(pre);
    free(rp);
    free(lat);
    free(val);
}

Test(bselect_dist, no_ranks_equals_select_batch)
{
    for (int mode = 0; mode < 2; mode++) {
        int B = 37, n = 300;
        int64_t K = (int64_t)B * 8;
        float *pre = make_pre(B, n, mode, 11 + mode);
        int *rp1 = malloc(sizeof(int) * (B + 1)), *rp2 = malloc(sizeof(int) * (B + 1));
        int *l1 = malloc(sizeof(int) * K), *l2 = malloc(sizeof(int) * K);
        float *v1 = malloc(sizeof(float) * K), *v2 = malloc(sizeof(float) * K), m1, m2;
        int k1 = select_batch_cpu(pre, B, n, K, rp1, l1, v1, &m1);
        int k2 = select_batch_dist_cpu(pre, B, n, K, NULL, rp2, l2, v2, &m2);
        cr_assert_eq(k1, k2);
        cr_assert_eq(m1, m2);
        cr_assert(!memcmp(rp1, rp2, sizeof(int) * (B + 1)));
        cr_assert(!memcmp(l1, l2, sizeof(int) * k1));
        cr_assert(!memcmp(v1, v2, sizeof(float) * k1));
        free(pre), free(rp1), free(rp2), free(l1), free(l2), free(v1), free(v2);
    }
}

Test(bselect_dist, two_ranks_normal) { check_split(64, 200, 64 * 8, 0, 2, (int[]){32, 32}, 1); }
Test(bselect_dist, two_ranks_ties) { check_split(64, 200, 64 * 8, 1, 2, (int[]){32, 32}, 2); }
Test(bselect_dist, three_ranks_uneven_ties) { check_split(50, 128, 50 * 6, 1, 3, (int[]){20, 19, 11}, 3); }
Test(bselect_dist, empty_rank_joins) { check_split(40, 96, 40 * 4, 1, 3, (int[]){25, 15, 0}, 4); }
Test(bselect_dist, budget_above_positives) { check_split(16, 40, 16 * 40, 0, 2, (int[]){8, 8}, 5); }
