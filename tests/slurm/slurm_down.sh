#!/bin/sh
# Stops what slurm_up.sh DIR started (slurmd, slurmctld, munged, by their pid files) and removes DIR
# unless SF_SLURM_KEEP=1.
dir=${1:?usage: slurm_down.sh DIR}
for p in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$p" ] || continue
    pid=$(cat "$p")
    kill "$pid" 2>/dev/null || continue
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
done
[ "${SF_SLURM_KEEP:-0}" = 1 ] || rm -rf "$dir"
