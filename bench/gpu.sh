#!/usr/bin/env bash
# GPU check, in one go on the lent GPU machine (torch 2.11.0+cu130 in /opt/torch/.venv, no Rust,
# no network). Prepare here first, then carry the binary and the data slice:
#
#   bench/gpu.sh --prepare        # here: release build + a 12k/2k Fashion-MNIST slice (~4 MB)
#   bench/gpu.sh                  # there (run tool, carry target/release/ccq and bench/data)
#
# There it prints the step-time table (ccq vs PyTorch on cuda, batch 128 and 512) and runs a short
# `ccq quantize --device cuda` of ResNet-20 on the slice. Under 5 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."
slice=bench/data/fmnist-slice
if [ "${1:-}" = "--prepare" ]; then
  scripts/setup-torch.sh >/dev/null
  cargo build --release -q
  mkdir -p "$slice"
  python3 - "$slice" <<'PY'
import gzip, struct, sys
src, dst = "/usr/share/datasets/fashion-mnist", sys.argv[1]
for kind, n in (("train", 12000), ("t10k", 2000)):
    img = gzip.open(f"{src}/{kind}-images-idx3-ubyte.gz").read()
    lab = gzip.open(f"{src}/{kind}-labels-idx1-ubyte.gz").read()
    with gzip.open(f"{dst}/{kind}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + img[16:16 + n * 784])
    with gzip.open(f"{dst}/{kind}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + lab[8:8 + n])
PY
  du -sh target/release/ccq "$slice"
  exit 0
fi
source bench/gpu_env.sh
ccq=target/release/ccq
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$ccq" bench step --model resnet20 --device cuda --steps 3 --batch 32 >/dev/null
for batch in 128 512; do
  REPEATS=1 CCQ_BIN=$ccq CCQ_BENCH_PYTHON="$venv/bin/python" bench/step_time.sh 16 cuda "$batch"
done
out=${OUT:-/tmp}/gpu-quantize
rm -rf "$out"
time "$ccq" quantize --model resnet20 --data "$slice" --format idx --device cuda -q \
  --val-size 1000 --bandit-size 1000 --fp-epochs 3 --init-epochs 1 --ft-max-epochs 1 \
  --ft-min-epochs 1 --qsteps 4 --target-compression 6 --untied --final-epochs 1 --out "$out"
