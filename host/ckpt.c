/* Checkpoints (SPEC §4): step_<N>/{sae,state}.safetensors + DONE, written into a temp dir,
 * fsynced, renamed, DONE last; resume finds the newest complete one and skips damaged ones.
 *
 * sae.safetensors here is the internal layout (W_enc [n, d], as trained, input scale not
 * folded); the SAELens layout is only for exports. state.safetensors holds every resumable
 * counter as a tensor of its exact type (u64 RNG words as I64 bit patterns, doubles as F64),
 * so a save/load round trip is bit exact. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/sf_check.h"
#include "crc32c.h"
#include "fsutil.h"
#include "safetensors.h"

#define CKPT_FORMAT "saeforge-checkpoint-1"
#define CRC_KEY "payload_crc32c"

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* CRC32C over every tensor's bytes, tensors taken in name order, so the value does not depend
 * on how a writer lays the payload out. Stored in the file's metadata under CRC_KEY. */
static uint32_t payload_crc(const st_tensor *t, int n)
{
    const st_tensor **order = malloc(sizeof *order * (size_t)(n > 0 ? n : 1));
    SF_CHECK(order != NULL);
    for (int i = 0; i < n; i++)
        order[i] = &t[i];
    qsort(order, (size_t)n, sizeof *order, cmp_tensor_name);
    uint32_t c = 0;
    for (int i = 0; i < n; i++) {
        c = crc32c_update(c, order[i]->name, strlen(order[i]->name) + 1);
        c = crc32c_update(c, order[i]->data, order[i]->nbytes);
    }
    free(order);
    return c;
}

static void writer_add_crc(st_writer *w)
{
    char buf[16];
    snprintf(buf, sizeof buf, "%08x", payload_crc(w->t, w->n));
    st_writer_meta(w, CRC_KEY, buf);
}

/* 0 when f carries no checksum (checkpoints of earlier versions) or it matches. */
static int verify_crc(const st_file *f, char *why, size_t why_len)
{
    const char *want = st_get_meta(f, CRC_KEY);
    if (!want)
        return 0;
    char got[16];
    snprintf(got, sizeof got, "%08x", payload_crc(f->t, f->n));
    if (!strcmp(got, want))
        return 0;
    char qw[24];
    snprintf(why, why_len, "%s: payload checksum %s does not match the recorded %s: the file "
             "was altered or corrupted after it was written", f->path, got, sf_quote_str(qw, sizeof qw, want));
    return -1;
}

static int path_join(char *out, size_t cap, const char *a, const char *b, sf_err *err)
{
    int r = snprintf(out, cap, "%s/%s", a, b);
    if (r < 0 || (size_t)r >= cap)
        return sf_fail(err, SF_EINPUT, "path too long: %s/%s; use a shorter out_dir", a, b);
    return SF_OK;
}

/* "step_<N>" with N all decimal digits -> N, else -1. */
static int64_t parse_step_name(const char *name)
{
    if (strncmp(name, "step_", 5) != 0 || !name[5])
        return -1;
    int64_t v = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* ---- save ------------------------------------------------------------------------------ */

static int write_sae(const char *dir, const sae_params *p, const ckpt_meta *m, sf_err *err)
{
    char path[4096], buf[64];
    int rc = path_join(path, sizeof path, dir, "sae.safetensors", err);
    if (rc)
        return rc;
    int64_t nd[2] = {m->n, m->d}, n1[1] = {m->n}, d1[1] = {m->d};
    st_writer w;
    st_writer_init(&w);
    st_writer_add(&w, "W_enc", ST_F32, 2, nd, p->W_enc);
    st_writer_add(&w, "b_enc", ST_F32, 1, n1, p->b_enc);
    st_writer_add(&w, "W_dec", ST_F32, 2, nd, p->W_dec);
    st_writer_add(&w, "b_dec", ST_F32, 1, d1, p->b_dec);
    st_writer_meta(&w, "format", CKPT_FORMAT);
    st_writer_meta(&w, "layout", "internal: W_enc [n, d], inputs scaled by input_scale");
    st_writer_meta(&w, "arch", m->arch);
    snprintf(buf, sizeof buf, "%d", m->d);
    st_writer_meta(&w, "d", buf);
    snprintf(buf, sizeof buf, "%d", m->n);
    st_writer_meta(&w, "n", buf);
    snprintf(buf, sizeof buf, "%" PRId64, m->step);
    st_writer_meta(&w, "step", buf);
    writer_add_crc(&w);
    rc = st_writer_commit(&w, path, err);
    st_writer_free(&w);
    return rc;
}

static int write_state(const char *dir, const sae_state *s, const ckpt_meta *m, sf_err *err)
{
    char path[4096], buf[64];
    int rc = path_join(path, sizeof path, dir, "state.safetensors", err);
    if (rc)
        return rc;
    int64_t nd[2] = {m->n, m->d}, n1[1] = {m->n}, d1[1] = {m->d}, one[1] = {1}, four[1] = {4};
    /* scalars are copied into locals that live until the commit */
    int64_t adam_t = s->adam_t, step = m->step, tokens = m->tokens_seen, epoch = m->data_epoch,
            pos = m->data_position, skipped = m->skipped_rows, scale_batches = m->scale_batches;
    float theta = s->theta, input_scale = m->input_scale;
    double scale_norm_sum = m->scale_norm_sum, elapsed = m->elapsed_s;
    int64_t rng[4];
    memcpy(rng, m->rng, sizeof rng); /* u64 -> i64 bit pattern */

    st_writer w;
    st_writer_init(&w);
    st_writer_add(&w, "m_W_enc", ST_F32, 2, nd, s->m_W_enc);
    st_writer_add(&w, "v_W_enc", ST_F32, 2, nd, s->v_W_enc);
    st_writer_add(&w, "m_b_enc", ST_F32, 1, n1, s->m_b_enc);
    st_writer_add(&w, "v_b_enc", ST_F32, 1, n1, s->v_b_enc);
    st_writer_add(&w, "m_W_dec", ST_F32, 2, nd, s->m_W_dec);
    st_writer_add(&w, "v_W_dec", ST_F32, 2, nd, s->v_W_dec);
    st_writer_add(&w, "m_b_dec", ST_F32, 1, d1, s->m_b_dec);
    st_writer_add(&w, "v_b_dec", ST_F32, 1, d1, s->v_b_dec);
    st_writer_add(&w, "adam_t", ST_I64, 1, one, &adam_t);
    st_writer_add(&w, "since_fired", ST_I64, 1, n1, s->since_fired);
    st_writer_add(&w, "fire_count", ST_I64, 1, n1, s->fire_count);
    st_writer_add(&w, "act_sum", ST_F64, 1, n1, s->act_sum);
    st_writer_add(&w, "act_max", ST_F32, 1, n1, s->act_max);
    st_writer_add(&w, "last_fired_step", ST_I64, 1, n1, s->last_fired_step);
    st_writer_add(&w, "gate_sum", ST_F64, 1, n1, s->gate_sum);
    st_writer_add(&w, "theta", ST_F32, 1, one, &theta);
    st_writer_add(&w, "step", ST_I64, 1, one, &step);
    st_writer_add(&w, "tokens_seen", ST_I64, 1, one, &tokens);
    st_writer_add(&w, "data_epoch", ST_I64, 1, one, &epoch);
    st_writer_add(&w, "data_position", ST_I64, 1, one, &pos);
    st_writer_add(&w, "skipped_rows", ST_I64, 1, one, &skipped);
    st_writer_add(&w, "input_scale", ST_F32, 1, one, &input_scale);
    st_writer_add(&w, "scale_batches", ST_I64, 1, one, &scale_batches);
    st_writer_add(&w, "scale_norm_sum", ST_F64, 1, one, &scale_norm_sum);
    st_writer_add(&w, "rng", ST_I64, 1, four, rng);
    st_writer_add(&w, "elapsed_s", ST_F64, 1, one, &elapsed);
    st_writer_meta(&w, "format", CKPT_FORMAT);
    st_writer_meta(&w, "arch", m->arch);
    snprintf(buf, sizeof buf, "%" PRId64, m->step);
    st_writer_meta(&w, "step", buf);
    snprintf(buf, sizeof buf, "%" PRId64, m->tokens_seen);
    st_writer_meta(&w, "tokens_seen", buf);
    writer_add_crc(&w);
    rc = st_writer_commit(&w, path, err);
    st_writer_free(&w);
    return rc;
}

typedef struct step_dir {
    int64_t step;
    int done;
    char name[256];
} step_dir;

static int cmp_step_desc(const void *a, const void *b)
{
    const step_dir *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

/* Lists step_<N> dirs of ckdir sorted newest first (done = DONE present). Returns the count
 * (*out malloc'd) or -1 when ckdir cannot be read. When clean_tmp, leftover temp dirs
 * (.tmp_*, .old_*) from interrupted saves are removed. */
static int list_steps(const char *ckdir, step_dir **out, int clean_tmp)
{
    *out = NULL;
    DIR *dp = opendir(ckdir);
    if (!dp)
        return -1;
    int n = 0, cap = 0;
    step_dir *v = NULL;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        char full[4096];
        if (snprintf(full, sizeof full, "%s/%s", ckdir, e->d_name) >= (int)sizeof full)
            continue;
        if (!strncmp(e->d_name, ".tmp_", 5) || !strncmp(e->d_name, ".old_", 5)) {
            if (clean_tmp && fs_is_dir(full))
                fs_remove_tree(full);
            continue;
        }
        int64_t st = parse_step_name(e->d_name);
        if (st < 0 || strlen(e->d_name) >= sizeof v->name || !fs_is_dir(full))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            step_dir *nv = realloc(v, (size_t)cap * sizeof *nv);
            SF_CHECK(nv != NULL);
            v = nv;
        }
        char done[4200];
        snprintf(done, sizeof done, "%s/DONE", full);
        v[n].step = st;
        v[n].done = fs_exists(done);
        snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
        n++;
    }
    closedir(dp);
    if (n > 1)
        qsort(v, (size_t)n, sizeof *v, cmp_step_desc);
    *out = v;
    return n;
}

/* Keeps the newest `keep` complete checkpoints; incomplete ones older than the newest
 * complete one are leftovers of crashed saves and go too. */
static void prune(const char *ckdir, int keep)
{
    if (keep <= 0)
        return;
    step_dir *v;
    int n = list_steps(ckdir, &v, 0);
    if (n <= 0) {
        free(v);
        return;
    }
    int kept = 0, seen_complete = 0;
    for (int i = 0; i < n; i++) {
        char full[4096];
        if (path_join(full, sizeof full, ckdir, v[i].name, NULL))
            continue;
        if (v[i].done) {
            seen_complete = 1;
            if (kept < keep) {
                kept++;
                continue;
            }
            fs_remove_tree(full);
        } else if (seen_complete) {
            fs_remove_tree(full);
        }
    }
    fs_fsync_dir(ckdir, NULL);
    free(v);
}

void ckpt_prune(const char *run_dir, int keep)
{
    char ckdir[4096];
    if (!path_join(ckdir, sizeof ckdir, run_dir, "checkpoints", NULL) && fs_is_dir(ckdir))
        prune(ckdir, keep);
}

/* Puts the complete dir tmp in place as final in one step. A checkpoint of the same step
 * already there (re-saved after a resume) is swapped out atomically (RENAME_EXCHANGE), so at
 * every instant step_<N> names one complete checkpoint or nothing. */
static int install_dir(const char *tmp, const char *final, sf_err *err)
{
    if (rename(tmp, final) == 0)
        return SF_OK;
    if ((errno == ENOTEMPTY || errno == EEXIST) &&
        renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        fs_remove_tree(tmp); /* now holds the replaced checkpoint */
        return SF_OK;
    }
    return sf_fail(err, SF_EFAIL, "cannot rename %s to %s: %s; check the disk and permissions",
                   tmp, final, strerror(errno));
}

int ckpt_save(const char *run_dir, const sae_params *p, const sae_state *s, const ckpt_meta *m,
              int keep, sf_err *err)
{
    SF_CHECK(p && s && m && m->d > 0 && m->n > 0);
    char ckdir[4096], name[128], tmp[4096], final[4096], done[4200];
    int rc = path_join(ckdir, sizeof ckdir, run_dir, "checkpoints", err);
    if (rc)
        return rc;
    if ((rc = fs_mkdirs(ckdir, err)))
        return rc;
    snprintf(name, sizeof name, ".tmp_step_%" PRId64 ".%ld", m->step, (long)getpid());
    if ((rc = path_join(tmp, sizeof tmp, ckdir, name, err)))
        return rc;
    snprintf(name, sizeof name, "step_%" PRId64, m->step);
    if ((rc = path_join(final, sizeof final, ckdir, name, err)))
        return rc;

    if (fs_exists(tmp))
        fs_remove_tree(tmp);
    if ((rc = fs_mkdirs(tmp, err)))
        return rc;
    /* Everything, DONE included, is written and fsynced under the temp name first: a crash at
     * any point leaves either the previous checkpoints untouched or this one whole. */
    char body[96];
    int blen = snprintf(body, sizeof body, "step %" PRId64 "\n", m->step);
    snprintf(done, sizeof done, "%s/DONE", tmp);
    if ((rc = write_sae(tmp, p, m, err)) || (rc = write_state(tmp, s, m, err)) ||
        (rc = fs_write_atomic(done, body, (size_t)blen, err)) || (rc = fs_fsync_dir(tmp, err)))
        goto fail;
    if ((rc = install_dir(tmp, final, err)))
        goto fail;
    if ((rc = fs_fsync_dir(ckdir, err)))
        return rc;
    prune(ckdir, keep);
    return SF_OK;

fail:
    fs_remove_tree(tmp);
    return rc ? rc : SF_EFAIL;
}

/* ---- find ------------------------------------------------------------------------------ */

/* Checks that dir holds readable, structurally sound checkpoint files; why gets the reason. */
static int check_ckpt_dir(const char *dir, char *why, size_t why_len)
{
    char path[4096];
    sf_err e = {0};
    const char *need_sae[] = {"W_enc", "b_enc", "W_dec", "b_dec"};
    const char *need_state[] = {"step", "tokens_seen", "adam_t", "m_W_enc", "rng", "fire_count"};
    st_file f;
    if (path_join(path, sizeof path, dir, "sae.safetensors", &e) || st_read(path, &f, &e)) {
        snprintf(why, why_len, "%s", e.msg);
        return -1;
    }
    if (verify_crc(&f, why, why_len)) {
        st_file_free(&f);
        return -1;
    }
    for (size_t i = 0; i < sizeof need_sae / sizeof *need_sae; i++)
        if (!st_get(&f, need_sae[i])) {
            snprintf(why, why_len, "sae.safetensors has no tensor %s", need_sae[i]);
            st_file_free(&f);
            return -1;
        }
    st_file_free(&f);
    if (path_join(path, sizeof path, dir, "state.safetensors", &e) || st_read(path, &f, &e)) {
        snprintf(why, why_len, "%s", e.msg);
        return -1;
    }
    if (verify_crc(&f, why, why_len)) {
        st_file_free(&f);
        return -1;
    }
    for (size_t i = 0; i < sizeof need_state / sizeof *need_state; i++)
        if (!st_get(&f, need_state[i])) {
            snprintf(why, why_len, "state.safetensors has no tensor %s", need_state[i]);
            st_file_free(&f);
            return -1;
        }
    st_file_free(&f);
    return 0;
}

int ckpt_find_latest(const char *run_dir, char *path, int len, sf_err *err)
{
    char ckdir[4096];
    int rc = path_join(ckdir, sizeof ckdir, run_dir, "checkpoints", err);
    if (rc)
        return -rc;
    if (!fs_exists(run_dir)) /* killed before the run dir was made: nothing to resume */
        return 0;
    if (!fs_is_dir(run_dir)) {
        sf_fail(err, SF_EINPUT, "out_dir %s exists but is not a directory; choose another out_dir",
                run_dir);
        return -SF_EINPUT;
    }
    if (!fs_exists(ckdir))
        return 0;
    step_dir *v;
    int n = list_steps(ckdir, &v, 1);
    if (n < 0) {
        sf_fail(err, SF_EINPUT, "cannot read %s: %s; check permissions", ckdir, strerror(errno));
        return -SF_EINPUT;
    }
    int found = 0;
    for (int i = 0; i < n && !found; i++) {
        char full[4096], why[1100];
        if (path_join(full, sizeof full, ckdir, v[i].name, NULL))
            continue;
        if (!v[i].done) {
            /* Saves now appear only whole, so this is a crashed save of an earlier version. */
            fprintf(stderr, "saeforge: removing incomplete checkpoint %s (no DONE marker)\n", full);
            fs_remove_tree(full);
            continue;
        }
        if (check_ckpt_dir(full, why, sizeof why)) {
            fprintf(stderr, "saeforge: checkpoint %s is damaged (%s); skipping it\n", full, why);
            continue;
        }
        if ((int)strlen(full) >= len) {
            sf_fail(err, SF_EINPUT, "checkpoint path %s is too long; use a shorter out_dir", full);
            free(v);
            return -SF_EINPUT;
        }
        snprintf(path, (size_t)len, "%s", full);
        found = 1;
    }
    fs_fsync_dir(ckdir, NULL);
    free(v);
    return found;
}

/* ---- load ------------------------------------------------------------------------------ */

/* st_read plus the payload checksum: a mismatch is an input error like any damaged file. */
static int read_verified(const char *path, st_file *f, sf_err *err)
{
    int rc = st_read(path, f, err);
    if (rc)
        return rc;
    char why[1100];
    if (verify_crc(f, why, sizeof why)) {
        st_file_free(f);
        return sf_fail(err, SF_EINPUT, "%s; resume from an older checkpoint or start over", why);
    }
    return SF_OK;
}

static int get_scalar(const st_file *f, const char *name, st_dtype dt, void *out, sf_err *err)
{
    const st_tensor *t;
    int64_t one[1] = {1};
    int rc = st_expect(f, name, dt, 1, one, &t, err);
    if (rc)
        return rc;
    memcpy(out, t->data, st_dtype_size(dt));
    return SF_OK;
}

static int get_array(const st_file *f, const char *name, st_dtype dt, int ndim, int64_t a, int64_t b,
                     void *out, sf_err *err)
{
    const st_tensor *t;
    int64_t shape[2] = {a, b};
    int rc = st_expect(f, name, dt, ndim, shape, &t, err);
    if (rc)
        return rc;
    memcpy(out, t->data, t->nbytes);
    return SF_OK;
}

/* Counters a damaged (or foreign) state file could hold that no run writes: a resume from
 * them would index data or schedules out of range. */
static int check_counters(const char *path, const ckpt_meta *m, sf_err *err)
{
    if (m->step < 0 || m->tokens_seen < 0 || m->data_epoch < 0 || m->data_position < 0 || m->skipped_rows < 0 ||
        m->scale_batches < 0)
        return sf_fail(err, SF_EINPUT, "%s: negative counter (step %lld, tokens_seen %lld, data_epoch %lld, "
                       "data_position %lld, skipped_rows %lld, scale_batches %lld); the checkpoint is damaged, "
                       "resume from another one or start over", path, (long long)m->step, (long long)m->tokens_seen,
                       (long long)m->data_epoch, (long long)m->data_position, (long long)m->skipped_rows,
                       (long long)m->scale_batches);
    if (!(m->input_scale > 0 && m->input_scale <= 3.4e38f) || !(m->elapsed_s >= 0 && m->elapsed_s < 1e300) ||
        !(m->scale_norm_sum >= 0 && m->scale_norm_sum < 1e300))
        return sf_fail(err, SF_EINPUT, "%s: input_scale %g, scale_norm_sum %g or elapsed_s %g is out of range; the "
                       "checkpoint is damaged, resume from another one or start over", path,
                       (double)m->input_scale, m->scale_norm_sum, m->elapsed_s);
    return SF_OK;
}

int ckpt_peek(const char *ckpt_dir, ckpt_meta *m, sf_err *err)
{
    char path[4096];
    int rc = path_join(path, sizeof path, ckpt_dir, "sae.safetensors", err);
    if (rc)
        return rc;
    st_file f;
    if ((rc = read_verified(path, &f, err)))
        return rc;
    const st_tensor *w = st_get(&f, "W_dec");
    if (!w || w->ndim != 2 || w->shape[0] <= 0 || w->shape[1] <= 0 || w->shape[0] > INT32_MAX ||
        w->shape[1] > INT32_MAX) {
        st_file_free(&f);
        return sf_fail(err, SF_EINPUT, "%s has no 2-D tensor W_dec; it is not a saeforge checkpoint", path);
    }
    memset(m, 0, sizeof *m);
    m->n = (int)w->shape[0];
    m->d = (int)w->shape[1];
    const char *arch = st_get_meta(&f, "arch");
    snprintf(m->arch, sizeof m->arch, "%s", arch ? arch : "");
    st_file_free(&f);

    if ((rc = path_join(path, sizeof path, ckpt_dir, "state.safetensors", err)))
        return rc;
    if ((rc = read_verified(path, &f, err)))
        return rc;
    rc = get_scalar(&f, "step", ST_I64, &m->step, err);
    if (!rc)
        rc = get_scalar(&f, "tokens_seen", ST_I64, &m->tokens_seen, err);
    if (!rc)
        rc = get_scalar(&f, "input_scale", ST_F32, &m->input_scale, err);
    if (!rc && st_get(&f, "elapsed_s"))
        rc = get_scalar(&f, "elapsed_s", ST_F64, &m->elapsed_s, err);
    st_file_free(&f);
    return rc ? rc : check_counters(path, m, err);
}

int ckpt_load(const char *ckpt_dir, sae_params *p, sae_state *s, ckpt_meta *m, sf_err *err)
{
    SF_CHECK(p && s && m && m->d > 0 && m->n > 0);
    const int d = m->d, n = m->n;
    char path[4096];
    int rc = path_join(path, sizeof path, ckpt_dir, "sae.safetensors", err);
    if (rc)
        return rc;
    st_file f;
    if ((rc = read_verified(path, &f, err)))
        return rc;
    const st_tensor *wd = st_get(&f, "W_dec");
    if (wd && wd->ndim == 2 && (wd->shape[0] != n || wd->shape[1] != d)) {
        rc = sf_fail(err, SF_EINPUT,
                     "checkpoint %s has n=%" PRId64 " latents, d=%" PRId64 " but this run has n=%d, "
                     "d=%d; resume with the config it was written with or use a new out_dir",
                     ckpt_dir, wd->shape[0], wd->shape[1], n, d);
        st_file_free(&f);
        return rc;
    }
    const char *arch = st_get_meta(&f, "arch");
    char qa[SF_QUOTE_MAX];
    if (m->arch[0] && (!arch || strcmp(arch, m->arch) != 0)) {
        rc = sf_fail(err, SF_EINPUT,
                     "checkpoint %s is of arch '%s' but this run is '%s'; resume with the config "
                     "it was written with or use a new out_dir",
                     ckpt_dir, sf_quote_str(qa, sizeof qa, arch ? arch : "(none)"), m->arch);
        st_file_free(&f);
        return rc;
    }
    rc = get_array(&f, "W_enc", ST_F32, 2, n, d, p->W_enc, err);
    if (!rc) rc = get_array(&f, "b_enc", ST_F32, 1, n, 0, p->b_enc, err);
    if (!rc) rc = get_array(&f, "W_dec", ST_F32, 2, n, d, p->W_dec, err);
    if (!rc) rc = get_array(&f, "b_dec", ST_F32, 1, d, 0, p->b_dec, err);
    if (!rc && arch)
        snprintf(m->arch, sizeof m->arch, "%s", arch);
    st_file_free(&f);
    if (rc)
        return rc;

    if ((rc = path_join(path, sizeof path, ckpt_dir, "state.safetensors", err)))
        return rc;
    if ((rc = read_verified(path, &f, err)))
        return rc;
    int64_t rng[4];
    rc = get_array(&f, "m_W_enc", ST_F32, 2, n, d, s->m_W_enc, err);
    if (!rc) rc = get_array(&f, "v_W_enc", ST_F32, 2, n, d, s->v_W_enc, err);
    if (!rc) rc = get_array(&f, "m_b_enc", ST_F32, 1, n, 0, s->m_b_enc, err);
    if (!rc) rc = get_array(&f, "v_b_enc", ST_F32, 1, n, 0, s->v_b_enc, err);
    if (!rc) rc = get_array(&f, "m_W_dec", ST_F32, 2, n, d, s->m_W_dec, err);
    if (!rc) rc = get_array(&f, "v_W_dec", ST_F32, 2, n, d, s->v_W_dec, err);
    if (!rc) rc = get_array(&f, "m_b_dec", ST_F32, 1, d, 0, s->m_b_dec, err);
    if (!rc) rc = get_array(&f, "v_b_dec", ST_F32, 1, d, 0, s->v_b_dec, err);
    if (!rc) rc = get_scalar(&f, "adam_t", ST_I64, &s->adam_t, err);
    if (!rc) rc = get_array(&f, "since_fired", ST_I64, 1, n, 0, s->since_fired, err);
    if (!rc) rc = get_array(&f, "fire_count", ST_I64, 1, n, 0, s->fire_count, err);
    if (!rc) rc = get_array(&f, "act_sum", ST_F64, 1, n, 0, s->act_sum, err);
    if (!rc) rc = get_array(&f, "act_max", ST_F32, 1, n, 0, s->act_max, err);
    if (!rc) rc = get_array(&f, "last_fired_step", ST_I64, 1, n, 0, s->last_fired_step, err);
    if (!rc) rc = get_array(&f, "gate_sum", ST_F64, 1, n, 0, s->gate_sum, err);
    if (!rc) rc = get_scalar(&f, "theta", ST_F32, &s->theta, err);
    if (!rc) rc = get_scalar(&f, "step", ST_I64, &m->step, err);
    if (!rc) rc = get_scalar(&f, "tokens_seen", ST_I64, &m->tokens_seen, err);
    if (!rc) rc = get_scalar(&f, "data_epoch", ST_I64, &m->data_epoch, err);
    if (!rc) rc = get_scalar(&f, "data_position", ST_I64, &m->data_position, err);
    if (!rc) rc = get_scalar(&f, "skipped_rows", ST_I64, &m->skipped_rows, err);
    if (!rc) rc = get_scalar(&f, "input_scale", ST_F32, &m->input_scale, err);
    if (!rc) rc = get_scalar(&f, "scale_batches", ST_I64, &m->scale_batches, err);
    if (!rc) rc = get_scalar(&f, "scale_norm_sum", ST_F64, &m->scale_norm_sum, err);
    if (!rc) rc = get_array(&f, "rng", ST_I64, 1, 4, 0, rng, err);
    if (!rc) rc = get_scalar(&f, "elapsed_s", ST_F64, &m->elapsed_s, err);
    st_file_free(&f);
    if (rc)
        return rc;
    memcpy(m->rng, rng, sizeof rng);
    if (s->adam_t < 0 || !(s->theta == s->theta))
        return sf_fail(err, SF_EINPUT, "%s: adam_t %lld or theta %g is out of range; the checkpoint is damaged, "
                       "resume from another one or start over", path, (long long)s->adam_t, (double)s->theta);
    return check_counters(path, m, err);
}
