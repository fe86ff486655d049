#!/bin/sh
# Runs a data-parallel test program under mpirun with NP ranks on this machine (oversubscribed:
# CI has two cores), as root too (containers). Usage: run.sh NP PROGRAM [ARGS...]
set -eu
np=$1
shift
command -v mpirun >/dev/null 2>&1 || { echo "test-dist: mpirun not found (OpenMPI: make deps)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# one OpenMP/OpenBLAS thread per rank: the ranks share the cores
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# the ranks talk over shared memory / loopback only
exec timeout 900 mpirun -np "$np" --oversubscribe --bind-to none --mca btl self,vader,tcp \
    --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo "$@"
