/* Feature statistics and dead detection (CUDA twins of featstats_update_cpu and
 * featstats_dead_mask_cpu). Updates are per latent, reading the latent's entries from the sorted
 * by-latent view of the backward, so no floating-point atomics are needed. */
#include "featstats.cuh"

static __global__ void featstats_kernel(const int *slot, const int *seg_start, const int *seg_end,
                                        const int *ref, const int *tok, const float *main_val,
                                        int main_cap, const float *gate, int B, int n,
                                        long long step, long long *since_fired,
                                        long long *fire_count, double *act_sum, float *act_max,
                                        long long *last_fired, double *gate_sum)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const int r = slot[i];
    int cnt = 0;
    if (r >= 0) {
        double sum = act_sum[i], gsum = gate ? gate_sum[i] : 0.0;
        float mx = act_max[i];
        for (int s = seg_start[r]; s < seg_end[r]; s++) {
            const int f = ref[s];
            if (f >= main_cap) /* AuxK entries sort after the main ones of the same latent */
                continue;
            const float v = main_val[f];
            cnt++;
            sum += (double)v;
            if (v > mx)
                mx = v;
            if (gate)
                gsum += (double)gate[(size_t)tok[f] * n + i];
        }
        if (cnt > 0) {
            act_sum[i] = sum;
            act_max[i] = mx;
            if (gate)
                gate_sum[i] = gsum;
            fire_count[i] += cnt;
            last_fired[i] = step;
        }
    }
    since_fired[i] = cnt > 0 ? 0 : since_fired[i] + B;
}

static __global__ void dead_mask_kernel(const long long *since_fired, int n, long long dead_tokens,
                                        unsigned char *mask, int *count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const int dead = since_fired[i] >= dead_tokens;
    mask[i] = (unsigned char)dead;
    if (dead)
        atomicAdd(count, 1);
}

extern "C" void featstats_update_cuda(const sae_bwd_ws *ws, const sae_grads_cuda *view,
                                      const float *main_val, int main_cap, const float *gate,
                                      int B, int n, int64_t step, sae_state *s,
                                      cudaStream_t stream)
{
    SF_LAUNCH(featstats_kernel, (n + 255) / 256, 256, 0, stream, (const int *)view->slot,
              (const int *)ws->seg_start, (const int *)ws->seg_end, (const int *)ws->ref,
              (const int *)ws->tok, main_val, main_cap, gate, B, n, (long long)step,
              (long long *)s->since_fired, (long long *)s->fire_count, s->act_sum, s->act_max,
              (long long *)s->last_fired_step, s->gate_sum);
}

extern "C" void featstats_dead_mask_cuda(const int64_t *since_fired, int n, int64_t dead_tokens,
                                         uint8_t *mask, int *count, cudaStream_t stream)
{
    CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(int), stream));
    SF_LAUNCH(dead_mask_kernel, (n + 255) / 256, 256, 0, stream, (const long long *)since_fired,
              n, (long long)dead_tokens, (unsigned char *)mask, count);
}
