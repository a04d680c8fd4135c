#!/usr/bin/env bash
# ONNX import check: an imported model's float predictions in ccq against onnxruntime's, on the
# CIFAR-10 dev test split decoded once to lossless PNGs (so that both read the same pixels; JPEG
# decoders differ by a level here and there), with each model's `mean`/`std` metadata.
#
#   bench/import_check.sh MODEL.onnx... (default: the fixtures in tests/fixtures/onnx)
#
# CIFAR (default ~/.cache/ccq/data/cifar10-jpeg-dev, unpacked from ../shared/data), CCQ (default
# target/release/ccq).
set -euo pipefail
cd "$(dirname "$0")/.."
ccq=${CCQ:-target/release/ccq}
cifar=${CIFAR:-$HOME/.cache/ccq/data/cifar10-jpeg-dev}
png=$HOME/.cache/ccq/data/cifar10-dev-png-test
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
bench/.venv/bin/python -c 'import onnx, onnxruntime, PIL' 2>/dev/null ||
  bench/.venv/bin/pip install -q numpy onnx onnxruntime pillow
bench/.venv/bin/python bench/import_check.py png "$cifar" "$png"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(tests/fixtures/onnx/resnet18_w8.onnx tests/fixtures/onnx/mobilenetv2_035.onnx)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in "${models[@]}"; do
  "$ccq" eval "$m" --data "$png" --format folder -q --logits "$tmp/logits.f32" | tail -1
  bench/.venv/bin/python bench/import_check.py compare "$m" "$png" "$tmp/logits.f32"
done
