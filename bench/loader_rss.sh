#!/usr/bin/env bash
# The streaming loader against the in-memory loader on ImageNet-style data: a synthetic folder
# of 10,000 JPEGs of 256×256 (10 classes, 9,000 train + 1,000 test; made once, in the cache),
# read with --resize 256 --crop 224 (random resized crop + flip for training). `ccq bench load`
# times one training pass with no model and reports the process's peak RSS; /usr/bin/time
# gives the same peak independently.
#
#   bench/loader_rss.sh [N_IMAGES]      THREADS (default: all cores), CCQ (target/release/ccq)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
ccq=${CCQ:-target/release/ccq}
dir=$HOME/.cache/ccq/data/synthetic-jpeg256-$n
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
[ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
bench/.venv/bin/python -c 'import numpy, PIL' 2>/dev/null || bench/.venv/bin/pip install -q numpy pillow
if [ ! -f "$dir/.done" ]; then
  bench/.venv/bin/python - "$dir" "$n" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:256, 0:256] / 256.0
for i in range(n):
    split = "test" if i % 10 == 9 else "train"
    c = (i // 10) % 10
    d = os.path.join(root, split, f"class{c}")
    os.makedirs(d, exist_ok=True)
    f = rng.uniform(1, 6, 3)
    img = np.stack([np.sin(2 * np.pi * (f[k] * xx + (k + c) * yy) + i) for k in range(3)], -1)
    img = (127 + 100 * img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(os.path.join(d, f"{i:05d}.jpg"), quality=90)
open(os.path.join(root, ".done"), "w").close()
PY
fi
echo "data: $dir ($n JPEGs, $(du -sh "$dir" | cut -f1) on disk)"
for loader in stream memory; do
  /usr/bin/time -f "$loader: /usr/bin/time peak RSS %M KiB, %e s wall" \
    "$ccq" bench load --data "$dir" --format folder --resize 256 --crop 224 --augment on \
    --val-size 500 --bandit-size 500 --loader "$loader" --batch 128 -q "${threads[@]}"
done
