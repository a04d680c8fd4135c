#!/usr/bin/env bash
# The tests: installs what they need (Fashion-MNIST for the accuracy check, Chromium for the
# report test, the pinned libtorch), then runs `cargo test --release`, the two examples end to end
# on synthetic data, and `cargo doc` with warnings as errors. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/apt-install.sh dataset-fashion-mnist:/usr/share/datasets/fashion-mnist \
  chromium:/usr/bin/chromium
scripts/setup-torch.sh >/dev/null
cargo test --release --workspace "$@"
ex=$(mktemp -d)
trap 'rm -rf "$ex"' EXIT
cargo run --release -q --example quantize_convnet -- "$ex/out"
cargo run --release -q -p ccq-runtime --example embed_runtime -- "$ex/out/model.ccq"
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --workspace -q
echo "tests, examples and docs: OK"
