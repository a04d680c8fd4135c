#!/usr/bin/env python3
"""Prices weight-bit policies the way CCQ's re-allocation prices them, at one milestone of a
`ccq compare` run made with `--lookahead-prices true`, `--fp-prices true` or `--top-prices true`.

    bench/price_policy.py RUN/ccq BUDGET [POLICY ...]

A POLICY is a string of weight bits, one digit per layer in the model's order (as
`bench/summarise_compare.py` prints them), e.g. 6444343436333333432224 for ResNet-20.

Each rung's price is its latest measured rise in bandit cross-entropy: the search's step trials
up to the step that first reached BUDGET (from `state.json`), then the look-ahead below the
search's policy there (`at-<BUDGET>x/lookahead.json`); or, from a run with `--fp-prices`, every
rung from the top priced on the FP model calibrated at that policy, alone; or, with
`--top-prices`, every rung of each layer alone at the top on the FP model calibrated there,
alone. Like the re-allocation, a price is the tempered rise when the run priced so, never below
0, and never below the larger standard error of the rung's two trials with the price floor.
Prints each policy's summed price, with and without the look-ahead rungs ("unpriced" where a
rung it needs was never measured).
"""
import json
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    run, budget = sys.argv[1], sys.argv[2]
    state_path = f"{run}/state.json"
    la_path = f"{run}/at-{budget}x/lookahead.json"
    with open(state_path) as f:
        state = json.load(f)
    try:
        with open(la_path) as f:
            la = json.load(f)
    except FileNotFoundError:
        sys.exit(f"{la_path}: not found (was the comparison run with --lookahead-prices true?)")
    cfg = state["config"]
    ladder = cfg["lowering"]["ladder"]
    tempered, floor = cfg.get("tempered_prices", False), cfg.get("price_floor", False)
    names = la["policy"]["names"]
    milestone = [b["w"] for b in la["policy"]["bits"]]
    if la.get("tops") and all(b == ladder[0] for b in milestone):
        # Top prices (`--top-prices`) are measured around the top: the search's policy is the
        # milestone checkpoint's.
        with open(f"{run}/at-{budget}x/checkpoint.json") as f:
            milestone = [b["w"] for b in json.load(f)["policy"]["bits"]]

    def rise(trial, base, se):
        p = max(trial - base, 0.0)
        return max(p, se) if floor and se is not None else p

    loss_key = "tempered_loss" if tempered else "loss"
    base_key = "bandit_tempered_loss" if tempered else "bandit_loss"
    bits = [ladder[0]] * len(names)
    walked, refused, steps = {}, set(), 0
    for s in state["steps"]:
        if bits == milestone:
            break
        base = s[base_key]
        if base is None:
            sys.exit(f"{state_path}: step {s['step']} has no {base_key}")
        for a in s["arms"]:
            if a["kind"] == "Act" or a.get(loss_key) is None:
                continue
            layer = names.index(a["layer"])
            walked[(layer, bits[layer])] = rise(a[loss_key], base, a.get("loss_se"))
        layer = names.index(s["chosen"])
        if s.get("refused") is None:
            bits[layer] = s["bits_after"]["w"]
        else:
            refused.add((layer, s["bits_before"]["w"]))
        steps += 1
    if bits != milestone:
        sys.exit(f"{state_path}: the steps never reach the {budget}x policy of {la_path}")
    # FP or top prices (`--fp-prices`, `--top-prices`: every rung from each arm's top, with
    # `tops`) replace the steps' prices; look-ahead prices (below the policy) add to them.
    tops = la.get("tops")
    ahead = {} if tops else dict(walked)
    for layer, rungs in enumerate(la["arms"][:len(names)]):
        top = tops[layer] if tops else la["current"]
        if top is None:
            continue
        above, above_se = top[loss_key], top["loss_se"]
        for r in rungs:
            t = r["trial"]
            if t is None:
                break
            se = max(t["loss_se"], above_se)
            ahead[(layer, r["before"])] = rise(t[loss_key], above, se)
            above, above_se = t[loss_key], t["loss_se"]
    for key in refused:
        walked.pop(key, None)
        ahead.pop(key, None)

    def price(policy, prices):
        total = 0.0
        for layer, b in enumerate(policy):
            cur = ladder[0]
            while cur > b:
                if (layer, cur) not in prices:
                    return None
                total += prices[(layer, cur)]
                cur = ladder[ladder.index(cur) + 1]
        return total

    def show(p):
        return "unpriced" if p is None else f"{p:.4f}"

    print(f"{steps} steps to {budget}x; the search's policy there: {''.join(map(str, milestone))}")
    policies = [("search", milestone)]
    for arg in sys.argv[3:]:
        if len(arg) != len(names) or any(c not in "0123456789" for c in arg):
            sys.exit(f"{arg}: not {len(names)} digits, one per layer")
        policies.append((arg, [int(c) for c in arg]))
    for label, p in policies:
        print(f"{label}: {show(price(p, walked))} from the steps, "
              f"{show(price(p, ahead))} with the {'FP or top prices' if tops else 'look-ahead'}")


if __name__ == "__main__":
    main()
