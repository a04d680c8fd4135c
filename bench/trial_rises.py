#!/usr/bin/env python3
"""The competition's trial signal, step by step, from a search's `steps.jsonl`.

Usage: bench/trial_rises.py RUN/steps.jsonl [EVERY]

For each step (every EVERY-th, default 1, and always the last three): the arms scored, the
median and smallest rise of a trial's bandit cross-entropy over the current policy's (nats),
how many arms rose, and the median standard error of a rise. A healthy search has rises centred
near zero or above; rises negative on almost every arm mean the current policy was scored on
other BatchNorm statistics than its trials (see `--step-bn` in docs/measurements.md).
"""
import json
import statistics
import sys

if len(sys.argv) not in (2, 3):
    sys.exit(__doc__)
path = sys.argv[1]
every = sys.argv[2] if len(sys.argv) == 3 else "1"
if not every.isdigit() or int(every) < 1:
    sys.exit(f"EVERY must be a whole number of steps, 1 or more (got {every!r})")
every = int(every)
steps = []
with open(path) as f:
    for n, line in enumerate(f, 1):
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"{path}: line {n} is not JSON: {e}")
if not steps:
    sys.exit(f"{path}: no steps")

print(f"{'step':>4} {'arms':>4} {'median rise':>11} {'least rise':>10} {'rose':>4} {'median se':>9}")
for i, s in enumerate(steps):
    if (s["step"] - 1) % every and i < len(steps) - 3:
        continue
    base = s.get("bandit_loss")
    arms = [a for a in s.get("arms", []) if a.get("loss") is not None]
    if base is None or not arms:
        print(f"{s['step']:>4} {len(arms):>4}  (no loss signal recorded)")
        continue
    rises = [a["loss"] - base for a in arms]
    ses = [a["loss_se"] for a in arms if a.get("loss_se") is not None]
    se = f"{statistics.median(ses):>9.4f}" if ses else f"{'-':>9}"
    print(
        f"{s['step']:>4} {len(arms):>4} {statistics.median(rises):>+11.4f} {min(rises):>+10.4f} "
        f"{sum(r > 0 for r in rises):>4} {se}"
    )
