#!/usr/bin/env bash
# CCQ against the baselines on the lent GPU machine: bench/compare_seeds.sh (Fashion-MNIST
# ConvNet, `ccq compare` at 8/10/12x, tied W/A, floor 2) with CCQ improved (the default) and
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
DATA=$data DEVICE=${DEVICE:-cuda} VARIANTS=${VARIANTS:-improved reference} SEEDS=${SEEDS:-1} \
  exec bench/compare_seeds.sh "${OUT:-/tmp}/compare"
