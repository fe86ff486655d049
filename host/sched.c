/* Learning-rate and k schedules (see sched.h). */
#include "sched.h"

#include <math.h>

float sched_lr(const sf_config *c, int64_t step, int64_t total_steps)
{
    double lr = c->train.lr;
    int64_t warm = c->train.warmup_steps;
    if (warm > 0 && step < warm)
        return (float)(lr * (double)(step + 1) / (double)warm);
    switch (c->train.schedule) {
    case SF_SCHED_LINEAR: {
        int64_t start = (int64_t)(c->train.decay_start * (double)total_steps);
        if (start < warm)
            start = warm;
        if (step < start || total_steps <= start)
            return (float)lr;
        double frac = (double)(total_steps - step) / (double)(total_steps - start);
        return (float)(lr * frac);
    }
    case SF_SCHED_COSINE: {
        if (total_steps <= warm)
            return (float)lr;
        double p = (double)(step - warm) / (double)(total_steps - warm);
        double lo = c->train.lr_min;
        return (float)(lo + 0.5 * (lr - lo) * (1.0 + cos(M_PI * p)));
    }
    case SF_SCHED_CONSTANT:
    default:
        return (float)lr;
    }
}

int sched_k(const sf_config *c, int64_t step)
{
    int k = c->sae.k;
    int k0 = c->train.k_start;
    int64_t steps = c->train.k_anneal_steps;
    if (k0 <= 0 || steps <= 0 || step >= steps)
        return k;
    double v = k0 + (double)(k - k0) * (double)step / (double)steps;
    return (int)lround(v);
}
