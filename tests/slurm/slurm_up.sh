#!/bin/sh
# Starts a throw-away one-node Slurm on 127.0.0.1 for the tests: munged, slurmctld and slurmd with
# their config, key, state, spool and logs in DIR (default: a new temp dir). Installs Debian's
# slurmctld slurmd slurm-client munge first when they are missing (needs root, as CI runs).
# Prints DIR; `. DIR/env` sets SLURM_CONF for sbatch/squeue/scontrol; slurm_down.sh DIR stops it.
# Ports: $SF_SLURM_PORT (slurmctld, default 16817) and the next one (slurmd).
set -eu
dir=${1:-$(mktemp -d /tmp/sf-slurm.XXXXXX)}
port=${SF_SLURM_PORT:-16817}
log() { echo "slurm_up: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
fi
# Debian's packages start system daemons on install where systemd runs; ours use their own
# sockets and ports, so those do not matter.

mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$dir/munge/munge.key"
munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed"

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
cat > "$dir/slurm.conf" <<CONF
# One-node test cluster written by tests/slurm/slurm_up.sh.
ClusterName=sftest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
MinJobAge=600
NodeName=sfnode NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=sfnode Default=YES MaxTime=INFINITE State=UP
CONF
echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N sfnode

# Ready when the node is idle.
i=0
until sinfo -h -n sfnode -o %t 2>/dev/null | grep -q '^idle'; do
    i=$((i + 1))
    if [ $i -gt 60 ]; then
        log "the node did not come up in 30 s; logs in $dir/log:"
        tail -n 5 "$dir/log/"*.log >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "$dir"
