/* Host allocation of the sae_params / sae_state shapes (zeroed; theta and last_fired_step start at -1). */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "sf_check.h"

static void *zalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    SF_CHECK(p != NULL);
    return p;
}

/* calloc that may fail: the try_alloc variants report it instead of aborting. */
static void *zalloc_try(size_t count, size_t size, int *ok)
{
    void *p = calloc(count ? count : 1, size);
    *ok &= p != NULL;
    return p;
}

int sae_params_try_alloc(sae_params *p, int d, int n)
{
    if (d <= 0 || n <= 0)
        return 0;
    size_t nd = (size_t)n * (size_t)d;
    int ok = 1;
    p->W_enc = zalloc_try(nd, sizeof(float), &ok);
    p->b_enc = zalloc_try((size_t)n, sizeof(float), &ok);
    p->W_dec = zalloc_try(nd, sizeof(float), &ok);
    p->b_dec = zalloc_try((size_t)d, sizeof(float), &ok);
    if (!ok)
        sae_params_free(p);
    return ok;
}

int sae_state_try_alloc(sae_state *s, int d, int n)
{
    if (d <= 0 || n <= 0)
        return 0;
    size_t nd = (size_t)n * (size_t)d;
    int ok = 1;
    memset(s, 0, sizeof(*s));
    s->m_W_enc = zalloc_try(nd, sizeof(float), &ok);
    s->v_W_enc = zalloc_try(nd, sizeof(float), &ok);
    s->m_b_enc = zalloc_try((size_t)n, sizeof(float), &ok);
    s->v_b_enc = zalloc_try((size_t)n, sizeof(float), &ok);
    s->m_W_dec = zalloc_try(nd, sizeof(float), &ok);
    s->v_W_dec = zalloc_try(nd, sizeof(float), &ok);
    s->m_b_dec = zalloc_try((size_t)d, sizeof(float), &ok);
    s->v_b_dec = zalloc_try((size_t)d, sizeof(float), &ok);
    s->since_fired = zalloc_try((size_t)n, sizeof(int64_t), &ok);
    s->fire_count = zalloc_try((size_t)n, sizeof(int64_t), &ok);
    s->act_sum = zalloc_try((size_t)n, sizeof(double), &ok);
    s->act_max = zalloc_try((size_t)n, sizeof(float), &ok);
    s->last_fired_step = zalloc_try((size_t)n, sizeof(int64_t), &ok);
    s->gate_sum = zalloc_try((size_t)n, sizeof(double), &ok);
    if (!ok) {
        sae_state_free(s);
        return 0;
    }
    for (int i = 0; i < n; i++)
        s->last_fired_step[i] = -1;
    s->theta = -1.0f;
    return 1;
}

void sae_params_alloc(sae_params *p, int d, int n)
{
    SF_CHECK(d > 0 && n > 0);
    size_t nd = (size_t)n * (size_t)d;
    p->W_enc = zalloc(nd, sizeof(float));
    p->b_enc = zalloc((size_t)n, sizeof(float));
    p->W_dec = zalloc(nd, sizeof(float));
    p->b_dec = zalloc((size_t)d, sizeof(float));
}

void sae_params_free(sae_params *p)
{
    if (!p)
        return;
    free(p->W_enc);
    free(p->b_enc);
    free(p->W_dec);
    free(p->b_dec);
    memset(p, 0, sizeof(*p));
}

void sae_state_alloc(sae_state *s, int d, int n)
{
    SF_CHECK(d > 0 && n > 0);
    size_t nd = (size_t)n * (size_t)d;
    memset(s, 0, sizeof(*s));
    s->m_W_enc = zalloc(nd, sizeof(float));
    s->v_W_enc = zalloc(nd, sizeof(float));
    s->m_b_enc = zalloc((size_t)n, sizeof(float));
    s->v_b_enc = zalloc((size_t)n, sizeof(float));
    s->m_W_dec = zalloc(nd, sizeof(float));
    s->v_W_dec = zalloc(nd, sizeof(float));
    s->m_b_dec = zalloc((size_t)d, sizeof(float));
    s->v_b_dec = zalloc((size_t)d, sizeof(float));
    s->adam_t = 0;
    s->since_fired = zalloc((size_t)n, sizeof(int64_t));
    s->fire_count = zalloc((size_t)n, sizeof(int64_t));
    s->act_sum = zalloc((size_t)n, sizeof(double));
    s->act_max = zalloc((size_t)n, sizeof(float));
    s->last_fired_step = zalloc((size_t)n, sizeof(int64_t));
    for (int i = 0; i < n; i++)
        s->last_fired_step[i] = -1;
    s->gate_sum = zalloc((size_t)n, sizeof(double));
    s->theta = -1.0f;
}

void sae_state_free(sae_state *s)
{
    if (!s)
        return;
    free(s->m_W_enc);
    free(s->v_W_enc);
    free(s->m_b_enc);
    free(s->v_b_enc);
    free(s->m_W_dec);
    free(s->v_W_dec);
    free(s->m_b_dec);
    free(s->v_b_dec);
    free(s->since_fired);
    free(s->fire_count);
    free(s->act_sum);
    free(s->act_max);
    free(s->last_fired_step);
    free(s->gate_sum);
    memset(s, 0, sizeof(*s));
}
