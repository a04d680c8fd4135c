#!/usr/bin/env bash
# Installs the pinned PyTorch 2.11.0 wheel (which carries libtorch) into a venv that ccq owns,
# cached outside the clone, and points `.libtorch` (read by .cargo/config.toml) at it.
#
#   scripts/setup-torch.sh          slim CPU install: torch --no-deps + the two CUDA runtime
#                                   libraries libtorch_cpu.so needs (about 1.3 GB on disk)
#   scripts/setup-torch.sh --full   the full wheel with its CUDA dependencies, for GPUs (~4.7 GB)
#
# CCQ_CACHE (default ~/.cache/ccq) says where the venv lives. To use a libtorch you already
# have (an unpacked libtorch 2.11.0 zip or a torch 2.11.0 site-packages directory), skip this
# script and set LIBTORCH to that directory before `cargo build`.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=slim
[ "${1:-}" = "--full" ] && mode=full
cache=${CCQ_CACHE:-$HOME/.cache/ccq}
venv=$cache/torch-2.11.0-$mode
if [ "$mode" = full ] && [ -d "$cache/torch-2.11.0-slim" ] && [ ! -d "$venv" ]; then
  : # a full install is separate from the slim one
fi
torch_dir() { "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
if [ ! -f "$venv/.complete" ]; then
  command -v python3 >/dev/null || { echo "setup-torch: python3 is needed" >&2; exit 1; }
  echo "setup-torch: installing torch 2.11.0 ($mode) into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" || {
    echo "setup-torch: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  }
  if [ "$mode" = slim ]; then
    "$venv/bin/pip" install -q --no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 \
      nvidia-cuda-cupti==13.0.85
  else
    "$venv/bin/pip" install -q torch==2.11.0 numpy
  fi
  touch "$venv/.complete"
fi
dir="$(torch_dir)/torch"
[ -f "$dir/lib/libtorch_cpu.so" ] || { echo "setup-torch: $dir/lib/libtorch_cpu.so is missing" >&2; exit 1; }
ln -sfn "$dir" .libtorch
echo "$dir"
