/* Kernel benchmark: sparse decode (decode_cpu; decode_cuda in CUDA builds). Each implementation
 * is first checked against an independent reference (double accumulation here; the CPU twin for
 * the CUDA kernel) and the program exits 1 on a mismatch; then warm-up, repeats, min and median.
 * Usage: kern_decode [--B B] [--d D] [--n N] [--k K] [--reps R] [--out FILE] [--run ID] */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/decode.h"
#include "bench_util.h"
#include "kcommon.h"

#ifdef SF_WITH_CUDA
#include "../kernels/cuda_compat.h"
#include "../kernels/decode.cuh"
#endif

int main(int argc, char **argv)
{
    kern_opts o = {.B = 4096, .d = 768, .n = 16384, .k = 32, .reps = 10};
    if (kern_parse(&o, argc, argv, "kern_decode"))
        return 2;
    const int B = o.B, d = o.d, n = o.n, k = o.k;
    sf_rng rng;
    rng_seed(&rng, 5, 0);
    float *W = bench_alloc((size_t)n * d * 4), *bias = bench_alloc((size_t)d * 4);
    for (size_t i = 0; i < (size_t)n * d; i++)
        W[i] = (float)rng_normal(&rng) * 0.04f;
    for (int j = 0; j < d; j++)
        bias[j] = (float)rng_normal(&rng);
    int *row_ptr = bench_alloc(((size_t)B + 1) * sizeof(int)), *lat = bench_alloc((size_t)B * k * sizeof(int));
    float *val = bench_alloc((size_t)B * k * 4);
    kern_random_code(&rng, B, n, k, row_ptr, lat, val);
    const int limit = n - n / 8; /* a Matryoshka-like prefix, so the limit test is exercised */

    /* independent reference */
    float *ref = bench_alloc((size_t)B * d * 4), *out = bench_alloc((size_t)B * d * 4);
    double *acc = bench_alloc((size_t)d * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < d; j++)
            acc[j] = bias[j];
        for (int p = row_ptr[b]; p < row_ptr[b + 1]; p++)
            if (lat[p] >= 0 && lat[p] < limit)
                for (int j = 0; j < d; j++)
                    acc[j] += (double)val[p] * W[(size_t)lat[p] * d + j];
        for (int j = 0; j < d; j++)
            ref[(size_t)b * d + j] = (float)acc[j];
    }
    decode_cpu(row_ptr, lat, val, W, bias, B, d, limit, out);
    double err = kern_max_err(out, ref, (size_t)B * d, 1e-5, 1e-4);
    if (err > 1.0) {
        fprintf(stderr, "kern_decode: decode_cpu differs from the reference (scaled error %.3g)\n", err);
        return 1;
    }
    /* bytes moved: the gathered rows, the codes, the output */
    const double bytes = (double)B * k * d * 4 + (double)B * k * 8 + (double)B * d * 4;
    bench_machine mach;
    bench_machine_init(&mach);
    double ts[KERN_MAX_REPS];
    decode_cpu(row_ptr, lat, val, W, bias, B, d, limit, out);
    for (int r = 0; r < o.reps; r++) {
        double t0 = bench_now();
        decode_cpu(row_ptr, lat, val, W, bias, B, d, limit, out);
        ts[r] = bench_now() - t0;
    }
    kern_report(&o, &mach, "decode", "cpu", ts, o.reps, bytes, 0.0, err);

#ifdef SF_WITH_CUDA
    bench_machine_fill_gpu(&mach);
    float *dW, *dbias, *dval, *dout;
    int *drp, *dlat;
    CUDA_CHECK(cudaMalloc((void **)&dW, (size_t)n * d * 4));
    CUDA_CHECK(cudaMalloc((void **)&dbias, (size_t)d * 4));
    CUDA_CHECK(cudaMalloc((void **)&dval, (size_t)B * k * 4));
    CUDA_CHECK(cudaMalloc((void **)&dout, (size_t)B * d * 4));
    CUDA_CHECK(cudaMalloc((void **)&drp, ((size_t)B + 1) * 4));
    CUDA_CHECK(cudaMalloc((void **)&dlat, (size_t)B * k * 4));
    CUDA_CHECK(cudaMemcpy(dW, W, (size_t)n * d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dbias, bias, (size_t)d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dval, val, (size_t)B * k * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(drp, row_ptr, ((size_t)B + 1) * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dlat, lat, (size_t)B * k * 4, cudaMemcpyHostToDevice));
    decode_cuda(drp, dlat, dval, dW, dbias, B, d, limit, dout, 0);
    CUDA_CHECK(cudaMemcpy(ref, dout, (size_t)B * d * 4, cudaMemcpyDeviceToHost));
    decode_cpu(row_ptr, lat, val, W, bias, B, d, limit, out);
    double gerr = kern_max_err(ref, out, (size_t)B * d, 1e-5, 1e-4);
    if (gerr > 1.0) {
        fprintf(stderr, "kern_decode: decode_cuda differs from decode_cpu (scaled error %.3g)\n", gerr);
        return 1;
    }
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    for (int r = -2; r < o.reps; r++) {
        CUDA_CHECK(cudaEventRecord(e0, 0));
        decode_cuda(drp, dlat, dval, dW, dbias, B, d, limit, dout, 0);
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 0)
            ts[r] = ms * 1e-3;
    }
    kern_report(&o, &mach, "decode", "cuda", ts, o.reps, bytes, 0.0, gerr);
    cudaFree(dW);
    cudaFree(dbias);
    cudaFree(dval);
    cudaFree(dout);
    cudaFree(drp);
    cudaFree(dlat);
#endif
    free(W);
    free(bias);
    free(row_ptr);
    free(lat);
    free(val);
    free(ref);
    free(out);
    free(acc);
    return 0;
}
