/* ThreadSanitizer check of the emulator without Criterion (Criterion cannot start under TSan:
 * Snaipe/Criterion#274). `race_check clean` runs every well-formed test kernel under three
 * schedules and must produce no report; `race_check racy` runs a kernel that reads shared
 * memory written by another thread without a barrier, which TSan must report.
 * Driven by `make emu-race-check` (kernels/emu/emu.mk). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/emu_kernels/emu_test_kernels.h"

static void *dev(size_t bytes)
{
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes));
    CUDA_CHECK(cudaMemset(p, 0, bytes));
    return p;
}

static int run_clean(void)
{
    const char *specs[] = {"forward", "reverse", "random:5"};
    float *x = dev(sizeof(float) * 4 * 256), *out = dev(sizeof(float) * 4 * 256);
    int *in = dev(sizeof(int) * 64), *wout = dev(sizeof(int) * 64 * TK_WARP_SLOTS);
    int *c = dev(sizeof(int) * 16);
    float *f = dev(sizeof(float));
    double *d = dev(sizeof(double));
    unsigned long long *u = dev(sizeof(unsigned long long));
    int *pred = dev(sizeof(int) * 2 * 96), *pout = dev(sizeof(int) * 2 * 3);
    int *dims = dev(sizeof(int) * 4 * 24 * 3), *shared_out = dev(sizeof(int) * 64);
    for (int i = 0; i < 3; i++) {
        if (emu_set_schedule(specs[i]) != 0)
            return 2;
        tk_block_sum(x, out, 2, 2, 0);
        tk_warp(in, wout, 64, 0);
        tk_atomics(c, f, d, u, 3, 0);
        tk_dyn_shared(x, out, out + 512, 2, 128, 0);
        tk_sync_preds(pred, pout, 2, 0);
        tk_dims(dims, 0);
        tk_not_racy(shared_out);
    }
    int got[16];
    CUDA_CHECK(cudaMemcpy(got, shared_out, sizeof got, cudaMemcpyDeviceToHost));
    printf("race_check clean: ran %llu launches\n", (unsigned long long)emu_get_stats().launches);
    return got[0] == 42 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "clean"))
        return run_clean();
    if (argc == 2 && !strcmp(argv[1], "racy")) {
        int *o = dev(sizeof(int) * 64);
        tk_racy(o);
        printf("race_check racy: kernel ran\n");
        return 0;
    }
    fprintf(stderr, "usage: race_check clean|racy\n");
    return 2;
}
