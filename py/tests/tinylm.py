"""A tiny GPT-2-style model and word-level tokenizer built locally (no internet), plus a
synthetic corpus; shared by the tests and bench/gsae_downstream.sh."""
import os
import random

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

WORDS = [f"w{i}" for i in range(60)]


def corpus(n_docs, seed=0):
    """Documents from a small random grammar: some structure for a model to learn."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        start = rng.randrange(len(WORDS))
        words = []
        for j in range(rng.randrange(20, 60)):
            # mostly a step of +1 or +7 through the vocabulary: predictable but not trivial
            start = (start + (1 if rng.random() < 0.6 else 7 if rng.random() < 0.7 else rng.randrange(60))) % 60
            words.append(WORDS[start])
        docs.append(" ".join(words))
    return docs


def make_tokenizer():
    vocab = {"<|endoftext|>": 0, "<pad>": 1}
    for w in WORDS:
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<pad>", unk_token="<pad>")


def make_model(out_dir, n_layer=3, d=32, train_steps=0, seed=0, log=None, batch=32, seq=64, lr=3e-3):
    """Saves model + tokenizer to out_dir (save_pretrained); returns out_dir."""
    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=d, n_layer=n_layer, n_head=4,
                     bos_token_id=0, eos_token_id=0, pad_token_id=1, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    if train_steps:
        ids = []
        for doc in corpus(max(200, batch * train_steps // 20), seed=seed + 1):
            ids += [0] + tok(doc)["input_ids"]
        data = torch.tensor(ids)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for step in range(train_steps):
            starts = torch.randint(0, len(data) - seq - 1, (batch,))
            x = torch.stack([data[s:s + seq] for s in starts])
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if log and step % 100 == 0:
                log(f"lm step {step} loss {loss.item():.3f}")
        model.eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def write_text(path, docs):
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return path
