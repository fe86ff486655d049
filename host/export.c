/* Dictionary exports (SPEC §4): the SAELens layout (sae.safetensors + cfg.json +
 * sparsity.safetensors) and EleutherAI sparsify's layout; `saeforge export`; and the loader
 * that reads an SAE back from any saeforge artefact (run, checkpoint, export, truth file).
 *
 * Input scale folding. Training sees c*x (data.normalize: expected_norm), so
 *     pre = W_enc (c x - b_dec) + b_enc = (c W_enc)(x - b_dec / c) + b_enc
 *     xhat_raw = xhat_scaled / c = (W_dec / c)^T z + b_dec / c
 * hence for raw x: W_enc' = c W_enc, b_enc' = b_enc, W_dec' = W_dec / c, b_dec' = b_dec / c.
 * The codes z are unchanged, so the threshold and k are unchanged. (This is what SAELens'
 * fold_activation_norm_scaling_factor does.) The exported W_dec rows therefore have norm 1/c;
 * SAELens does not require unit decoder rows.
 *
 * SAELens names the weights file sae_weights.safetensors; SPEC names it sae.safetensors. Both
 * are written (a hard link where the file system allows it), so SAE.load_from_disk(dir) works
 * and the SPEC name exists. batchtopk/matryoshka export as `jumprelu` with threshold [n] = theta
 * (inference z = a * [a > theta], which is JumpReLU's rule); topk and gsae as `topk` with k
 * (gsae without gradients falls back to plain TopK, SPEC §2). sparsify has TopK only: a
 * batchtopk SAE exported to sparsify runs as TopK with the same k. */
#include "export.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/backend.h"
#include "../kernels/sf_check.h"
#include "../data/shard.h"
#include "ckpt.h"
#include "cmd.h"
#include "config.h"
#include "fsutil.h"
#include "json.h"
#include "safetensors.h"

#define SAELENS_COMPAT_VERSION "6.0.0"
#define SAEFORGE_TRAINING_VERSION "saeforge-0.1"

static const char *const arch_names[] = {"topk", "gsae", "batchtopk", "matryoshka"};

int export_arch_from_name(const char *name, sae_arch *out)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, arch_names[i])) {
            *out = (sae_arch)i;
            return 0;
        }
    return -1;
}

static int uses_threshold(sae_arch a) { return a == SAE_ARCH_BATCHTOPK || a == SAE_ARCH_MATRYOSHKA; }

static int join(char *out, size_t cap, const char *a, const char *b, sf_err *err)
{
    int r = snprintf(out, cap, "%s/%s", a, b);
    if (r < 0 || (size_t)r >= cap)
        return sf_fail(err, SF_EINPUT, "path too long: %s/%s; use a shorter path", a, b);
    return SF_OK;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    SF_CHECK(p != NULL);
    return p;
}

/* "blocks.6.hook_resid_post" -> 6, "model.layers.12" -> 12; 0 when no layer number. */
static int hook_layer(const char *hook)
{
    if (!hook)
        return 0;
    for (const char *p = hook; *p; p++) {
        if (isdigit((unsigned char)*p) && (p == hook || p[-1] == '.')) {
            const char *q = p;
            long v = 0;
            while (isdigit((unsigned char)*q) && v < 1000000)
                v = v * 10 + (*q++ - '0');
            if (*q == '.' || *q == '\0')
                return (int)v;
        }
    }
    return 0;
}

/* ---- output directory handling ------------------------------------------------------- */

static const char *const export_files[] = {"sae.safetensors", "sae_weights.safetensors", "cfg.json",
                                           "sparsity.safetensors"};

/* An existing dir may be replaced only when it holds nothing but export files (a previous
 * export); anything else is the user's and stops the export. */
static int check_replaceable(const char *dir, sf_err *err)
{
    if (!fs_exists(dir))
        return SF_OK;
    if (!fs_is_dir(dir))
        return sf_fail(err, SF_EINPUT, "%s exists and is not a directory; choose another --out", dir);
    DIR *dp = opendir(dir);
    if (!dp)
        return sf_fail(err, SF_EINPUT, "cannot read %s (%s); check permissions", dir, strerror(errno));
    struct dirent *e;
    int rc = SF_OK;
    while ((e = readdir(dp)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int ok = strstr(e->d_name, ".tmp.") != NULL;
        for (size_t i = 0; i < sizeof export_files / sizeof *export_files; i++)
            ok |= !strcmp(e->d_name, export_files[i]);
        if (!ok) {
            rc = sf_fail(err, SF_EINPUT,
                         "%s already holds other files (%s); choose an empty or new output directory",
                         dir, e->d_name);
            break;
        }
    }
    closedir(dp);
    return rc;
}

typedef struct out_dir {
    char dir[4096], tmp[4200], old[4200], parent[4096];
} out_dir;

/* Prepares dir.tmp.<pid> (a sibling, so the final rename stays on one file system). */
static int out_begin(out_dir *o, const char *dir, sf_err *err)
{
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof o->dir)
        return sf_fail(err, SF_EINPUT, "bad output directory '%s'", dir);
    memcpy(o->dir, dir, len);
    o->dir[len] = '\0';
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", o->dir, (long)getpid());
    snprintf(o->old, sizeof o->old, "%s.old.%ld", o->dir, (long)getpid());
    snprintf(o->parent, sizeof o->parent, "%s", o->dir);
    char *slash = strrchr(o->parent, '/');
    if (!slash)
        snprintf(o->parent, sizeof o->parent, ".");
    else if (slash == o->parent)
        slash[1] = '\0';
    else
        *slash = '\0';
    int rc = check_replaceable(o->dir, err);
    if (rc)
        return rc;
    if ((rc = fs_mkdirs(o->parent, err)))
        return rc;
    fs_remove_tree(o->tmp);
    return fs_mkdirs(o->tmp, err);
}

static int out_commit(out_dir *o, sf_err *err)
{
    int rc = fs_fsync_dir(o->tmp, err);
    if (rc)
        goto fail;
    int had_old = 0;
    if (fs_exists(o->dir)) {
        if (rename(o->dir, o->old) != 0) {
            rc = sf_fail(err, SF_EINPUT, "cannot replace %s (%s); check permissions", o->dir, strerror(errno));
            goto fail;
        }
        had_old = 1;
    }
    if (rename(o->tmp, o->dir) != 0) {
        rc = sf_fail(err, SF_EINPUT, "cannot rename %s to %s (%s); check permissions", o->tmp, o->dir,
                     strerror(errno));
        if (had_old)
            rename(o->old, o->dir);
        goto fail;
    }
    if (had_old)
        fs_remove_tree(o->old);
    return fs_fsync_dir(o->parent, err);
fail:
    fs_remove_tree(o->tmp);
    return rc;
}

static void out_abort(out_dir *o) { fs_remove_tree(o->tmp); }

/* ---- writing ----------------------------------------------------------------------------- */

/* Folded copies for raw inputs (see the file comment). W_enc comes back as (n, d). */
static void fold(const sae_params *p, int d, int n, float c, sae_params *o)
{
    size_t nd = (size_t)n * d;
    o->W_enc = xmalloc(nd * sizeof(float));
    o->W_dec = xmalloc(nd * sizeof(float));
    o->b_enc = xmalloc((size_t)n * sizeof(float));
    o->b_dec = xmalloc((size_t)d * sizeof(float));
    for (size_t i = 0; i < nd; i++) {
        o->W_enc[i] = p->W_enc[i] * c;
        o->W_dec[i] = p->W_dec[i] / c;
    }
    memcpy(o->b_enc, p->b_enc, (size_t)n * sizeof(float));
    for (int j = 0; j < d; j++)
        o->b_dec[j] = p->b_dec[j] / c;
}

static void params_free(sae_params *p)
{
    free(p->W_enc);
    free(p->W_dec);
    free(p->b_enc);
    free(p->b_dec);
    memset(p, 0, sizeof *p);
}

static int check_info(const export_info *info, const sae_params *p, sf_err *err)
{
    SF_CHECK(info && p && p->W_enc && p->W_dec && p->b_enc && p->b_dec);
    if (info->d <= 0 || info->n <= 0)
        return sf_fail(err, SF_EINPUT, "export: bad shape d=%d n=%d", info->d, info->n);
    if (!(info->input_scale > 0) || !isfinite(info->input_scale))
        return sf_fail(err, SF_EINPUT, "export: input scale %g is not a positive number; the run's "
                       "normalisation estimate is broken", info->input_scale);
    return SF_OK;
}

static void cfg_saelens(json_writer *w, const export_info *info)
{
    int topk = !uses_threshold(info->arch);
    const char *model = info->model && info->model[0] ? info->model : NULL;
    const char *hook = info->hook && info->hook[0] ? info->hook : NULL;
    const char *dataset = info->dataset_path && info->dataset_path[0] ? info->dataset_path : NULL;
    jw_obj_begin(w);
    jw_key(w, "architecture"); jw_str(w, topk ? "topk" : "jumprelu");
    jw_key(w, "d_in"); jw_int(w, info->d);
    jw_key(w, "d_sae"); jw_int(w, info->n);
    jw_key(w, "dtype"); jw_str(w, "float32");
    jw_key(w, "device"); jw_str(w, "cpu");
    jw_key(w, "apply_b_dec_to_input"); jw_bool(w, 1);
    jw_key(w, "normalize_activations"); jw_str(w, "none");
    jw_key(w, "reshape_activations"); jw_str(w, "none");
    if (topk) {
        jw_key(w, "k"); jw_int(w, info->k);
    }
    /* SAELens 6.x: metadata (a version >= 6 there skips the pre-6 key conversion) */
    jw_key(w, "metadata");
    jw_obj_begin(w);
    jw_key(w, "sae_lens_version"); jw_str(w, SAELENS_COMPAT_VERSION);
    jw_key(w, "sae_lens_training_version"); jw_str(w, SAEFORGE_TRAINING_VERSION);
    jw_key(w, "model_name"); jw_str(w, model);
    jw_key(w, "hook_name"); jw_str(w, hook);
    jw_key(w, "hook_layer"); jw_int(w, hook_layer(hook));
    jw_key(w, "hook_head_index"); jw_null(w);
    jw_key(w, "model_class_name"); jw_str(w, "HookedTransformer");
    jw_key(w, "model_from_pretrained_kwargs"); jw_obj_begin(w); jw_obj_end(w);
    jw_key(w, "prepend_bos"); jw_bool(w, 1);
    jw_key(w, "exclude_special_tokens"); jw_bool(w, 0);
    jw_key(w, "neuronpedia_id"); jw_null(w);
    jw_key(w, "context_size");
    if (info->context_size > 0) jw_int(w, info->context_size); else jw_null(w);
    jw_key(w, "seqpos_slice"); jw_arr_begin(w); jw_null(w); jw_arr_end(w);
    jw_key(w, "dataset_path"); jw_str(w, dataset);
    jw_key(w, "training_tokens"); jw_int(w, info->tokens_seen);
    jw_key(w, "saeforge_arch"); jw_str(w, arch_names[info->arch]);
    jw_obj_end(w);
    /* SAELens 5.x: the same facts as top-level keys */
    jw_key(w, "model_name"); jw_str(w, model);
    jw_key(w, "hook_name"); jw_str(w, hook);
    jw_key(w, "hook_layer"); jw_int(w, hook_layer(hook));
    jw_key(w, "hook_head_index"); jw_null(w);
    jw_key(w, "context_size");
    if (info->context_size > 0) jw_int(w, info->context_size); else jw_null(w);
    jw_key(w, "dataset_path"); jw_str(w, dataset);
    jw_key(w, "dataset_trust_remote_code"); jw_bool(w, 1);
    jw_key(w, "prepend_bos"); jw_bool(w, 1);
    jw_key(w, "activation_fn_str"); jw_str(w, topk ? "topk" : "relu");
    jw_key(w, "activation_fn_kwargs");
    jw_obj_begin(w);
    if (topk) {
        jw_key(w, "k"); jw_int(w, info->k);
    }
    jw_obj_end(w);
    jw_key(w, "finetuning_scaling_factor"); jw_bool(w, 0);
    jw_key(w, "sae_lens_training_version"); jw_str(w, SAEFORGE_TRAINING_VERSION);
    jw_key(w, "model_from_pretrained_kwargs"); jw_obj_begin(w); jw_obj_end(w);
    jw_key(w, "seqpos_slice"); jw_arr_begin(w); jw_null(w); jw_arr_end(w);
    jw_key(w, "neuronpedia_id"); jw_null(w);
    jw_obj_end(w);
}

static int write_json(const char *path, json_writer *w, sf_err *err)
{
    size_t len = w->len;
    char *buf = xmalloc(len + 2);
    memcpy(buf, w->buf, len);
    buf[len] = '\n';
    int rc = fs_write_atomic(path, buf, len + 1, err);
    free(buf);
    return rc;
}

/* Writes the SAELens files into the (temp) directory dir. log_sparsity overrides the one
 * derived from info->fire_count (re-export of an export). */
static int saelens_files(const char *dir, const export_info *info, const sae_params *p,
                         const float *log_sparsity, sf_err *err)
{
    const int d = info->d, n = info->n;
    char path[4300], link_path[4300];
    sae_params f;
    fold(p, d, n, info->input_scale, &f);
    /* SAELens W_enc is (d, n) */
    float *W_enc_t = xmalloc((size_t)n * d * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            W_enc_t[(size_t)j * n + i] = f.W_enc[(size_t)i * d + j];
    float *thr = NULL;
    if (uses_threshold(info->arch)) {
        thr = xmalloc((size_t)n * sizeof(float));
        float t = info->theta > 0 ? info->theta : 0.0f; /* unset (< 0): plain ReLU */
        for (int i = 0; i < n; i++)
            thr[i] = t;
    }
    int64_t dn[2] = {d, n}, nd[2] = {n, d}, n1[1] = {n}, d1[1] = {d};
    char kbuf[32];
    st_writer w;
    st_writer_init(&w);
    st_writer_add(&w, "W_enc", ST_F32, 2, dn, W_enc_t);
    st_writer_add(&w, "W_dec", ST_F32, 2, nd, f.W_dec);
    st_writer_add(&w, "b_enc", ST_F32, 1, n1, f.b_enc);
    st_writer_add(&w, "b_dec", ST_F32, 1, d1, f.b_dec);
    if (thr)
        st_writer_add(&w, "threshold", ST_F32, 1, n1, thr);
    st_writer_meta(&w, "format", "pt");
    st_writer_meta(&w, "saeforge_arch", arch_names[info->arch]);
    snprintf(kbuf, sizeof kbuf, "%d", info->k);
    st_writer_meta(&w, "k", kbuf);
    int rc = join(path, sizeof path, dir, "sae.safetensors", err);
    if (!rc)
        rc = st_writer_commit(&w, path, err);
    st_writer_free(&w);
    free(W_enc_t);
    free(thr);
    params_free(&f);
    if (rc)
        return rc;
    if ((rc = join(link_path, sizeof link_path, dir, "sae_weights.safetensors", err)))
        return rc;
    if (link(path, link_path) != 0) {
        char *buf;
        size_t len;
        if ((rc = fs_read_all(path, &buf, &len, err)))
            return rc;
        rc = fs_write_atomic(link_path, buf, len, err);
        free(buf);
        if (rc)
            return rc;
    }

    json_writer jw;
    jw_init(&jw, 1);
    cfg_saelens(&jw, info);
    if (!(rc = join(path, sizeof path, dir, "cfg.json", err)))
        rc = write_json(path, &jw, err);
    jw_free(&jw);
    if (rc)
        return rc;

    if (log_sparsity || info->fire_count) {
        float *sp = xmalloc((size_t)n * sizeof(float));
        for (int i = 0; i < n; i++) {
            if (log_sparsity) {
                sp[i] = log_sparsity[i];
            } else {
                /* SAELens' log feature sparsity: log10(freq + 1e-10), so never fired = -10 */
                double freq = info->tokens_seen > 0 ? (double)info->fire_count[i] / (double)info->tokens_seen : 0;
                sp[i] = (float)log10(freq + 1e-10);
            }
        }
        st_writer_init(&w);
        st_writer_add(&w, "sparsity", ST_F32, 1, n1, sp);
        st_writer_meta(&w, "format", "pt");
        if (!(rc = join(path, sizeof path, dir, "sparsity.safetensors", err)))
            rc = st_writer_commit(&w, path, err);
        st_writer_free(&w);
        free(sp);
    }
    return rc;
}

static int export_saelens_ex(const char *dir, const export_info *info, const sae_params *p,
                             const float *log_sparsity, sf_err *err)
{
    int rc = check_info(info, p, err);
    if (rc)
        return rc;
    out_dir o;
    if ((rc = out_begin(&o, dir, err)))
        return rc;
    if ((rc = saelens_files(o.tmp, info, p, log_sparsity, err))) {
        out_abort(&o);
        return rc;
    }
    return out_commit(&o, err);
}

int export_saelens(const char *dir, const export_info *info, const sae_params *p, sf_err *err)
{
    return export_saelens_ex(dir, info, p, NULL, err);
}

int export_sparsify(const char *dir, const export_info *info, const sae_params *p, sf_err *err)
{
    int rc = check_info(info, p, err);
    if (rc)
        return rc;
    if (info->k <= 0 || info->k > info->n)
        return sf_fail(err, SF_EINPUT, "export: k=%d is not in 1..%d; sparsify needs the TopK k", info->k, info->n);
    const int d = info->d, n = info->n;
    out_dir o;
    if ((rc = out_begin(&o, dir, err)))
        return rc;
    sae_params f;
    fold(p, d, n, info->input_scale, &f);
    int64_t nd[2] = {n, d}, n1[1] = {n}, d1[1] = {d};
    char path[4300];
    st_writer w;
    st_writer_init(&w);
    st_writer_add(&w, "encoder.weight", ST_F32, 2, nd, f.W_enc);
    st_writer_add(&w, "encoder.bias", ST_F32, 1, n1, f.b_enc);
    st_writer_add(&w, "W_dec", ST_F32, 2, nd, f.W_dec);
    st_writer_add(&w, "b_dec", ST_F32, 1, d1, f.b_dec);
    st_writer_meta(&w, "format", "pt");
    if (!(rc = join(path, sizeof path, o.tmp, "sae.safetensors", err)))
        rc = st_writer_commit(&w, path, err);
    st_writer_free(&w);
    params_free(&f);
    if (!rc) {
        json_writer jw;
        jw_init(&jw, 1);
        jw_obj_begin(&jw);
        jw_key(&jw, "expansion_factor"); jw_int(&jw, n / d > 0 ? n / d : 1);
        jw_key(&jw, "normalize_decoder"); jw_bool(&jw, 1);
        jw_key(&jw, "num_latents"); jw_int(&jw, n);
        jw_key(&jw, "k"); jw_int(&jw, info->k);
        jw_key(&jw, "multi_topk"); jw_bool(&jw, 0);
        jw_key(&jw, "skip_connection"); jw_bool(&jw, 0);
        jw_key(&jw, "activation"); jw_str(&jw, "topk");
        jw_key(&jw, "transcode"); jw_bool(&jw, 0);
        jw_key(&jw, "d_in"); jw_int(&jw, d);
        jw_obj_end(&jw);
        if (!(rc = join(path, sizeof path, o.tmp, "cfg.json", err)))
            rc = write_json(path, &jw, err);
        jw_free(&jw);
    }
    if (rc) {
        out_abort(&o);
        return rc;
    }
    return out_commit(&o, err);
}

/* ---- loading ----------------------------------------------------------------------------- */

void sae_loaded_free(sae_loaded *s)
{
    if (!s)
        return;
    params_free(&s->p);
    free(s->fire_count);
    free(s->log_sparsity);
    memset(s, 0, sizeof *s);
}

static void loaded_init(sae_loaded *s, const char *source)
{
    memset(s, 0, sizeof *s);
    snprintf(s->source, sizeof s->source, "%s", source);
    s->context_size = -1;
    s->gsae_beta = 1.0f;
    s->theta = -1;
    s->step = -1;
}

/* Copies tensor name (F32, given shape) into a new buffer. */
static int take_f32(const st_file *f, const char *name, int ndim, int64_t a, int64_t b, float **out, sf_err *err)
{
    const st_tensor *t;
    int64_t shape[2] = {a, b};
    int rc = st_expect(f, name, ST_F32, ndim, shape, &t, err);
    if (rc)
        return rc;
    *out = xmalloc(t->nbytes);
    memcpy(*out, t->data, t->nbytes);
    return SF_OK;
}

static int dims_of(const st_file *f, const char *name, int64_t *rows, int64_t *cols)
{
    const st_tensor *t = st_get(f, name);
    if (!t || t->ndim != 2 || t->shape[0] <= 0 || t->shape[1] <= 0 || t->shape[0] > INT32_MAX ||
        t->shape[1] > INT32_MAX)
        return -1;
    *rows = t->shape[0];
    *cols = t->shape[1];
    return 0;
}

static int read_json_file(const char *path, json_value *v, sf_err *err)
{
    char *buf;
    size_t len;
    int rc = fs_read_all(path, &buf, &len, err);
    if (rc)
        return rc;
    char why[128];
    if (json_parse(buf, len, v, why, sizeof why)) {
        free(buf);
        return sf_fail(err, SF_EINPUT, "%s is not valid JSON (%s); re-export it", path, why);
    }
    free(buf);
    return SF_OK;
}

static void copy_str(char *dst, size_t cap, const char *s)
{
    size_t l = s ? strlen(s) : 0;
    if (l >= cap)
        l = cap - 1;
    if (l)
        memcpy(dst, s, l);
    dst[l] = '\0';
}

/* A whole number from a foreign cfg.json, range-checked before it is converted (a null or
 * absent key gives def). */
static int cfg_int(const json_value *o, const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out,
                   const char *path, sf_err *err)
{
    const json_value *m = json_get(o, key);
    if (m && m->type == JSON_NULL)
        m = NULL;
    if (!m || !json_get_int(o, key, lo, hi, def, out)) {
        if (!m)
            *out = def;
        return SF_OK;
    }
    char shown[48];
    if (m->type == JSON_NUM)
        snprintf(shown, sizeof shown, "%.6g", m->num);
    else
        snprintf(shown, sizeof shown, "not a number");
    return sf_fail(err, SF_EINPUT, "%s: `%s` is %s; expected a whole number in %lld..%lld; fix the file or "
                   "export the SAE again", path, key, shown, (long long)lo, (long long)hi);
}

/* k from the safetensors metadata of our own jumprelu exports ("k": "32"), checked like cfg_int. */
static int meta_k(const st_file *f, int64_t n, int64_t *k, sf_err *err)
{
    const char *v = st_get_meta(f, "k");
    if (!v)
        return SF_OK;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < 0 || x > n) {
        char q[SF_QUOTE_MAX];
        return sf_fail(err, SF_EINPUT, "%s: metadata k = '%s' is not a whole number in 0..%lld; fix the file or "
                       "export the SAE again", f->path, sf_quote_str(q, sizeof q, v), (long long)n);
    }
    *k = x;
    return SF_OK;
}

/* An export dir: SAELens (W_enc [d, n]) or sparsify (encoder.weight [n, d]). */
static int load_export_dir(const char *dir, sae_loaded *s, sf_err *err)
{
    char path[4300], cfg_path[4300];
    json_value cfg;
    memset(&cfg, 0, sizeof cfg);
    int rc = join(cfg_path, sizeof cfg_path, dir, "cfg.json", err);
    if (!rc && fs_exists(cfg_path))
        rc = read_json_file(cfg_path, &cfg, err);
    if (rc)
        return rc;
    if (!(rc = join(path, sizeof path, dir, "sae.safetensors", err)) && !fs_exists(path))
        rc = join(path, sizeof path, dir, "sae_weights.safetensors", err);
    st_file f;
    if (rc || (rc = st_read(path, &f, err))) {
        json_value_free(&cfg);
        return rc;
    }
    int64_t n, d;
    if (st_get(&f, "encoder.weight")) {
        snprintf(s->kind, sizeof s->kind, "sparsify");
        if (dims_of(&f, "encoder.weight", &n, &d)) {
            rc = sf_fail(err, SF_EINPUT, "%s: encoder.weight is not a 2-D tensor; not a sparsify export", path);
            goto out;
        }
        s->d = (int)d;
        s->n = (int)n;
        s->arch = SAE_ARCH_TOPK;
        int64_t k = 0;
        rc = cfg_int(&cfg, "k", 0, n, 0, &k, cfg_path, err);
        s->k = (int)k;
        if (!rc) rc = take_f32(&f, "encoder.weight", 2, n, d, &s->p.W_enc, err);
        if (!rc) rc = take_f32(&f, "encoder.bias", 1, n, 0, &s->p.b_enc, err);
    } else if (st_get(&f, "W_enc")) {
        snprintf(s->kind, sizeof s->kind, "saelens");
        if (dims_of(&f, "W_enc", &d, &n)) {
            rc = sf_fail(err, SF_EINPUT, "%s: W_enc is not a 2-D tensor; not a SAELens export", path);
            goto out;
        }
        s->d = (int)d;
        s->n = (int)n;
        const char *arch = json_get_str(&cfg, "architecture", "topk");
        const json_value *meta = json_get(&cfg, "metadata");
        const char *sf_arch = json_get_str(meta, "saeforge_arch", NULL);
        if (sf_arch && !export_arch_from_name(sf_arch, &s->arch)) {
            /* exact arch from our own export */
        } else if (!strcmp(arch, "jumprelu")) {
            s->arch = SAE_ARCH_BATCHTOPK;
        } else if (!strcmp(arch, "topk") ||
                   (!strcmp(arch, "standard") && !strcmp(json_get_str(&cfg, "activation_fn_str", ""), "topk"))) {
            s->arch = SAE_ARCH_TOPK; /* SAELens 5.x saves a TopK SAE as standard + activation_fn topk */
        } else {
            char q[SF_QUOTE_MAX];
            rc = sf_fail(err, SF_EINPUT, "%s: architecture '%s' is not one saeforge runs (topk, jumprelu, "
                         "standard with activation_fn topk)", dir, sf_quote_str(q, sizeof q, arch));
            goto out;
        }
        int64_t k = 0, cs = -1, tokens = 0;
        rc = cfg_int(&cfg, "k", 0, n, 0, &k, cfg_path, err);
        if (!rc && !k)
            rc = cfg_int(json_get(&cfg, "activation_fn_kwargs"), "k", 0, n, 0, &k, cfg_path, err);
        if (!rc && !k) /* jumprelu cfg has no k: our own exports keep it here */
            rc = meta_k(&f, n, &k, err);
        s->k = (int)k;
        /* 2^53: what a double holds exactly */
        const int64_t big = (int64_t)1 << 53;
        if (!rc) rc = cfg_int(&cfg, "context_size", -1, big, -1, &cs, cfg_path, err);
        if (!rc) rc = cfg_int(meta, "context_size", -1, big, cs, &cs, cfg_path, err);
        if (!rc) rc = cfg_int(meta, "training_tokens", 0, big, 0, &tokens, cfg_path, err);
        if (rc)
            goto out;
        s->context_size = cs > 0 ? cs : -1;
        s->tokens_seen = tokens;
        float *wt = NULL;
        rc = take_f32(&f, "W_enc", 2, d, n, &wt, err);
        if (!rc) {
            s->p.W_enc = xmalloc((size_t)n * d * sizeof(float));
            for (int64_t j = 0; j < d; j++)
                for (int64_t i = 0; i < n; i++)
                    s->p.W_enc[i * d + j] = wt[j * n + i];
        }
        free(wt);
        if (!rc) rc = take_f32(&f, "b_enc", 1, n, 0, &s->p.b_enc, err);
        if (!rc && st_get(&f, "threshold")) {
            float *thr = NULL;
            if (!(rc = take_f32(&f, "threshold", 1, n, 0, &thr, err))) {
                s->theta = thr[0];
                for (int64_t i = 1; i < n; i++)
                    if (thr[i] != thr[0]) {
                        rc = sf_fail(err, SF_EINPUT, "%s: threshold differs between latents; saeforge "
                                     "runs one shared threshold (its own exports)", path);
                        break;
                    }
            }
            free(thr);
        }
        const char *v;
        copy_str(s->model, sizeof s->model, (v = json_get_str(meta, "model_name", NULL)) ? v : json_get_str(&cfg, "model_name", ""));
        copy_str(s->hook, sizeof s->hook, (v = json_get_str(meta, "hook_name", NULL)) ? v : json_get_str(&cfg, "hook_name", ""));
        copy_str(s->dataset_path, sizeof s->dataset_path,
                 (v = json_get_str(meta, "dataset_path", NULL)) ? v : json_get_str(&cfg, "dataset_path", ""));
    } else {
        rc = sf_fail(err, SF_EINPUT, "%s has neither W_enc (SAELens) nor encoder.weight (sparsify)", path);
        goto out;
    }
    /* widths the cfg states must be the tensors' own */
    const char *n_key = strcmp(s->kind, "sparsify") ? "d_sae" : "num_latents";
    int64_t cd = d, cn = n;
    if (!rc) rc = cfg_int(&cfg, "d_in", 1, INT32_MAX, d, &cd, cfg_path, err);
    if (!rc) rc = cfg_int(&cfg, n_key, strcmp(n_key, "num_latents") ? 1 : 0, INT32_MAX, n, &cn, cfg_path, err);
    if (!rc && (cd != d || (cn != n && !(cn == 0 && !strcmp(n_key, "num_latents")))))
        rc = sf_fail(err, SF_EINPUT, "%s: d_in %lld / %s %lld disagree with the weights (d %lld, n %lld); fix the "
                     "file or export the SAE again", cfg_path, (long long)cd, n_key, (long long)cn, (long long)d,
                     (long long)n);
    if (!rc) rc = take_f32(&f, "W_dec", 2, n, d, &s->p.W_dec, err);
    if (!rc) rc = take_f32(&f, "b_dec", 1, d, 0, &s->p.b_dec, err);
    if (!rc && !strcmp(s->kind, "saelens")) {
        char sp_path[4300];
        st_file sf;
        if (!join(sp_path, sizeof sp_path, dir, "sparsity.safetensors", NULL) && fs_exists(sp_path) &&
            !st_read(sp_path, &sf, NULL)) {
            const st_tensor *t;
            int64_t n1[1] = {n};
            if (!st_expect(&sf, "sparsity", ST_F32, 1, n1, &t, NULL)) {
                s->log_sparsity = xmalloc(t->nbytes);
                memcpy(s->log_sparsity, t->data, t->nbytes);
            }
            st_file_free(&sf);
        }
    }
out:
    st_file_free(&f);
    json_value_free(&cfg);
    return rc;
}

/* k, data path, model/hook of the run a checkpoint belongs to, from <run>/config.yaml. */
static void run_facts(const char *run_dir, sae_loaded *s)
{
    char path[4300];
    if (join(path, sizeof path, run_dir, "config.yaml", NULL) || !fs_exists(path))
        return;
    sf_config *c = xmalloc(sizeof *c);
    sf_err e = {0};
    if (config_load(path, NULL, 0, c, &e) == SF_OK) {
        s->k = c->sae.k;
        s->gsae_beta = c->sae.gsae_beta;
        copy_str(s->dataset_path, sizeof s->dataset_path, c->data.path);
        shard_set set;
        memset(&set, 0, sizeof set);
        if (c->data.path[0] && shard_set_open(&set, c->data.path, 0, &e) == SF_OK) {
            copy_str(s->model, sizeof s->model, set.model);
            copy_str(s->hook, sizeof s->hook, set.hook);
            s->context_size = set.context_size;
            shard_set_free(&set);
        }
    }
    free(c);
}

static int load_checkpoint(const char *ckdir, sae_loaded *s, sf_err *err)
{
    ckpt_meta m;
    int rc = ckpt_peek(ckdir, &m, err);
    if (rc)
        return rc;
    if (export_arch_from_name(m.arch, &s->arch))
        return sf_fail(err, SF_EINPUT, "checkpoint %s has unknown arch '%s'", ckdir, m.arch);
    sae_params p;
    sae_state st;
    sae_params_alloc(&p, m.d, m.n);
    sae_state_alloc(&st, m.d, m.n);
    if ((rc = ckpt_load(ckdir, &p, &st, &m, err)) == SF_OK) {
        snprintf(s->kind, sizeof s->kind, "checkpoint");
        s->d = m.d;
        s->n = m.n;
        s->theta = st.theta;
        s->tokens_seen = m.tokens_seen;
        s->step = m.step;
        s->fire_count = xmalloc((size_t)m.n * sizeof(int64_t));
        memcpy(s->fire_count, st.fire_count, (size_t)m.n * sizeof(int64_t));
        fold(&p, m.d, m.n, m.input_scale > 0 ? m.input_scale : 1.0f, &s->p);
        /* <run>/checkpoints/step_N -> <run> */
        char run[4096];
        snprintf(run, sizeof run, "%s", ckdir);
        for (int up = 0; up < 2; up++) {
            size_t l = strlen(run);
            while (l > 1 && run[l - 1] == '/')
                run[--l] = '\0';
            char *sl = strrchr(run, '/');
            if (sl && sl != run)
                *sl = '\0';
            else
                snprintf(run, sizeof run, up == 0 ? "." : "..");
        }
        run_facts(run, s);
    }
    sae_params_free(&p);
    sae_state_free(&st);
    return rc;
}

static int load_decoder_file(const char *path, sae_loaded *s, sf_err *err)
{
    st_file f;
    int rc = st_read(path, &f, err);
    if (rc)
        return rc;
    int64_t n, d;
    if (dims_of(&f, "W_dec", &n, &d)) {
        st_file_free(&f);
        return sf_fail(err, SF_EINPUT, "%s has no 2-D tensor W_dec; give an SAE, a run or a truth file", path);
    }
    snprintf(s->kind, sizeof s->kind, "decoder");
    s->dec_only = 1;
    s->d = (int)d;
    s->n = (int)n;
    rc = take_f32(&f, "W_dec", 2, n, d, &s->p.W_dec, err);
    st_file_free(&f);
    return rc;
}

static int is_ckpt_dir(const char *dir)
{
    char a[4300], b[4300];
    return !join(a, sizeof a, dir, "state.safetensors", NULL) && !join(b, sizeof b, dir, "sae.safetensors", NULL) &&
           fs_exists(a) && fs_exists(b);
}

/* cfg.json + sae.safetensors (ours, sparsify) or sae_weights.safetensors (SAELens save_model) */
static int is_export_dir(const char *dir)
{
    char a[4300], b[4300], c[4300];
    return !join(a, sizeof a, dir, "cfg.json", NULL) && !join(b, sizeof b, dir, "sae.safetensors", NULL) &&
           !join(c, sizeof c, dir, "sae_weights.safetensors", NULL) && fs_exists(a) &&
           (fs_exists(b) || fs_exists(c));
}

static int load_dir(const char *dir, sae_loaded *s, sf_err *err)
{
    char sub[4300];
    if (is_ckpt_dir(dir))
        return load_checkpoint(dir, s, err);
    if (is_export_dir(dir))
        return load_export_dir(dir, s, err);
    if (!join(sub, sizeof sub, dir, "final", NULL) && is_export_dir(sub)) {
        int rc = load_export_dir(sub, s, err);
        if (!rc) {
            int k = s->k;
            run_facts(dir, s); /* gsae_beta; keep the export's own k */
            if (k > 0)
                s->k = k;
            copy_str(s->source, sizeof s->source, sub);
        }
        return rc;
    }
    if (!join(sub, sizeof sub, dir, "checkpoints", NULL) && fs_is_dir(sub)) {
        char ck[4300];
        int r = ckpt_find_latest(dir, ck, sizeof ck, err);
        if (r < 0)
            return -r;
        if (r == 0)
            return sf_fail(err, SF_EINPUT, "run %s has no final/ and no complete checkpoint; train it first", dir);
        copy_str(s->source, sizeof s->source, ck);
        return load_checkpoint(ck, s, err);
    }
    if (!join(sub, sizeof sub, dir, "truth.safetensors", NULL) && fs_exists(sub))
        return load_decoder_file(sub, s, err);
    return sf_fail(err, SF_EINPUT,
                   "%s is not a run, checkpoint or export directory (no final/, checkpoints/, "
                   "sae.safetensors + cfg.json or truth.safetensors)", dir);
}

int sae_load(const char *path, int need_full, sae_loaded *out, sf_err *err)
{
    loaded_init(out, path);
    int rc;
    if (!fs_exists(path)) {
        rc = sf_fail(err, SF_EINPUT, "%s does not exist; give a run dir, checkpoint, export or safetensors file", path);
    } else if (fs_is_dir(path)) {
        rc = load_dir(path, out, err);
    } else {
        /* a file: use its directory when that is a checkpoint or export dir */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *sl = strrchr(dir, '/');
        if (sl)
            *sl = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        const char *base = sl ? sl + 1 : path;
        int sae_file = !strcmp(base, "sae.safetensors") || !strcmp(base, "sae_weights.safetensors");
        if (sae_file && is_ckpt_dir(dir))
            rc = load_checkpoint(dir, out, err);
        else if (sae_file && is_export_dir(dir))
            rc = load_export_dir(dir, out, err);
        else
            rc = load_decoder_file(path, out, err);
    }
    if (!rc && need_full && out->dec_only)
        rc = sf_fail(err, SF_EINPUT, "%s holds only a decoder (W_dec); this needs a full SAE (run, checkpoint or export)",
                     path);
    if (rc)
        sae_loaded_free(out);
    return rc;
}

/* ---- saeforge export ------------------------------------------------------------------------ */

static void export_usage(FILE *f)
{
    fprintf(f, "usage: saeforge export RUN --format saelens|sparsify --out DIR\n"
               "  RUN: a run dir (final/, else the newest checkpoint), a checkpoint dir or an export dir.\n"
               "  saelens: sae.safetensors (+ sae_weights.safetensors), cfg.json, sparsity.safetensors\n"
               "  sparsify: cfg.json + sae.safetensors (encoder.weight, encoder.bias, W_dec, b_dec)\n");
}

int cmd_export(int argc, char **argv)
{
    const char *run = NULL, *format = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            export_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--format") || !strcmp(argv[i], "--out")) {
            if (i + 1 >= argc)
                return cli_error(2, "export: %s needs a value; see saeforge export --help", argv[i]);
            if (!strcmp(argv[i], "--format"))
                format = argv[++i];
            else
                out = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_error(2, "export: unknown option '%s'; see saeforge export --help", argv[i]);
        } else if (!run) {
            run = argv[i];
        } else {
            return cli_error(2, "export: unexpected argument '%s'; see saeforge export --help", argv[i]);
        }
    }
    if (!run || !format || !out)
        return cli_error(2, "export: need RUN, --format saelens|sparsify and --out DIR; see saeforge export --help");
    int saelens = !strcmp(format, "saelens");
    if (!saelens && strcmp(format, "sparsify"))
        return cli_error(2, "export: unknown --format '%s'; use saelens or sparsify", format);
    sf_err err = {0};
    sae_loaded s;
    if (sae_load(run, 1, &s, &err))
        return cli_error(2, "%s", err.msg);
    export_info info;
    memset(&info, 0, sizeof info);
    info.arch = s.arch;
    info.d = s.d;
    info.n = s.n;
    info.k = s.k;
    info.input_scale = 1.0f; /* sae_load already folded it */
    info.theta = s.theta;
    info.model = s.model;
    info.hook = s.hook;
    info.dataset_path = s.dataset_path;
    info.context_size = s.context_size;
    info.tokens_seen = s.tokens_seen;
    info.fire_count = s.fire_count;
    int rc;
    if (saelens && !uses_threshold(s.arch) && s.k <= 0)
        rc = sf_fail(&err, SF_EINPUT, "%s: k is unknown (no config.yaml beside the checkpoint); export from the run dir", run);
    else
        rc = saelens ? export_saelens_ex(out, &info, &s.p, s.log_sparsity, &err)
                     : export_sparsify(out, &info, &s.p, &err);
    sae_loaded_free(&s);
    if (rc)
        return cli_error(rc == SF_EFAIL ? 1 : 2, "%s", err.msg);
    printf("exported %s (%s, d=%d, n=%d) to %s in %s format\n", run, arch_names[info.arch], info.d, info.n, out,
           format);
    return 0;
}
