/* Kernel benchmark of the selection kernels (select.cu, bselect.cu) on the real GPU: row top-k
 * and batch top-k at a training shape, reported as time and effective bandwidth of reading pre.
 * Usage: kern_select [B n k reps] (defaults 8192 32768 32 20). Prints one JSON line per kernel. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/bselect.cuh"
#include "kernels/cuda_compat.h"
#include "kernels/select.cuh"

int main(int argc, char **argv)
{
    const int B = argc > 1 ? atoi(argv[1]) : 8192, n = argc > 2 ? atoi(argv[2]) : 32768;
    const int k = argc > 3 ? atoi(argv[3]) : 32, reps = argc > 4 ? atoi(argv[4]) : 20;
    const size_t cnt = (size_t)B * n;
    float *h = malloc(cnt * sizeof(float));
    uint64_t s = 12345;
    for (size_t t = 0; t < cnt; t++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[t] = (float)((int64_t)(s >> 40) - (1 << 23)) * (1.0f / (1 << 23)); /* [-1, 1) */
    }
    float *d_pre, *d_val, *d_mk;
    int *d_lat, *d_rp;
    void *d_ws;
    CUDA_CHECK(cudaMalloc((void **)&d_pre, cnt * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(d_pre, h, cnt * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc((void **)&d_lat, (size_t)B * k * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_val, (size_t)B * k * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&d_rp, (size_t)(B + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_mk, sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_ws, bselect_workspace_bytes(B, n)));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    const double gb = (double)cnt * sizeof(float) / 1e9;
    for (int which = 0; which < 5; which++) {
        const char *name = which == 0 ? "topk_auto" : which == 1 ? "topk_global" : which == 2 ? "topk_cached_512" : which == 3 ? "bselect" : "threshold";
        for (int r = -2; r < reps; r++) {
            if (r == 0)
                CUDA_CHECK(cudaEventRecord(e0, 0));
            if (which == 0)
                select_topk_cuda(d_pre, NULL, 0.0f, NULL, B, n, k, d_lat, d_val, 0);
            else if (which == 1)
                select_topk_cuda_path(d_pre, NULL, 0.0f, NULL, B, n, k, d_lat, d_val, 0, 0, 0);
            else if (which == 2)
                select_topk_cuda_path(d_pre, NULL, 0.0f, NULL, B, n, k, d_lat, d_val, 1, 512, 0);
            else if (which == 3)
                bselect_cuda(d_pre, B, n, (int64_t)B * k, d_rp, d_lat, d_val, d_mk, d_ws, 0);
            else
                select_threshold_cuda(d_pre, 0.9995f, B, n, (int64_t)B * k, d_rp, d_lat, d_val, 0);
        }
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        ms /= reps;
        char path[32] = ""; /* which bselect path ran (BSEL_PATH_*, bselect.cuh) */
        if (which == 3)
            snprintf(path, sizeof path, ", \"path\": %d", bselect_path_debug(d_ws));
        printf("{\"kernel\": \"%s\", \"B\": %d, \"n\": %d, \"k\": %d, \"ms\": %.4f, \"GBps_pre_once\": %.1f%s}\n",
               name, B, n, k, ms, gb / (ms * 1e-3), path);
    }
    return 0;
}
