"""Model loading and hooks: a module's output (first element of a tuple) read, made a leaf, or replaced."""
import os

import torch

from . import ToolError


def load_model(name, device):
    """A causal LM and its tokenizer from a local save_pretrained directory or a hub name."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    # its weight-loading bar and notices would break the one-line error contract on stderr
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if device == "cuda" and not torch.cuda.is_available():
        raise ToolError("--device cuda: no usable CUDA device here; use --device cpu")
    local = os.path.isdir(name)
    if not local and (name.startswith((".", "/")) or os.sep in name.rstrip("/").split("/", 1)[-1]):
        raise ToolError(f"model directory {name} not found; pass a save_pretrained directory or a hub name")
    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ToolError(f"model {name} could not be loaded ({first}); pass a save_pretrained "
                        f"directory or a hub name that is cached or reachable") from None
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def find_module(model, hook):
    mods = dict(model.named_modules())
    if hook not in mods or not hook:
        names = [n for n in mods if n]
        # blocks first: those are what one usually hooks
        blocks = [n for n in names if n.count(".") <= 2]
        shown = ", ".join(blocks[:40]) + (", ..." if len(blocks) > 40 else "")
        raise ToolError(f"hook '{hook}' is not a module of the model; modules include: {shown}")
    return mods[hook]


def _main(out):
    return out[0] if isinstance(out, tuple) else out


def _replace(out, x):
    return (x,) + tuple(out[1:]) if isinstance(out, tuple) else x


class Hook:
    """Context manager on a module's forward output. fn(x) -> x' (or None to keep x) runs on the
    (batch, seq, d) tensor; `seen` records the tensor handed on to the rest of the model."""

    def __init__(self, module, fn):
        self.module = module
        self.fn = fn
        self.seen = None
        self.handle = None

    def _hook(self, mod, inp, out):
        x = _main(out)
        y = self.fn(x)
        self.seen = x if y is None else y
        return None if y is None else _replace(out, y)

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def next_token_ce(logits, ids, mask):
    """Per-position next-token cross-entropy (batch, seq-1) and its validity mask."""
    tgt = ids[:, 1:]
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tgt.flatten(),
                                           reduction="none").view(tgt.shape)
    return ce * valid, valid
