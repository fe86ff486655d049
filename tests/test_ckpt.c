/* Checkpoints: bit-exact round trip, pruning, damaged/incomplete ones skipped with a message,
 * shape/arch mismatch refused, nothing half-written after a failed save. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "host/ckpt.h"
#include "host/fsutil.h"
#include "kernels/backend.h"

#define D 5
#define N 7

static char *tmpdir(void)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sf_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(path));
    return path;
}

/* Deterministic, distinct bit patterns (incl. values that a float->text->float path would lose). */
static void fill(sae_params *p, sae_state *s, ckpt_meta *m, int seed)
{
    uint32_t r = 2463534242u + (uint32_t)seed;
#define NEXT() (r ^= r << 13, r ^= r >> 17, r ^= r << 5, r)
    float *arrs[] = {p->W_enc, p->W_dec, s->m_W_enc, s->v_W_enc, s->m_W_dec, s->v_W_dec};
    for (int a = 0; a < 6; a++)
        for (int i = 0; i < N * D; i++)
            arrs[a][i] = (float)NEXT() / 4294967296.0f * 3.0f - 1.0f + 1e-9f * (float)i;
    float *vn[] = {p->b_enc, s->m_b_enc, s->v_b_enc, s->act_max};
    for (int a = 0; a < 4; a++)
        for (int i = 0; i < N; i++)
            vn[a][i] = (float)NEXT() / 1e9f;
    float *vd[] = {p->b_dec, s->m_b_dec, s->v_b_dec};
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < D; i++)
            vd[a][i] = -(float)NEXT() / 3e9f;
    for (int i = 0; i < N; i++) {
        s->since_fired[i] = (int64_t)NEXT() * 1000;
        s->fire_count[i] = NEXT();
        s->act_sum[i] = (double)NEXT() / 7.0;
        s->last_fired_step[i] = i == 3 ? -1 : (int64_t)NEXT();
        s->gate_sum[i] = (double)NEXT() / 11.0;
    }
    s->adam_t = 123456789012LL + seed;
    s->theta = 0.123456789f;
    memset(m, 0, sizeof *m);
    m->step = 100 + seed;
    m->tokens_seen = 409600 + seed;
    m->data_epoch = 2;
    m->data_position = 77777;
    m->skipped_rows = 3;
    m->input_scale = 1.0f / 3.0f;
    m->scale_batches = 100;
    m->scale_norm_sum = 1.0 / 3.0 + 1e-17;
    m->rng[0] = 0xFFFFFFFFFFFFFFFFull;
    m->rng[1] = 0x8000000000000001ull;
    m->rng[2] = 12345;
    m->rng[3] = (uint64_t)seed;
    m->elapsed_s = 3.14159265358979;
    m->d = D;
    m->n = N;
    snprintf(m->arch, sizeof m->arch, "batchtopk");
#undef NEXT
}

static void save_step(const char *run, int64_t step, int keep)
{
    sae_params p;
    sae_state s;
    ckpt_meta m;
    sae_params_alloc(&p, D, N);
    sae_state_alloc(&s, D, N);
    fill(&p, &s, &m, (int)step);
    m.step = step;
    sf_err err = {0};
    cr_assert_eq(ckpt_save(run, &p, &s, &m, keep, &err), SF_OK, "%s", err.msg);
    sae_params_free(&p);
    sae_state_free(&s);
}

static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int c = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        c += !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return c;
}

/* Runs find_latest with stderr captured into buf. */
static int find_capture(const char *run, char *path, int len, char *buf, size_t cap)
{
    char log[128];
    snprintf(log, sizeof log, "%s/stderr.log", run);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(log, "w+");
    cr_assert_not_null(f);
    dup2(fileno(f), 2);
    sf_err err = {0};
    int r = ckpt_find_latest(run, path, len, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(log);
    return r;
}

Test(ckpt, round_trip_is_bit_exact)
{
    const char *run = tmpdir();
    sae_params p, q;
    sae_state s, t;
    ckpt_meta m, m2;
    sae_params_alloc(&p, D, N);
    sae_state_alloc(&s, D, N);
    sae_params_alloc(&q, D, N);
    sae_state_alloc(&t, D, N);
    fill(&p, &s, &m, 1);
    sf_err err = {0};
    cr_assert_eq(ckpt_save(run, &p, &s, &m, 3, &err), SF_OK, "%s", err.msg);

    char path[1024];
    cr_assert_eq(ckpt_find_latest(run, path, sizeof path, &err), 1);
    char want[1024];
    snprintf(want, sizeof want, "%s/checkpoints/step_101", run);
    cr_assert_str_eq(path, want);
    char done[1100];
    snprintf(done, sizeof done, "%s/DONE", path);
    cr_assert(fs_exists(done));

    memset(&m2, 0, sizeof m2);
    m2.d = D;
    m2.n = N;
    snprintf(m2.arch, sizeof m2.arch, "batchtopk");
    cr_assert_eq(ckpt_load(path, &q, &t, &m2, &err), SF_OK, "%s", err.msg);
    size_t nd = sizeof(float) * N * D, n4 = sizeof(float) * N, d4 = sizeof(float) * D, n8 = 8 * N;
    cr_assert(!memcmp(p.W_enc, q.W_enc, nd) && !memcmp(p.W_dec, q.W_dec, nd));
    cr_assert(!memcmp(p.b_enc, q.b_enc, n4) && !memcmp(p.b_dec, q.b_dec, d4));
    cr_assert(!memcmp(s.m_W_enc, t.m_W_enc, nd) && !memcmp(s.v_W_enc, t.v_W_enc, nd));
    cr_assert(!memcmp(s.m_W_dec, t.m_W_dec, nd) && !memcmp(s.v_W_dec, t.v_W_dec, nd));
    cr_assert(!memcmp(s.m_b_enc, t.m_b_enc, n4) && !memcmp(s.v_b_enc, t.v_b_enc, n4));
    cr_assert(!memcmp(s.m_b_dec, t.m_b_dec, d4) && !memcmp(s.v_b_dec, t.v_b_dec, d4));
    cr_assert(!memcmp(s.since_fired, t.since_fired, n8) && !memcmp(s.fire_count, t.fire_count, n8));
    cr_assert(!memcmp(s.act_sum, t.act_sum, n8) && !memcmp(s.act_max, t.act_max, n4));
    cr_assert(!memcmp(s.last_fired_step, t.last_fired_step, n8) && !memcmp(s.gate_sum, t.gate_sum, n8));
    cr_assert_eq(t.adam_t, s.adam_t);
    cr_assert(!memcmp(&t.theta, &s.theta, sizeof(float)));
    cr_assert_eq(m2.step, m.step);
    cr_assert_eq(m2.tokens_seen, m.tokens_seen);
    cr_assert_eq(m2.data_epoch, m.data_epoch);
    cr_assert_eq(m2.data_position, m.data_position);
    cr_assert_eq(m2.skipped_rows, m.skipped_rows);
    cr_assert_eq(m2.scale_batches, m.scale_batches);
    cr_assert(!memcmp(&m2.input_scale, &m.input_scale, sizeof(float)));
    cr_assert(!memcmp(&m2.scale_norm_sum, &m.scale_norm_sum, sizeof(double)));
    cr_assert(!memcmp(&m2.elapsed_s, &m.elapsed_s, sizeof(double)));
    cr_assert(!memcmp(m2.rng, m.rng, sizeof m.rng));
    cr_assert_str_eq(m2.arch, "batchtopk");

    ckpt_meta pk;
    cr_assert_eq(ckpt_peek(path, &pk, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(pk.d, D);
    cr_assert_eq(pk.n, N);
    cr_assert_eq(pk.step, 101);
    cr_assert_str_eq(pk.arch, "batchtopk");
    fs_remove_tree(run);
}

Test(ckpt, keeps_newest_and_sorts_numerically)
{
    const char *run = tmpdir();
    /* 9 < 10 < 100 numerically, not as text */
    save_step(run, 9, 2);
    save_step(run, 100, 2);
    save_step(run, 10, 5); /* keep=5 here: all three stay */
    char ck[512], path[1024], buf[4096];
    snprintf(ck, sizeof ck, "%s/checkpoints", run);
    cr_assert_eq(count_entries(ck, "step_"), 3);
    cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 1);
    cr_assert(strstr(path, "/step_100") != NULL, "%s", path);
    save_step(run, 200, 2);
    cr_assert_eq(count_entries(ck, "step_"), 2);
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/step_100", ck);
    snprintf(p2, sizeof p2, "%s/step_200", ck);
    cr_assert(fs_is_dir(p1) && fs_is_dir(p2));
    cr_assert_eq(count_entries(ck, ".tmp_"), 0);
    fs_remove_tree(run);
}

Test(ckpt, step_dir_without_done_is_removed_with_message)
{
    const char *run = tmpdir();
    save_step(run, 1, 5);
    save_step(run, 2, 5);
    char done[512], path[1024], buf[4096], dir[512];
    snprintf(done, sizeof done, "%s/checkpoints/step_2/DONE", run);
    snprintf(dir, sizeof dir, "%s/checkpoints/step_2", run);
    cr_assert_eq(unlink(done), 0); /* what a crashed save of an earlier version left */
    cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 1);
    cr_assert(strstr(path, "/step_1") != NULL, "%s", path);
    cr_assert(strstr(buf, "saeforge: removing incomplete checkpoint ") != NULL, "%s", buf);
    cr_assert(strstr(buf, "step_2 (no DONE marker)\n") != NULL, "%s", buf);
    int lines = 0;
    for (const char *c = buf; *c; c++)
        lines += *c == '\n';
    cr_assert_eq(lines, 1, "one line per leftover: %s", buf);
    cr_assert(!fs_exists(dir), "leftover removed");
    fs_remove_tree(run);
}

/* Flips one payload byte (DONE stays): the checksum must catch it, find_latest skips it and
 * ckpt_load refuses it. */
Test(ckpt, corrupted_payload_fails_checksum)
{
    const char *names[] = {"sae.safetensors", "state.safetensors"};
    for (int w = 0; w < 2; w++) {
        const char *run = tmpdir();
        save_step(run, 1, 5);
        save_step(run, 2, 5);
        char f[512], path[1024], buf[4096];
        snprintf(f, sizeof f, "%s/checkpoints/step_2/%s", run, names[w]);
        FILE *fp = fopen(f, "r+b");
        cr_assert_not_null(fp);
        cr_assert_eq(fseek(fp, -3, SEEK_END), 0);
        int c = fgetc(fp);
        cr_assert_eq(fseek(fp, -3, SEEK_END), 0);
        fputc(c ^ 0x10, fp);
        fclose(fp);
        cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 1);
        cr_assert(strstr(path, "/step_1") != NULL, "%s", path);
        cr_assert(strstr(buf, "step_2 is damaged (") && strstr(buf, "checksum"), "%s", buf);
        cr_assert(strstr(buf, "; skipping it\n") != NULL, "%s", buf);

        sae_params q;
        sae_state t;
        ckpt_meta m;
        sae_params_alloc(&q, D, N);
        sae_state_alloc(&t, D, N);
        memset(&m, 0, sizeof m);
        m.d = D;
        m.n = N;
        snprintf(m.arch, sizeof m.arch, "batchtopk");
        snprintf(path, sizeof path, "%s/checkpoints/step_2", run);
        sf_err err = {0};
        cr_assert_eq(ckpt_load(path, &q, &t, &m, &err), SF_EINPUT);
        cr_assert(strstr(err.msg, "checksum") && strstr(err.msg, names[w]), "%s", err.msg);
        cr_assert(strchr(err.msg, '\n') == NULL);
        sae_params_free(&q);
        sae_state_free(&t);
        fs_remove_tree(run);
    }
}

Test(ckpt, truncated_file_is_skipped_and_tmp_dirs_ignored)
{
    const char *run = tmpdir();
    save_step(run, 3, 5);
    save_step(run, 4, 5);
    char f[512], path[1024], buf[4096], tmp[512];
    snprintf(f, sizeof f, "%s/checkpoints/step_4/sae.safetensors", run);
    cr_assert_eq(truncate(f, 100), 0);
    /* a leftover from a save that crashed before its rename */
    snprintf(tmp, sizeof tmp, "%s/checkpoints/.tmp_step_9.12345", run);
    sf_err err = {0};
    cr_assert_eq(fs_mkdirs(tmp, &err), SF_OK);
    cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 1);
    cr_assert(strstr(path, "/step_3") != NULL, "%s", path);
    cr_assert(strstr(buf, "step_4 is damaged (") != NULL, "%s", buf);
    cr_assert(strstr(buf, "step_9") == NULL, "%s", buf);
    cr_assert(!fs_exists(tmp), "leftover temp dir removed");

    /* all damaged -> none found, no error */
    snprintf(f, sizeof f, "%s/checkpoints/step_3/state.safetensors", run);
    cr_assert_eq(truncate(f, 10), 0);
    cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 0);
    fs_remove_tree(run);
}

Test(ckpt, no_checkpoints_and_bad_run_dir)
{
    const char *run = tmpdir();
    char path[1024];
    sf_err err = {0};
    cr_assert_eq(ckpt_find_latest(run, path, sizeof path, &err), 0);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/nope", run);
    /* killed before the run dir existed: nothing to resume, not an error */
    cr_assert_eq(ckpt_find_latest(missing, path, sizeof path, &err), 0);
    cr_assert_eq(err.code, 0);
    FILE *f = fopen(missing, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(ckpt_find_latest(missing, path, sizeof path, &err), -SF_EINPUT);
    cr_assert(strstr(err.msg, "nope") && strstr(err.msg, "not a directory"), "%s", err.msg);
    fs_remove_tree(run);
}

Test(ckpt, mismatch_is_input_error)
{
    const char *run = tmpdir();
    save_step(run, 5, 3);
    char path[1024];
    sf_err err = {0};
    cr_assert_eq(ckpt_find_latest(run, path, sizeof path, &err), 1);
    sae_params q;
    sae_state t;
    ckpt_meta m;
    /* wrong n */
    sae_params_alloc(&q, D, N + 1);
    sae_state_alloc(&t, D, N + 1);
    memset(&m, 0, sizeof m);
    m.d = D;
    m.n = N + 1;
    snprintf(m.arch, sizeof m.arch, "batchtopk");
    cr_assert_eq(ckpt_load(path, &q, &t, &m, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "n=7") && strstr(err.msg, "n=8"), "%s", err.msg);
    cr_assert(strchr(err.msg, '\n') == NULL);
    sae_params_free(&q);
    sae_state_free(&t);
    /* wrong arch */
    sae_params_alloc(&q, D, N);
    sae_state_alloc(&t, D, N);
    memset(&m, 0, sizeof m);
    m.d = D;
    m.n = N;
    snprintf(m.arch, sizeof m.arch, "topk");
    cr_assert_eq(ckpt_load(path, &q, &t, &m, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "batchtopk") != NULL, "%s", err.msg);
    /* corrupt state file */
    char f[1100];
    snprintf(f, sizeof f, "%s/state.safetensors", path);
    cr_assert_eq(truncate(f, 64), 0);
    snprintf(m.arch, sizeof m.arch, "batchtopk");
    cr_assert_eq(ckpt_load(path, &q, &t, &m, &err), SF_EINPUT);
    sae_params_free(&q);
    sae_state_free(&t);
    fs_remove_tree(run);
}

Test(ckpt, failed_save_leaves_nothing)
{
    const char *run = tmpdir();
    save_step(run, 1, 3);
    /* a file-size limit below the size of sae.safetensors makes the write fail (works as root) */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {512, 512};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    sae_params p;
    sae_state s;
    ckpt_meta m;
    sae_params_alloc(&p, D, N);
    sae_state_alloc(&s, D, N);
    fill(&p, &s, &m, 7);
    m.step = 2;
    sf_err err = {0};
    cr_assert_neq(ckpt_save(run, &p, &s, &m, 3, &err), SF_OK);
    cr_assert(err.msg[0] != '\0');
    char ck[512], path[1024], buf[4096];
    snprintf(ck, sizeof ck, "%s/checkpoints", run);
    cr_assert_eq(count_entries(ck, "step_"), 1);
    cr_assert_eq(count_entries(ck, ".tmp_"), 0);
    cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 1);
    cr_assert(strstr(path, "/step_1") != NULL);
    cr_assert_str_eq(buf, "");
    sae_params_free(&p);
    sae_state_free(&s);
    fs_remove_tree(run);
}

Test(ckpt, resave_same_step_replaces_it)
{
    const char *run = tmpdir();
    save_step(run, 6, 3);
    save_step(run, 6, 3);
    char ck[512];
    snprintf(ck, sizeof ck, "%s/checkpoints", run);
    cr_assert_eq(count_entries(ck, "step_"), 1);
    cr_assert_eq(count_entries(ck, ".old_"), 0);
    cr_assert_eq(count_entries(ck, ".tmp_"), 0);
    char path[1024], buf[4096], done[1100];
    cr_assert_eq(find_capture(run, path, sizeof path, buf, sizeof buf), 1);
    cr_assert_str_eq(buf, "");
    snprintf(done, sizeof done, "%s/DONE", path);
    cr_assert(fs_exists(done));
    fs_remove_tree(run);
}
