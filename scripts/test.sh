#!/usr/bin/env bash
# The tests: installs what they need (Fashion-MNIST for the accuracy check, Chromium for the
# report test, the pinned libtorch), then runs `cargo test --release`. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/apt-install.sh dataset-fashion-mnist:/usr/share/datasets/fashion-mnist \
  chromium:/usr/bin/chromium
scripts/setup-torch.sh >/dev/null
exec cargo test --release --workspace "$@"
