#!/bin/sh
# GPU checks: the parity suites against the real CUDA runtime, then the quickstart on backend cuda.
build=$1; shift
sh tests/run_all.sh "$build/cuda" "$@" || exit 1
sh configs/quickstart.sh "$build/cuda/saeforge" --set backend=cuda
