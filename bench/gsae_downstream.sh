#!/bin/sh
# The seed paper's claim on a real (small) LM: train a tiny GPT-2 on the project's synthetic
# corpus (py/tests/tinylm.py), extract activations + loss gradients at its middle block, train
# TopK and g-SAE at several k on the same shards, and evaluate each spliced into the model.
# Not part of `make test`. Needs `make py`. Usage: sh bench/gsae_downstream.sh [OUT] (build/gsae_lm)
set -eu
OUT=${1:-build/gsae_lm}
PY=build/venv/bin/python
BIN=build/saeforge
STEPS=${LM_STEPS:-600}
KS=${KS:-"4 8 16"}
TOKENS=${SAE_TOKENS:-1048576}
mkdir -p "$OUT"
if [ ! -f "$OUT/model/config.json" ]; then
    PYTHONPATH=py/tests $PY -c "
import tinylm
tinylm.make_model('$OUT/model', n_layer=4, d=64, train_steps=$STEPS, log=print)
tinylm.write_text('$OUT/train.txt', tinylm.corpus(6000, seed=21))
tinylm.write_text('$OUT/held.txt', tinylm.corpus(300, seed=22))"
fi
$BIN extract --model "$OUT/model" --hook transformer.h.1 --text "$OUT/train.txt" --out "$OUT/shards" \
    --gradients --context 64 --shard-tokens 65536
for k in $KS; do
    for arch in topk gsae; do
        run="$OUT/runs/${arch}_k$k"
        [ -f "$run/final/cfg.json" ] && continue
        rm -rf "$run"
        cat > "$OUT/c.yaml" <<YAML
out_dir: $run
data:
  path: $OUT/shards
sae:
  arch: $arch
  n_latents: 512
  k: $k
  dead_tokens: 200_000
train:
  batch_tokens: 1024
  total_tokens: $TOKENS
  schedule: linear
YAML
        $BIN train "$OUT/c.yaml"
    done
done
for k in $KS; do
    for arch in topk gsae; do
        $BIN eval "$OUT/runs/${arch}_k$k" --model "$OUT/model" --text "$OUT/held.txt" --context 64 \
            --json "$OUT/runs/${arch}_k$k/downstream.json"
    done
done
$PY -c "
import json
print('| k | arch | FVU | delta LM loss | CE-loss score | KL |'); print('|---|---|---|---|---|---|')
for k in '$KS'.split():
    for a in ('topk', 'gsae'):
        r = json.load(open(f'$OUT/runs/{a}_k{k}/downstream.json'))['members'][0]
        print(f\"| {k} | {a} | {r['fvu']:.4f} | {r['delta_lm_loss']:.4f} | {r['ce_loss_score']:.4f} | {r['kl']:.4f} |\")
"
