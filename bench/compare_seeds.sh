#!/usr/bin/env bash
# CCQ against the baselines over several seeds: Fashion-MNIST ConvNet, `ccq compare` at 8/10/12x
# (tied W/A, floor 2 so that every method can reach 12x, 2 fine-tuning epochs after allocation),
# then the mean and spread per method and budget (bench/summarise_compare.py).
#
#   SEEDS="1 2 3" VARIANTS="improved reference" EQUAL=1 bench/compare_seeds.sh OUT_DIR
#
# SEEDS (default "1 2 3"), VARIANTS (default "improved"), EQUAL=1 adds --equal-compute,
# DEVICE (default auto), DATA (default the Fashion-MNIST package), CCQ (default
# target/release/ccq), THREADS, FLAGS (more `ccq compare` flags, e.g. "--ft-samples 10000"),
# METHODS (default ccq,hawq,uniform), BUDGETS (default 8,10,12), FT_EPOCHS (default 2),
# FLOOR (default 2), DATA_FLAGS (how `ccq train` reads DATA; default "--format idx"),
# MODEL (default convnet) and FP_EPOCHS (default 10), TRAIN_FLAGS (more `ccq train` flags).
# Each seed's FP model and comparisons are resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/compare_seeds.sh OUT_DIR}
ccq=${CCQ:-target/release/ccq}
data=${DATA:-/usr/share/datasets/fashion-mnist}
device=${DEVICE:-auto}
equal=()
[ "${EQUAL:-0}" = 1 ] && equal=(--equal-compute)
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
read -r -a flags <<<"${FLAGS:-}"
read -r -a data_flags <<<"${DATA_FLAGS:---format idx}"
read -r -a train_flags <<<"${TRAIN_FLAGS:-}"
for seed in ${SEEDS:-1 2 3}; do
  start=$(date +%s)
  "$ccq" train --model "${MODEL:-convnet}" --data "$data" "${data_flags[@]}" --epochs "${FP_EPOCHS:-10}" \
    --device "$device" -q "${train_flags[@]}" --seed "$seed" --out "$out/s$seed/fp" --resume "${threads[@]}" | tail -1
  echo "seed $seed: FP training $(( $(date +%s) - start )) s"
  for variant in ${VARIANTS:-improved}; do
    start=$(date +%s)
    "$ccq" compare "$out/s$seed/fp" --target-compression "${BUDGETS:-8,10,12}" --methods "${METHODS:-ccq,hawq,uniform}" \
      --variant "$variant" --floor-bits "${FLOOR:-2}" --ft-epochs "${FT_EPOCHS:-2}" --seed "$seed" --device "$device" -q \
      "${equal[@]}" "${threads[@]}" "${flags[@]}" --out "$out/s$seed/$variant" | grep -v '^epoch'
    echo "seed $seed, CCQ $variant: $(( $(date +%s) - start )) s"
  done
done
python3 bench/summarise_compare.py "$out"/s*/*/report.json
