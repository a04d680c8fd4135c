#!/usr/bin/env bash
# Crash-proof runs: a small `ccq quantize` run uninterrupted, then the same run SIGKILLed at
# random moments (at least KILLS times) and resumed after each kill; the final policy.json,
# steps.jsonl (without its wall-time fields) and test accuracy must be identical.
# Usage: bench/kill_soak.sh [KILLS] [SEED]   (default 20 kills; needs Fashion-MNIST installed)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
seed=${2:-1}
scripts/setup-torch.sh >/dev/null
cargo build --release -q
ccq=$PWD/target/release/ccq
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$ccq" train --model convnet --epochs 1 --out "$work/fp" -q --threads 2 >/dev/null
args=(quantize "$work/fp" --target-compression 8 --untied --qsteps 8 --ft-min-epochs 1
  --ft-max-epochs 1 --ft-samples 3000 --init-epochs 1 --final-epochs 1 --seed 7 -q --threads 2)
start=$(date +%s)
"$ccq" "${args[@]}" --out "$work/plain" >/dev/null
echo "uninterrupted run: $(( $(date +%s) - start )) s"

run="$work/killed"
n=0
lives=0
RANDOM=$seed
while [ ! -f "$run/policy.json" ]; do
  lives=$((lives + 1))
  if [ -f "$run/state.json" ]; then
    "$ccq" quantize --resume "$run" -q --threads 2 >/dev/null 2>&1 &
  else
    "$ccq" "${args[@]}" --out "$run" >/dev/null 2>&1 &
  fi
  pid=$!
  if [ "$n" -lt "$kills" ]; then
    # 0.5 to 4.5 s: start-up is about 1.5 s, a step about 2 s.
    sleep "$(( RANDOM % 40 / 10 )).$(( RANDOM % 10 ))"
    sleep 0.5
    if kill -9 "$pid" 2>/dev/null; then n=$((n + 1)); fi
  fi
  wait "$pid" 2>/dev/null || true
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
cmp -s "$work/plain/policy.json" "$run/policy.json" || { echo "FAIL: policy.json differs"; ok=0; }
diff <(strip "$work/plain/steps.jsonl") <(strip "$run/steps.jsonl") >/dev/null \
  || { echo "FAIL: steps.jsonl differs"; ok=0; }
t1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test"])' "$work/plain/policy.json")
t2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test"])' "$run/policy.json")
echo "test top-1: uninterrupted $t1, killed and resumed $t2"
[ "$t1" = "$t2" ] || ok=0
[ "$n" -ge "$kills" ] || { echo "FAIL: only $n kills"; ok=0; }
[ $ok = 1 ] && echo "PASS: identical after $n kills" || exit 1
