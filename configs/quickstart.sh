#!/bin/sh
# `make run`: synthetic shards with a known dictionary, a TopK SAE trained on them, and how well
# the SAE recovered the true features. Usage: quickstart.sh SAEFORGE_BINARY [train options...]
set -e
bin=$1; shift
data=build/quickstart/data
run=build/quickstart/run
if [ ! -f "$data/truth.safetensors" ]; then
    echo "== making synthetic shards in $data"
    "$bin" synth --out "$data" --d 64 --features 512 --tokens 262144 --k 8 --dtype f16 --seed 1
fi
rm -rf "$run"
echo "== training (configs/quickstart.yaml)"
"$bin" train configs/quickstart.yaml "$@"
echo "== dictionary recovery: trained decoder vs the true features"
"$bin" compare "$run" "$data/truth.safetensors"
