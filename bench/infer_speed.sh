#!/usr/bin/env bash
# Integer-engine inference (ccq infer on the Fashion-MNIST test split) vs PyTorch FP32 inference
# of the same ConvNet, in one go on this machine. Usage: bench/infer_speed.sh MODEL.ccq [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1
threads=${2:-$(nproc)}
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch==2.11.0 numpy onnx onnxruntime
fi
scripts/setup-torch.sh >/dev/null
cargo build --release -q
./target/release/ccq infer "$model" --threads "$threads"
bench/.venv/bin/python bench/torch_reference.py infer --model convnet --batch 500 --steps 20 --threads "$threads"
