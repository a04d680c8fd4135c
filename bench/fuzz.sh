#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser ccq reads files with (AFL++ through cargo-afl):
# idx, cifar, image, policy, checkpoint, state, ccq_file (see tests/common/fuzz_targets.rs).
#
#   bench/fuzz.sh [MINUTES]      # MINUTES per target (default 3), two targets at a time
#   FUZZ_TARGETS="ccq_file state" bench/fuzz.sh 2   # only these targets
#
# Seeds are the valid files in fuzz/seeds/<target>/; findings go to fuzz/out/<target>/. The table
# at the end gives executions, crashes and hangs per target. A crash input belongs in
# tests/fuzz-cases/<target>/ once fixed: tests/fuzz_regressions.rs replays it in every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-3}
jobs=${FUZZ_JOBS:-2}
if ! cargo afl --version >/dev/null 2>&1; then
  cargo install cargo-afl --version 0.18.2 --locked
fi
scripts/setup-torch.sh >/dev/null
(cd fuzz && cargo afl build --release -q)
read -r -a targets <<<"${FUZZ_TARGETS:-idx cifar image policy checkpoint state ccq_file}"
# The parsers live in the ccq crate, which links libtorch.
export LD_LIBRARY_PATH="$(readlink -f .libtorch)/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
run() {
  local t=$1
  rm -rf "fuzz/out/$t"
  mkdir -p "fuzz/out/$t"
  cargo afl fuzz -i "fuzz/seeds/$t" -o "fuzz/out/$t" -V $((minutes * 60)) -t 2000 \
    -- "fuzz/target/release/$t" >"fuzz/out/$t.log" 2>&1 || {
    echo "afl-fuzz failed on $t; see fuzz/out/$t.log" >&2
    tail -20 "fuzz/out/$t.log" >&2
    return 1
  }
}
echo "fuzzing ${#targets[@]} targets for $minutes min each, $jobs at a time"
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  for t in "${targets[@]:i:jobs}"; do run "$t" & done
  wait
done
stat() { grep "^$2 " "fuzz/out/$1/default/fuzzer_stats" | awk -F': ' '{print $2}'; }
printf '%-12s %12s %10s %8s %8s %8s\n' target executions execs/s crashes hangs corpus
fail=0
for t in "${targets[@]}"; do
  printf '%-12s %12s %10s %8s %8s %8s\n' "$t" "$(stat "$t" execs_done)" "$(stat "$t" execs_per_sec)" \
    "$(stat "$t" saved_crashes)" "$(stat "$t" saved_hangs)" "$(stat "$t" corpus_count)"
  [ "$(stat "$t" saved_crashes)" = 0 ] || fail=1
done
if [ "$fail" = 1 ]; then
  echo "crashes: fuzz/out/*/default/crashes/ (replay one with: fuzz/target/release/<target> < FILE)"
  exit 1
fi
