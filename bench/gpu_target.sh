#!/bin/sh
# The GPU target shape on every architecture and precision, plus the data-path-free
# step of the driver itself (quickstart timing). Usage: sh bench/gpu_target.sh OUTFILE.jsonl
out=${1:-/tmp/target.jsonl}
[ -d .devpack ] || tar xJf .devcarry/pack.tar.xz
export LD_LIBRARY_PATH=$PWD/.devpack/lib:${LD_LIBRARY_PATH:-}
P=.devpack
for prec in bf16 tf32 fp32; do
  $P/bench/step_bench --backend cuda --arch topk --d 768 --n 32768 --k 32 --B 8192 --precision $prec --reps 30 --out "$out" 2>&1 | tail -1
done
for a in gsae batchtopk matryoshka; do
  $P/bench/step_bench --backend cuda --arch $a --d 768 --n 32768 --k 32 --B 8192 --precision bf16 --reps 20 --out "$out" 2>&1 | tail -1
done
python3 bench/report.py "$out" 2>&1 | sed -n '/Phases/,$p'
