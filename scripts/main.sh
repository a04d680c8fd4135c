#!/usr/bin/env bash
# The main job: train the compact ConvNet on Fashion-MNIST, then search a CCQ policy with ≥ 10×
# weight compression. Installs what it needs first (the dataset package, the pinned libtorch).
# Extra arguments go to `ccq quantize` (e.g. --resume runs/fmnist, --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/apt-install.sh dataset-fashion-mnist:/usr/share/datasets/fashion-mnist
scripts/setup-torch.sh >/dev/null
if [ $# -gt 0 ]; then
  exec cargo run --release -- quantize "$@"
fi
exec cargo run --release -- quantize --target-compression 10 --untied --final-epochs 5 --out runs/fmnist
