/* Optimizer (CUDA twins of kernels/adam.h): decoder-gradient projection, deterministic gradient
 * norm, and one fused pass per row: Adam on the W_enc and W_dec rows, W_dec row renorm, and
 * the bf16 shadow of W_enc. Element updates use non-contracted IEEE ops so they match the CPU
 * twin's float arithmetic. */
#include <math.h>

#include "adam.cuh"
#include "devutil.cuh"

#define ADAM_THREADS 128

#ifdef __CUDA_ARCH__
#define FMUL(a, b) __fmul_rn((a), (b))
#define FADD(a, b) __fadd_rn((a), (b))
#else
#define FMUL(a, b) ((a) * (b))
#define FADD(a, b) ((a) + (b))
#endif

static __device__ inline float adam_elem(float *pp, float *mp, float *vp, float gr, float step_size,
                                         float bc2_sqrt, float b1, float b2, float eps)
{
    const float m = FADD(FMUL(b1, *mp), FMUL(1.0f - b1, gr));
    const float v = FADD(FMUL(b2, *vp), FMUL(FMUL(1.0f - b2, gr), gr));
    *mp = m;
    *vp = v;
    const float p = *pp - FMUL(step_size, m) / FADD(sqrtf(v) / bc2_sqrt, eps);
    *pp = p;
    return p;
}

static __global__ void project_kernel(const float *W_dec, int d, const int *n_rows,
                                      const int *rows, float *dW_dec)
{
    __shared__ double sh[ADAM_THREADS];
    const int r = blockIdx.x;
    if (r >= *n_rows)
        return;
    const float *w = W_dec + (size_t)rows[r] * d;
    float *gr = dW_dec + (size_t)r * d;
    double dot = 0.0;
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        dot += (double)gr[c] * (double)w[c];
    dot = sf_block_sum(dot, sh);
    const float fd = (float)dot;
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        gr[c] -= FMUL(fd, w[c]);
}

static __global__ void sqnorm_parts_kernel(const float *dW_enc, const float *dW_dec,
                                           const int *n_rows, const float *db_enc,
                                           const float *db_dec, int d, int n, double *parts)
{
    __shared__ double sh[SF_RED_THREADS];
    const long long wsz = (long long)(*n_rows) * d;
    const long long total = 2 * wsz + n + d;
    const long long stride = (long long)gridDim.x * blockDim.x;
    double acc = 0.0;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        float v;
        if (e < wsz)
            v = dW_enc[e];
        else if (e < 2 * wsz)
            v = dW_dec[e - wsz];
        else if (e < 2 * wsz + n)
            v = db_enc[e - 2 * wsz];
        else
            v = db_dec[e - 2 * wsz - n];
        acc += (double)v * (double)v;
    }
    acc = sf_block_sum(acc, sh);
    if (threadIdx.x == 0)
        parts[blockIdx.x] = acc;
}

static __global__ void sqnorm_finish_kernel(const double *parts, int P, double *out)
{
    __shared__ double sh[SF_RED_THREADS];
    double v = (int)threadIdx.x < P ? parts[threadIdx.x] : 0.0;
    v = sf_block_sum(v, sh);
    if (threadIdx.x == 0)
        *out = v;
}

static __global__ void clip_kernel(const double *sqnorm, float clip, double *norm, float *gscale)
{
    const double nr = sqrt(*sqnorm);
    if (norm)
        *norm = nr;
    *gscale = (clip > 0.0f && nr > (double)clip) ? (float)((double)clip / nr) : 1.0f;
}

static __device__ inline unsigned short f32_to_bf16_bits(float f)
{
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN */
        return (unsigned short)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (unsigned short)(u >> 16);
}

static __global__ void adam_rows_kernel(float *W_enc, float *W_dec, float *mWe, float *vWe,
                                        float *mWd, float *vWd, const int *slot,
                                        const float *dW_enc, const float *dW_dec, int d,
                                        float step_size, float bc2_sqrt, float b1, float b2,
                                        float eps, const float *gscale_p,
                                        unsigned short *W_enc_bf16)
{
    __shared__ double sh[ADAM_THREADS];
    const size_t i = blockIdx.x;
    const int r = slot[i];
    const float gs = *gscale_p;
    const size_t o = i * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        const float gr = r >= 0 ? FMUL(dW_enc[(size_t)r * d + c], gs) : 0.0f;
        const float pn = adam_elem(&W_enc[o + c], &mWe[o + c], &vWe[o + c], gr, step_size,
                                   bc2_sqrt, b1, b2, eps);
        if (W_enc_bf16)
            W_enc_bf16[o + c] = f32_to_bf16_bits(pn);
    }
    double ss = 0.0;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        const float gr = r >= 0 ? FMUL(dW_dec[(size_t)r * d + c], gs) : 0.0f;
        const float pn = adam_elem(&W_dec[o + c], &mWd[o + c], &vWd[o + c], gr, step_size,
                                   bc2_sqrt, b1, b2, eps);
        ss += (double)pn * (double)pn;
    }
    ss = sf_block_sum(ss, sh);
    if (ss > 0.0) {
        const float nrm = (float)sqrt(ss);
        for (int c = threadIdx.x; c < d; c += blockDim.x)
            W_dec[o + c] = W_dec[o + c] / nrm;
    }
}

static __global__ void adam_vec_kernel(float *p, float *m, float *v, const float *grad, int count,
                                       float step_size, float bc2_sqrt, float b1, float b2,
                                       float eps, const float *gscale_p)
{
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= count)
        return;
    const float gr = FMUL(grad[e], *gscale_p);
    adam_elem(&p[e], &m[e], &v[e], gr, step_size, bc2_sqrt, b1, b2, eps);
}

extern "C" void dec_grad_project_cuda(const float *W_dec, int d, sae_grads_cuda *g,
                                      cudaStream_t stream)
{
    SF_LAUNCH(project_kernel, g->cap_rows, ADAM_THREADS, 0, stream, W_dec, d,
              (const int *)g->n_rows, (const int *)g->rows, g->dW_dec);
}

extern "C" size_t adam_cuda_work_bytes(void) { return sizeof(double) * SF_RED_MAX_PARTS; }

extern "C" void grad_sqnorm_cuda(const sae_grads_cuda *g, int d, int n, double *out, void *work,
                                 cudaStream_t stream)
{
    const int P = sf_red_parts(2LL * g->cap_rows * d + n + d);
    SF_LAUNCH(sqnorm_parts_kernel, P, SF_RED_THREADS, 0, stream, (const float *)g->dW_enc,
              (const float *)g->dW_dec, (const int *)g->n_rows, (const float *)g->db_enc,
              (const float *)g->db_dec, d, n, (double *)work);
    SF_LAUNCH(sqnorm_finish_kernel, 1, SF_RED_THREADS, 0, stream, (const double *)work, P, out);
}

extern "C" void grad_clip_scale_cuda(const double *sqnorm, float clip, double *norm, float *gscale,
                                     cudaStream_t stream)
{
    SF_LAUNCH(clip_kernel, 1, 1, 0, stream, sqnorm, clip, norm, gscale);
}

extern "C" void adam_step_cuda(sae_params *p, sae_state *s, const sae_grads_cuda *g, int d, int n,
                               float step_size, float bc2_sqrt, float b1, float b2, float eps,
                               const float *gscale, void *W_enc_bf16, cudaStream_t stream)
{
    SF_LAUNCH(adam_rows_kernel, n, ADAM_THREADS, 0, stream, p->W_enc, p->W_dec, s->m_W_enc,
              s->v_W_enc, s->m_W_dec, s->v_W_dec, (const int *)g->slot, (const float *)g->dW_enc,
              (const float *)g->dW_dec, d, step_size, bc2_sqrt, b1, b2, eps, gscale,
              (unsigned short *)W_enc_bf16);
    SF_LAUNCH(adam_vec_kernel, (n + 255) / 256, 256, 0, stream, p->b_enc, s->m_b_enc, s->v_b_enc,
              (const float *)g->db_enc, n, step_size, bc2_sqrt, b1, b2, eps, gscale);
    SF_LAUNCH(adam_vec_kernel, (d + 255) / 256, 256, 0, stream, p->b_dec, s->m_b_dec, s->v_b_dec,
              (const float *)g->db_dec, d, step_size, bc2_sqrt, b1, b2, eps, gscale);
}
