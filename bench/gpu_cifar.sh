#!/usr/bin/env bash
# CIFAR-10 dev work on the lent GPU machine, in one call (torch 2.11.0+cu130 in /opt/torch/.venv,
# no Rust, no network). Three jobs share the GPU:
#   - MobileNetV2 (the ONNX fixture) through `ccq quantize` to 8x, tied W/A, then exported and
#     checked: integer engine against onnxruntime on the dev test split (as PNG);
#   - the same with activations kept at 8 bits (--untied --act-ladder 8);
#   - ResNet-20: FP training, then `ccq compare` (CCQ, HAWQ-style, uniform) at several weight
#     budgets with activations at 8 bits and floor 2.
#   - Fashion-MNIST ConvNet: bench/compare_seeds.sh over seeds 1-3, improved CCQ with
#     --ft-samples 10000, both comparison modes (needs bench/data/fmnist from bench/gpu_compare.sh
#     --prepare; skipped without it).
# A step-time check (ccq against PyTorch on the same GPU) runs first, alone.
#
#   bench/gpu_cifar.sh --prepare   # here: release build + the dev tarball in bench/data (16 MB)
#   bench/gpu_cifar.sh             # there (run tool, carry target/release/ccq and bench/data)
#
# JOBS picks among mnv2_tied, mnv2_a8, r20, r20par and fmnist (default: the first three and fmnist;
# r20par is r20 as three parallel compare processes, see resnet20_par; r20hawq reruns only its
# HAWQ-style baseline on a carried FP model). STEP_TIME=0 skips the
# step-time check. Every job stops by
# BUDGET_S seconds (default 500) after the start; its run stays resumable (rerun with the run
# directories under WORK to continue). Results (logs, reports, policies, run directories without
# the data) go to $OUT.
#
# Measured on an H200 with all four jobs at once: ResNet-20 steps took about 7 s, MobileNetV2
# steps 130-144 s (its depthwise layers; 2 steps in 430 s), and the ResNet-20 comparison needed
# about 600 s in all. Give MobileNetV2 the GPU alone (JOBS=mnv2_tied).
# Scale knobs for a dry run on CPU: DEVICE, QSTEPS, MNV2_QSTEPS, FT_SAMPLES, FP_EPOCHS, FT_EPOCHS, BUDGETS,
# FINAL, THREADS, TORCH_VENV.
set -uo pipefail
cd "$(dirname "$0")/.."
tarball=bench/data/cifar10-jpeg-dev.tar.gz
if [ "${1:-}" = "--prepare" ]; then
  set -e
  scripts/setup-torch.sh >/dev/null
  cargo build --release -q
  mkdir -p bench/data
  cp ../shared/data/cifar10-jpeg-dev.tar.gz "$tarball"
  du -sh target/release/ccq "$tarball"
  exit 0
fi
source bench/gpu_env.sh
py=$venv/bin/python
ccq=$PWD/target/release/ccq
out=${OUT:-/tmp/gpu-cifar-out}
work=${WORK:-/tmp/gpu-cifar}
device=${DEVICE:-cuda}
threads=${THREADS:-4}
start=$(date +%s)
deadline=$((start + ${BUDGET_S:-500}))
mkdir -p "$out" "$work"
log() { echo "[$(($(date +%s) - start)) s] $*"; }
left() { echo $((deadline - $(date +%s))); }

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
[ -d "$work/cifar10-jpeg-dev" ] || tar xzf "$tarball" -C "$work"
cifar=$work/cifar10-jpeg-dev
png=$work/png
jobs_wanted=" ${JOBS:-mnv2_tied mnv2_a8 r20 fmnist} "
want() { [[ $jobs_wanted == *" $1 "* ]]; }
# The PNG copy of the test split is for the MobileNetV2 jobs' onnxruntime check only.
if want mnv2_tied || want mnv2_a8; then
  "$py" bench/import_check.py png "$cifar" "$png" >/dev/null || log "PNG copy failed"
fi
log "data ready"

if [ "$device" != cpu ] && [ "${STEP_TIME:-1}" = 1 ]; then
  REPEATS=1 CCQ_BIN=$ccq CCQ_BENCH_PYTHON=$py timeout 90 bench/step_time.sh 8 "$device" 512 \
    >"$work/step_time.log" 2>&1
  cat "$work/step_time.log"
fi

# MobileNetV2 through `ccq quantize`, export, the integer engine and onnxruntime.
mobilenet() {
  local name=$1
  shift
  local m=tests/fixtures/onnx/mobilenetv2_035.onnx run=$work/$name t0
  t0=$(date +%s)
  timeout "$(left)" "$ccq" quantize "$m" --data "$cifar" --format folder --target-compression 8 \
    --qsteps "${MNV2_QSTEPS:-80}" --ft-samples "${FT_SAMPLES:-10000}" --final-epochs "${FINAL:-3}" \
    --final-from best --device "$device" --threads "$threads" -q "$@" --out "$run" |
    grep -v '^epoch'
  echo "$name: quantize $(($(date +%s) - t0)) s"
  "$ccq" info "$run/fp" | grep -E '^test top-1' | sed "s/^/$name FP: /"
  [ -d "$run/final" ] || return 0
  "$ccq" info "$run/final" | grep -E '^(test top-1|total)' | sed "s/^/$name final: /"
  "$ccq" export "$run" --out "$work/$name.ccq" --onnx "$work/$name.qdq.onnx" || return 0
  "$ccq" infer "$work/$name.ccq" --data "$png" --format folder \
    --predictions "$work/$name.engine.txt" | tail -1
  "$py" bench/import_check.py agree "$work/$name.qdq.onnx" "$m" "$png" "$work/$name.engine.txt"
}

# ResNet-20's FP model in $work/r20/fp (resumed if there).
resnet20_fp() {
  local t0
  t0=$(date +%s)
  timeout "$(left)" "$ccq" train --model resnet20 --data "$cifar" --format folder \
    --epochs "${FP_EPOCHS:-30}" --lr 0.1 --weight-decay 5e-4 --device "$device" \
    --threads "$threads" -q --resume --out "$work/r20/fp" | tail -2
  echo "resnet20 FP: $(($(date +%s) - t0)) s"
  "$ccq" info "$work/r20/fp" | grep -E '^test top-1'
}

# ResNet-20: FP, then CCQ against the baselines at several weight budgets (activations 8 bits).
resnet20() {
  local t0
  resnet20_fp
  t0=$(date +%s)
  timeout "$(left)" "$ccq" compare "$work/r20/fp" --target-compression "${BUDGETS:-6,8,10,12}" \
    --methods ccq,hawq,uniform --untied --act-ladder 8 --floor-bits 2 \
    --qsteps "${QSTEPS:-70}" --ft-samples "${FT_SAMPLES:-10000}" --ft-epochs "${FT_EPOCHS:-3}" \
    --device "$device" --threads "$threads" -q --out "$work/r20/compare" | grep -v '^epoch'
  echo "resnet20 compare: $(($(date +%s) - t0)) s"
}

# ResNet-20 in parallel processes after the same FP model: CCQ (seed 1), the baselines (seed 1)
# and CCQ with HAWQ-style again (seed 2), each `ccq compare` in its own directory, with
# FT_REPEATS fine-tunings per policy. Each report is written as results come, so a process cut
# off by the budget keeps what it finished.
resnet20_par() {
  local t0 common
  resnet20_fp
  common=(--target-compression "${BUDGETS:-8,10,13}" --untied --act-ladder 8 --floor-bits 2
    --qsteps "${QSTEPS:-70}" --ft-epochs "${FT_EPOCHS:-3}" --ft-repeats "${FT_REPEATS:-2}"
    --device "$device" --threads "$threads" -q ${R20_FLAGS:-})
  t0=$(date +%s)
  timeout "$(left)" "$ccq" compare "$work/r20/fp" "${common[@]}" --methods ccq --seed 1 \
    --out "$work/r20/s1/ccq" 2>&1 | grep -v '^epoch' | sed 's/^/[ccq s1] /' &
  timeout "$(left)" "$ccq" compare "$work/r20/fp" "${common[@]}" --methods hawq,uniform --seed 1 \
    --out "$work/r20/s1/base" 2>&1 | grep -v '^epoch' | sed 's/^/[base s1] /' &
  [ "${R20_SEED2:-1}" = 1 ] && timeout "$(left)" "$ccq" compare "$work/r20/fp" "${common[@]}" \
    --methods ccq,hawq --seed 2 --out "$work/r20/s2/both" 2>&1 | grep -v '^epoch' |
    sed 's/^/[s2] /' &
  wait
  echo "resnet20 compare: $(($(date +%s) - t0)) s"
  "$py" bench/summarise_compare.py "$work"/r20/s*/*/report.json 2>&1 || true
}

# The HAWQ-style baseline alone on a carried FP model (R20_FP, e.g. bench/data/r20fp from an
# earlier call's runs.tar.gz), seeds 1 and 2 in parallel, with resnet20_par's settings.
resnet20_hawq() {
  local s common
  common=(--target-compression "${BUDGETS:-8,10,13}" --untied --act-ladder 8 --floor-bits 2
    --ft-epochs "${FT_EPOCHS:-3}" --ft-repeats "${FT_REPEATS:-2}" --data "$cifar" --format folder
    --device "$device" --threads "$threads" -q)
  for s in 1 2; do
    timeout "$(left)" "$ccq" compare "${R20_FP:-bench/data/r20fp}" "${common[@]}" --methods hawq \
      --seed $s --out "$work/r20/s$s/hawq" 2>&1 | grep -v '^epoch' | sed "s/^/[hawq s$s] /" &
  done
  wait
}

# Fashion-MNIST: CCQ against the baselines, three seeds, both comparison modes.
fmnist() {
  [ -d bench/data/fmnist ] || { echo "no bench/data/fmnist: skipped"; return 0; }
  DATA=bench/data/fmnist DEVICE=$device SEEDS=${SEEDS:-1 2 3} EQUAL=1 THREADS=2 CCQ=$ccq \
    FLAGS="--ft-samples ${FT_SAMPLES:-10000}" timeout "$(left)" bench/compare_seeds.sh "$work/fmnist"
}

want mnv2_tied && { mobilenet mnv2_tied >"$work/mnv2_tied.log" 2>&1 & }
want mnv2_a8 && { mobilenet mnv2_a8 --untied --act-ladder 8 >"$work/mnv2_a8.log" 2>&1 & }
want r20 && { resnet20 >"$work/r20.log" 2>&1 & }
want r20par && { resnet20_par >"$work/r20par.log" 2>&1 & }
want r20hawq && { resnet20_hawq >"$work/r20hawq.log" 2>&1 & }
want fmnist && { fmnist >"$work/fmnist.log" 2>&1 & }
while [ -n "$(jobs -r)" ]; do
  sleep 20
  log "running; $(grep -h -c '"step"' "$work"/*/steps.jsonl "$work"/r20/compare/ccq/steps.jsonl "$work"/r20/s*/*/ccq/steps.jsonl "$work"/fmnist/s*/improved/ccq/steps.jsonl 2>/dev/null | paste -sd' ')"
done
wait
log "all jobs done"
for f in step_time mnv2_tied mnv2_a8 r20 r20par r20hawq fmnist; do
  [ -f "$work/$f.log" ] && { echo "=== $f"; tail -30 "$work/$f.log"; }
done
cp "$work"/*.log "$out/" 2>/dev/null
tar czf "$out/runs.tar.gz" -C "$work" --exclude=cifar10-jpeg-dev --exclude=png \
  --exclude='*.log' . 2>/dev/null
ls -la "$out"
