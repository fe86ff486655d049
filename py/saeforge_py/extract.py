"""saeforge extract: activations (and loss gradients) of a Hugging Face causal LM at a hook,
written as section-3 shards, streamed in batches, resumable shard by shard."""
import argparse
import glob
import json
import os
import sys

import numpy as np
import torch

from . import ToolError
from .hooks import Hook, find_module, load_model, next_token_ce
from .progress import Progress
from .shards import DTYPES, ShardWriter, read_settings, shard_name
from .textin import Windows


def parse_args(argv):
    p = argparse.ArgumentParser(prog="saeforge extract", description=(
        "Write activation shards (SPEC section 3) from a causal LM at a hook. With --gradients each "
        "row also gets dL/dx, L = the summed next-token cross-entropy of the same forward pass."))
    p.add_argument("--model", required=True, help="hub name or save_pretrained directory")
    p.add_argument("--hook", required=True, help="module name, e.g. transformer.h.6 (its output)")
    p.add_argument("--text", required=True, nargs="+", metavar="FILE",
                   help="plain text (blank lines split documents), .jsonl, or .npy token ids")
    p.add_argument("--out", required=True, help="output directory (resumes the shards already there)")
    p.add_argument("--tokens", type=int, default=0, help="rows to write (default: all the text)")
    p.add_argument("--context", type=int, default=128, help="positions per window, BOS included")
    p.add_argument("--gradients", action="store_true", help="also write dL/dx at the hook")
    p.add_argument("--dtype", choices=DTYPES, default="f32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    p.add_argument("--shard-tokens", type=int, default=262144, help="rows per shard")
    p.add_argument("--text-field", default="text", help="JSONL field: a string or a list of ids")
    p.add_argument("--keep-bos", action="store_true", help="keep the BOS position of each window")
    a = p.parse_args(argv)
    for name in ("batch", "shard_tokens", "context"):
        if getattr(a, name) < 1:
            raise ToolError(f"--{name.replace('_', '-')} {getattr(a, name)}: must be positive")
    if a.tokens < 0:
        raise ToolError(f"--tokens {a.tokens}: must be positive (0 = all the text)")
    return a


def settings_of(a):
    """What must match for a resumed extraction to continue the same row stream."""
    return {"model": a.model, "hook": a.hook, "text": [os.path.abspath(t) for t in a.text],
            "context": a.context, "gradients": a.gradients, "dtype": a.dtype,
            "shard_tokens": a.shard_tokens, "text_field": a.text_field, "keep_bos": a.keep_bos}


def finished_shards(out, settings):
    """(count of complete shards, True when the last one closed the text) after checking they
    come from the same settings; stale temp files of an interrupted shard are removed."""
    for t in glob.glob(os.path.join(out, "*.h5.tmp")):
        os.unlink(t)
    done, ended = 0, False
    while os.path.exists(os.path.join(out, shard_name(done))):
        path = os.path.join(out, shard_name(done))
        try:
            have = read_settings(path)
        except OSError:
            raise ToolError(f"{path}: not a readable shard; remove it or use a new --out") from None
        if have != settings:
            diff = sorted(k for k in settings if have.get(k) != settings[k])
            raise ToolError(f"{path} was written with other settings ({', '.join(diff)}); "
                            f"use a new --out or the same options")
        import h5py
        with h5py.File(path, "r") as f:
            ended = f["activations"].shape[0] < settings["shard_tokens"]
        done += 1
    return done, ended


def batches(windows, size):
    buf = []
    for w in windows:
        buf.append(w)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def forward_rows(model, module, hook, ids, mask, keep, gradients):
    """Kept rows of one batch: (acts (r, d), grads (r, d) or None, tokens (r,))."""
    if gradients:
        h = Hook(module, lambda x: x.detach().requires_grad_(True))
        with h:
            logits = model(input_ids=ids, attention_mask=mask).logits
        if h.seen is None:
            raise ToolError(f"hook '{hook}' did not run in the forward pass; pick a module the model calls")
        ce, _ = next_token_ce(logits, ids, mask)
        # the SUM over positions: each row's gradient is its own effect on the loss, independent
        # of the batch size and of how many positions the batch holds
        loss = ce.sum()
        # with the weights frozen, a hook off the path to the logits leaves the loss with no
        # autograd graph at all (autograd.grad would raise), or with none through the hook
        g = torch.autograd.grad(loss, h.seen, allow_unused=True)[0] if loss.requires_grad else None
        if g is None:
            raise ToolError(f"the loss does not depend on the output of '{hook}', so it has no "
                            f"gradients; hook a module on the path to the logits or drop --gradients")
        x = h.seen.detach()
    else:
        h = Hook(module, lambda x: None)
        with torch.no_grad(), h:
            model(input_ids=ids, attention_mask=mask)
        if h.seen is None:
            raise ToolError(f"hook '{hook}' did not run in the forward pass; pick a module the model calls")
        x, g = h.seen, None
    if x.dim() != 3 or x.shape[:2] != ids.shape:
        raise ToolError(f"hook '{hook}' outputs shape {tuple(x.shape)}, not (batch, seq, d); "
                        f"hook a module that outputs the residual stream")
    return x[keep].float(), (g[keep].float() if g is not None else None), ids[keep]


class Sink:
    """Routes rows into consecutive shards of shard_tokens rows."""

    def __init__(self, a, first_shard, d, attrs):
        self.a, self.index, self.d, self.attrs = a, first_shard, d, attrs
        self.w = None
        self.written = 0

    def put(self, acts, grads, toks):
        i = 0
        while i < acts.shape[0]:
            if self.w is None:
                self.w = ShardWriter(self.a.out, self.index, self.a.shard_tokens, self.d, self.a.dtype,
                                     self.a.gradients, self.attrs)
            r = min(self.w.free(), acts.shape[0] - i)
            self.w.append(acts[i:i + r], None if grads is None else grads[i:i + r], toks[i:i + r])
            i += r
            self.written += r
            if self.w.free() == 0:
                self.close()

    def close(self):
        if self.w is not None:
            self.w.close()
            self.w = None
            self.index += 1

    def abort(self):
        if self.w is not None:
            self.w.abort()
            self.w = None


def run(a):
    settings = settings_of(a)
    os.makedirs(a.out, exist_ok=True)
    done, ended = finished_shards(a.out, settings)
    skip = done * a.shard_tokens
    goal = a.tokens if a.tokens else None
    if ended or (goal is not None and skip >= goal):
        print(f"extract: {done} shards in {a.out} are complete; nothing to do")
        return 0
    model, tok = load_model(a.model, a.device)
    module = find_module(model, a.hook)
    windows = Windows(tok, a.text, a.context, a.text_field)
    d = None
    attrs = {"model": a.model, "hook": a.hook, "context_size": a.context,
             "saeforge_extract": json.dumps(settings, sort_keys=True)}
    prog = Progress(goal - skip if goal else 0, fraction=windows.fraction)
    sink = None
    try:
        for batch in batches(windows, a.batch):
            keep = [windows.keep(m, a.keep_bos) for _, m in batch]
            n_rows = sum(int(k.sum()) for k in keep)
            if skip >= n_rows:  # rows of finished shards: no forward pass needed
                skip -= n_rows
                continue
            ids = torch.as_tensor(np.stack([w for w, _ in batch]), device=a.device)
            mask = torch.as_tensor(np.stack([m for _, m in batch]), device=a.device)
            keep_t = torch.as_tensor(np.stack(keep), device=a.device)
            acts, grads, toks = forward_rows(model, module, a.hook, ids, mask, keep_t, a.gradients)
            acts, toks = acts[skip:], toks[skip:].cpu()
            grads = grads[skip:] if grads is not None else None
            skip = 0
            if goal is not None:
                left = goal - done * a.shard_tokens - (sink.written if sink else 0)
                acts, toks = acts[:left], toks[:left]
                grads = grads[:left] if grads is not None else None
            if sink is None:
                d = acts.shape[1]
                sink = Sink(a, done, d, attrs)
            sink.put(acts, grads, toks)
            prog.update(acts.shape[0])
            if goal is not None and done * a.shard_tokens + sink.written >= goal:
                break
        if sink is None:
            raise ToolError(f"the text gave no rows past the {done} finished shards; pass more text")
        sink.close()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    prog.close()
    total = done * a.shard_tokens + sink.written
    print(f"extract: {total} rows (d={d}, {a.dtype}{', gradients' if a.gradients else ''}) in "
          f"{sink.index} shards in {a.out}")
    return 0


def main(argv=None):
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv)
        return run(a)
    except ToolError as e:
        print(f"saeforge: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saeforge: extract interrupted; the finished shards stay, run the same command to resume",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
