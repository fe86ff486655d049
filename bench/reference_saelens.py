"""Train SAELens's own TopK / BatchTopK / Matryoshka training SAEs on saeforge shards (issue 10).

Reads the same rows saeforge trains on (all *.h5 in --data, last --eval-tokens rows held out),
trains with SAELens's training_forward_pass loss and torch Adam, then reports held-out FVU and
the fraction of true features (truth.safetensors W_dec) matched at cosine >= 0.9, the same
measures as `saeforge compare`. Not part of `make test`; needs a venv with sae-lens (see
docs/rules.md). With --trainer ours (the default) the optimizer loop is this script's, on
saeforge's lr schedule; with --trainer saelens it is SAELens's own SAETrainer with its defaults
(constant lr, grad norm clipped at 1.0, dead after 1000 steps without firing). Either way the
SAE, its selection and its loss are SAELens's.
"""
import argparse
import glob
import os
import sys

import h5py
import numpy as np


def load_rows(data_dir):
    files = sorted(glob.glob(os.path.join(data_dir, "*.h5")))
    if not files:
        sys.exit(f"reference_saelens: no *.h5 shards in {data_dir}; run `saeforge synth --out DIR` first")
    return np.concatenate([h5py.File(f, "r")["activations"][:].astype(np.float32) for f in files])


def make_sae(arch, d, n, k, prefixes):
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig)
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    if arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=n, k=k))
    if arch == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d, d_sae=n, k=k))
    return MatryoshkaBatchTopKTrainingSAE(
        MatryoshkaBatchTopKTrainingSAEConfig(d_in=d, d_sae=n, k=k, matryoshka_widths=prefixes))


def lr_at(step, steps, lr, warmup, decay_start):
    """saeforge's warmup + linear decay schedule, so both sides see the same lr."""
    f = min(1.0, (step + 1) / warmup) if warmup else 1.0
    t0 = int(decay_start * steps)
    if step >= t0:
        f *= max(0.0, (steps - step) / max(1, steps - t0))
    return lr * f


class RowIterator:
    """Batches of training rows, reshuffled each pass (the order both trainers see)."""

    def __init__(self, rows, batch, seed):
        import torch
        self.rows, self.batch = rows, batch
        self.g = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(len(rows), generator=self.g), 0

    def __iter__(self):
        return self

    def __next__(self):
        import torch
        if self.pos + self.batch > len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.rows), generator=self.g), 0
        x = self.rows[self.perm[self.pos:self.pos + self.batch]]
        self.pos += self.batch
        return x


def train_ours(sae, train, a):
    """Torch Adam on saeforge's schedule; dead = --dead-tokens tokens without firing."""
    import torch
    from sae_lens.saes.sae import TrainStepInput
    opt = torch.optim.Adam(sae.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    since = torch.zeros(a.n, dtype=torch.long)
    steps = a.tokens // a.batch
    it = RowIterator(train, a.batch, a.seed)
    for step in range(steps):
        x = next(it)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps, a.lr, a.warmup, a.decay_start)
        out = sae.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=since >= a.dead_tokens,
            n_training_steps=step, is_logging_step=False))
        opt.zero_grad()
        out.loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), a.clip)
        opt.step()
        fired = (out.feature_acts > 0).any(0)
        since = torch.where(fired, torch.zeros_like(since), since + a.batch)
        if (step + 1) % 256 == 0:
            print(f"step {step + 1}/{steps}  loss {out.loss.item():.4f}", file=sys.stderr, flush=True)
    return float((since >= a.dead_tokens).float().mean())


def train_saelens(sae, train, a):
    """SAELens's SAETrainer as its toy-model trainer sets it up, at this script's lr."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer
    cfg = SAETrainerConfig(
        total_training_samples=a.tokens, train_batch_size_samples=a.batch, lr=a.lr, lr_end=a.lr,
        lr_scheduler_name="constant", device="cpu", save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False))
    tr = SAETrainer(cfg=cfg, sae=sae, data_provider=RowIterator(train, a.batch, a.seed),
                    save_checkpoint_fn=lambda path: None)
    tr.fit()
    return float(tr.dead_neurons.float().mean())


def matched(W, truth):
    W = W / np.linalg.norm(W, axis=1, keepdims=True).clip(1e-12)
    T = truth / np.linalg.norm(truth, axis=1, keepdims=True).clip(1e-12)
    return float(((T @ W.T).max(axis=1) >= 0.9).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory of saeforge shards (+ truth.safetensors)")
    ap.add_argument("--arch", choices=["topk", "batchtopk", "matryoshka"], default="batchtopk")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=2097152)
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--lr", type=float, default=0.004)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--decay-start", type=float, default=0.6)
    ap.add_argument("--dead-tokens", type=int, default=100000)
    ap.add_argument("--prefixes", default="", help="matryoshka widths, e.g. 64,256,1024 (default n/16,n/4,n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trainer", choices=["ours", "saelens"], default="ours",
                    help="ours: this script's Adam loop on saeforge's schedule; saelens: SAETrainer")
    ap.add_argument("--clip", type=float, default=0.0, help="--trainer ours: clip the grad norm (0 = off)")
    a = ap.parse_args()
    if a.trainer == "saelens" and a.clip:
        ap.error("--clip is for --trainer ours; SAELens's SAETrainer always clips at 1.0")

    import torch
    from safetensors.numpy import load_file
    from sae_lens.saes.sae import TrainStepInput
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rows = load_rows(a.data)
    if a.eval_tokens >= len(rows):
        sys.exit(f"reference_saelens: --eval-tokens {a.eval_tokens} leaves no training rows of {len(rows)}")
    train, ev = torch.from_numpy(rows[:-a.eval_tokens]), torch.from_numpy(rows[-a.eval_tokens:])
    prefixes = [int(p) for p in a.prefixes.split(",")] if a.prefixes else [a.n // 16, a.n // 4, a.n]
    sae = make_sae(a.arch, rows.shape[1], a.n, a.k, prefixes)
    dead = train_ours(sae, train, a) if a.trainer == "ours" else train_saelens(sae, train, a)
    steps = a.tokens // a.batch
    with torch.no_grad():
        sae.eval()
        # inference: SAELens's own encode (threshold for batchtopk/matryoshka once exported);
        # the training forward pass on the eval rows gives the training-time selection's FVU.
        z = sae.training_forward_pass(TrainStepInput(
            sae_in=ev, coefficients={}, dead_neuron_mask=None, n_training_steps=steps,
            is_logging_step=False))
        xh = sae.decode(z.feature_acts)
        fvu = float(((ev - xh) ** 2).sum() / ((ev - ev.mean(0)) ** 2).sum())
        W = (sae.W_dec * 1.0).numpy()
        thr = ""
        if a.arch != "topk":
            # the exported (JumpReLU) rule: keep relu(hidden_pre) > topk_threshold
            _, hidden_pre = sae.encode_with_hidden_pre(ev)
            zt = hidden_pre.relu() * (hidden_pre > sae.topk_threshold)
            xt = sae.decode(zt)
            tfvu = float(((ev - xt) ** 2).sum() / ((ev - ev.mean(0)) ** 2).sum())
            thr = f"  threshold rule: FVU {tfvu:.4f}  L0 {float((zt > 0).float().sum(1).mean()):.2f}"
    truth = load_file(os.path.join(a.data, "truth.safetensors"))["W_dec"]
    l0 = float((z.feature_acts > 0).float().sum(1).mean())
    print(f"{a.arch} seed {a.seed} trainer {a.trainer}: eval FVU {fvu:.4f}  L0 {l0:.2f}  matched>=0.9 {100 * matched(W, truth):.1f}%"
          f"  dead {100 * dead:.1f}%{thr}")


if __name__ == "__main__":
    main()
