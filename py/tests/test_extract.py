"""saeforge extract: shards saeforge reads and trains on, gradients vs an independent autograd."""
import os
import subprocess

import h5py
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from saeforge_py import extract


def run_extract(tmp, lm, *extra, out="shards"):
    model_dir, train, _ = lm
    o = os.path.join(tmp, out)
    rc = extract.main(["--model", model_dir, "--hook", "transformer.h.1", "--text", train, "--out", o,
                       "--context", "32", "--shard-tokens", "3000", "--tokens", "7000", *extra])
    assert rc == 0
    return o


def test_shards_validate_and_train(tmp_path, lm, saeforge_bin):
    o = run_extract(str(tmp_path), lm, "--gradients", "--dtype", "bf16")
    names = sorted(os.listdir(o))
    assert names == ["shard_00000.h5", "shard_00001.h5", "shard_00002.h5"]
    r = subprocess.run([saeforge_bin, "inspect", o], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "7000 rows" in r.stdout and "bfloat16" in r.stdout and "gradients yes" in r.stdout
    run = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"out_dir: {run}\ndata:\n  path: {o}\nsae:\n  arch: gsae\n  n_latents: 64\n  k: 4\n"
                   f"train:\n  batch_tokens: 256\n  total_tokens: 4096\n")
    r = subprocess.run([saeforge_bin, "train", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout
    assert (run / "final" / "sae.safetensors").exists()


def test_gradients_match_autograd(tmp_path, lm):
    """Rows of the shard against dL/dx from output_hidden_states + retain_grad, L = summed CE."""
    model_dir, train, _ = lm
    o = run_extract(str(tmp_path), lm, "--gradients", "--dtype", "f32")
    with h5py.File(os.path.join(o, "shard_00000.h5")) as f:
        acts, grads, toks = f["activations"][:62], f["gradients"][:62], f["tokens"][:62]
        assert f.attrs["hook"] == "transformer.h.1" and f.attrs["context_size"] == 32
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # the first two windows, built independently: BOS + 31 ids of the EOS-joined documents
    text = open(train).read().split("\n\n")
    ids = []
    for doc in text:
        if doc.strip():
            ids += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    win = torch.tensor([[tok.bos_token_id] + ids[:31], [tok.bos_token_id] + ids[31:62]])
    out = model(input_ids=win, output_hidden_states=True)
    h = out.hidden_states[2]  # output of block 1
    h.retain_grad()
    logits = out.logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), win[:, 1:].reshape(-1),
                                             reduction="sum")
    loss.backward()
    ref_a = h[:, 1:].reshape(-1, h.shape[-1]).detach().numpy()  # BOS positions excluded
    ref_g = h.grad[:, 1:].reshape(-1, h.shape[-1]).numpy()
    np.testing.assert_array_equal(toks, win[:, 1:].reshape(-1).numpy())
    np.testing.assert_allclose(acts, ref_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, ref_g, rtol=1e-4, atol=1e-7)
    assert np.abs(ref_g).max() > 1e-4  # the comparison is not of zeros
    assert np.all(ref_g[30] == 0) and np.all(ref_g[61] == 0)  # the last positions predict nothing


def test_resume_skips_finished_shards(tmp_path, lm):
    o = run_extract(str(tmp_path), lm, "--dtype", "f16")
    with h5py.File(os.path.join(o, "shard_00002.h5")) as f:
        want = f["activations"][:]
    os.unlink(os.path.join(o, "shard_00002.h5"))
    mtime = os.path.getmtime(os.path.join(o, "shard_00000.h5"))
    open(os.path.join(o, "shard_00002.h5.tmp"), "w").write("half")  # an interrupted shard
    run_extract(str(tmp_path), lm, "--dtype", "f16")
    assert os.path.getmtime(os.path.join(o, "shard_00000.h5")) == mtime
    assert not os.path.exists(os.path.join(o, "shard_00002.h5.tmp"))
    with h5py.File(os.path.join(o, "shard_00002.h5")) as f:
        assert f["activations"].dtype == np.float16
        np.testing.assert_array_equal(f["activations"][:], want)


def test_errors(tmp_path, lm, saeforge_bin, capsys):
    model_dir, train, _ = lm
    base = ["--text", train, "--out", str(tmp_path / "o")]
    assert extract.main(["--model", model_dir, "--hook", "transformer.h.9", *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeforge: hook 'transformer.h.9' is not a module") and "transformer.h.1" in err
    assert err.count("\n") == 1
    r = subprocess.run([saeforge_bin, "extract", "--model", str(tmp_path / "nope"), "--hook", "x", *base],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "model directory" in r.stderr and "not found" in r.stderr, r.stderr
    assert not os.listdir(tmp_path / "o") if os.path.exists(tmp_path / "o") else True
