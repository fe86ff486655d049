#!/bin/sh
# Kill soak: trains one SAE uninterrupted, then N times kills a run with SIGKILL at a random
# moment (start-up, steps, checkpoint writes, final outputs; sometimes the resumed run again) and
# resumes it with `train --resume` until it finishes. Every finished run must equal the
# uninterrupted one: final weights and statistics byte for byte, metrics.jsonl values (timing
# fields aside). Usage: kill_soak.sh SAEFORGE [N] [SEED]. Prints "N passed, N failed".
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
n=${2:-20}
seed=${3:-1}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/sf_soak.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work" || exit 2

"$bin" synth --out data --d 32 --features 128 --tokens 32768 --k 4 --seed 3 >/dev/null || exit 2
# Checkpoints every 4 steps of a 1024-latent SAE: writes take a good share of the run, so many
# kills land inside one.
cat >base.yaml <<CFG
seed: 7
backend: cpu
data: {path: data, eval_tokens: 2048}
sae: {arch: batchtopk, n_latents: 1024, k: 4, dead_tokens: 20000}
train: {batch_tokens: 512, total_tokens: 49152, lr: 0.004, warmup_steps: 5, threads: 1}
checkpoint: {every_steps: 4, keep: 2}
log: {every_steps: 3, progress: off}
CFG
run_cfg() { sed "1i out_dir: $1" base.yaml >"$1.yaml"; }

run_cfg ref
t0=$(date +%s%N)
"$bin" train ref.yaml >ref.log 2>&1 || { echo "soak: reference run failed"; cat ref.log; exit 2; }
ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "soak: reference run ${ref_ms} ms; $n kill trials (seed $seed)"

rand_state=$seed
rand() { # R = uniform integer in [0, $1); no subshell, so the state advances
    rand_state=$(( (rand_state * 1103515245 + 12345) % 2147483648 ))
    R=$(( rand_state / 65536 % $1 ))
}

passed=0; failed=0; landed_ckpt=0; total_kills=0
i=0
while [ "$i" -lt "$n" ]; do
    i=$((i + 1))
    r=t$i
    run_cfg "$r"
    kills=0
    # every attempt is `train --resume`, as a (re)queued Slurm job runs it: the first starts
    # the run, later ones continue it
    opt=--resume
    while :; do
        "$bin" train "$r.yaml" $opt >>"$r.log" 2>&1 &
        pid=$!
        rand 3
        if [ "$kills" -lt 2 ] && { [ "$kills" -eq 0 ] || [ "$R" -eq 0 ]; }; then
            if [ $((i % 2)) -eq 0 ]; then
                # aimed: wait until a checkpoint save is under way, then kill inside it
                rand 3; want=$R
                seen=0; tries=0
                while [ "$tries" -lt 3000 ] && kill -0 "$pid" 2>/dev/null; do
                    if [ -n "$(ls -d "$r"/checkpoints/.tmp_* 2>/dev/null)" ]; then
                        seen=$((seen + 1))
                        [ "$seen" -gt "$want" ] && break
                    fi
                    sleep 0.002; tries=$((tries + 1))
                done
            else
                rand $((ref_ms + 100)); delay=$R
                rand 4
                [ "$R" -eq 0 ] && rand 60 && delay=$R # start-up: before the run dir exists
                sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
            fi
            kill -9 "$pid" 2>/dev/null && kills=$((kills + 1)) && total_kills=$((total_kills + 1))
        fi
        wait "$pid" 2>/dev/null
        rc=$?
        if [ "$rc" -eq 137 ]; then
            # a temp dir left behind means the kill interrupted a checkpoint save
            [ -n "$(ls -d "$r"/checkpoints/.tmp_* 2>/dev/null)" ] && landed_ckpt=$((landed_ckpt + 1))
            opt=--resume
            continue
        fi
        break
    done
    why=""
    [ "$rc" -eq 0 ] || why="exit $rc"
    [ -z "$why" ] && ! cmp -s ref/final/sae.safetensors "$r/final/sae.safetensors" && why="final weights differ"
    [ -z "$why" ] && ! cmp -s ref/stats/feature_stats.csv "$r/stats/feature_stats.csv" && why="stats differ"
    [ -z "$why" ] && ! python3 "$here/same_metrics.py" ref/metrics.jsonl "$r/metrics.jsonl" && why="metrics differ"
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        rm -rf "$r" "$r.log" "$r.yaml"
    else
        failed=$((failed + 1))
        echo "soak: trial $i ($kills kill(s)): $why; log:"
        tail -n 5 "$r.log"
    fi
done
echo "soak: $total_kills kills; $landed_ckpt of them landed while a checkpoint was being written"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
