# Python tools (saeforge extract / eval): `make py` builds $(BUILD)/venv, `make test-py` runs pytest.
# torch is installed with --no-deps so a CPU machine does not fetch GBs of CUDA wheels it never uses.
PYTHON3  ?= /usr/bin/python3
VENV     := $(BUILD)/venv
VENV_PY  := $(VENV)/bin/python
PY_STAMP := $(VENV)/.py-ok

.PHONY: py test-py
py: $(PY_STAMP)

$(PY_STAMP): py/requirements.txt py/requirements-torch-libs.txt py/requirements-torch-cuda.txt
	@$(PYTHON3) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON3) -m venv $(VENV)
	$(VENV_PY) -m pip install -q --no-deps -r py/requirements.txt
	$(VENV_PY) -m pip install -q --no-deps -r py/requirements-torch-libs.txt
	@$(VENV_PY) -c 'import torch' 2>/dev/null || { echo "py: no CUDA 13 runtime here; installing torch's CUDA libraries"; \
	    $(VENV_PY) -m pip install -q -r py/requirements-torch-cuda.txt; }
	$(VENV_PY) -c 'import torch, transformers, h5py; torch.ones(2, requires_grad=True).sum().backward()'
	echo "$(CURDIR)/py" > $$($(VENV_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/saeforge_py.pth
	@touch $@

test-py: $(PY_STAMP) $(BUILD)/saeforge
	cd py && SAEFORGE_BIN=$(abspath $(BUILD))/saeforge $(abspath $(VENV_PY)) -m pytest -q -p no:cacheprovider tests
