/* Exports: SAELens names/shapes/transpose, threshold for batchtopk, input-scale folding gives
 * the trained model's reconstruction on raw inputs, cfg.json keys, sparsify layout, atomicity,
 * loading back, and `saeforge export` from a run dir. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "host/cmd.h"
#include "host/export.h"
#include "host/fsutil.h"
#include "host/json.h"
#include "host/safetensors.h"
#include "kernels/backend.h"

#define D 6
#define N 10
#define K 3

static char *tmpdir(void)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sf_export_XXXXXX");
    cr_assert_not_null(mkdtemp(path));
    return path;
}

static float frand(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return (float)(*r % 20001) / 10000.0f - 1.0f;
}

static void make_params(sae_params *p, uint32_t seed)
{
    sae_params_alloc(p, D, N);
    for (int i = 0; i < N * D; i++) {
        p->W_enc[i] = frand(&seed);
        p->W_dec[i] = frand(&seed);
    }
    for (int i = 0; i < N; i++)
        p->b_enc[i] = 0.1f * frand(&seed);
    for (int j = 0; j < D; j++)
        p->b_dec[j] = frand(&seed);
}

static export_info make_info(sae_arch arch, float c)
{
    export_info in;
    memset(&in, 0, sizeof in);
    in.arch = arch;
    in.d = D;
    in.n = N;
    in.k = K;
    in.input_scale = c;
    in.theta = 0.25f;
    in.model = "gpt2";
    in.hook = "blocks.6.hook_resid_post";
    in.dataset_path = "/data/acts";
    in.context_size = 128;
    in.tokens_seen = 1000;
    return in;
}

/* Training-side forward on scaled input c*x (SPEC §2, inference rule), returned for raw x. */
static void trained_recon(const sae_params *p, sae_arch arch, float theta, float c, const float *x, float *out)
{
    double pre[N], z[N] = {0};
    for (int i = 0; i < N; i++) {
        double s = p->b_enc[i];
        for (int j = 0; j < D; j++)
            s += (double)p->W_enc[i * D + j] * ((double)c * x[j] - p->b_dec[j]);
        pre[i] = s > 0 ? s : 0;
    }
    if (arch == SAE_ARCH_TOPK) {
        for (int t = 0; t < K; t++) {
            int best = -1;
            for (int i = 0; i < N; i++)
                if (z[i] == 0 && pre[i] > 0 && (best < 0 || pre[i] > pre[best]))
                    best = i;
            if (best >= 0)
                z[best] = pre[best];
        }
    } else {
        for (int i = 0; i < N; i++)
            z[i] = pre[i] > theta ? pre[i] : 0;
    }
    for (int j = 0; j < D; j++) {
        double s = p->b_dec[j];
        for (int i = 0; i < N; i++)
            s += z[i] * p->W_dec[i * D + j];
        out[j] = (float)(s / c);
    }
}

/* SAELens-side forward from the exported tensors on raw x (W_enc is [d, n]). */
static void saelens_recon(const st_file *f, int jumprelu, const float *x, float *out)
{
    const float *We = st_get(f, "W_enc")->data, *be = st_get(f, "b_enc")->data;
    const float *Wd = st_get(f, "W_dec")->data, *bd = st_get(f, "b_dec")->data;
    const st_tensor *th = st_get(f, "threshold");
    double pre[N], z[N] = {0};
    for (int i = 0; i < N; i++) {
        double s = be[i];
        for (int j = 0; j < D; j++)
            s += ((double)x[j] - bd[j]) * We[j * N + i];
        pre[i] = s;
    }
    if (!jumprelu) {
        for (int t = 0; t < K; t++) {
            int best = -1;
            for (int i = 0; i < N; i++)
                if (z[i] == 0 && pre[i] > 0 && (best < 0 || pre[i] > pre[best]))
                    best = i;
            if (best >= 0)
                z[best] = pre[best];
        }
    } else {
        const float *thr = th->data;
        for (int i = 0; i < N; i++)
            z[i] = pre[i] > thr[i] && pre[i] > 0 ? pre[i] : 0;
    }
    for (int j = 0; j < D; j++) {
        double s = bd[j];
        for (int i = 0; i < N; i++)
            s += z[i] * Wd[i * D + j];
        out[j] = (float)s;
    }
}

static void read_cfg(const char *dir, json_value *v)
{
    char path[512], *buf;
    size_t len;
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    sf_err err = {0};
    cr_assert_eq(fs_read_all(path, &buf, &len, &err), SF_OK, "%s", err.msg);
    char why[128];
    cr_assert_eq(json_parse(buf, len, v, why, sizeof why), 0, "cfg.json: %s", why);
    free(buf);
}

Test(export, saelens_names_shapes_transpose_and_fold)
{
    const char *root = tmpdir();
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/out", root);
    sae_params p;
    make_params(&p, 11);
    const float c = 2.5f;
    export_info in = make_info(SAE_ARCH_TOPK, c);
    sf_err err = {0};
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);

    st_file f;
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    const st_tensor *t;
    int64_t dn[2] = {D, N}, nd[2] = {N, D}, n1[1] = {N}, d1[1] = {D};
    cr_assert_eq(st_expect(&f, "W_enc", ST_F32, 2, dn, &t, &err), SF_OK, "%s", err.msg);
    const float *We = t->data;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++)
            cr_assert_eq(We[j * N + i], p.W_enc[i * D + j] * c);
    cr_assert_eq(st_expect(&f, "W_dec", ST_F32, 2, nd, &t, &err), SF_OK);
    for (int i = 0; i < N * D; i++)
        cr_assert_eq(((const float *)t->data)[i], p.W_dec[i] / c);
    cr_assert_eq(st_expect(&f, "b_enc", ST_F32, 1, n1, &t, &err), SF_OK);
    cr_assert(!memcmp(t->data, p.b_enc, sizeof(float) * N));
    cr_assert_eq(st_expect(&f, "b_dec", ST_F32, 1, d1, &t, &err), SF_OK);
    for (int j = 0; j < D; j++)
        cr_assert_eq(((const float *)t->data)[j], p.b_dec[j] / c);
    cr_assert_null(st_get(&f, "threshold"), "topk has no threshold");

    /* same reconstruction on raw x as the trained model on c*x */
    uint32_t r = 99;
    for (int trial = 0; trial < 20; trial++) {
        float x[D], a[D], b[D];
        for (int j = 0; j < D; j++)
            x[j] = frand(&r) * 2;
        trained_recon(&p, SAE_ARCH_TOPK, 0, c, x, a);
        saelens_recon(&f, 0, x, b);
        for (int j = 0; j < D; j++)
            cr_assert_float_eq(a[j], b[j], 1e-4 + 1e-4 * fabsf(a[j]));
    }
    st_file_free(&f);
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    cr_assert(fs_exists(path), "SAELens file name present too");
    snprintf(path, sizeof path, "%s.tmp.%ld", dir, (long)getpid());
    cr_assert(!fs_exists(path));
    sae_params_free(&p);
    fs_remove_tree(root);
}

Test(export, batchtopk_threshold_jumprelu_and_cfg_keys)
{
    const char *root = tmpdir();
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/final", root);
    sae_params p;
    make_params(&p, 5);
    const float c = 0.75f;
    export_info in = make_info(SAE_ARCH_BATCHTOPK, c);
    int64_t fc[N];
    for (int i = 0; i < N; i++)
        fc[i] = i * 10; /* latent 0 never fired */
    in.fire_count = fc;
    sf_err err = {0};
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);

    st_file f;
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    const st_tensor *t;
    int64_t n1[1] = {N};
    cr_assert_eq(st_expect(&f, "threshold", ST_F32, 1, n1, &t, &err), SF_OK, "%s", err.msg);
    for (int i = 0; i < N; i++)
        cr_assert_eq(((const float *)t->data)[i], 0.25f);
    uint32_t r = 7;
    for (int trial = 0; trial < 20; trial++) {
        float x[D], a[D], b[D];
        for (int j = 0; j < D; j++)
            x[j] = frand(&r) * 3;
        trained_recon(&p, SAE_ARCH_BATCHTOPK, 0.25f, c, x, a);
        saelens_recon(&f, 1, x, b);
        for (int j = 0; j < D; j++)
            cr_assert_float_eq(a[j], b[j], 1e-4 + 1e-4 * fabsf(a[j]));
    }
    st_file_free(&f);

    json_value v;
    read_cfg(dir, &v);
    cr_assert_str_eq(json_get_str(&v, "architecture", ""), "jumprelu");
    cr_assert_eq(json_get_num(&v, "d_in", 0), D);
    cr_assert_eq(json_get_num(&v, "d_sae", 0), N);
    cr_assert_str_eq(json_get_str(&v, "dtype", ""), "float32");
    cr_assert_str_eq(json_get_str(&v, "device", ""), "cpu");
    cr_assert_eq(json_get(&v, "apply_b_dec_to_input")->type, JSON_BOOL);
    cr_assert_eq(json_get(&v, "apply_b_dec_to_input")->b, 1);
    cr_assert_str_eq(json_get_str(&v, "normalize_activations", ""), "none");
    const json_value *meta = json_get(&v, "metadata");
    cr_assert_not_null(meta);
    cr_assert_not_null(json_get_str(meta, "sae_lens_version", NULL));
    cr_assert_str_eq(json_get_str(meta, "model_name", ""), "gpt2");
    cr_assert_str_eq(json_get_str(meta, "hook_name", ""), "blocks.6.hook_resid_post");
    cr_assert_eq(json_get_num(meta, "hook_layer", -1), 6);
    cr_assert_eq(json_get_num(meta, "context_size", -1), 128);
    cr_assert_str_eq(json_get_str(meta, "dataset_path", ""), "/data/acts");
    cr_assert_eq(json_get(meta, "hook_head_index")->type, JSON_NULL);
    /* 5.x top-level keys */
    cr_assert_eq(json_get_num(&v, "context_size", -1), 128);
    cr_assert_str_eq(json_get_str(&v, "model_name", ""), "gpt2");
    cr_assert_str_eq(json_get_str(&v, "hook_name", ""), "blocks.6.hook_resid_post");
    cr_assert_eq(json_get_num(&v, "hook_layer", -1), 6);
    cr_assert_eq(json_get(&v, "hook_head_index")->type, JSON_NULL);
    cr_assert_str_eq(json_get_str(&v, "dataset_path", ""), "/data/acts");
    cr_assert_str_eq(json_get_str(&v, "activation_fn_str", ""), "relu");
    cr_assert_eq(json_get(&v, "activation_fn_kwargs")->type, JSON_OBJ);
    json_value_free(&v);

    /* sparsity = log10(freq + 1e-10) */
    snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(st_expect(&f, "sparsity", ST_F32, 1, n1, &t, &err), SF_OK);
    const float *sp = t->data;
    cr_assert_float_eq(sp[0], -10.0f, 1e-5);
    for (int i = 1; i < N; i++)
        cr_assert_float_eq(sp[i], (float)log10(i * 10 / 1000.0 + 1e-10), 1e-5);
    st_file_free(&f);
    sae_params_free(&p);
    fs_remove_tree(root);
}

Test(export, topk_cfg_has_k)
{
    const char *root = tmpdir();
    char dir[512];
    snprintf(dir, sizeof dir, "%s/e", root);
    sae_params p;
    make_params(&p, 3);
    export_info in = make_info(SAE_ARCH_GSAE, 1.0f);
    in.hook = "model.layers.12";
    sf_err err = {0};
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);
    json_value v;
    read_cfg(dir, &v);
    cr_assert_str_eq(json_get_str(&v, "architecture", ""), "topk");
    cr_assert_eq(json_get_num(&v, "k", 0), K);
    cr_assert_str_eq(json_get_str(&v, "activation_fn_str", ""), "topk");
    cr_assert_eq(json_get_num(json_get(&v, "activation_fn_kwargs"), "k", 0), K);
    cr_assert_eq(json_get_num(&v, "hook_layer", -1), 12);
    json_value_free(&v);
    sae_params_free(&p);
    fs_remove_tree(root);
}

Test(export, sparsify_layout)
{
    const char *root = tmpdir();
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/sp", root);
    sae_params p;
    make_params(&p, 8);
    const float c = 4.0f;
    export_info in = make_info(SAE_ARCH_TOPK, c);
    sf_err err = {0};
    cr_assert_eq(export_sparsify(dir, &in, &p, &err), SF_OK, "%s", err.msg);
    st_file f;
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    const st_tensor *t;
    int64_t nd[2] = {N, D}, n1[1] = {N}, d1[1] = {D};
    cr_assert_eq(st_expect(&f, "encoder.weight", ST_F32, 2, nd, &t, &err), SF_OK, "%s", err.msg);
    for (int i = 0; i < N * D; i++)
        cr_assert_eq(((const float *)t->data)[i], p.W_enc[i] * c);
    cr_assert_eq(st_expect(&f, "encoder.bias", ST_F32, 1, n1, &t, &err), SF_OK);
    cr_assert_eq(st_expect(&f, "W_dec", ST_F32, 2, nd, &t, &err), SF_OK);
    cr_assert_eq(((const float *)t->data)[5], p.W_dec[5] / c);
    cr_assert_eq(st_expect(&f, "b_dec", ST_F32, 1, d1, &t, &err), SF_OK);
    cr_assert_null(st_get(&f, "W_enc"));
    st_file_free(&f);
    json_value v;
    read_cfg(dir, &v);
    cr_assert_eq(json_get_num(&v, "num_latents", 0), N);
    cr_assert_eq(json_get_num(&v, "k", 0), K);
    cr_assert_eq(json_get_num(&v, "d_in", 0), D);
    cr_assert_eq(json_get(&v, "normalize_decoder")->b, 1);
    cr_assert_eq(json_get(&v, "multi_topk")->b, 0);
    cr_assert_eq(json_get(&v, "skip_connection")->b, 0);
    cr_assert_not_null(json_get(&v, "expansion_factor"));
    json_value_free(&v);
    sae_params_free(&p);
    fs_remove_tree(root);
}

Test(export, refuses_foreign_dir_and_failure_leaves_nothing)
{
    const char *root = tmpdir();
    char dir[512], user[600], path[600];
    snprintf(dir, sizeof dir, "%s/mine", root);
    sf_err err = {0};
    cr_assert_eq(fs_mkdirs(dir, &err), SF_OK);
    snprintf(user, sizeof user, "%s/notes.txt", dir);
    cr_assert_eq(fs_write_atomic(user, "keep", 4, &err), SF_OK);
    sae_params p;
    make_params(&p, 1);
    export_info in = make_info(SAE_ARCH_TOPK, 1.0f);
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "notes.txt") != NULL, "%s", err.msg);
    cr_assert(fs_exists(user));

    /* re-export over a previous export is fine */
    snprintf(dir, sizeof dir, "%s/ok", root);
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);

    /* a write failure part-way leaves neither the new dir nor a temp dir */
    snprintf(dir, sizeof dir, "%s/fail", root);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {300, 300};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    cr_assert_neq(export_saelens(dir, &in, &p, &err), SF_OK);
    cr_assert(!fs_exists(dir));
    snprintf(path, sizeof path, "%s.tmp.%ld", dir, (long)getpid());
    cr_assert(!fs_exists(path));
    sae_params_free(&p);
    fs_remove_tree(root);
}

Test(export, load_back_and_cli_reexport)
{
    const char *root = tmpdir();
    char run[512], fin[600], out[600], path[700];
    snprintf(run, sizeof run, "%s/run", root);
    snprintf(fin, sizeof fin, "%s/final", run);
    sae_params p;
    make_params(&p, 21);
    const float c = 2.0f;
    export_info in = make_info(SAE_ARCH_BATCHTOPK, c);
    sf_err err = {0};
    cr_assert_eq(export_saelens(fin, &in, &p, &err), SF_OK, "%s", err.msg);

    sae_loaded s;
    cr_assert_eq(sae_load(run, 1, &s, &err), SF_OK, "%s", err.msg);
    cr_assert_str_eq(s.kind, "saelens");
    cr_assert_eq(s.arch, SAE_ARCH_BATCHTOPK);
    cr_assert_eq(s.d, D);
    cr_assert_eq(s.n, N);
    cr_assert_eq(s.theta, 0.25f);
    cr_assert_str_eq(s.hook, "blocks.6.hook_resid_post");
    for (int i = 0; i < N * D; i++) {
        cr_assert_eq(s.p.W_enc[i], p.W_enc[i] * c);
        cr_assert_eq(s.p.W_dec[i], p.W_dec[i] / c);
    }
    sae_loaded_free(&s);

    snprintf(out, sizeof out, "%s/sparsify", root);
    char *argv[] = {run, "--format", "sparsify", "--out", out};
    cr_assert_eq(cmd_export(5, argv), 0);
    st_file f;
    snprintf(path, sizeof path, "%s/sae.safetensors", out);
    cr_assert_eq(st_read(path, &f, &err), SF_OK, "%s", err.msg);
    const float *ew = st_get(&f, "encoder.weight")->data;
    for (int i = 0; i < N * D; i++)
        cr_assert_eq(ew[i], p.W_enc[i] * c, "folded once, not twice");
    st_file_free(&f);

    char *bad1[] = {run, "--format", "onnx", "--out", out};
    cr_assert_eq(cmd_export(5, bad1), 2);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none", root);
    char *bad2[] = {missing, "--format", "saelens", "--out", out};
    cr_assert_eq(cmd_export(5, bad2), 2);
    sae_params_free(&p);
    fs_remove_tree(root);
}

/* SAELens' save_model writes sae_weights.safetensors only; 5.x names a TopK SAE "standard" with
 * activation_fn topk and k in activation_fn_kwargs. */
Test(export, loads_saelens5_save_model_layout)
{
    const char *root = tmpdir();
    char path[600];
    float W_enc_t[D * N], W_dec[N * D], b_enc[N], b_dec[D];
    uint32_t r = 5;
    for (int i = 0; i < D * N; i++) {
        W_enc_t[i] = frand(&r);
        W_dec[i] = frand(&r);
    }
    for (int i = 0; i < N; i++)
        b_enc[i] = frand(&r);
    for (int j = 0; j < D; j++)
        b_dec[j] = frand(&r);
    int64_t dn[2] = {D, N}, nd[2] = {N, D}, n1[1] = {N}, d1[1] = {D};
    st_writer w;
    st_writer_init(&w);
    st_writer_add(&w, "W_enc", ST_F32, 2, dn, W_enc_t);
    st_writer_add(&w, "W_dec", ST_F32, 2, nd, W_dec);
    st_writer_add(&w, "b_enc", ST_F32, 1, n1, b_enc);
    st_writer_add(&w, "b_dec", ST_F32, 1, d1, b_dec);
    sf_err err = {0};
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", root);
    cr_assert_eq(st_writer_commit(&w, path, &err), SF_OK, "%s", err.msg);
    st_writer_free(&w);
    const char *cfg = "{\"architecture\": \"standard\", \"d_in\": 6, \"d_sae\": 10, \"activation_fn_str\": "
                      "\"topk\", \"activation_fn_kwargs\": {\"k\": 3}, \"hook_name\": \"blocks.2.hook_resid_pre\"}";
    snprintf(path, sizeof path, "%s/cfg.json", root);
    cr_assert_eq(fs_write_atomic(path, cfg, strlen(cfg), &err), SF_OK, "%s", err.msg);

    sae_loaded s;
    cr_assert_eq(sae_load(root, 1, &s, &err), SF_OK, "%s", err.msg);
    cr_assert_str_eq(s.kind, "saelens");
    cr_assert_eq(s.arch, SAE_ARCH_TOPK);
    cr_assert_eq(s.k, 3);
    cr_assert_eq(s.d, D);
    cr_assert_eq(s.n, N);
    cr_assert_str_eq(s.hook, "blocks.2.hook_resid_pre");
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++)
            cr_assert_eq(s.p.W_enc[i * D + j], W_enc_t[j * N + i]);
    sae_loaded_free(&s);

    /* a plain ReLU SAE is still refused, naming what saeforge runs */
    const char *relu = "{\"architecture\": \"standard\", \"d_in\": 6, \"d_sae\": 10, \"activation_fn_str\": \"relu\"}";
    cr_assert_eq(fs_write_atomic(path, relu, strlen(relu), &err), SF_OK, "%s", err.msg);
    cr_assert_eq(sae_load(root, 1, &s, &err), SF_EINPUT);
    cr_assert_not_null(strstr(err.msg, "standard with activation_fn topk"), "%s", err.msg);
    cr_assert_null(strchr(err.msg, '\n'));
    fs_remove_tree(root);
}

/* Rewrites key's value in dir/cfg.json (top level, or in metadata when meta) to raw JSON text. */
static void set_cfg(const char *dir, const char *key, const char *raw, int meta)
{
    char path[600], *buf;
    size_t len;
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    sf_err err = {0};
    cr_assert_eq(fs_read_all(path, &buf, &len, &err), SF_OK);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    char *at = strstr(meta ? strstr(buf, "\"metadata\"") : buf, pat);
    cr_assert_not_null(at, "%s not in cfg.json", key);
    char *v = at + strlen(pat), *end = v + strcspn(v, ",\n}");
    char *out = malloc(len + strlen(raw) + 1);
    size_t head = (size_t)(v - buf);
    memcpy(out, buf, head);
    strcpy(out + head, raw);
    strcat(out, end);
    cr_assert_eq(fs_write_atomic(path, out, strlen(out), &err), SF_OK);
    free(out);
    free(buf);
}

/* Numbers in a foreign cfg.json are checked before conversion: out of range, fractional or
 * disagreeing with the weights is SF_EINPUT naming the file and key (no UB under UBSan). */
Test(export, foreign_cfg_numbers_range_checked)
{
    const char *root = tmpdir();
    char dir[512];
    snprintf(dir, sizeof dir, "%s/e", root);
    sae_params p;
    make_params(&p, 4);
    export_info in = make_info(SAE_ARCH_TOPK, 1.0f);
    sf_err err = {0};
    struct { const char *key, *raw; int meta; const char *want; } cases[] = {
        {"k", "1e300", 0, "`k` is 1e+300"},
        {"k", "-1", 0, "`k` is -1"},
        {"k", "2.5", 0, "`k` is 2.5"},
        {"k", "\"4\"", 0, "`k` is not a number"},
        {"k", "11", 0, "expected a whole number in 0..10"}, /* k <= n = 10 */
        {"context_size", "1e19", 1, "`context_size` is 1e+19"},
        {"training_tokens", "-5", 1, "`training_tokens` is -5"},
        {"d_in", "1e300", 0, "`d_in` is 1e+300"},
        {"d_in", "7", 0, "d_in 7 / d_sae 10 disagree with the weights (d 6, n 10)"},
        {"d_sae", "9", 0, "d_in 6 / d_sae 9 disagree"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);
        set_cfg(dir, cases[i].key, cases[i].raw, cases[i].meta);
        sae_loaded s;
        int rc = sae_load(dir, 1, &s, &err);
        cr_assert_eq(rc, SF_EINPUT, "%s = %s: rc %d", cases[i].key, cases[i].raw, rc);
        cr_assert(strstr(err.msg, "cfg.json") && strstr(err.msg, cases[i].want), "%s = %s: %s", cases[i].key,
                  cases[i].raw, err.msg);
    }
    /* in range: loads, and the value arrives */
    cr_assert_eq(export_saelens(dir, &in, &p, &err), SF_OK, "%s", err.msg);
    set_cfg(dir, "context_size", "1024", 1);
    sae_loaded s;
    cr_assert_eq(sae_load(dir, 1, &s, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(s.context_size, 1024);
    cr_assert_eq(s.k, K);
    sae_loaded_free(&s);
    sae_params_free(&p);
    fs_remove_tree(root);
}
