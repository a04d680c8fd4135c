#!/usr/bin/env python3
"""Mean and spread of `ccq compare` results over seeds.

Usage: bench/summarise_compare.py OUT/s*/VARIANT/report.json ...

Groups the results by variant (the report's directory name), method and budget, and prints the
mean loss against FP (points), its standard deviation and range, and the mean compression.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

groups = defaultdict(list)
for path in sys.argv[1:]:
    p = Path(path)
    variant = p.parent.name
    report = json.loads(p.read_text())
    for r in report["results"]:
        if r.get("loss_points") is None:
            continue
        groups[(variant, r["method"], r["budget"])].append((r["loss_points"], r["compression"]))

print(f"{'variant':10} {'method':26} {'budget':>6} {'n':>2} {'loss mean':>9} {'sd':>5} {'min':>6} {'max':>6} {'compr.':>7}")
for (variant, method, budget), v in sorted(groups.items()):
    losses = [-x[0] for x in v]
    sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
    print(
        f"{variant:10} {method:26} {budget:>5}x {len(v):>2} {statistics.mean(losses):>+9.2f} "
        f"{sd:>5.2f} {min(losses):>+6.2f} {max(losses):>+6.2f} {statistics.mean(x[1] for x in v):>6.2f}x"
    )
