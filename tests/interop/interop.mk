# `make test-interop`: our exports loaded by SAELens 6.x / 5.x and sparsify with their own loaders,
# and their saved SAEs read by saeforge. Venvs under $(BUILD): one torch (CPU stand-ins for its
# CUDA libraries) shared through a .pth by two venvs, since SAELens 5 and 6 pin different numpy.

INTEROP_PY    ?= python3
INTEROP_TORCH := $(BUILD)/venv-interop-torch
INTEROP_REQ   := tests/interop
INTEROP_PIP   := --disable-pip-version-check --no-input --no-deps --only-binary=torch

# torch alone, no nvidia-* wheels: CUDA's libraries become stand-ins that report no device.
# The stamp (.ok) is written last: an interrupted build is redone from scratch.
$(INTEROP_TORCH)/.ok: $(INTEROP_REQ)/requirements-torch.txt $(INTEROP_REQ)/cuda_stubs.py
	@rm -rf $(INTEROP_TORCH)
	$(INTEROP_PY) -m pip install $(INTEROP_PIP) --quiet --target $(INTEROP_TORCH) -r $<
	$(INTEROP_PY) $(INTEROP_REQ)/cuda_stubs.py $(INTEROP_TORCH)/torch
	@touch $@

# build/venv-interop6 (sae-lens 6 + eai-sparsify + pytest), build/venv-interop5 (sae-lens 5)
$(BUILD)/venv-interop%/.ok: $(INTEROP_REQ)/requirements-saelens%.txt $(INTEROP_TORCH)/.ok
	@rm -rf $(BUILD)/venv-interop$*
	$(INTEROP_PY) -m venv $(BUILD)/venv-interop$*
	$(BUILD)/venv-interop$*/bin/python -m pip install $(INTEROP_PIP) --quiet -r $<
	@$(BUILD)/venv-interop$*/bin/python -c 'import site; print(site.getsitepackages()[0])' | \
	    { read sp; echo '$(abspath $(INTEROP_TORCH))' > "$$sp/saeforge-interop-torch.pth"; }
	$(BUILD)/venv-interop$*/bin/python -c 'import torch, sae_lens, pytest; assert not torch.cuda.is_available()'
	@touch $@

interop-venvs: $(BUILD)/venv-interop6/.ok $(BUILD)/venv-interop5/.ok
test-interop: $(BUILD)/saeforge interop-venvs
	@SAEFORGE=$(abspath $(BUILD)/saeforge) INTEROP_WORK=$(abspath $(BUILD)/interop) \
	    sh $(INTEROP_REQ)/run.sh $(abspath $(BUILD))
.PHONY: interop-venvs test-interop
