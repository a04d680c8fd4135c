#!/usr/bin/env python3
"""Mean and spread of `ccq compare` results over seeds.

Usage: bench/summarise_compare.py OUT/s*/VARIANT/report.json ...

Groups the results by variant (the report's directory name), method and budget, and prints the
mean loss against FP (points), its standard deviation and range, and the mean compression. Then,
per budget, CCQ against each other method seed by seed (the reports that hold both): the mean
and spread of the paired difference in points (positive: CCQ lost less), the half-width of its 95%
confidence interval over the seeds (Student's t), and how many seeds CCQ was ahead, level (within
0.005 points: the same result) or behind.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

# Two-sided 95% quantiles of Student's t, by degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]

groups = defaultdict(list)
# (variant, budget) -> one {method: loss points} per report
paired = defaultdict(list)
for path in sys.argv[1:]:
    p = Path(path)
    variant = p.parent.name
    report = json.loads(p.read_text())
    seed = defaultdict(dict)
    for r in report["results"]:
        if r.get("loss_points") is None:
            continue
        groups[(variant, r["method"], r["budget"])].append((r["loss_points"], r["compression"]))
        seed[r["budget"]][r["method"]] = r["loss_points"]
    for budget, losses in seed.items():
        paired[(variant, budget)].append(losses)

print(f"{'variant':10} {'method':26} {'budget':>6} {'n':>2} {'loss mean':>9} {'sd':>5} {'min':>6} {'max':>6} {'compr.':>7}")
for (variant, method, budget), v in sorted(groups.items()):
    losses = [-x[0] for x in v]
    sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
    print(
        f"{variant:10} {method:26} {budget:>5}x {len(v):>2} {statistics.mean(losses):>+9.2f} "
        f"{sd:>5.2f} {min(losses):>+6.2f} {max(losses):>+6.2f} {statistics.mean(x[1] for x in v):>6.2f}x"
    )

print()
print(f"{'variant':10} {'CCQ against':26} {'budget':>6} {'n':>2} {'CCQ - it':>9} {'sd':>5} {'95% ±':>6} {'ahead':>5} {'level':>5} {'behind':>6}")
for (variant, budget), seeds in sorted(paired.items()):
    others = sorted({m for s in seeds for m in s if not m.startswith("ccq")})
    for m in others:
        d = [s[m] - s["ccq"] for s in seeds if "ccq" in s and m in s]
        if not d:
            continue
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        t = T95[len(d) - 2] if 1 < len(d) <= len(T95) + 1 else 1.96
        half = f"{t * sd / len(d) ** 0.5:>6.2f}" if len(d) > 1 else f"{'-':>6}"
        ahead = sum(x > 0.005 for x in d)
        behind = sum(x < -0.005 for x in d)
        print(
            f"{variant:10} {m:26} {budget:>5}x {len(d):>2} {statistics.mean(d):>+9.2f} {sd:>5.2f} {half} "
            f"{ahead:>5} {len(d) - ahead - behind:>5} {behind:>6}"
        )
