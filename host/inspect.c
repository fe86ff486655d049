/* `saeforge inspect PATH`: describes a shard file or shard set (dir/glob), a checkpoint dir, a
 * run dir, an export dir or a safetensors file, so a user can see what a path holds. */
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/shard.h"
#include "ckpt.h"
#include "cmd.h"
#include "config.h"
#include "fsutil.h"
#include "sweep.h"
#include "json.h"
#include "safetensors.h"

static void inspect_usage(FILE *f)
{
    fprintf(f, "usage: saeforge inspect PATH\n"
               "  PATH: an activation shard (.h5), a directory or glob of shards, a checkpoint dir,\n"
               "        a run dir, an export dir or a .safetensors file.\n");
}

static int has_file(const char *dir, const char *name)
{
    char p[4400];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        return 0;
    return fs_exists(p);
}

static void print_shape(const int64_t *shape, int ndim)
{
    printf("[");
    for (int i = 0; i < ndim; i++)
        printf("%s%" PRId64, i ? ", " : "", shape[i]);
    printf("]");
}

static int inspect_safetensors(const char *path)
{
    st_file f;
    sf_err err = {0};
    if (st_read(path, &f, &err))
        return cli_error(2, "%s", err.msg);
    printf("safetensors file %s: %d tensor%s, %zu bytes\n", path, f.n, f.n == 1 ? "" : "s", f.len);
    char q[256], q2[256];
    for (int i = 0; i < f.n; i++) {
        printf("  %-24s %-5s ", sf_quote_str(q, sizeof q, f.t[i].name), st_dtype_name(f.t[i].dtype));
        print_shape(f.t[i].shape, f.t[i].ndim);
        printf("\n");
    }
    if (f.n_meta) {
        printf("metadata:\n");
        for (int i = 0; i < f.n_meta; i++)
            printf("  %s = %s\n", sf_quote_str(q, sizeof q, f.meta[i].key), sf_quote_str(q2, sizeof q2, f.meta[i].value));
    }
    st_file_free(&f);
    return 0;
}

static int inspect_shards(const char *spec)
{
    shard_set set;
    sf_err err = {0};
    memset(&set, 0, sizeof set);
    if (shard_set_open(&set, spec, 0, &err))
        return cli_error(2, "%s", err.msg);
    printf("activation shards %s: %d file%s, %" PRId64 " rows, d=%d, dtype %s, gradients %s, tokens %s\n", spec,
           set.n_files, set.n_files == 1 ? "" : "s", set.rows, set.d, shard_dtype_name(set.dtype),
           set.has_gradients ? "yes" : "no", set.has_tokens ? "yes" : "no");
    if (set.model[0] || set.hook[0] || set.context_size >= 0)
    {
        char qm[SF_QUOTE_MAX * 2], qh[SF_QUOTE_MAX * 2];
        printf("attributes: model '%s', hook '%s', context_size %" PRId64 "\n",
               sf_quote_str(qm, sizeof qm, set.model), sf_quote_str(qh, sizeof qh, set.hook), set.context_size);
    }
    int show = set.n_files <= 20 ? set.n_files : 10;
    for (int i = 0; i < show; i++) {
        const shard_file *f = &set.files[i];
        printf("  %s: %" PRId64 " rows from row %" PRId64 ", ", f->path, f->rows, f->row0);
        if (f->chunk_rows > 0)
            printf("chunked, %" PRId64 " rows per chunk\n", f->chunk_rows);
        else
            printf("contiguous\n");
    }
    if (show < set.n_files)
        printf("  ... and %d more files\n", set.n_files - show);
    shard_set_free(&set);
    return 0;
}

/* One line about a checkpoint dir; returns 0 when it reads. */
static int describe_checkpoint(const char *dir, const char *indent)
{
    ckpt_meta m;
    sf_err err = {0};
    if (ckpt_peek(dir, &m, &err)) {
        printf("%scheckpoint %s: unreadable (%s)\n", indent, dir, err.msg);
        return -1;
    }
    char qa[SF_QUOTE_MAX];
    printf("%scheckpoint %s: step %" PRId64 ", %" PRId64 " tokens, arch %s, d=%d, n=%d, input scale %g, "
           "%.1f s trained%s\n",
           indent, dir, m.step, m.tokens_seen, sf_quote_str(qa, sizeof qa, m.arch[0] ? m.arch : "?"), m.d, m.n, m.input_scale, m.elapsed_s,
           has_file(dir, "DONE") ? "" : " (no DONE marker: incomplete)");
    return 0;
}

/* A count a foreign cfg.json states, shown only once it is a whole number in range. */
static int cfg_count(const json_value *v, const char *key, const char *path, int64_t *out)
{
    if (!json_get_int(v, key, 0, INT32_MAX, 0, out))
        return 0;
    const json_value *m = json_get(v, key);
    if (m->type == JSON_NULL) {
        *out = 0;
        return 0;
    }
    char shown[48] = "not a number";
    if (m->type == JSON_NUM)
        snprintf(shown, sizeof shown, "%.6g", m->num);
    cli_error(2, "%s: `%s` is %s; expected a whole number in 0..%d; fix the file or export the SAE again", path,
              key, shown, INT32_MAX);
    return -1;
}

/* One line about an export dir; returns 2 (after the error line) when its cfg.json is unusable. */
static int describe_export(const char *dir, const char *indent)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    char *buf;
    size_t len;
    sf_err err = {0};
    json_value v;
    char why[128];
    if (fs_read_all(path, &buf, &len, &err)) {
        printf("%s%s: %s\n", indent, path, err.msg);
        return 0;
    }
    if (json_parse(buf, len, &v, why, sizeof why)) {
        printf("%s%s: not valid JSON (%s)\n", indent, path, why);
        free(buf);
        return 0;
    }
    free(buf);
    int64_t d = 0, n = 0, k = 0;
    int sparsify = json_get(&v, "num_latents") != NULL;
    if (cfg_count(&v, "d_in", path, &d) || cfg_count(&v, sparsify ? "num_latents" : "d_sae", path, &n) ||
        cfg_count(&v, "k", path, &k)) {
        json_value_free(&v);
        return 2;
    }
    char q1[SF_QUOTE_MAX], q2[SF_QUOTE_MAX], q3[SF_QUOTE_MAX];
    if (sparsify) {
        printf("%ssparsify export %s: d_in %lld, num_latents %lld, k %lld\n", indent, dir, (long long)d,
               (long long)n, (long long)k);
    } else {
        const json_value *meta = json_get(&v, "metadata");
        printf("%sSAELens export %s: architecture %s, d_in %lld, d_sae %lld", indent, dir,
               sf_quote_str(q1, sizeof q1, json_get_str(&v, "architecture", "?")), (long long)d, (long long)n);
        const char *act = json_get_str(&v, "activation_fn_str", NULL);
        if (act && strcmp(act, json_get_str(&v, "architecture", "")))
            printf(", activation %s", sf_quote_str(q2, sizeof q2, act)); /* SAELens 5.x: standard + topk */
        const json_value *kw = json_get(&v, "activation_fn_kwargs");
        if (!json_get(&v, "k") && json_get(kw, "k") && cfg_count(kw, "k", path, &k)) {
            json_value_free(&v);
            return 2;
        }
        if (json_get(&v, "k") || json_get(kw, "k"))
            printf(", k %lld", (long long)k);
        const char *model = json_get_str(meta, "model_name", json_get_str(&v, "model_name", NULL));
        const char *hook = json_get_str(meta, "hook_name", json_get_str(&v, "hook_name", NULL));
        if (model || hook)
            printf(", model %s, hook %s", sf_quote_str(q2, sizeof q2, model ? model : "?"),
                   sf_quote_str(q3, sizeof q3, hook ? hook : "?"));
        printf("%s\n", has_file(dir, "sparsity.safetensors") ? ", with sparsity" : "");
    }
    json_value_free(&v);
    return 0;
}

static void last_line(const char *path, char *out, size_t cap)
{
    char *buf;
    size_t len;
    out[0] = '\0';
    if (fs_read_all(path, &buf, &len, NULL))
        return;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    char *start = buf + len;
    while (start > buf && start[-1] != '\n')
        start--;
    snprintf(out, cap, "%s", start);
    free(buf);
}

static int inspect_run(const char *dir)
{
    char path[4400];
    printf("run %s\n", dir);
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    if (fs_exists(path)) {
        sf_config *c = malloc(sizeof *c);
        sf_err err = {0};
        if (c && config_load(path, NULL, 0, c, &err) == SF_OK) {
            printf("  config: arch %s, ", config_arch_name(c->sae.arch));
            if (c->sae.n_latents > 0)
                printf("n %" PRId64, c->sae.n_latents);
            else
                printf("expansion %d", c->sae.expansion);
            printf(", k %d, batch %d, total_tokens %" PRId64 ", data %s\n", c->sae.k, c->train.batch_tokens,
                   c->train.total_tokens, c->data.path);
        } else {
            printf("  config: %s\n", c ? err.msg : "out of memory");
        }
        free(c);
    } else {
        printf("  config: none (no config.yaml)\n");
    }
    char ck[4400];
    sf_err err = {0};
    int r = ckpt_find_latest(dir, ck, sizeof ck, &err);
    if (r == 1)
        describe_checkpoint(ck, "  newest complete ");
    else if (r == 0)
        printf("  checkpoints: none complete\n");
    else
        printf("  checkpoints: %s\n", err.msg);
    snprintf(path, sizeof path, "%s/final", dir);
    if (fs_is_dir(path)) {
        if (describe_export(path, "  final: "))
            return 2;
    } else
        printf("  final: not written (the run has not finished)\n");
    snprintf(path, sizeof path, "%s/stats/feature_stats.h5", dir);
    printf("  stats: %s\n", fs_exists(path) ? "stats/feature_stats.h5, stats/feature_stats.csv" : "none");
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char line[2048];
    last_line(path, line, sizeof line);
    printf("  last metrics: %s\n", line[0] ? line : "(none)");
    return 0;
}

int cmd_inspect(int argc, char **argv)
{
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        inspect_usage(stdout);
        return 0;
    }
    if (argc != 1)
        return cli_error(2, "inspect: need exactly one PATH; see saeforge inspect --help");
    const char *path = argv[0];
    if (!fs_exists(path)) {
        if (strpbrk(path, "*?["))
            return inspect_shards(path);
        return cli_error(2, "inspect: %s does not exist; give a shard, checkpoint, run or safetensors path", path);
    }
    if (fs_is_dir(path)) {
        if (sweep_is_dir(path)) {
            sf_err err = {0};
            return sweep_print_table(path, &err) ? cli_error(2, "%s", err.msg) : 0;
        }
        if (has_file(path, "state.safetensors") && has_file(path, "sae.safetensors"))
            return describe_checkpoint(path, "") ? 2 : 0;
        if (has_file(path, "config.yaml") || has_file(path, "checkpoints") || has_file(path, "final") ||
            has_file(path, "metrics.jsonl"))
            return inspect_run(path);
        /* sae_weights.safetensors alone: saved by SAELens' save_model */
        const char *weights = has_file(path, "sae.safetensors") ? "sae.safetensors" : "sae_weights.safetensors";
        if (has_file(path, "cfg.json") && has_file(path, weights)) {
            if (describe_export(path, ""))
                return 2;
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", path, weights);
            return inspect_safetensors(p);
        }
        return inspect_shards(path);
    }
    size_t l = strlen(path);
    if (l > 12 && !strcmp(path + l - 12, ".safetensors"))
        return inspect_safetensors(path);
    htri_t is_h5;
    H5E_BEGIN_TRY { is_h5 = H5Fis_hdf5(path); }
    H5E_END_TRY;
    if (is_h5 > 0)
        return inspect_shards(path);
    /* maybe a safetensors file under another name */
    st_file f;
    if (st_read(path, &f, NULL) == SF_OK) {
        st_file_free(&f);
        return inspect_safetensors(path);
    }
    return cli_error(2, "inspect: %s is neither an HDF5 shard nor a safetensors file; give a shard, checkpoint, "
                        "run or safetensors path", path);
}
