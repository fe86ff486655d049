/* NCCL under emulation (emu_nccl.h): communicators are MPI communicators split from
 * MPI_COMM_WORLD, all-reduces are MPI_Allreduce on the (host) device buffers, preceded by a
 * check that every rank makes the same call.
 *
 * A collective is not queued like other stream work (emu_stream.cpp): it first runs the work
 * queued on its stream (and what that waits for), then the MPI calls at once. Queued, its MPI
 * calls would run inside whatever later forces the stream, possibly after a host-side MPI call
 * of the program (a barrier, a bcast) that the other ranks make in the other order: a deadlock
 * no real run has. Running at the call is one of the orders a GPU allows. */
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include "emu_internal.h"
#include "emu_nccl.h"

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <unistd.h>

struct emu_nccl_comm {
    MPI_Comm comm;
    int rank, size;
    unsigned long long calls; /* all-reduces so far, named in mismatch messages */
};

namespace {

const char MAGIC[8] = {'s', 'f', 'e', 'm', 'u', 'n', 'c', 'l'};

ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ncclResult_t fail(ncclResult_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("saeforge-emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return r;
}

bool mpi_type(ncclDataType_t t, MPI_Datatype *mt, size_t *bytes)
{
    switch (t) {
    case ncclInt32: *mt = MPI_INT32_T; *bytes = 4; return true;
    case ncclUint32: *mt = MPI_UINT32_T; *bytes = 4; return true;
    case ncclInt64: *mt = MPI_INT64_T; *bytes = 8; return true;
    case ncclUint64: *mt = MPI_UINT64_T; *bytes = 8; return true;
    case ncclFloat32: *mt = MPI_FLOAT; *bytes = 4; return true;
    case ncclFloat64: *mt = MPI_DOUBLE; *bytes = 8; return true;
    }
    return false;
}

bool mpi_op(ncclRedOp_t op, MPI_Op *mo)
{
    switch (op) {
    case ncclSum: *mo = MPI_SUM; return true;
    case ncclProd: *mo = MPI_PROD; return true;
    case ncclMax: *mo = MPI_MAX; return true;
    case ncclMin: *mo = MPI_MIN; return true;
    }
    return false;
}

} // namespace

extern "C" const char *ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    static unsigned long long counter = 0;
    if (!id)
        return fail(ncclInvalidArgument, "ncclGetUniqueId: null id");
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const unsigned long long v[4] = {(unsigned long long)getpid(), ++counter,
                                     (unsigned long long)ts.tv_sec, (unsigned long long)ts.tv_nsec};
    memset(id, 0, sizeof *id);
    memcpy(id->internal, MAGIC, sizeof MAGIC);
    memcpy(id->internal + sizeof MAGIC, v, sizeof v);
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited)
        return fail(ncclInvalidUsage, "ncclCommInitRank: MPI is not initialised (the emulated NCCL "
                    "runs over MPI; start MPI first, e.g. dist_open)");
    if (!comm || nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    if (memcmp(id.internal, MAGIC, sizeof MAGIC) != 0)
        return fail(ncclInvalidArgument, "ncclCommInitRank: the id does not come from "
                    "ncclGetUniqueId (was it broadcast from the rank that made it?)");
    int wsize = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    MPI_Comm c;
    /* every world process joins (the emulator's limit: a communicator spans MPI_COMM_WORLD) */
    MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &c);
    int crank = 0;
    MPI_Comm_rank(c, &crank);
    /* the same id everywhere, nranks = the world, and each rank given once (key order) */
    ncclUniqueId root = id;
    MPI_Bcast(&root, (int)sizeof root, MPI_BYTE, 0, c);
    int bad = memcmp(&root, &id, sizeof id) != 0 ? 1 : nranks != wsize ? 2 : crank != rank ? 3 : 0;
    int worst = 0;
    MPI_Allreduce(&bad, &worst, 1, MPI_INT, MPI_MAX, c);
    if (worst) {
        MPI_Comm_free(&c);
        return fail(ncclInvalidUsage, "ncclCommInitRank (rank %d of %d, MPI world %d): %s", rank,
                    nranks, wsize,
                    worst == 1   ? "the ranks passed different ids"
                    : worst == 2 ? "nranks differs from the MPI world size"
                                 : "ranks are not 0..nranks-1, each once");
    }
    emu_nccl_comm *cm = new emu_nccl_comm{c, rank, nranks, 0};
    *comm = cm;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm)
        return fail(ncclInvalidArgument, "ncclCommDestroy: null communicator");
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Comm_free(&comm->comm);
    delete comm;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommCount(ncclComm_t comm, int *count)
{
    if (!comm || !count)
        return fail(ncclInvalidArgument, "ncclCommCount: null argument");
    *count = comm->size;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommUserRank(ncclComm_t comm, int *rank)
{
    if (!comm || !rank)
        return fail(ncclInvalidArgument, "ncclCommUserRank: null argument");
    *rank = comm->rank;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                                      ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                      cudaStream_t stream)
{
    MPI_Datatype mt;
    MPI_Op mo;
    size_t esz = 0;
    if (!comm)
        return fail(ncclInvalidArgument, "ncclAllReduce: null communicator");
    if (!mpi_type(datatype, &mt, &esz))
        return fail(ncclInvalidArgument, "ncclAllReduce: data type %d is not emulated", (int)datatype);
    if (!mpi_op(op, &mo))
        return fail(ncclInvalidArgument, "ncclAllReduce: reduction %d is not emulated", (int)op);
    if (!emu_stream_ok(stream))
        return fail(ncclInvalidArgument, "ncclAllReduce: stream %p is not a live stream", (void *)stream);
    if (count > 0 && (!emu_in_device(sendbuff, count * esz) || !emu_in_device(recvbuff, count * esz)))
        return fail(ncclInvalidArgument, "ncclAllReduce: buffers %p -> %p (%zu x %zu bytes) are not "
                    "inside cudaMalloc allocations (NCCL works on device memory)",
                    sendbuff, recvbuff, count, esz);
    /* stream order: the work queued before the collective is its input */
    cudaStreamSynchronize(stream);
    /* every rank must make the same call: compare (count, type, op) through max and -min */
    long long sig[6] = {(long long)count, (long long)datatype, (long long)op,
                        -(long long)count, -(long long)datatype, -(long long)op};
    long long ext[6];
    MPI_Allreduce(sig, ext, 6, MPI_LONG_LONG, MPI_MAX, comm->comm);
    comm->calls++;
    if (ext[0] != -ext[3] || ext[1] != -ext[4] || ext[2] != -ext[5])
        emu_fatal("ncclAllReduce call %llu: the ranks disagree (this rank %d: count %zu, type %d, op "
                  "%d; over the ranks count %lld..%lld, type %lld..%lld, op %lld..%lld): a real run "
                  "would hang or corrupt the sums",
                  comm->calls, comm->rank, count, (int)datatype, (int)op, -ext[3], ext[0], -ext[4],
                  ext[1], -ext[5], ext[2]);
    const size_t slice = (size_t)1 << 30;
    for (size_t o = 0; o < count; o += slice) {
        const int c = (int)(count - o < slice ? count - o : slice);
        char *rb = (char *)recvbuff + o * esz;
        const char *sb = (const char *)sendbuff + o * esz;
        MPI_Allreduce(sendbuff == recvbuff ? MPI_IN_PLACE : sb, rb, c, mt, mo, comm->comm);
    }
    return ncclSuccess;
}
