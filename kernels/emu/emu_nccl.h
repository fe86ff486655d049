/* NCCL under emulation: the slice of nccl.h that the CUDA backend calls, run over MPI on host
 * memory (emulated device memory is host memory). Every rank of the communicator must be an MPI
 * process of MPI_COMM_WORLD, and the host must have started MPI (host/dist_mpi.c) before
 * ncclCommInitRank. Collectives run when called, after the work queued on their stream (and
 * what it waits for) has run, so stream order holds (emu_nccl.cpp says why they are not
 * queued). */
#ifndef SF_EMU_NCCL_H
#define SF_EMU_NCCL_H

#include <stddef.h>

#include "emu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct emu_nccl_comm *ncclComm_t;

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
    ncclNumResults = 8
} ncclResult_t;

typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3 } ncclRedOp_t;

/* The values of nccl.h; the emulator reduces the types the backend uses. */
typedef enum {
    ncclInt32 = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat32 = 7,
    ncclFloat64 = 8
} ncclDataType_t;

const char *ncclGetErrorString(ncclResult_t r);
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
/* Collective over every process of MPI_COMM_WORLD; checks that they passed one id, nranks
 * equal to the MPI world size and distinct ranks. */
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommCount(ncclComm_t comm, int *count);
ncclResult_t ncclCommUserRank(ncclComm_t comm, int *rank);
/* In place when sendbuff == recvbuff. Both must lie inside cudaMalloc allocations and every
 * rank must make the same call (count, type, op): a mismatch, which would hang or corrupt a
 * real run, aborts here naming both ranks' calls. */
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
