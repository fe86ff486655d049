#!/bin/sh
# Issue-6 checks on a GPU machine that has the CUDA driver but none of our Debian libraries:
# unpacks binaries built elsewhere (.devpack: build/cuda/saeforge, parity suites, benches and
# their shared libraries), then runs the parity suites, compute-sanitizer, the quickstart on
# backend cuda, a resume across backends, and the target-shape benches.
# Usage: sh bench/gpu_check.sh [OUTDIR]
out=${1:-/tmp/gpu_out}
mkdir -p "$out"
[ -d .devpack ] || tar xJf .devcarry/pack.tar.xz
export LD_LIBRARY_PATH=$PWD/.devpack/lib:${LD_LIBRARY_PATH:-}
export OMP_WAIT_POLICY=passive
P=.devpack
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== parity suites (real CUDA)"
mkdir -p $P/tests-log
sh tests/run_all.sh $P $P/tests/test_cuda_encode $P/tests/test_cuda_select $P/tests/test_cuda_ops $P/tests/test_cuda_step 2>&1 | tee "$out/parity.log" | grep -E "^==|Synth|passed|FAIL|Assert"
echo "== quickstart, backend cuda"
sh configs/quickstart.sh $P/saeforge --set backend=cuda > "$out/quickstart.log" 2>&1; echo "rc=$?"; tail -6 "$out/quickstart.log"
echo "== resume across backends: 1000 steps on cuda, the rest on cpu (and the reverse)"
for pair in "cuda cpu" "cpu cuda"; do
  set -- $pair
  rm -rf build/xb
  $P/saeforge train configs/quickstart.yaml --set out_dir=build/xb --set backend=$1 --set train.total_tokens=1048576 --set log.progress=off > "$out/xb_$1.log" 2>&1; r1=$?
  $P/saeforge train configs/quickstart.yaml --set out_dir=build/xb --set backend=$2 --resume --set log.progress=off >> "$out/xb_$1.log" 2>&1; r2=$?
  echo "$1 -> $2: rc $r1/$r2; $(grep -E '^eval' "$out/xb_$1.log" | tail -1)"
  $P/saeforge compare build/xb build/quickstart/data/truth.safetensors | tail -1
done
echo "== compute-sanitizer"
for tool in memcheck racecheck synccheck; do
  for t in test_cuda_ops test_cuda_step test_cuda_select; do
    compute-sanitizer --tool $tool --target-processes all --error-exitcode 9 $P/tests/$t --jobs 1 > "$out/san_${tool}_$t.log" 2>&1
    echo "$tool $t: rc=$? $(grep -c 'ERROR SUMMARY: 0' "$out/san_${tool}_$t.log") clean summaries, $(grep -E 'ERROR SUMMARY: [1-9]' "$out/san_${tool}_$t.log" | head -1)"
  done
done
echo "== benches at the issue's target shape (d=768 n=32768 k=32 B=8192)"
for prec in bf16 tf32 fp32; do
  $P/bench/step_bench --backend cuda --arch topk --d 768 --n 32768 --k 32 --B 8192 --precision $prec --reps 30 --out "$out/target.jsonl" 2>&1 | tail -2
done
for a in gsae batchtopk matryoshka; do
  $P/bench/step_bench --backend cuda --arch $a --d 768 --n 32768 --k 32 --B 8192 --precision bf16 --reps 20 --out "$out/target.jsonl" 2>&1 | tail -1
done
$P/bench/kern_select 2>&1 | tail -8
