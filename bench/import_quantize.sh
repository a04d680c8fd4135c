#!/usr/bin/env bash
# Bring-your-own-model check: each ONNX model is imported, quantized by CCQ with a short schedule
# to TARGET× weight compression (default 8) on the CIFAR-10 dev split, then exported back to
# `.ccq` and QDQ ONNX; onnxruntime runs the QDQ graph on the dev test split (as lossless PNGs,
# the same pixels the integer engine reads) and the two are compared, and with the graph evaluated
# exactly in float64 (bench/qdq_float64.py, when bench/.venv has torch).
#
#   bench/import_quantize.sh OUT_DIR [MODEL.onnx...]   (default: the fixtures)
#
# TARGET (8), QSTEPS (30), FT_SAMPLES (10000 images per fine-tuning epoch), FINAL (2 final
# epochs), FINAL_FROM (best), THREADS, FLAGS (more `ccq quantize` flags, e.g. "--untied --act-ladder 8
# --ladder 4,3,2"),
# CIFAR, CCQ as in bench/import_check.sh. Resumable: rerun to continue a search.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/import_quantize.sh OUT_DIR [MODEL.onnx...]}
shift
ccq=${CCQ:-target/release/ccq}
cifar=${CIFAR:-$HOME/.cache/ccq/data/cifar10-jpeg-dev}
png=$HOME/.cache/ccq/data/cifar10-dev-png-test
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
bench/.venv/bin/python -c 'import onnx, onnxruntime, PIL' 2>/dev/null ||
  bench/.venv/bin/pip install -q numpy onnx onnxruntime pillow
bench/.venv/bin/python bench/import_check.py png "$cifar" "$png" >/dev/null
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(tests/fixtures/onnx/resnet18_w8.onnx tests/fixtures/onnx/mobilenetv2_035.onnx)
mkdir -p "$out"
for m in "${models[@]}"; do
  name=$(basename "$m" .onnx)
  run=$out/$name
  start=$(date +%s)
  if [ -f "$run/state.json" ]; then
    "$ccq" quantize --resume "$run" -q "${threads[@]}" | grep -v '^epoch'
  else
    "$ccq" quantize "$m" --data "$cifar" --format folder --target-compression "${TARGET:-8}" \
      --ft-samples "${FT_SAMPLES:-10000}" --final-epochs "${FINAL:-2}" -q "${threads[@]}" \
      --qsteps "${QSTEPS:-30}" --final-from "${FINAL_FROM:-best}" \
      ${FLAGS:-} --out "$run" | grep -v '^epoch'
  fi
  echo "$name: quantize $(( $(date +%s) - start )) s"
  "$ccq" info "$run/fp" | grep -E '^test top-1' | sed "s/^/$name FP: /"
  if "$ccq" export "$run" --out "$out/$name.ccq" --onnx "$out/$name.qdq.onnx"; then
    "$ccq" infer "$out/$name.ccq" --data "$png" --format folder \
      --predictions "$out/$name.engine.txt" | tail -1
    bench/.venv/bin/python bench/import_check.py agree "$out/$name.qdq.onnx" "$m" "$png" \
      "$out/$name.engine.txt"
    # The same graph evaluated exactly (float64): the engine's rounding against onnxruntime's.
    if bench/.venv/bin/python -c 'import torch' 2>/dev/null; then
      bench/.venv/bin/python bench/qdq_float64.py "$out/$name.qdq.onnx" "$m" "$png" \
        "$out/$name.engine.txt"
    fi
  else
    echo "$name: not exported (above)"
  fi
done
