import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import tinylm  # noqa: E402


@pytest.fixture(scope="session")
def lm(tmp_path_factory):
    """(model dir, train text, held-out text): a tiny GPT-2 trained briefly, so the loss depends
    on the residual stream the way a real model's does."""
    root = tmp_path_factory.mktemp("lm")
    model_dir = tinylm.make_model(str(root / "model"), train_steps=60, batch=16, seq=32, lr=1e-2)
    train = tinylm.write_text(str(root / "train.txt"), tinylm.corpus(300, seed=11))
    held = tinylm.write_text(str(root / "held.txt"), tinylm.corpus(60, seed=12))
    return model_dir, train, held


@pytest.fixture(scope="session")
def saeforge_bin():
    b = os.environ.get("SAEFORGE_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "saeforge")
    if not os.access(b, os.X_OK):
        pytest.fail(f"{b} missing: run `make` (make test-py builds it)")
    return os.path.abspath(b)
