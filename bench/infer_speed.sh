#!/usr/bin/env bash
# Integer-engine inference against onnxruntime (on the same model's QDQ export) and PyTorch FP32
# (same architecture), in one go on this machine, with the same threads.
#
#   bench/infer_speed.sh SOURCE [THREADS]
#
# SOURCE: a `ccq quantize` run directory or a quantized checkpoint (ConvNet or ResNet-20). It is
# exported to .ccq and ONNX; `ccq infer` runs on its dataset's test split, onnxruntime and
# PyTorch on as many random images of the same shape; the ratios are printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
source=$1
threads=${2:-$(nproc)}
if ! bench/.venv/bin/python -c 'import torch, onnxruntime, numpy' 2>/dev/null; then
  [ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch==2.11.0 numpy onnx onnxruntime
fi
scripts/setup-torch.sh >/dev/null
cargo build --release -q
ccq=target/release/ccq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ccq" export "$source" --out "$tmp/model.ccq" --onnx "$tmp/model.onnx" >/dev/null
ck=$source/checkpoint.json
[ -f "$ck" ] || ck=$source/final/checkpoint.json
read -r kind shape classes dir format < <(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
s, d = m["spec"], m["data"]
shape = ",".join(str(s[k]) for k in ("channels", "height", "width"))
print(s["kind"], shape, s["classes"], d["dir"], d["format"])' "$ck")
engine=$("$ccq" infer "$tmp/model.ccq" --data "$dir" --format "$format" --threads "$threads" \
  --channels "${shape%%,*}" --image-size "$(echo "$shape" | cut -d, -f2)x$(echo "$shape" | cut -d, -f3)")
echo "$engine"
n=$(echo "$engine" | sed -E 's/.* on ([0-9]+) images.*/\1/')
others=$(cd bench && .venv/bin/python runtime_speed.py "$tmp/model.onnx" --model "$kind" \
  --shape "$shape" --classes "$classes" --n "$n" --threads "$threads")
echo "$others"
# Peak resident memory of the engine and of onnxruntime (Python with numpy and onnxruntime).
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
engine_kb=$(rss "$ccq" infer "$tmp/model.ccq" --data "$dir" --format "$format" --threads "$threads" \
  --channels "${shape%%,*}" --image-size "$(echo "$shape" | cut -d, -f2)x$(echo "$shape" | cut -d, -f3)")
ort_kb=$(cd bench && rss .venv/bin/python runtime_speed.py "$tmp/model.onnx" --model "$kind" \
  --shape "$shape" --classes "$classes" --n "$n" --threads "$threads" --ort-only)
cargo build --release -q -p ccq-runtime --example embed_runtime
alone_kb=$(RAYON_NUM_THREADS=$threads rss target/release/examples/embed_runtime "$tmp/model.ccq")
echo "peak RSS: ccq infer $((engine_kb / 1024)) MiB (the ccq binary loads libtorch; the test split decoded in memory), the runtime crate alone $((alone_kb / 1024)) MiB (examples/embed_runtime, 2000 images), onnxruntime $((ort_kb / 1024)) MiB (Python, numpy and $n random images)"
python3 - "$engine" "$others" "$kind" "$threads" <<'PY'
import re, sys
engine, others, kind, threads = sys.argv[1:]
ips = lambda s: float(re.search(r"([0-9.]+) images/s", s).group(1))
e = ips(engine)
ort = max(ips(l) for l in others.splitlines() if l.startswith("onnxruntime"))
pt = ips(next(l for l in others.splitlines() if l.startswith("pytorch")))
print(f"{kind}, {threads} thread(s): ccq engine {e:.0f} images/s = {e / ort:.2f}x onnxruntime (best of optimisations on/off), {e / pt:.2f}x PyTorch FP32")
PY
