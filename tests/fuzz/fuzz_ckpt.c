/* Fuzz harness: the checkpoint loader (ckpt_peek, then ckpt_load with what peek found).
 * Input: 4-byte little-endian length L, L bytes of sae.safetensors, the rest state.safetensors;
 * written with a DONE marker into a checkpoint dir. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "host/ckpt.h"
#include "kernels/backend.h"

/* Larger checkpoints are valid but only cost time here. */
#define MAX_ELEMS (1 << 16)

int fuzz_ckpt_one(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t l = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    if (l > size - 4)
        l = size - 4;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/step_1", fuzz_tmpdir());
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        fuzz_fail("cannot create %s", dir);
    fuzz_put_file("step_1/sae.safetensors", data + 4, l, path, sizeof path);
    fuzz_put_file("step_1/state.safetensors", data + 4 + l, size - 4 - l, path, sizeof path);
    fuzz_put_file("step_1/DONE", "", 0, path, sizeof path);

    ckpt_meta m;
    sf_err err = {0};
    int rc = ckpt_peek(dir, &m, &err);
    if (rc) {
        fuzz_check_err(rc, &err, "ckpt_peek");
        return 0;
    }
    if (m.d <= 0 || m.n <= 0)
        fuzz_fail("ckpt_peek accepted d=%d n=%d", m.d, m.n);
    if ((int64_t)m.d * m.n > MAX_ELEMS)
        return 0;
    sae_params p;
    sae_state s;
    sae_params_alloc(&p, m.d, m.n);
    sae_state_alloc(&s, m.d, m.n);
    ckpt_meta lm = {0};
    lm.d = m.d;
    lm.n = m.n;
    memcpy(lm.arch, m.arch, sizeof lm.arch);
    rc = ckpt_load(dir, &p, &s, &lm, &err);
    if (rc)
        fuzz_check_err(rc, &err, "ckpt_load");
    else if (lm.step < 0 || lm.tokens_seen < 0 || lm.data_epoch < 0 || lm.data_position < 0 ||
             lm.skipped_rows < 0 || lm.scale_batches < 0 || s.adam_t < 0 || !(lm.input_scale > 0) ||
             !(lm.elapsed_s >= 0) || lm.input_scale > 3.4e38f)
        fuzz_fail("ckpt_load accepted out-of-range counters (step %lld, tokens %lld, position %lld, "
                  "input_scale %g)", (long long)lm.step, (long long)lm.tokens_seen, (long long)lm.data_position,
                  (double)lm.input_scale);
    else if (lm.step != m.step || lm.tokens_seen != m.tokens_seen || lm.d != m.d || lm.n != m.n)
        fuzz_fail("ckpt_load and ckpt_peek disagree (step %lld/%lld)", (long long)lm.step, (long long)m.step);
    sae_params_free(&p);
    sae_state_free(&s);
    return 0;
}

#ifdef SF_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_ckpt_one(data, size); }
#endif
