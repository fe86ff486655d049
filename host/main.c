/* saeforge entry point: dispatches `saeforge <verb>` to the verb's command. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} verbs[] = {
    {"train", cmd_train, "train CONFIG [--set key=value]... [--resume]   train one SAE"},
    {"synth", cmd_synth, "synth --out DIR [--d D] [--features F] [--tokens N] [--k K] [--dtype f32|f16|bf16] [--gradients] [--seed S]"},
    {"inspect", cmd_inspect, "inspect PATH                  describe a shard, checkpoint or run"},
    {"compare", cmd_compare, "compare A B                   match two dictionaries (SAE, run or truth file)"},
    {"stats", cmd_stats, "stats SAE --data PATH [--out DIR]   feature statistics of a trained SAE"},
    {"export", cmd_export, "export RUN --format saelens|sparsify --out DIR"},
    {"submit", cmd_submit, "submit CONFIG [--set key=value]... [--dry-run] [slurm options]   Slurm job"},
    {"status", cmd_status, "status RUN                    step, tokens, metrics, ETA, Slurm jobs"},
    {"extract", cmd_extract, "extract --model M --hook H --text FILE... --out DIR [--gradients] ...   shards from a causal LM (make py)"},
    {"eval", cmd_eval, "eval SAE_OR_RUN --model M --text FILE... [--json OUT] ...   downstream CE/KL of a spliced SAE (make py)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: saeforge <verb> [args]   (saeforge <verb> --help for details)\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        fprintf(f, "  %s\n", verbs[i].help);
}

int main(int argc, char **argv)
{
    /* OpenMP threads that spin while waiting starve each other on a busy or shared node
     * (seen: a 20x slowdown on 2 loaded cores); sleeping waits cost ~50 us per parallel region,
     * noise beside a step. The user's own setting wins. Must precede the first OpenMP call. */
    setenv("OMP_WAIT_POLICY", "passive", 0);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(argv[1], verbs[i].name))
            return verbs[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "saeforge: unknown verb '%s'; run `saeforge --help` for the list\n", argv[1]);
    return 2;
}
