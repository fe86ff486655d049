/* The CUDA backend's batch upload: pinned staging, the copy stream, floats or exact 16-bit values. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda_impl.cuh"
#include "input16.cuh"
#include "sf_check.h"
extern "C" {
#include "input16.h"
}

/* Narrows one input into pinned staging. The check is the format's contract (backend.h): a
 * value that is not a dtype value would be trained on as another one. */
static void narrow16(const cuda_impl *c, const float *src, size_t cnt, uint16_t *h16)
{
    const int batch_holds_dtype_values = input16_narrow(src, cnt, c->in_dtype, h16);
    SF_CHECK(batch_holds_dtype_values);
}

/* Copies staged 16-bit values into the landing buffer and widens them into dst, both on xs. */
static void ship16(cuda_impl *c, const uint16_t *h16, uint16_t *d16, size_t cnt, float scale,
                   float *dst)
{
    CUDA_CHECK(cudaMemcpyAsync(d16, h16, cnt * sizeof(uint16_t), cudaMemcpyHostToDevice, c->xs));
    input16_widen_cuda(d16, (long long)cnt, c->in_dtype, scale, dst, c->xs);
}

/* Stages x (and g) through the current slot's pinned buffers on the copy stream; the compute
 * stream waits for x at once and for g only where g is used (wait_g). The slot is free: its last
 * step was absorbed before this one was submitted (at most two steps are in flight). */
void cu_upload(cuda_impl *c, const float *x, const float *g, int B)
{
    const size_t cnt = (size_t)B * c->d, bytes = cnt * sizeof(float);
    const int s = c->cur;
    if (c->in_dtype != SAE_INPUT_F32) {
        /* an eval reuses the slot of the next step without a step in between: its copies may
         * still read the staging */
        CUDA_CHECK(cudaEventSynchronize(c->ev_in16[s]));
        narrow16(c, x, cnt, c->h_x16[s]);
        if (c->prof_on)
            CUDA_CHECK(cudaEventRecord(c->ev_up[0], c->xs));
        ship16(c, c->h_x16[s], c->x16, cnt, c->in_scale, c->x);
        CUDA_CHECK(cudaEventRecord(c->ev_x, c->xs));
        if (g) { /* narrowed while x is in flight */
            narrow16(c, g, cnt, c->h_g16[s]);
            ship16(c, c->h_g16[s], c->g16, cnt, 1.0f, c->g);
            CUDA_CHECK(cudaEventRecord(c->ev_g, c->xs));
        }
        CUDA_CHECK(cudaEventRecord(c->ev_in16[s], c->xs));
        if (c->prof_on)
            CUDA_CHECK(cudaEventRecord(c->ev_up[1], c->xs));
        CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->ev_x, 0));
        return;
    }
    /* the driver filled one of our pinned buffers itself: the copy reads it there */
    const float *hx = x == c->h_xb[0] || x == c->h_xb[1] ? x : c->h_x;
    if (hx != x)
        memcpy(c->h_x, x, bytes);
    if (c->prof_on)
        CUDA_CHECK(cudaEventRecord(c->ev_up[0], c->xs));
    CUDA_CHECK(cudaMemcpyAsync(c->x, hx, bytes, cudaMemcpyHostToDevice, c->xs));
    CUDA_CHECK(cudaEventRecord(c->ev_x, c->xs));
    if (g) {
        const float *hg = g == c->h_gb[0] || g == c->h_gb[1] ? g : c->h_g;
        if (hg != g)
            memcpy(c->h_g, g, bytes);
        CUDA_CHECK(cudaMemcpyAsync(c->g, hg, bytes, cudaMemcpyHostToDevice, c->xs));
        CUDA_CHECK(cudaEventRecord(c->ev_g, c->xs));
    }
    if (c->prof_on)
        CUDA_CHECK(cudaEventRecord(c->ev_up[1], c->xs));
    CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->ev_x, 0));
}

/* The slot the next submitted step uses: its last step has been collected, so it is free. */
static float *cu_input_buffer(sae_backend *be, int which)
{
    cuda_impl *c = impl_of(be);
    return which ? c->h_gb[c->slot] : c->h_xb[c->slot];
}

/* Takes effect from the next upload: a submitted step has already narrowed its batch. */
static void cu_set_input_format(sae_backend *be, sae_input_dtype dtype, float x_scale)
{
    cuda_impl *c = impl_of(be);
    SF_CHECK(dtype == SAE_INPUT_F32 || dtype == SAE_INPUT_F16 || dtype == SAE_INPUT_BF16);
    SF_CHECK(isfinite(x_scale) && x_scale != 0.0f);
    SF_CHECK(dtype != SAE_INPUT_F32 || x_scale == 1.0f);
    if (dtype != SAE_INPUT_F32 && !c->x16) {
        const size_t cnt = (size_t)c->max_B * c->d;
        c->x16 = (uint16_t *)cu_dalloc(cnt * sizeof(uint16_t));
        c->g16 = (uint16_t *)cu_dalloc(cnt * sizeof(uint16_t));
        for (int s = 0; s < 2; s++) {
            CUDA_CHECK(cudaMallocHost((void **)&c->h_x16[s], cnt * sizeof(uint16_t)));
            CUDA_CHECK(cudaMallocHost((void **)&c->h_g16[s], cnt * sizeof(uint16_t)));
            CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_in16[s], cudaEventDisableTiming));
        }
    }
    c->in_dtype = dtype;
    c->in_scale = x_scale;
}

void cu_input_free(cuda_impl *c)
{
    if (!c->x16)
        return;
    cudaStreamSynchronize(c->xs);
    cudaFree(c->x16);
    cudaFree(c->g16);
    for (int s = 0; s < 2; s++) {
        cudaFreeHost(c->h_x16[s]);
        cudaFreeHost(c->h_g16[s]);
        cudaEventDestroy(c->ev_in16[s]);
    }
    c->x16 = c->g16 = NULL;
}

int cu_input_env(char *why, int len)
{
    const char *up = getenv("SF_UPLOAD");
    if (!up || !up[0] || !strcmp(up, "auto"))
        return 1;
    if (!strcmp(up, "f32"))
        return 0;
    snprintf(why, (size_t)len, "SF_UPLOAD=%s is not one of auto, f32; unset it or use one of those",
             up);
    return -1;
}

void cu_input_bind(sae_backend *be, int allow16)
{
    cuda_impl *c = impl_of(be);
    c->in_dtype = SAE_INPUT_F32;
    c->in_scale = 1.0f;
    be->input_buffer = cu_input_buffer;
    be->set_input_format = allow16 ? cu_set_input_format : NULL;
}
