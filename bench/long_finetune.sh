#!/usr/bin/env bash
# A longer fine-tuning of the policies a `ccq compare` found: each method's policy at BUDGET in
# REPORT (the comparison's report.json), fine-tuned with `ccq qat` from the FP model for EPOCHS,
# beside a W8A8 control fine-tuned the same way. The control measures what the schedule alone
# does to the FP model: on an FP model that is not trained to the end, more epochs lift it too,
# so a policy is scored against the control as well as against the FP model.
#
#   bench/long_finetune.sh FP_CHECKPOINT REPORT BUDGET OUT_DIR
#   EPOCHS=4 THREADS=1 bench/long_finetune.sh /tmp/r20/fp /tmp/r20/n3/report.json 12 /tmp/ft
#
# EPOCHS (default 4), LR (default 0.005) and WD (default 1e-4, as `ccq compare` fine-tunes),
# SEED (default 1), METHODS (default: each method with a policy at BUDGET, comma-separated),
# THREADS, CCQ (default target/release/ccq), FLAGS (more `ccq qat` flags). A job whose
# checkpoint holds a test score is not run again: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
fp=${1:?usage: bench/long_finetune.sh FP_CHECKPOINT REPORT BUDGET OUT_DIR}
report=${2:?usage: bench/long_finetune.sh FP_CHECKPOINT REPORT BUDGET OUT_DIR}
budget=${3:?usage: bench/long_finetune.sh FP_CHECKPOINT REPORT BUDGET OUT_DIR}
out=${4:?usage: bench/long_finetune.sh FP_CHECKPOINT REPORT BUDGET OUT_DIR}
ccq=${CCQ:-target/release/ccq}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
read -r -a flags <<<"${FLAGS:-}"
mkdir -p "$out"
# Each method's policy at the budget, as `ccq qat --policy` reads it.
methods=$(python3 - "$report" "$budget" "$out" "${METHODS:-}" <<'EOF'
import json, sys
report, budget, out, wanted = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
r = json.load(open(report))
found = []
for x in r["results"]:
    if x["budget"] != budget or x.get("bits") is None:
        continue
    if wanted and x["method"] not in wanted.split(","):
        continue
    policy = {"layers": dict(zip(r["layers"], x["bits"]))}
    json.dump(policy, open(f"{out}/{x['method']}.json", "w"), indent=1)
    found.append(x["method"])
if not found:
    sys.exit(f"{report}: no policy at {budget}x" + (f" for {wanted}" if wanted else ""))
print(" ".join(found))
EOF
)
for job in w8a8 $methods; do
  # A finished job's checkpoint holds its test score (an interrupted one's does not).
  python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("test") is None)' \
    "$out/$job/checkpoint.json" 2>/dev/null && continue
  if [ "$job" = w8a8 ]; then bits=(--bits 8/8); else bits=(--policy "$out/$job.json"); fi
  start=$(date +%s)
  "$ccq" qat "$fp" "${bits[@]}" --epochs "${EPOCHS:-4}" --lr "${LR:-0.005}" --weight-decay "${WD:-1e-4}" \
    --seed "${SEED:-1}" -q "${threads[@]}" "${flags[@]}" --out "$out/$job" | tail -1
  echo "$job: $(( $(date +%s) - start )) s"
done
python3 - "$fp" "$out" "$report" "$budget" w8a8 $methods <<'EOF'
import json, sys
fp, out, report, budget, jobs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:]
top1 = lambda d: json.load(open(f"{d}/checkpoint.json"))["test"]["top1"] * 100
size = {x["method"]: x["compression"] for x in json.load(open(report))["results"]
        if x["budget"] == budget and x.get("bits") is not None}
size["w8a8"] = 4.0
base, control = top1(fp), top1(f"{out}/w8a8")
print(f"FP {base:.2f}%, W8A8 control {control:.2f}% after the same fine-tuning")
print(f"{'job':<10} {'size':>7} {'test top-1':>10} {'vs FP':>7} {'vs control':>10}")
for j in jobs:
    t = top1(f"{out}/{j}")
    print(f"{j:<10} {size[j]:>6.2f}x {t:>9.2f}% {t - base:>+7.2f} {t - control:>+10.2f}")
EOF
