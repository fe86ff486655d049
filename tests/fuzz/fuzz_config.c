/* Fuzz harness: the YAML config loader and the resolved-config round trip (load, resolve,
 * config_write, load again: the reloaded config must equal the resolved one, key by key).
 * Input: the YAML text, then optionally NUL-separated --set overrides (at most 4). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "host/config.h"

#define MAX_SETS 4

/* Every field but `source`, compared on its own terms (floats bit for bit, strings as text),
 * independently of config.c's key table. */
static void compare(const sf_config *a, const sf_config *b, const char *when)
{
#define CMP_I(f)                                                                                         \
    if (a->f != b->f)                                                                                   \
        fuzz_fail("%s: " #f " differs: %" PRId64 " vs %" PRId64, when, (int64_t)a->f, (int64_t)b->f);
#define CMP_F(f)                                                                                         \
    if (memcmp(&a->f, &b->f, sizeof(float)))                                                            \
        fuzz_fail("%s: " #f " differs: %.9g vs %.9g", when, (double)a->f, (double)b->f);
#define CMP_S(f)                                                                                         \
    if (strcmp(a->f, b->f))                                                                             \
        fuzz_fail("%s: " #f " differs: '%s' vs '%s'", when, a->f, b->f);
    CMP_I(seed) CMP_S(out_dir) CMP_I(backend)
    CMP_S(data.path) CMP_S(data.eval_path) CMP_I(data.eval_tokens) CMP_I(data.shuffle_buffer)
    CMP_I(data.bad_rows) CMP_I(data.normalize)
    CMP_I(sae.arch) CMP_I(sae.n_latents) CMP_I(sae.expansion) CMP_I(sae.k) CMP_F(sae.gsae_beta)
    CMP_I(sae.n_prefixes)
    for (int i = 0; i < a->sae.n_prefixes && i < SAE_MAX_PREFIXES; i++)
        CMP_I(sae.prefixes[i])
    CMP_I(sae.aux_k) CMP_F(sae.aux_alpha) CMP_I(sae.dead_tokens)
    CMP_I(train.batch_tokens) CMP_I(train.total_tokens) CMP_F(train.lr) CMP_F(train.lr_min)
    CMP_I(train.warmup_steps) CMP_I(train.schedule) CMP_F(train.decay_start) CMP_I(train.k_start)
    CMP_I(train.k_anneal_steps) CMP_F(train.grad_clip) CMP_I(train.precision) CMP_I(train.threads)
    CMP_I(train.eval_every_steps)
    CMP_I(checkpoint.every_steps) CMP_I(checkpoint.keep)
    CMP_I(log.every_steps) CMP_I(log.progress)
#undef CMP_I
#undef CMP_F
#undef CMP_S
}

/* The data width the config is resolved for: varied with the input so d-dependent defaults
 * (n = expansion * d, aux_k = d / 2, lr from n, matryoshka prefixes) are all exercised. */
static int pick_d(size_t size)
{
    static const int ds[] = {1, 3, 64, 768, 4096, 65536};
    return ds[size % (sizeof ds / sizeof ds[0])];
}

int fuzz_config_one(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t ylen = nul ? (size_t)(nul - data) : size;
    char in[512], out[512];
    fuzz_put_file("in.yaml", data, ylen, in, sizeof in);
    snprintf(out, sizeof out, "%s/resolved.yaml", fuzz_tmpdir());

    /* the tail: overrides, each NUL-terminated (the copy adds the last NUL) */
    char *tail = NULL;
    const char *sets[MAX_SETS];
    int n_sets = 0;
    if (nul) {
        size_t tl = size - ylen - 1;
        tail = malloc(tl + 1);
        memcpy(tail, nul + 1, tl);
        tail[tl] = 0;
        for (char *p = tail; p <= tail + tl && n_sets < MAX_SETS; p += strlen(p) + 1)
            sets[n_sets++] = p;
    }

    sf_config *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    sf_err err = {0};
    int d = pick_d(size);
    int rc = config_load(in, sets, n_sets, a, &err);
    if (rc) {
        fuzz_check_err(rc, &err, "config_load");
        goto done;
    }
    if ((rc = config_validate(a, d, &err))) {
        fuzz_check_err(rc, &err, "config_validate");
        goto done;
    }
    config_resolve(a, d);
    if ((rc = config_write(a, out, &err)))
        fuzz_fail("config_write failed: %s", err.msg);
    if ((rc = config_load(out, NULL, 0, b, &err)))
        fuzz_fail("the resolved config does not load: %s", err.msg);
    compare(a, b, "reloaded vs resolved");
    if ((rc = config_validate(b, d, &err)))
        fuzz_fail("the reloaded config fails validation for d=%d: %s", d, err.msg);
    config_resolve(b, d);
    compare(a, b, "re-resolved vs resolved");
done:
    free(a);
    free(b);
    free(tail);
    return 0;
}

#ifdef SF_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_config_one(data, size); }
#endif
