/* The emulated NCCL (kernels/emu/emu_nccl.h) under mpirun: `ok` checks every reduction the
 * backend uses, in place and out of place, against sums computed here, and the refusals
 * (host buffers, a dead stream, MPI-less use is covered by the id check); `mismatch` makes
 * rank 1 call with another count, which must abort naming the disagreement (run.sh expects
 * the failure and the message). */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_compat.h"
#include "kernels/nccl_compat.h"

static int fails;
#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "nccl-emu-check: ");                                              \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            fails++;                                                                          \
        }                                                                                     \
    } while (0)

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "ok";
    MPI_Init(NULL, NULL);
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (rank == 0)
        NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t comm;
    NCCL_CHECK(ncclCommInitRank(&comm, world, id, rank));
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    enum { C = 1000 };
    if (!strcmp(mode, "mismatch")) {
        double *d;
        CUDA_CHECK(cudaMalloc((void **)&d, C * sizeof(double)));
        /* rank 1 reduces one element fewer: a real run would hang or corrupt */
        NCCL_CHECK(ncclAllReduce(d, d, rank == 1 ? C - 1 : C, ncclFloat64, ncclSum, comm, s));
        fprintf(stderr, "nccl-emu-check: a mismatched call went through\n");
        return 1;
    }
    /* sums of float / double / int64, min of uint32, max of int32 */
    float hf[C], rf[C];
    double hd[C], rd[C];
    int64_t hl[C], rl[C];
    unsigned hu[C], ru[C];
    for (int i = 0; i < C; i++) {
        hf[i] = (float)(rank + 1) * 0.5f + (float)i;
        hd[i] = (double)(rank + 1) * 0.25 + (double)i * 1e-3;
        hl[i] = ((int64_t)1 << 40) * (rank + 1) + i;
        hu[i] = (unsigned)(1000 + 7 * rank + (i % 5) * (rank == 1 ? -1 : 1) + 10);
    }
    float *df, *df2;
    double *dd;
    int64_t *dl;
    unsigned *du;
    CUDA_CHECK(cudaMalloc((void **)&df, sizeof hf));
    CUDA_CHECK(cudaMalloc((void **)&df2, sizeof hf));
    CUDA_CHECK(cudaMalloc((void **)&dd, sizeof hd));
    CUDA_CHECK(cudaMalloc((void **)&dl, sizeof hl));
    CUDA_CHECK(cudaMalloc((void **)&du, sizeof hu));
    CUDA_CHECK(cudaMemcpy(df, hf, sizeof hf, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dd, hd, sizeof hd, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dl, hl, sizeof hl, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(du, hu, sizeof hu, cudaMemcpyHostToDevice));
    NCCL_CHECK(ncclAllReduce(df, df2, C, ncclFloat32, ncclSum, comm, s)); /* out of place */
    NCCL_CHECK(ncclAllReduce(dd, dd, C, ncclFloat64, ncclSum, comm, s));
    NCCL_CHECK(ncclAllReduce(dl, dl, C, ncclInt64, ncclSum, comm, s));
    NCCL_CHECK(ncclAllReduce(du, du, C, ncclUint32, ncclMin, comm, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    CUDA_CHECK(cudaMemcpy(rf, df2, sizeof rf, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(rd, dd, sizeof rd, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(rl, dl, sizeof rl, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(ru, du, sizeof ru, cudaMemcpyDeviceToHost));
    float src_after[C];
    CUDA_CHECK(cudaMemcpy(src_after, df, sizeof src_after, cudaMemcpyDeviceToHost));
    for (int i = 0; i < C; i++) {
        float ef = 0.0f;
        double ed = 0.0;
        int64_t el = 0;
        unsigned eu = 0xffffffffu;
        for (int r = 0; r < world; r++) {
            ef += (float)(r + 1) * 0.5f + (float)i;
            ed += (double)(r + 1) * 0.25 + (double)i * 1e-3;
            el += ((int64_t)1 << 40) * (r + 1) + i;
            unsigned u = (unsigned)(1000 + 7 * r + (i % 5) * (r == 1 ? -1 : 1) + 10);
            eu = u < eu ? u : eu;
        }
        EXPECT(rf[i] == ef, "float sum [%d] %g vs %g", i, (double)rf[i], (double)ef);
        EXPECT(src_after[i] == hf[i], "out-of-place send buffer changed at %d", i);
        EXPECT(rd[i] == ed || (rd[i] - ed) * (rd[i] - ed) < 1e-24, "double sum [%d]", i);
        EXPECT(rl[i] == el, "int64 sum [%d]", i);
        EXPECT(ru[i] == eu, "uint32 min [%d] %u vs %u", i, ru[i], eu);
    }
    /* refusals: NCCL works on device memory, on live streams */
    if (rank == 0)
        fprintf(stderr, "nccl-emu-check: three refusals follow on every rank, as they must:\n");
    EXPECT(ncclAllReduce(hf, hf, C, ncclFloat32, ncclSum, comm, s) == ncclInvalidArgument,
           "a host buffer was accepted");
    cudaStream_t dead;
    CUDA_CHECK(cudaStreamCreate(&dead));
    CUDA_CHECK(cudaStreamDestroy(dead));
    EXPECT(ncclAllReduce(df, df, C, ncclFloat32, ncclSum, comm, dead) == ncclInvalidArgument,
           "a destroyed stream was accepted");
    ncclUniqueId bogus;
    memset(&bogus, 0x11, sizeof bogus);
    ncclComm_t c2;
    EXPECT(ncclCommInitRank(&c2, world, bogus, rank) == ncclInvalidArgument,
           "an id not from ncclGetUniqueId was accepted");
    NCCL_CHECK(ncclCommDestroy(comm));
    int bad = fails, worst = 0;
    MPI_Allreduce(&bad, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0)
        printf("nccl-emu-check: %s\n", worst ? "FAILED" : "ok");
    MPI_Finalize();
    return worst ? 1 : 0;
}
