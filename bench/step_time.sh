#!/usr/bin/env bash
# One QAT training step of ResNet-20 (batch 128, 1×28×28, W4A4 PACT/DoReFa) in ccq and in a
# PyTorch reference, in one go on this machine; prints ms/step for both and the ratio.
# Usage: bench/step_time.sh [THREADS] [MODEL]   (PyTorch is installed into bench/.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
model=${2:-resnet20}
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch numpy
fi
cargo build --release -q
ours=$(./target/release/ccq bench step --model "$model" --batch 128 --bits 4 --steps 10 --threads "$threads")
theirs=$(bench/.venv/bin/python bench/torch_reference.py step --model "$model" --batch 128 --bits 4 --steps 10 --threads "$threads")
echo "$ours"
echo "$theirs"
a=$(grep -o '[0-9.]* ms/step' <<<"$ours" | cut -d' ' -f1)
b=$(grep -o '[0-9.]* ms/step' <<<"$theirs" | cut -d' ' -f1)
python3 -c "print(f'ratio ccq/pytorch: {$a/$b:.2f}x')"
echo "($threads threads)"
