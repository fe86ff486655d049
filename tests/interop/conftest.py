"""Shared fixtures for the interop tests: one small data set and one trained run per arch.

The data is written with h5py the way README.md tells users to write shards (activations,
gradients and the model/hook/context_size attributes), from rows that `saeforge synth` made;
a second shard holds the evaluation rows without gradients, so every arch (g-SAE included) is
evaluated by `saeforge stats` with the rule the exported SAE runs in the user's tool.
"""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

ARCHS = ("topk", "gsae", "batchtopk", "matryoshka")
D, N, K = 64, 1024, 8
SHARD_ATTRS = {"model": "gpt2-interop", "hook": "blocks.3.hook_resid_post", "context_size": 128}
EVAL_ROWS = 8192

CONFIG = """seed: 0
out_dir: {out}
data:
  path: {data}
  eval_tokens: 2048
sae:
  arch: {arch}
  n_latents: {n}
  k: {k}
train:
  batch_tokens: 1024
  total_tokens: 65536
  threads: 2
log:
  progress: off
"""


def saeforge_bin():
    path = os.environ.get("SAEFORGE")
    if not path or not os.access(path, os.X_OK):
        pytest.exit("SAEFORGE must name the saeforge binary (make test-interop sets it)", returncode=2)
    return path


def saeforge(*args, check=True):
    """Runs saeforge; returns the CompletedProcess (stdout+stderr text)."""
    res = subprocess.run([saeforge_bin(), *map(str, args)], capture_output=True, text=True)
    if check and res.returncode != 0:
        pytest.fail("saeforge %s failed (exit %d): %s%s" % (" ".join(map(str, args)), res.returncode,
                                                          res.stdout, res.stderr))
    return res


def stats(sae_dir, data, out):
    """FVU and L0 that `saeforge stats` reports over every row of data, in one batch (the FVU
    denominator is the variance around the mean of the rows it sees, batch by batch)."""
    saeforge("stats", sae_dir, "--data", data, "--out", out, "--batch", EVAL_ROWS, "--threads", 2)
    with h5py.File(os.path.join(out, "feature_stats.h5"), "r") as f:
        return float(f.attrs["fvu"]), float(f.attrs["l0"]), f["fire_count"][:]


def fvu(x, xhat):
    """Our definition in float64: sum |x - xhat|^2 / sum |x - mean(x)|^2."""
    x = np.asarray(x, dtype=np.float64)
    xhat = np.asarray(xhat, dtype=np.float64)
    return float(((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """A fresh folder per venv: $INTEROP_WORK/<venv name>, else a pytest temp dir."""
    root = os.environ.get("INTEROP_WORK")
    if not root:
        return str(tmp_path_factory.mktemp("interop"))
    path = os.path.join(root, os.path.basename(sys.prefix))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


@pytest.fixture(scope="session")
def data(work):
    """(train_dir, eval_dir, eval_rows float32 [EVAL_ROWS, D])"""
    synth = os.path.join(work, "synth")
    saeforge("synth", "--out", synth, "--d", D, "--features", 512, "--tokens", 32768, "--k", K,
             "--gradients", "--seed", 3)
    with h5py.File(os.path.join(synth, "shard_000.h5"), "r") as f:
        acts = f["activations"][:].astype(np.float32)
        grads = f["gradients"][:].astype(np.float32)
    train, evald = os.path.join(work, "data"), os.path.join(work, "eval")
    os.makedirs(train)
    os.makedirs(evald)
    with h5py.File(os.path.join(train, "shard_000.h5"), "w") as f:
        f.create_dataset("activations", data=acts.astype(np.float16), chunks=(4096, D))
        f.create_dataset("gradients", data=grads.astype(np.float16), chunks=(4096, D))
        for key, val in SHARD_ATTRS.items():
            f.attrs[key] = val
    rows = acts[-EVAL_ROWS:]
    with h5py.File(os.path.join(evald, "shard_000.h5"), "w") as f:
        f.create_dataset("activations", data=rows)
    return train, evald, rows


@pytest.fixture(scope="session")
def runs(work, data):
    """arch -> run dir, each trained for 64 short steps."""
    out = {}
    for arch in ARCHS:
        run = os.path.join(work, "run_" + arch)
        cfg = os.path.join(work, arch + ".yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(out=run, data=data[0], arch=arch, n=N, k=K))
        saeforge("train", cfg)
        out[arch] = run
    return out
