/* Fuzz harness: the HDF5 shard validator. The input is written to a file and opened as a shard
 * (with and without the gradients requirement); an accepted shard must describe itself
 * consistently and its first rows must read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "fuzz.h"

/* Rows x d read back from an accepted shard; bigger widths only cost time. */
#define MAX_READ 65536

int fuzz_shard_one(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_put_file("in.h5", data, size, path, sizeof path);
    for (int need_grad = 0; need_grad < 2; need_grad++) {
        shard_set set;
        sf_err err = {0};
        int rc = shard_set_open(&set, path, need_grad, &err);
        if (rc) {
            fuzz_check_err(rc, &err, "shard_set_open");
            continue;
        }
        if (set.n_files != 1 || set.rows <= 0 || set.d < 1 || set.files[0].rows != set.rows ||
            (need_grad && !set.has_gradients))
            fuzz_fail("accepted shard is inconsistent (files %d, rows %lld, d %d)", set.n_files,
                      (long long)set.rows, set.d);
        if (memchr(set.model, 0, sizeof set.model) == NULL || memchr(set.hook, 0, sizeof set.hook) == NULL)
            fuzz_fail("model/hook attribute not terminated");
        int64_t count = set.rows < 4 ? set.rows : 4;
        if (count * set.d <= MAX_READ) {
            float *x = malloc(sizeof *x * (size_t)(count * set.d));
            float *g = set.has_gradients ? malloc(sizeof *g * (size_t)(count * set.d)) : NULL;
            rc = shard_set_read(&set, set.rows - count, count, x, g, &err);
            if (rc)
                fuzz_check_err(rc, &err, "shard_set_read");
            free(x);
            free(g);
        }
        shard_set_free(&set);
    }
    return 0;
}

#ifdef SF_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_shard_one(data, size); }
#endif
