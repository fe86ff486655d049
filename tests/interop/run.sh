#!/bin/sh
# make test-interop: the interop tests once per venv (SAELens 6.x + sparsify, then SAELens 5.x).
# Usage: run.sh BUILD_DIR   (SAEFORGE and INTEROP_WORK set by the make target)
set -u
build=$1
here=$(dirname "$0")
status=0
# sparsify without a GPU: its Triton decoder cannot run; the eager one is the reference anyway
export SPARSIFY_DISABLE_TRITON=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "== interop: sae-lens 6.x + eai-sparsify ($build/venv-interop6)"
"$build/venv-interop6/bin/python" -m pytest -p no:cacheprovider -q -rA "$here/test_saelens.py" "$here/test_sparsify.py" || status=1
echo "== interop: sae-lens 5.x ($build/venv-interop5)"
"$build/venv-interop5/bin/python" -m pytest -p no:cacheprovider -q -rA "$here/test_saelens.py" || status=1
exit $status
