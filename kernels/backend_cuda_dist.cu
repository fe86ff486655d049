/* The CUDA backend's data-parallel step (dist.h): one NCCL communicator per backend, every
 * collective an ncclAllReduce of device buffers on the backend's NCCL stream, the compute stream
 * waiting only where it reads a result. Overlap where the step order allows it: the column sums
 * travel while the encoder (and gate) run, the metric sums during the backward, the one dense
 * gradient all-reduce while featstats updates the local statistics. The batch selection's
 * histograms are summed on the device and scanned on the host with bselect_dist.h's steps, so
 * the threshold and the tie shares are select_batch_dist_cpu's exactly. */
#include <string.h>

#include "backend_cuda_impl.cuh"
#include "bselect.cuh"
#include "bselect_dist.cuh"
#include "decode.cuh"
#include "dist_cuda.cuh"
#include "encode.cuh"
#include "featstats.cuh"
#include "loss.cuh"
#include "nccl_compat.h"
#include "select.cuh"
#include "sf_check.h"
extern "C" {
#include "bselect_dist.h"
#include "dist_cpu.h"
}

struct cuda_dist {
    const sae_dist *dd;
    ncclComm_t comm;
    cudaStream_t ns;         /* every NCCL call, in one order on every rank */
    cudaEvent_t ev_cs, ev_ns; /* compute -> NCCL stream, NCCL -> compute stream */
    int64_t Bg;              /* this step's global batch */
    double *cent;            /* (d) column sums */
    double *sums, *h_sums;   /* (R_COUNT) the step's sums, device and pinned */
    float *dbuf;             /* (dist_grad_floats(d, n)) dense gradient */
    int *ident, *n_rows;     /* (n), (1): the dense view's rows */
    sae_grads_cuda dense;
    int64_t *hist, *hist_sum; /* (BSEL_DIST_LO_BUCKETS) local and summed histograms */
    int64_t *h_hist;         /* (BSEL_DIST_LO_BUCKETS + 1) pinned */
    unsigned *key;           /* (1) smallest kept key, for a minimum over ranks */
};

/* The NCCL stream starts after the work queued so far on the compute stream. */
static void ns_after_cs(cuda_impl *c)
{
    CUDA_CHECK(cudaEventRecord(c->dp->ev_cs, c->cs));
    CUDA_CHECK(cudaStreamWaitEvent(c->dp->ns, c->dp->ev_cs, 0));
}

/* The compute stream waits for every NCCL call issued so far. */
static void cs_after_ns(cuda_impl *c)
{
    CUDA_CHECK(cudaEventRecord(c->dp->ev_ns, c->dp->ns));
    CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->dp->ev_ns, 0));
}

static void allreduce(cuda_impl *c, const void *send, void *recv, size_t count, ncclDataType_t t,
                      ncclRedOp_t op)
{
    ns_after_cs(c);
    NCCL_CHECK(ncclAllReduce(send, recv, count, t, op, c->dp->comm, c->dp->ns));
}

void cu_dist_free(cuda_impl *c)
{
    cuda_dist *p = c->dp;
    if (!p)
        return;
    cudaStreamSynchronize(p->ns);
    NCCL_CHECK(ncclCommDestroy(p->comm));
    void *dev[] = {p->cent, p->sums, p->dbuf, p->ident, p->n_rows, p->hist, p->hist_sum, p->key};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    cudaFreeHost(p->h_sums);
    cudaFreeHost(p->h_hist);
    cudaEventDestroy(p->ev_cs);
    cudaEventDestroy(p->ev_ns);
    cudaStreamDestroy(p->ns);
    free(p);
    c->dp = NULL;
}

extern "C" int backend_cuda_dist_device(const sae_dist *dd)
{
    if (!sae_dist_on(dd))
        return 0;
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    SF_CHECK(count > 0);
    return dd->local_rank % count;
}

void cu_set_dist(sae_backend *be, const sae_dist *dd)
{
    cuda_impl *c = impl_of(be);
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    cu_dist_free(c);
    be->dist = dd;
    const int batch = c->hp.arch == SAE_ARCH_BATCHTOPK || c->hp.arch == SAE_ARCH_MATRYOSHKA;
    const int mul = sae_dist_on(dd) && batch ? dd->world : 1;
    if (mul != c->code_mul) {
        c->code_mul = mul;
        cu_alloc_codes(c, c->kcap);
    }
    if (!sae_dist_on(dd))
        return;
    const int want = backend_cuda_dist_device(dd);
    if (c->device != want) {
        fprintf(stderr, "saeforge: rank %d (local rank %d) has its CUDA backend on device %d; a "
                "data-parallel rank must use device %d (backend_cuda_dist_device)\n", dd->rank,
                dd->local_rank, c->device, want);
        abort();
    }
    /* fire counts travel in the float gradient buffer: exact below 2^24 tokens */
    SF_CHECK((int64_t)c->max_B * dd->world < (1 << 24));
    CUDA_CHECK(cudaSetDevice(c->device)); /* the communicator binds to the current device */
    cuda_dist *p = (cuda_dist *)calloc(1, sizeof *p);
    SF_CHECK(p);
    p->dd = dd;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (dd->rank == 0)
        NCCL_CHECK(ncclGetUniqueId(&id));
    dd->bcast(dd, &id, (int64_t)sizeof id, 0);
    NCCL_CHECK(ncclCommInitRank(&p->comm, dd->world, id, dd->rank));
    CUDA_CHECK(cudaStreamCreateWithFlags(&p->ns, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&p->ev_cs, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&p->ev_ns, cudaEventDisableTiming));
    const int d = c->d, n = c->n;
    p->cent = (double *)cu_dalloc((size_t)d * sizeof(double));
    p->sums = (double *)cu_dalloc(R_COUNT * sizeof(double));
    p->dbuf = (float *)cu_dalloc((size_t)dist_grad_floats(d, n) * sizeof(float));
    p->ident = (int *)cu_dalloc((size_t)n * sizeof(int));
    p->n_rows = (int *)cu_dalloc(sizeof(int));
    p->hist = (int64_t *)cu_dalloc(BSEL_DIST_LO_BUCKETS * sizeof(int64_t));
    p->hist_sum = (int64_t *)cu_dalloc(BSEL_DIST_LO_BUCKETS * sizeof(int64_t));
    p->key = (unsigned *)cu_dalloc(sizeof(unsigned));
    CUDA_CHECK(cudaMallocHost((void **)&p->h_sums, R_COUNT * sizeof(double)));
    CUDA_CHECK(cudaMallocHost((void **)&p->h_hist, (BSEL_DIST_LO_BUCKETS + 1) * sizeof(int64_t)));
    dist_dense_view_cuda(p->dbuf, d, n, p->ident, p->n_rows, &p->dense, c->cs);
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    c->dp = p;
}

int64_t cu_dist_rows(cuda_impl *c, int B)
{
    int64_t v = B;
    c->dp->dd->sum_i64(c->dp->dd, &v, 1);
    c->dp->Bg = v;
    return v;
}

double *cu_dist_sums(cuda_impl *c) { return c->dp->sums; }

void cu_dist_center_begin(cuda_impl *c, int B)
{
    cuda_dist *p = c->dp;
    CUDA_CHECK(cudaMemsetAsync(p->sums, 0, R_COUNT * sizeof(double), c->cs));
    loss_colsum_cuda(c->x, B, c->d, p->cent, c->cs);
    allreduce(c, p->cent, p->cent, (size_t)c->d, ncclFloat64, ncclSum);
}

void cu_dist_center_end(cuda_impl *c, int B)
{
    cuda_dist *p = c->dp;
    cs_after_ns(c);
    dist_mean_cuda(p->cent, c->d, p->Bg, c->mean, c->cs);
    loss_spread_cuda(c->x, B, c->d, c->mean, c->res + R_DEN, c->loss_ws, c->cs);
    allreduce(c, c->res + R_DEN, c->res + R_DEN, 1, ncclFloat64, ncclSum);
    cs_after_ns(c); /* the dY coefficients need the global den */
}

/* Summed histogram into p->h_hist (host); returns after the copy. */
static void summed_hist(cuda_impl *c, const float *pre, int B, int hi_bucket, int shift,
                        int buckets)
{
    cuda_dist *p = c->dp;
    bsel_dist_hist_cuda(pre, B, c->n, hi_bucket, shift, buckets, p->hist, c->cs);
    allreduce(c, p->hist, p->hist_sum, (size_t)buckets, ncclInt64, ncclSum);
    cs_after_ns(c);
    CUDA_CHECK(cudaMemcpyAsync(p->h_hist, p->hist_sum, (size_t)buckets * sizeof(int64_t),
                               cudaMemcpyDeviceToHost, c->cs));
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
}

void cu_dist_select_batch(cuda_impl *c, const float *pre, int B, int64_t K, int64_t slots,
                          int *row_ptr, int *lat, float *val, float *min_kept)
{
    cuda_dist *p = c->dp;
    const int n = c->n;
    cudaStream_t cs = c->cs;
    if (K <= 0) { /* K is global: every rank keeps nothing, with no collective */
        bselect_rule_cuda(pre, B, n, 0xffffffffu, 0u, 0u, slots, row_ptr, lat, val, min_kept,
                          c->bsel_ws, cs);
        dist_set_kept_cuda(min_kept, 0u, cs);
        return;
    }
    /* pass 1 (every rank, B = 0 too): the threshold's top 15 bits */
    summed_hist(c, pre, B, -1, 16, BSEL_DIST_HI_BUCKETS);
    int64_t above_hi = 0, above_lo = 0;
    const int bk = bsel_dist_bucket(p->h_hist, BSEL_DIST_HI_BUCKETS, K, &above_hi);
    if (bk < 0) { /* at most K positive values anywhere: keep them all; min over ranks */
        bselect_rule_cuda(pre, B, n, 1u, 0u, 0u, slots, row_ptr, lat, val, min_kept, c->bsel_ws,
                          cs);
        dist_kept_key_cuda(min_kept, p->key, cs);
        allreduce(c, p->key, p->key, 1, ncclUint32, ncclMin);
        cs_after_ns(c);
        dist_kept_value_cuda(p->key, min_kept, cs);
        return;
    }
    /* pass 2: the low 16 bits inside bucket bk give the exact K-th key */
    summed_hist(c, pre, B, bk, 0, BSEL_DIST_LO_BUCKETS);
    const int bl = bsel_dist_bucket(p->h_hist, BSEL_DIST_LO_BUCKETS, K - above_hi, &above_lo);
    SF_CHECK(bl >= 0);
    const unsigned Tb = ((unsigned)bk << 16) | (unsigned)bl;
    const int64_t need = K - above_hi - above_lo;
    SF_CHECK(need >= 1 && need <= p->h_hist[bl]);
    /* this rank's ties at the key (its own pass-2 count), and its share by rank order */
    CUDA_CHECK(cudaMemcpyAsync(p->h_hist + BSEL_DIST_LO_BUCKETS, p->hist + bl, sizeof(int64_t),
                               cudaMemcpyDeviceToHost, cs));
    CUDA_CHECK(cudaStreamSynchronize(cs));
    const int64_t share = bsel_dist_tie_share(p->dd, p->h_hist[BSEL_DIST_LO_BUCKETS], need);
    bselect_rule_cuda(pre, B, n, Tb + 1u, Tb, (unsigned)share, slots, row_ptr, lat, val, min_kept,
                      c->bsel_ws, cs);
    dist_set_kept_cuda(min_kept, Tb, cs);
}

void cu_dist_metrics(cuda_impl *c, int slots)
{
    cuda_dist *p = c->dp;
    dist_entries_cuda(c->lat, slots, p->sums + R_L0, c->cs);
    allreduce(c, p->sums, p->sums, R_COUNT, ncclFloat64, ncclSum);
}

sae_grads_cuda *cu_dist_grads(cuda_impl *c, int B, int64_t Bg, int slots, const float *gate,
                              int64_t step)
{
    cuda_dist *p = c->dp;
    const int d = c->d, n = c->n;
    dist_grads_scatter_cuda(&c->gr, c->lat, slots, d, n, p->dbuf, c->cs);
    allreduce(c, p->dbuf, p->dbuf, (size_t)dist_grad_floats(d, n), ncclFloat32, ncclSum);
    /* local statistics read the sparse view only: they run while the buffer travels */
    featstats_update_cuda(&c->ws, &c->gr, c->val, slots, gate, B, n, step, &c->S, c->cs);
    cs_after_ns(c);
    dist_since_fired_cuda(p->dense.db_dec + d, B, Bg, n, c->S.since_fired, c->cs);
    return &p->dense;
}

const double *cu_dist_finish(cuda_impl *c)
{
    cuda_dist *p = c->dp;
    CUDA_CHECK(cudaMemcpyAsync(p->h_sums, p->sums, R_COUNT * sizeof(double),
                               cudaMemcpyDeviceToHost, p->ns));
    CUDA_CHECK(cudaStreamSynchronize(p->ns));
    return p->h_sums;
}

/* eval_batch under data parallelism: cpu_eval_batch's order (global centre, the inference rule
 * over the global batch, sums over the ranks); B = 0 joins every collective. */
void cu_eval_batch_dist(sae_backend *be, const float *x, const float *g, int B, int k,
                        sae_metrics *acc)
{
    cuda_impl *c = impl_of(be);
    const sae_hparams *hp = &c->hp;
    const int d = c->d, n = c->n;
    SF_CHECK(B >= 0 && B <= c->max_B && k > 0);
    cudaStream_t cs = c->cs;
    const int64_t Bg = cu_dist_rows(c, B);
    if (B > 0) {
        cu_upload(c, x, g, B);
        cu_encoder(c, B);
    }
    CUDA_CHECK(cudaMemsetAsync(c->res, 0, R_COUNT * sizeof(double), cs));
    cu_dist_center_begin(c, B);
    const int batch = hp->arch == SAE_ARCH_BATCHTOPK || hp->arch == SAE_ARCH_MATRYOSHKA;
    long long used = 0;
    if (batch && c->theta < 0.0f) {
        long long cap = Bg * k < (long long)B * n ? Bg * k : (long long)B * n;
        cu_ensure_ecap(c, cap > 0 ? cap : 1);
        cu_dist_select_batch(c, c->pre, B, Bg * k, cap, c->row_ptr, c->e_lat, c->e_val,
                             c->d_min_kept);
        used = cap;
    } else if (B > 0) {
        int gated = 0;
        if (hp->arch == SAE_ARCH_GSAE && g) {
            cu_wait_g(c);
            gate_forward_cuda(c->g, c->P.W_dec, B, d, n, c->gate, hp->precision, c->blas, cs);
            gated = 1;
        }
        cu_ensure_ecap(c, (long long)B * k);
        used = cu_infer_select(c, B, k, gated, c->e_lat, c->e_val, c->ecap);
        if (used < 0) {
            cu_ensure_ecap(c, -1 - used);
            used = cu_infer_select(c, B, k, gated, c->e_lat, c->e_val, c->ecap);
            SF_CHECK(used >= 0);
        }
    }
    cu_dist_center_end(c, B);
    double *sums = c->dp->sums;
    if (B > 0) {
        decode_cuda(c->row_ptr, c->e_lat, c->e_val, c->P.W_dec, c->P.b_dec, B, d, n, c->xhat, cs);
        loss_residual_cuda(c->x, c->xhat, B, d, 0.0, 1.0, NULL, 0, NULL, sums + R_RES, c->loss_ws,
                           cs);
        if (g) {
            cu_wait_g(c);
            loss_gw_cuda(c->g, c->x, c->xhat, c->mean, B, d, sums + R_GWN, sums + R_GWD,
                         c->loss_ws, cs);
        }
        dist_entries_cuda(c->e_lat, (int)used, sums + R_L0, cs);
    }
    allreduce(c, sums, sums, R_COUNT, ncclFloat64, ncclSum);
    CUDA_CHECK(cudaMemcpyAsync(c->h_res, c->res, R_COUNT * sizeof(double), cudaMemcpyDeviceToHost,
                               cs));
    CUDA_CHECK(cudaStreamSynchronize(cs));
    const double *r = cu_dist_finish(c);
    acc->fvu_num += r[R_RES];
    acc->fvu_den += c->h_res[R_DEN];
    if (g) {
        acc->gw_num += r[R_GWN];
        acc->gw_den += r[R_GWD];
    }
    acc->l0 += r[R_L0];
    acc->tokens += Bg;
}
