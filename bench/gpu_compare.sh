#!/usr/bin/env bash
# CCQ against the baselines on the lent GPU machine: Fashion-MNIST ConvNet, `ccq compare` at
# 8/10/12x (tied W/A, floor 2 so that every method can reach 12x), CCQ improved (the default) and
# --variant reference, each beside HAWQ-style and uniform, for each seed in SEEDS (default 1).
#
#   bench/gpu_compare.sh --prepare   # here: release build + a copy of Fashion-MNIST (30 MB)
#   bench/gpu_compare.sh             # there (carry target/release/ccq and bench/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=bench/data/fmnist
if [ "${1:-}" = "--prepare" ]; then
  scripts/setup-torch.sh >/dev/null
  cargo build --release -q
  mkdir -p "$data"
  cp /usr/share/datasets/fashion-mnist/*-ubyte.gz "$data/"
  du -sh target/release/ccq "$data"
  exit 0
fi
source bench/gpu_env.sh
ccq=target/release/ccq
out=${OUT:-/tmp}/compare
device=${DEVICE:-cuda}
for seed in ${SEEDS:-1}; do
  start=$(date +%s)
  "$ccq" train --model convnet --data "$data" --format idx --epochs 10 --device "$device" -q \
    --seed "$seed" --out "$out/s$seed/fp" | tail -1
  echo "FP training: $(( $(date +%s) - start )) s"
  for variant in improved reference; do
    start=$(date +%s)
    echo "== seed $seed, CCQ $variant"
    "$ccq" compare "$out/s$seed/fp" --target-compression 8,10,12 --methods ccq,hawq,uniform \
      --variant "$variant" --floor-bits 2 --ft-epochs 2 --seed "$seed" --device "$device" -q \
      --out "$out/s$seed/$variant"
    echo "($(( $(date +%s) - start )) s)"
  done
done
