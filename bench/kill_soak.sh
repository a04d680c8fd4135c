#!/usr/bin/env bash
# Crash-proof runs: a small job run uninterrupted, then the same job SIGKILLed at random moments
# (at least KILLS times) and resumed after each kill; the results must be identical.
# - quantize: the final policy.json, steps.jsonl (without its wall-time fields) and test accuracy;
# - compare: report.json (without wall times) and the CCQ run's policy.json and steps.jsonl.
# Usage: bench/kill_soak.sh [KILLS] [SEED] [quantize|compare]
#   (default 20 kills, seed 1, quantize; needs Fashion-MNIST installed)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
seed=${2:-1}
mode=${3:-quantize}
scripts/setup-torch.sh >/dev/null
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private copy, so that a rebuild during the soak cannot mix two binaries.
cp target/release/ccq "$work/ccq"
ccq=$work/ccq
"$ccq" train --model convnet --epochs 1 --out "$work/fp" -q --threads 2 >/dev/null
if [ "$mode" = compare ]; then
  args=(compare "$work/fp" --target-compression 6,8 --methods ccq,hawq,uniform,random
    --ft-epochs 1 --hessian-images 128 --hessian-samples 4 --untied --qsteps 8 --ft-min-epochs 1
    --ft-max-epochs 1 --ft-samples 3000 --init-epochs 1 --seed 7 -q --threads 2)
else
  args=(quantize "$work/fp" --target-compression 8 --untied --qsteps 8 --ft-min-epochs 1
    --ft-max-epochs 1 --ft-samples 3000 --init-epochs 1 --final-epochs 1 --seed 7 -q --threads 2)
fi
start=$(date +%s)
"$ccq" "${args[@]}" --out "$work/plain" >/dev/null
echo "uninterrupted $mode: $(( $(date +%s) - start )) s"

run="$work/killed"
n=0
lives=0
RANDOM=$seed
# Until an invocation finishes by itself (exit 0); compare writes report.json as it goes.
while true; do
  lives=$((lives + 1))
  if [ "$mode" = quantize ] && [ -f "$run/state.json" ]; then
    "$ccq" quantize --resume "$run" -q --threads 2 >/dev/null 2>&1 &
  else
    "$ccq" "${args[@]}" --out "$run" >/dev/null 2>&1 &
  fi
  pid=$!
  if [ "$n" -lt "$kills" ]; then
    # quantize: 0.5 to 4.5 s (start-up is about 1.5 s, a step about 2 s); compare: 1.5 to 17 s
    # (start-up is longer; a method's fine-tuning takes about 10 s).
    if [ "$mode" = compare ]; then sleep $(( 1 + RANDOM % 12 )); fi
    sleep "$(( RANDOM % 40 / 10 )).$(( RANDOM % 10 ))"
    sleep 0.5
    if kill -9 "$pid" 2>/dev/null; then n=$((n + 1)); fi
  fi
  if wait "$pid" 2>/dev/null; then break; fi
  [ "$lives" -gt $((kills * 5 + 20)) ] && { echo "FAIL: no progress after $lives lives"; exit 1; }
done
echo "killed run: $n SIGKILLs over $lives lives"

strip() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    s = json.loads(line)
    s.pop("seconds", None); s.pop("compete_seconds", None)
    print(json.dumps(s, sort_keys=True))' "$1"; }
ok=1
if [ "$mode" = compare ]; then
  # Wall times differ between runs; everything else must not.
  norm() { python3 -c '
import json, sys
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if "seconds" not in k and k != "time"}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
print(json.dumps(strip(json.load(open(sys.argv[1]))), sort_keys=True, indent=1))' "$1"; }
  diff <(norm "$work/plain/report.json") <(norm "$run/report.json") \
    || { echo "FAIL: report.json differs"; ok=0; }
  # The CCQ run inside: its policy and steps (compare writes no policy.json there).
  pol() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["policy"])' "$1"; }
  [ "$(pol "$work/plain/ccq/state.json")" = "$(pol "$run/ccq/state.json")" ] \
    || { echo "FAIL: the CCQ policy differs"; ok=0; }
  diff <(strip "$work/plain/ccq/steps.jsonl") <(strip "$run/ccq/steps.jsonl") >/dev/null \
    || { echo "FAIL: ccq/steps.jsonl differs"; ok=0; }
  echo "report.json results: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["results"]))' "$run/report.json")"
else
  plain=$work/plain
  cmp -s "$plain/policy.json" "$run/policy.json" || { echo "FAIL: policy.json differs"; ok=0; }
  diff <(strip "$plain/steps.jsonl") <(strip "$run/steps.jsonl") >/dev/null \
    || { echo "FAIL: steps.jsonl differs"; ok=0; }
  t1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test"])' "$plain/policy.json")
  t2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test"])' "$run/policy.json")
  echo "test top-1: uninterrupted $t1, killed and resumed $t2"
  [ "$t1" = "$t2" ] || ok=0
fi
[ "$n" -ge "$kills" ] || { echo "FAIL: only $n kills"; ok=0; }
[ $ok = 1 ] && echo "PASS ($mode): identical after $n kills" || exit 1
