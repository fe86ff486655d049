/* Phase names and the CPU clock behind profile.h. */
#include "profile.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[SAE_PH_COUNT] = {"upload", "encode", "gate", "select", "decode",
                                                "auxk", "backward", "optimizer", "stats"};

const char *sae_phase_name(int phase)
{
    return phase >= 0 && phase < SAE_PH_COUNT ? names[phase] : "?";
}

int sae_profile_env(void)
{
    const char *v = getenv("SF_PROFILE");
    return v && v[0] && strcmp(v, "0") != 0;
}

void sae_prof_begin(sae_prof *p, int on, double *out)
{
    p->on = on;
    p->out = out;
    if (!on)
        return;
    memset(out, 0, sizeof(double) * SAE_PH_COUNT);
    p->t = omp_get_wtime();
}

void sae_prof_mark(sae_prof *p, int phase)
{
    if (!p->on)
        return;
    double now = omp_get_wtime();
    p->out[phase] += now - p->t;
    p->t = now;
}
