#!/usr/bin/env bash
# Training-step time of ccq (libtorch through tch) against the PyTorch eager reference
# (bench/torch_reference.py, the same layers and quantizers), one run on this machine:
# ResNet-20 and the ConvNet, FP and QAT W4A4 (PACT/DoReFa), batch 128, 1×28×28.
# Usage: [REPEATS=3] bench/step_time.sh [THREADS] [DEVICE] [BATCH]   (PyTorch 2.11.0 goes into bench/.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
device=${2:-cpu}
batch=${3:-128}
py=${CCQ_BENCH_PYTHON:-bench/.venv/bin/python}
if [ ! -x "$py" ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch==2.11.0 numpy
fi
ccq=${CCQ_BIN:-}
if [ -z "$ccq" ]; then
  scripts/setup-torch.sh >/dev/null
  cargo build --release -q
  ccq=./target/release/ccq
fi
# Each side runs REPEATS times (default 3), alternating ccq and PyTorch so that a change in the
# machine's load falls on both; the median of each is compared, the spread printed beside it.
repeats=${REPEATS:-3}
median() { python3 -c "import sys,statistics as s; print(f'{s.median(map(float,sys.argv[1:])):.2f}')" "$@"; }
spread() { python3 -c "import sys; v=list(map(float,sys.argv[1:])); print(f'{min(v):.1f}-{max(v):.1f}')" "$@"; }
printf '%-10s %-8s %12s %12s %8s   %s\n' model mode ccq_ms torch_ms ratio "ccq / torch range (ms)"
for model in resnet20 convnet; do
  for bits in 32 4; do
    mode=$([ "$bits" = 32 ] && echo FP || echo QAT-W4A4)
    ours=() theirs=()
    for _ in $(seq "$repeats"); do
      out=$("$ccq" bench step --model "$model" --batch "$batch" --bits "$bits" --steps 10 \
        --threads "$threads" --device "$device")
      ours+=("$(grep -o '[0-9.]* ms/step' <<<"$out" | cut -d' ' -f1)")
      out=$("$py" bench/torch_reference.py step --model "$model" --batch "$batch" --bits "$bits" \
        --steps 10 --threads "$threads" --device "$device")
      theirs+=("$(grep -o '[0-9.]* ms/step' <<<"$out" | cut -d' ' -f1)")
    done
    a=$(median "${ours[@]}")
    b=$(median "${theirs[@]}")
    printf '%-10s %-8s %12s %12s %8s   %s / %s\n' "$model" "$mode" "$a" "$b" \
      "$(python3 -c "print(f'{$a/$b:.2f}')")" "$(spread "${ours[@]}")" "$(spread "${theirs[@]}")"
  done
done
echo "($threads threads, device $device, batch $batch, median of $repeats alternating runs each; ratio = ccq / PyTorch, lower is faster)"
