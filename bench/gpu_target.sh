#!/bin/sh
# The GPU target shape on every architecture and precision, the large shape
# (d=4096 n=131072 k=64 B=16384), plus the data-path-free step of the driver itself.
# Usage: sh bench/gpu_target.sh OUTFILE.jsonl
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
# The large shape (Llama-8B class residual stream): fp32 masters + Adam 12.9 GB, pre 8.6 GB.
for prec in bf16 fp32; do
  $P/bench/step_bench --backend cuda --arch topk --d 4096 --n 131072 --k 64 --B 16384 --precision $prec --reps 10 --out "$out" 2>&1 | tail -1
done
$P/bench/step_bench --backend cuda --arch batchtopk --d 4096 --n 131072 --k 64 --B 16384 --precision bf16 --reps 10 --out "$out" 2>&1 | tail -1
python3 bench/report.py "$out" 2>&1 | sed -n '/Phases/,$p'
