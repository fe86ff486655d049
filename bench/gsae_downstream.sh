#!/bin/sh
# The seed paper's claim on a real (small) LM: train a tiny GPT-2 on the project's synthetic
# corpus (py/tests/tinylm.py), extract activations + loss gradients at its middle block, train
# TopK and g-SAE at several k on the same shards, and evaluate each spliced into the model.
# Not part of `make test`. Needs `make` and `make py`. Usage: sh bench/gsae_downstream.sh [OUT]
# (default build/gsae_lm). Environment: LM_STEPS (600), KS ("4 8 16"), SAE_TOKENS (1048576),
# ARCHS ("topk gsae"), GSAE_BETA (1; other values name the runs gsae_b<BETA>_k<K>), SEED (0; others
# add _s<SEED>), PERMUTE_GRADIENTS (0; 1 trains on a copy of the shards whose gradient rows are
# shuffled within each shard, a control that keeps the gate's scale but not its information;
# adds _permg), INIT_SCALE (empty: the config default; set, it is `sae.init_scale` and adds _i<S>),
# AUX_ALPHA (empty: the config default; set, it is `sae.aux_alpha` and adds _a<A>).
# Finished pieces (model, shards, runs, evals) are kept, so a rerun only does what is missing.
set -eu
OUT=${1:-build/gsae_lm}
PY=build/venv/bin/python
BIN=build/saeforge
STEPS=${LM_STEPS:-600}
KS=${KS:-"4 8 16"}
TOKENS=${SAE_TOKENS:-1048576}
ARCHS=${ARCHS:-"topk gsae"}
BETA=${GSAE_BETA:-1}
SEED=${SEED:-0}
PERMG=${PERMUTE_GRADIENTS:-0}
INIT=${INIT_SCALE:-}
AUXA=${AUX_ALPHA:-}
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
# the held-out text as shards too: the table's gw_err is measured on the rows eval splices
$BIN extract --model "$OUT/model" --hook transformer.h.1 --text "$OUT/held.txt" --out "$OUT/held_shards" \
    --gradients --context 64 --shard-tokens 65536
DATA="$OUT/shards"
if [ "$PERMG" = 1 ]; then
    DATA="$OUT/shards_permg"
    [ -f "$DATA/.done" ] || $PY -c "
import glob, os, shutil, h5py, numpy as np
os.makedirs('$DATA', exist_ok=True)
rng = np.random.default_rng(0)
for p in sorted(glob.glob('$OUT/shards/shard_*.h5')):
    q = os.path.join('$DATA', os.path.basename(p))
    shutil.copyfile(p, q)
    with h5py.File(q, 'r+') as f:
        g = f['gradients'][:]
        f['gradients'][:] = g[rng.permutation(len(g))]
open('$DATA/.done', 'w').close()"
fi
name() {
    n="${1}_k$2"
    [ "$1" = gsae ] && [ "$BETA" != 1 ] && n="gsae_b${BETA}_k$2"
    [ "$SEED" != 0 ] && n="${n}_s$SEED"
    [ "$PERMG" = 1 ] && n="${n}_permg"
    [ -n "$INIT" ] && n="${n}_i$INIT"
    [ -n "$AUXA" ] && n="${n}_a$AUXA"
    echo "$n"
}
for k in $KS; do
    for arch in $ARCHS; do
        run="$OUT/runs/$(name $arch $k)"
        [ -f "$run/final/cfg.json" ] && continue
        rm -rf "$run"
        cat > "$OUT/c.yaml" <<YAML
seed: $SEED
out_dir: $run
data:
  path: $DATA
sae:
  arch: $arch
  n_latents: 512
  k: $k
  gsae_beta: $BETA
${INIT:+  init_scale: $INIT}
${AUXA:+  aux_alpha: $AUXA}
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
    for arch in $ARCHS; do
        run="$OUT/runs/$(name $arch $k)"
        # an eval newer than the run's export is the eval of that export
        [ "$run/downstream.json" -nt "$run/final/cfg.json" ] && continue
        $BIN eval "$run" --model "$OUT/model" --text "$OUT/held.txt" --context 64 --json "$run/downstream.json"
    done
done
# every run under OUT/runs, by k: the table, plus gw_err (sum_b (g.(x - x_hat))^2 / sum_b
# (g.(x - mean))^2) on the held-out shards with the rule that eval splices in (row top-k, or the
# JumpReLU threshold of a batchtopk/matryoshka export)
$PY -c "
import glob, json, h5py, numpy as np
from safetensors.numpy import load_file
with h5py.File('$OUT/held_shards/shard_00000.h5') as f:
    x = f['activations'][:].astype(np.float64); g = f['gradients'][:].astype(np.float64)
gx = ((g * (x - x.mean(0))).sum(1) ** 2).sum()
rows = []
for d in glob.glob('$OUT/runs/*/downstream.json'):
    r = json.load(open(d))['members'][0]
    run = d.rsplit('/', 2)[1]
    cfg = json.load(open(f'$OUT/runs/{run}/final/cfg.json'))
    w = {n: v.astype(np.float64) for n, v in load_file(f'$OUT/runs/{run}/final/sae.safetensors').items()}
    pre = np.maximum((x - w['b_dec']) @ w['W_enc'] + w['b_enc'], 0)
    if 'threshold' in w:  # batchtopk / matryoshka export as JumpReLU: eval splices a > threshold
        a = np.where(pre > w['threshold'], pre, 0)
        k = int(run.split('_k')[1].split('_')[0])
    else:
        k = cfg['k']
        idx = np.argpartition(-pre, k, axis=1)[:, :k]
        a = np.zeros_like(pre)
        np.put_along_axis(a, idx, np.take_along_axis(pre, idx, 1), 1)
    gw = ((g * (x - a @ w['W_dec'] - w['b_dec'])).sum(1) ** 2).sum() / gx
    # dead: the fraction of latents dead at the last training step
    last = [json.loads(l) for l in open(f'$OUT/runs/{run}/metrics.jsonl') if '\"eval\"' not in l][-1]
    rows.append((k, run, r, gw, last['dead_frac']))
print('| k | run | FVU | delta LM loss | CE-loss score | KL | gw_err | dead |'); print('|---|---|---|---|---|---|---|---|')
order = lambda t: (t[0], not t[1].startswith('topk'), t[1] != 'gsae_k%d' % t[0], t[1])
for k, run, r, gw, dead in sorted(rows, key=order):
    print(f\"| {k} | {run} | {r['fvu']:.4f} | {r['delta_lm_loss']:.4f} | {r['ce_loss_score']:.4f} | {r['kl']:.4f} | {gw:.4f} | {100 * dead:.1f}% |\")
print(f\"clean CE {rows[0][2]['ce_clean']:.4f}, zero-ablation CE {rows[0][2]['ce_zero']:.4f}, {rows[0][2]['tokens']} predicted tokens\")
"
