/* Tests for data/stream.c: epoch coverage, the documented shuffle order, determinism, exact
 * resume, rank partition, bad rows, scaling and the end of a non-looping stream. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "data/shard_write.h"
#include "data/stream.h"
#include "host/fsutil.h"
#include "host/rng.h"

#define D 4
static char dir[256];
static shard_set set;
static const int64_t file_rows[3] = {300, 450, 250}; /* 1000 rows */

/* Row r: x = (r, r+0.5, -r, 1), g = (-r, 2, 3, 4). NaN rows can be planted per test. */
static void write_set(int64_t nan_x_row, int64_t nan_g_row, int inf)
{
    int64_t r0 = 0;
    for (int f = 0; f < 3; f++) {
        int64_t n = file_rows[f];
        float *x = malloc((size_t)n * D * sizeof(float)), *g = malloc((size_t)n * D * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            float r = (float)(r0 + i);
            float *xi = x + i * D, *gi = g + i * D;
            xi[0] = r, xi[1] = r + 0.5f, xi[2] = -r, xi[3] = 1;
            gi[0] = -r, gi[1] = 2, gi[2] = 3, gi[3] = 4;
            if (r0 + i == nan_x_row)
                xi[2] = inf ? INFINITY : NAN;
            if (r0 + i == nan_g_row)
                gi[1] = NAN;
        }
        char p[512];
        snprintf(p, sizeof p, "%s/part_%d.h5", dir, f);
        shard_write_opts o = {.dtype = SHARD_F32, .chunk_rows = 64, .with_gradients = 1, .context_size = -1};
        sf_err err = {0};
        cr_assert_eq(shard_write(p, n, D, x, g, NULL, &o, &err), SF_OK, "%s", err.msg);
        free(x);
        free(g);
        r0 += n;
    }
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&set, dir, 0, &err), SF_OK, "%s", err.msg);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sf_stream_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    memset(&set, 0, sizeof set);
}
static void teardown(void)
{
    shard_set_free(&set);
    fs_remove_tree(dir);
}

TestSuite(stream, .init = setup, .fini = teardown);

static shard_stream_cfg base_cfg(void)
{
    shard_stream_cfg c = {.seed = 17, .row_begin = 0, .row_end = 1000, .window = 128, .want_gradients = 0,
                          .skip_bad_rows = 0, .loop = 1, .scale = 1.0f, .rank = 0, .world = 1,
                          .prefetch_batches = 3, .batch = 64, .start_epoch = 0, .start_position = 0};
    return c;
}

/* Pulls `rows` rows (row ids from x[0]) from a stream made with c; returns the count delivered. */
static int64_t pull(const shard_stream_cfg *c, int64_t rows, int64_t *ids, int64_t *epoch, int64_t *pos)
{
    shard_stream *s;
    sf_err err = {0};
    cr_assert_eq(shard_stream_init(&s, &set, c, &err), SF_OK, "%s", err.msg);
    float *x = malloc((size_t)c->batch * D * sizeof(float));
    int64_t got = 0;
    while (got < rows) {
        int n = shard_stream_next(s, x, NULL, &err);
        cr_assert_geq(n, 0, "%s", err.msg);
        if (n == 0)
            break;
        for (int i = 0; i < n && got < rows; i++)
            ids[got++] = (int64_t)x[i * D];
    }
    if (epoch)
        shard_stream_position(s, epoch, pos);
    cr_assert_geq(shard_stream_wait_seconds(s), 0.0);
    free(x);
    shard_stream_free(s);
    return got;
}

/* The order stream.h documents, computed independently of stream.c. */
static void reference_epoch(uint64_t seed, int64_t e, int64_t begin, int64_t end, int64_t window, int64_t *out)
{
    int64_t n = end - begin;
    for (int64_t w = 0; w * window < n; w++) {
        int64_t first = w * window, cnt = n - first < window ? n - first : window;
        int64_t *p = out + first;
        for (int64_t i = 0; i < cnt; i++)
            p[i] = begin + first + i;
        sf_rng r;
        rng_seed(&r, seed, (uint64_t)e * 1000003u + (uint64_t)w);
        for (int64_t i = cnt - 1; i > 0; i--) {
            int64_t j = (int64_t)rng_below(&r, (uint64_t)i + 1), t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
    }
}

Test(stream, each_row_once_per_epoch_in_documented_order)
{
    write_set(-1, -1, 0);
    shard_stream_cfg c = base_cfg();
    int64_t ids[3000], ref[1000];
    cr_assert_eq(pull(&c, 3000, ids, NULL, NULL), 3000);
    for (int e = 0; e < 3; e++) {
        char seen[1000] = {0};
        int moved = 0;
        for (int i = 0; i < 1000; i++) {
            int64_t r = ids[e * 1000 + i];
            cr_assert(r >= 0 && r < 1000);
            cr_assert_eq(seen[r], 0, "row %lld twice in epoch %d", (long long)r, e);
            seen[r] = 1;
            moved += r != i;
            cr_assert(r / 128 == i / 128, "rows stay inside their window");
        }
        cr_assert_gt(moved, 900, "rows are shuffled");
        reference_epoch(17, e, 0, 1000, 128, ref);
        cr_assert_eq(memcmp(ref, ids + e * 1000, sizeof ref), 0, "epoch %d order differs from stream.h", e);
    }
    cr_assert_neq(memcmp(ids, ids + 1000, 1000 * sizeof *ids), 0, "epochs differ");
}

Test(stream, determinism_and_seeds)
{
    write_set(-1, -1, 0);
    shard_stream_cfg c = base_cfg();
    int64_t a[1500], b[1500];
    pull(&c, 1500, a, NULL, NULL);
    c.prefetch_batches = 1; /* prefetch depth must not change the order */
    c.batch = 37;
    pull(&c, 1500, b, NULL, NULL);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    c.seed = 18;
    pull(&c, 1500, b, NULL, NULL);
    cr_assert_neq(memcmp(a, b, sizeof a), 0, "different seed, different order");
}

Test(stream, sequential_window)
{
    write_set(-1, -1, 0);
    shard_stream_cfg c = base_cfg();
    c.window = 0;
    c.row_begin = 100;
    c.row_end = 900;
    int64_t ids[1000];
    pull(&c, 1000, ids, NULL, NULL);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(ids[i], 100 + i % 800);
}

Test(stream, resume_equals_continuing)
{
    write_set(-1, -1, 0);
    shard_stream_cfg c = base_cfg();
    c.batch = 70; /* 1000 is not a multiple: batches straddle windows and epochs */
    int64_t all[2100], tail[2100];
    pull(&c, 2100, all, NULL, NULL);
    for (int k = 1; k <= 16; k += 5) {
        int64_t e, p, head[2100];
        pull(&c, 70 * k, head, &e, &p);
        cr_assert_eq(e * 1000 + p, 70 * k, "position counts rows consumed");
        shard_stream_cfg r = c;
        r.start_epoch = e;
        r.start_position = p;
        int64_t rest = 2100 - 70 * k;
        cr_assert_eq(pull(&r, rest, tail, NULL, NULL), rest);
        cr_assert_eq(memcmp(tail, all + 70 * k, (size_t)rest * sizeof *tail), 0, "resume after %d batches", k);
    }
}

Test(stream, rank_partition)
{
    write_set(-1, -1, 0);
    int world = 3;
    char seen[1000] = {0};
    int64_t ref[1000];
    reference_epoch(17, 0, 0, 1000, 128, ref);
    int64_t total = 0;
    for (int rank = 0; rank < world; rank++) {
        shard_stream_cfg c = base_cfg();
        c.rank = rank;
        c.world = world;
        c.loop = 0;
        int64_t ids[1000], e, p;
        int64_t n = pull(&c, 1000, ids, &e, &p);
        cr_assert_eq(n, (1000 - rank + world - 1) / world);
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq(ids[i], ref[i * world + rank], "rank %d row %lld", rank, (long long)i);
            cr_assert_eq(seen[ids[i]], 0);
            seen[ids[i]] = 1;
        }
        total += n;
    }
    cr_assert_eq(total, 1000, "ranks cover every row exactly once");
    /* ranks agree on the position after the same number of batches */
    int64_t pos[2];
    for (int rank = 0; rank < 2; rank++) {
        shard_stream_cfg c = base_cfg();
        c.rank = rank;
        c.world = 2;
        int64_t ids[200], e;
        pull(&c, 192, ids, &e, &pos[rank]);
    }
    cr_assert_eq(pos[0], pos[1]);
    cr_assert_eq(pos[0], 384);
}

Test(stream, nan_row_is_an_error_naming_file_and_row)
{
    write_set(310, -1, 0); /* file part_1, local row 10 */
    shard_stream_cfg c = base_cfg();
    shard_stream *s;
    sf_err err = {0};
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_OK);
    float x[64 * D];
    int n, batches = 0;
    while ((n = shard_stream_next(s, x, NULL, &err)) > 0)
        batches++;
    cr_assert_eq(n, -1);
    cr_assert_lt(batches, 16);
    cr_assert_eq(err.code, SF_EINPUT);
    cr_assert(strstr(err.msg, "part_1.h5") && strstr(err.msg, "row 10 ") && strstr(err.msg, "bad_rows: skip"),
              "%s", err.msg);
    cr_assert_eq(shard_stream_next(s, x, NULL, &err), -1, "the error sticks");
    shard_stream_free(s);
}

Test(stream, bad_rows_skipped_and_counted)
{
    write_set(310, 777, 1); /* Inf in x of row 310, NaN in g of row 777 */
    shard_stream_cfg c = base_cfg();
    c.skip_bad_rows = 1;
    c.want_gradients = 1;
    c.loop = 0;
    shard_stream *s;
    sf_err err = {0};
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_OK);
    float x[64 * D], g[64 * D];
    int64_t got = 0;
    int n;
    char seen[1000] = {0};
    while ((n = shard_stream_next(s, x, g, &err)) > 0) {
        for (int i = 0; i < n; i++) {
            int64_t r = (int64_t)x[i * D];
            cr_assert_eq(g[i * D], -(float)r, "g row aligned with x row");
            seen[r] = 1;
        }
        got += n;
    }
    cr_assert_eq(n, 0, "%s", err.msg);
    cr_assert_eq(got, 998);
    cr_assert_eq(shard_stream_skipped(s), 2);
    cr_assert_eq(seen[310] + seen[777], 0);
    int64_t e, p;
    shard_stream_position(s, &e, &p);
    cr_assert_eq(e, 1, "skipped rows count towards the position");
    cr_assert_eq(p, 0);
    shard_stream_free(s);
    /* without want_gradients, a NaN in g does not matter */
    c.want_gradients = 0;
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_OK);
    got = 0;
    while ((n = shard_stream_next(s, x, NULL, &err)) > 0)
        got += n;
    cr_assert_eq(got, 999);
    shard_stream_free(s);
}

Test(stream, non_looping_end_and_scale)
{
    write_set(-1, -1, 0);
    shard_stream_cfg c = base_cfg();
    c.loop = 0;
    c.row_begin = 900; /* the last 100 rows: a held-out eval range */
    c.row_end = 1000;
    c.batch = 30;
    c.scale = 0.5f;
    shard_stream *s;
    sf_err err = {0};
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_OK);
    float x[30 * D];
    int sizes[6];
    char seen[100] = {0};
    for (int i = 0; i < 6; i++) {
        sizes[i] = shard_stream_next(s, x, NULL, &err);
        for (int j = 0; j < sizes[i]; j++) {
            float r = x[j * D] * 2;
            cr_assert_eq(x[j * D + 1], (r + 0.5f) * 0.5f, "scale applied");
            cr_assert(r >= 900 && r < 1000);
            seen[(int)r - 900]++;
        }
    }
    cr_assert_eq(sizes[0], 30);
    cr_assert_eq(sizes[2], 30);
    cr_assert_eq(sizes[3], 10, "short last batch");
    cr_assert_eq(sizes[4], 0);
    cr_assert_eq(sizes[5], 0, "stays at the end");
    for (int i = 0; i < 100; i++)
        cr_assert_eq(seen[i], 1);
    shard_stream_free(s);
}

Test(stream, bad_configs)
{
    write_set(-1, -1, 0);
    shard_stream *s;
    sf_err err = {0};
    shard_stream_cfg c = base_cfg();
    c.row_end = 2000;
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_EINPUT);
    c = base_cfg();
    c.rank = 3;
    c.world = 3;
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_EINPUT);
    c = base_cfg();
    c.want_gradients = 1;
    shard_set_free(&set);
    cr_assert_eq(shard_set_open(&set, dir, 0, &err), SF_OK);
    set.has_gradients = 0;
    cr_assert_eq(shard_stream_init(&s, &set, &c, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "gradients"), "%s", err.msg);
}
