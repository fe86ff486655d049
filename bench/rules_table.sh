#!/bin/sh
# The issue-4 table: topk, gsae, batchtopk and matryoshka trained via the CLI on ONE synthetic
# dataset with gradients at equal n, k, lr, tokens and seed; prints eval FVU, gradient-weighted
# error, L0, dead %, and recovery of the true dictionary (overall and on the `important` subset).
#   sh bench/rules_table.sh [BUILD_DIR]        (default build; needs BUILD_DIR/saeforge, libsaeforge.a)
# Env: RULES_TOKENS (default 2097152), RULES_SEED (data seed, default 3), RULES_DIR (work dir).
set -eu
BUILD=${1:-build}
SF=$BUILD/saeforge
TOKENS=${RULES_TOKENS:-2097152}
SEED=${RULES_SEED:-3}
DIR=${RULES_DIR:-$BUILD/rules_table}
[ -x "$SF" ] && [ -f "$BUILD/libsaeforge.a" ] || { echo "rules_table: build $SF first (make)" >&2; exit 2; }
rm -rf "$DIR"
mkdir -p "$DIR"

# Recovery helper: mean best cosine / fraction matched (>= 0.9) of the true features, overall and
# on the important subset (truth.safetensors `important`), via compare_dicts_ex.
cat > "$DIR/recovery.c" <<'EOC'
#include <stdio.h>
#include <stdlib.h>
#include "host/compare.h"
#include "host/safetensors.h"
int main(int argc, char **argv)
{
    st_file fs, ft;
    sf_err e = {0};
    if (argc != 3 || st_read(argv[1], &fs, &e) || st_read(argv[2], &ft, &e)) {
        fprintf(stderr, "recovery: %s\n", e.msg);
        return 1;
    }
    const st_tensor *ws = st_get(&fs, "W_dec"), *wt = st_get(&ft, "W_dec"), *im = st_get(&ft, "important");
    int F = (int)wt->shape[0], d = (int)wt->shape[1], ni = (int)im->shape[0];
    float *best = malloc(sizeof(float) * F);
    compare_dicts_ex((const float *)ws->data, (int)ws->shape[0], (const float *)wt->data, F, d, NULL, best);
    double s = 0, si = 0;
    int m = 0, mi = 0;
    for (int f = 0; f < F; f++) {
        s += best[f];
        m += best[f] >= COMPARE_MATCH_COS;
    }
    for (int i = 0; i < ni; i++) {
        float b = best[((const int *)im->data)[i]];
        si += b;
        mi += b >= COMPARE_MATCH_COS;
    }
    printf("%.3f %.3f %.3f %.3f\n", s / F, (double)m / F, ni ? si / ni : 0, ni ? (double)mi / ni : 0);
    return 0;
}
EOC
PKGS="hdf5-serial libcyaml openblas"
${CC:-cc} -std=c11 -O2 -fopenmp -I. $(pkg-config --cflags $PKGS) "$DIR/recovery.c" "$BUILD/libsaeforge.a" \
    -o "$DIR/recovery" $(pkg-config --libs $PKGS) -lpthread -lm

echo "\$ $SF synth --out $DIR/data --d 64 --features 512 --tokens 262144 --k 8 --gradients --seed $SEED"
"$SF" synth --out "$DIR/data" --d 64 --features 512 --tokens 262144 --k 8 --gradients --seed "$SEED" >/dev/null

# keys that only one arch accepts
extra_sae() {
    case "$1" in
    gsae) echo "  gsae_beta: 4" ;;
    matryoshka) echo "  matryoshka_prefixes: [128, 512, 1024]" ;;
    *) echo "  # (no arch-specific keys)" ;;
    esac
}

ROWS=""
for arch in topk gsae batchtopk matryoshka; do
    cat > "$DIR/$arch.yaml" <<EOC
seed: 1
out_dir: $DIR/$arch
backend: cpu
data:
  path: $DIR/data
  eval_tokens: 8192
  shuffle_buffer: 65536
sae:
  arch: $arch
  n_latents: 1024
  k: 8
$(extra_sae $arch)
  dead_tokens: 200000
train:
  batch_tokens: 1024
  total_tokens: $TOKENS
  lr: 0.004
  schedule: linear
  decay_start: 0.6
  threads: 2
checkpoint:
  every_steps: 0
  keep: 1
log:
  every_steps: 100
  progress: off
EOC
    echo "\$ $SF train $DIR/$arch.yaml"
    "$SF" train "$DIR/$arch.yaml" > "$DIR/$arch.out" 2>"$DIR/$arch.err" || { cat "$DIR/$arch.err" >&2; exit 1; }
    line=$(grep '^eval:' "$DIR/$arch.out")
    fvu=$(echo "$line" | sed -n 's/.*FVU \([0-9.]*\).*/\1/p')
    l0=$(echo "$line" | sed -n 's/.*L0 \([0-9.]*\).*/\1/p')
    dead=$(echo "$line" | sed -n 's/.*dead \([0-9.]*\)%.*/\1/p')
    gw=$(echo "$line" | sed -n 's/.*gradient-weighted error \([0-9.]*\).*/\1/p')
    tps=$(sed -n 's/.*(\([0-9]*\) tokens\/s).*/\1/p' "$DIR/$arch.out")
    rec=$("$DIR/recovery" "$DIR/$arch/final/sae.safetensors" "$DIR/data/truth.safetensors")
    ROWS="$ROWS$arch $fvu ${gw:--} $l0 $dead $rec $tps
"
done

echo
echo "d=64, 512 true features (52 important), n=1024, k=8, $TOKENS tokens, 8192 eval tokens, seed $SEED"
printf '%-11s %8s %8s %6s %7s | %8s %8s | %8s %8s | %9s\n' arch "eval FVU" "gw err" L0 "dead %" \
    "all cos" "all 0.9" "imp cos" "imp 0.9" "tokens/s"
printf '%s' "$ROWS" | while read -r a f g l d c m ic im t; do
    printf '%-11s %8s %8s %6s %7s | %8s %8s | %8s %8s | %9s\n' "$a" "$f" "$g" "$l" "$d" "$c" "$m" "$ic" "$im" "$t"
done
echo "cos: mean over true features of the best cosine to any decoder row; 0.9: fraction with best cosine >= 0.9"
