#!/bin/sh
# Bytes read from shards and wall time: one 4-member sweep against the same 4 members run solo.
# Usage: bench/sweep_vs_solo.sh [WORKDIR]   (default build/bench_sweep; uses build/saeforge)
set -eu
BIN=${SF_BIN:-build/saeforge}
W=${1:-build/bench_sweep}
rm -rf "$W" && mkdir -p "$W"
"$BIN" synth --out "$W/data" --d 256 --features 2048 --tokens 131072 --k 16 --seed 1 >/dev/null
cat > "$W/base.yaml" <<YAML
seed: 1
out_dir: $W/sweep
backend: cpu
data: {path: $W/data, shuffle_buffer: 65536}
sae: {arch: topk, n_latents: 1024, k: 16}
train: {batch_tokens: 1024, total_tokens: 262144, lr: 0.002}
checkpoint: {every_steps: 0}
log: {every_steps: 50, progress: off}
YAML
{ cat "$W/base.yaml"; printf 'sweep:\n  sae.k: [8, 16]\n  sae.arch: [topk, batchtopk]\n'; } > "$W/sweep.yaml"
t0=$(date +%s.%N)
"$BIN" train "$W/sweep.yaml" > "$W/sweep.log"
t1=$(date +%s.%N)
sweep_bytes=$(sed -n 's/^read \([0-9]*\) bytes.*/\1/p' "$W/sweep.log")
solo_bytes=0
for k in 8 16; do for a in topk batchtopk; do
    "$BIN" train "$W/base.yaml" --set out_dir="$W/solo_k$k-$a" --set sae.k=$k --set sae.arch=$a > "$W/solo.log"
    solo_bytes=$((solo_bytes + $(sed -n 's/^read \([0-9]*\) bytes.*/\1/p' "$W/solo.log")))
done; done
t2=$(date +%s.%N)
echo "sweep (4 members): $sweep_bytes bytes read, $(echo "$t1 - $t0" | bc) s"
echo "4 solo runs:       $solo_bytes bytes read, $(echo "$t2 - $t1" | bc) s"
