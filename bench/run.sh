#!/bin/sh
# Runs the benchmark grid and writes JSON lines to bench/results/<machine>-<date>.jsonl, then
# prints the table (bench/report.py). Called by `make bench` / `make bench-cuda`.
#   sh bench/run.sh [--build DIR] [--backend cpu|cuda] [--quick] [--out FILE]
# Env overrides: BENCH_DS, BENCH_NS, BENCH_KS, BENCH_ARCHS, BENCH_B, BENCH_REPS, BENCH_MAXS,
# BENCH_DEAD (fraction of latents dead at the start, to include AuxK), BENCH_PRECISION (GPU).
set -u
BUILD=build
BACKEND=cpu
QUICK=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "bench/run.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
case "$BACKEND" in
cpu) BIN=$BUILD/bench ;;
cuda) BIN=$BUILD/cuda/bench ;;
*) echo "bench/run.sh: --backend must be cpu or cuda" >&2; exit 2 ;;
esac
if [ ! -x "$BIN/step_bench" ]; then
    echo "bench/run.sh: $BIN/step_bench is missing; run make bench (or make bench-cuda)" >&2
    exit 2
fi

SLUG=$("$BIN/step_bench" --slug --backend "$BACKEND") || exit 1
DATE=$(date -u +%Y%m%d)
RUN=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p bench/results
OUT=${OUT:-bench/results/$SLUG-$DATE.jsonl}

if [ "$QUICK" = 1 ]; then
    DS=${BENCH_DS:-768}; NS=${BENCH_NS:-16384}; KS=${BENCH_KS:-32}
    REPS=${BENCH_REPS:-3}; MAXS=${BENCH_MAXS:-20}
    DATA_ROWS=131072; DATA_STEPS=6
    B=${BENCH_B:-4096}
else
    DS=${BENCH_DS:-768 2048}; NS=${BENCH_NS:-16384 65536}; KS=${BENCH_KS:-32 128}
    REPS=${BENCH_REPS:-5}; MAXS=${BENCH_MAXS:-40}
    DATA_ROWS=262144; DATA_STEPS=12
    B=${BENCH_B:-}
fi
ARCHS=${BENCH_ARCHS:-topk gsae batchtopk matryoshka}
DEAD=${BENCH_DEAD:-0}
PREC=${BENCH_PRECISION:-fp32}
BARG=""
[ -n "$B" ] && BARG="--B $B"

echo "bench: $BACKEND, machine $SLUG, run $RUN, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench: results -> $OUT"
FAIL=0
for d in $DS; do
    for n in $NS; do
        for k in $KS; do
            for arch in $ARCHS; do
                # shellcheck disable=SC2086
                "$BIN/step_bench" --backend "$BACKEND" --arch "$arch" --d "$d" --n "$n" --k "$k" \
                    $BARG --reps "$REPS" --max-seconds "$MAXS" --dead "$DEAD" \
                    --precision "$PREC" --out "$OUT" --run "$RUN" || {
                    echo "bench: step_bench failed for $arch d=$d n=$n k=$k" >&2
                    FAIL=1
                }
            done
        done
    done
done

# Data path (CPU reader; the CUDA variant uses the same host reader)
if [ -x "$BUILD/bench/data_bench" ]; then
    "$BUILD/bench/data_bench" --rows "$DATA_ROWS" --steps "$DATA_STEPS" --out "$OUT" --run "$RUN" || {
        echo "bench: data_bench failed" >&2
        FAIL=1
    }
fi

# Kernel benches: ours take --out; others' GPU-only ones print JSON lines on stdout.
KREPS=$([ "$QUICK" = 1 ] && echo 5 || echo 10)
for kb in "$BIN"/kern_*; do
    [ -x "$kb" ] || continue
    case "$(basename "$kb")" in
    kern_decode | kern_backward | kern_adam)
        "$kb" --reps "$KREPS" --out "$OUT" --run "$RUN" || {
            echo "bench: $(basename "$kb") failed (a failed parity check exits 1)" >&2
            FAIL=1
        } ;;
    *)
        "$kb" | grep '^{' >>"$OUT" || {
            echo "bench: $(basename "$kb") failed" >&2
            FAIL=1
        } ;;
    esac
done

echo "bench: load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/report.py "$OUT" --run "$RUN" --svg || FAIL=1
exit $FAIL
