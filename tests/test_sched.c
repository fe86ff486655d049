/* Schedules: warmup, constant, linear decay, cosine, k annealing. */
#include <criterion/criterion.h>
#include <math.h>

#include "host/config.h"
#include "host/sched.h"

static sf_config base(void)
{
    sf_config c;
    config_defaults(&c);
    c.train.lr = 1e-3f;
    c.sae.k = 32;
    return c;
}

Test(sched, warmup_then_constant)
{
    sf_config c = base();
    c.train.warmup_steps = 10;
    cr_assert_float_eq(sched_lr(&c, 0, 100), 1e-4f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 4, 100), 5e-4f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 9, 100), 1e-3f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 99, 100), 1e-3f, 1e-9);
}

Test(sched, linear_decay_from_fraction)
{
    sf_config c = base();
    c.train.schedule = SF_SCHED_LINEAR;
    c.train.decay_start = 0.5f;
    cr_assert_float_eq(sched_lr(&c, 49, 100), 1e-3f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 50, 100), 1e-3f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 75, 100), 0.5e-3f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 99, 100), 0.02e-3f, 1e-9);
}

Test(sched, cosine_to_floor)
{
    sf_config c = base();
    c.train.schedule = SF_SCHED_COSINE;
    c.train.lr_min = 1e-4f;
    c.train.warmup_steps = 10;
    cr_assert_float_eq(sched_lr(&c, 10, 110), 1e-3f, 1e-9);
    cr_assert_float_eq(sched_lr(&c, 60, 110), 0.55e-3f, 1e-8);
    cr_assert(sched_lr(&c, 109, 110) < 1.01e-4f);
    cr_assert(sched_lr(&c, 109, 110) >= 1e-4f);
}

Test(sched, k_anneal)
{
    sf_config c = base();
    cr_assert_eq(sched_k(&c, 0), 32);
    c.train.k_start = 128;
    c.train.k_anneal_steps = 96;
    cr_assert_eq(sched_k(&c, 0), 128);
    cr_assert_eq(sched_k(&c, 48), 80);
    cr_assert_eq(sched_k(&c, 96), 32);
    cr_assert_eq(sched_k(&c, 1000), 32);
}
