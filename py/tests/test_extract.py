"""saeforge extract: shards saeforge reads and trains on, gradients vs an independent autograd."""
import os
import subprocess

import h5py
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from saeforge_py import extract, hooks


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


def with_probe(model_dir, called=True):
    """The tiny model plus a module `transformer.probe` that reads block 1's output on a branch
    nothing downstream uses (a detached side computation), or that the forward never calls."""
    model, tok = hooks.load_model(model_dir, "cpu")  # frozen, as extract loads it
    model.transformer.probe = torch.nn.Linear(model.config.n_embd, model.config.n_embd)
    if called:
        def side(mod, inp, out):
            model.transformer.probe(out[0] if isinstance(out, tuple) else out)  # computed, then dropped
        model.transformer.h[1].register_forward_hook(side)
    return model, tok


def test_error_hook_loss_does_not_depend_on(tmp_path, lm, monkeypatch, capsys):
    model_dir, train, _ = lm
    monkeypatch.setattr(extract, "load_model", lambda name, device: with_probe(model_dir))
    o = tmp_path / "o"
    argv = ["--model", model_dir, "--hook", "transformer.probe", "--text", train, "--context", "32"]
    # without --gradients the probe is an ordinary hook: its rows are written
    assert extract.main(argv + ["--tokens", "100", "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert extract.main(argv + ["--out", str(o), "--gradients"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeforge: the loss does not depend on the output of 'transformer.probe'"), err
    assert "drop --gradients" in err and err.count("\n") == 1
    assert not any(n.endswith((".h5", ".h5.tmp")) for n in os.listdir(o))


def test_error_hook_never_called(tmp_path, lm, monkeypatch, capsys):
    model_dir, train, _ = lm
    monkeypatch.setattr(extract, "load_model", lambda name, device: with_probe(model_dir, called=False))
    for grads in ([], ["--gradients"]):
        assert extract.main(["--model", model_dir, "--hook", "transformer.probe", "--text", train,
                             "--out", str(tmp_path / "o"), *grads]) == 2
        err = capsys.readouterr().err
        assert err.startswith("saeforge: hook 'transformer.probe' did not run in the forward pass"), err


def test_error_hub_model_not_found(tmp_path, lm, saeforge_bin):
    """A hub name that is neither cached nor reachable (offline): one line, exit 2, no traceback."""
    _, train, _ = lm
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([saeforge_bin, "extract", "--model", "no-such-org/no-such-model", "--hook", "x",
                        "--text", train, "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("saeforge: model no-such-org/no-such-model could not be loaded"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_progress_eta_without_tokens(tmp_path, lm, capsys):
    model_dir, train, _ = lm
    assert extract.main(["--model", model_dir, "--hook", "transformer.h.1", "--text", train,
                         "--out", str(tmp_path / "o"), "--context", "32"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(100% of the input)" in last and "ETA 0m00s" in last and "/0 " not in last, last
