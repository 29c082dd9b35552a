"""Attacks that keep the worst of several tries (best-of-N), against a control with the same spread and no direction.

The minimum of N noisy tries falls below the clean value even when the tries have no direction, by an amount that
grows with their spread; so "worst of N attack minus worst of N control" is negative under pure noise whenever the
attack's tries spread more than the control's (best-of-N scrambles word middles and case, its re-spacing control
hardly moves anything). The spread-matched directionless control is built from the attack's own tries: per item,
the same tries with their mean moved to the clean value,

    null = clean + (min - mean)          (the same spread, no direction)
    attack - null = min - null = mean - clean

so the attack's effect beyond selection is the mean shift over its tries. That is what enters the attack-minus-control
column, the prompt-attack mean and the strength table; the raw minimum stays in the attack's own row as a
description of the worst case. The simulation tests: under directionless tries the interval of attack - null
covers 0 about 95% of the time; a planted direction is detected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from persist.conditions import Condition
from persist.report.items import ItemValue, Seeded, common_items, matrix
from persist.report.model import VsControl
from persist.stats import UNBOUNDED, tested


def null_condition(cond: Condition) -> Condition:
    """How the derived control is named in tables."""
    return replace(cond, name=f"{cond.name} (spread-matched null)")


def net_of_selection(after: Seeded) -> Seeded:
    """Each item's mean over its tries in place of its worst try (values without tries stay as they are)."""
    return {s: {i: v.tries if v.tries is not None else v for i, v in values.items()} for s, values in after.items()}


def spread_matched(before: Mapping[str, ItemValue], after: Seeded, cond: Condition) -> VsControl | None:
    """The worst-of-N attack minus its spread-matched directionless control, per item (see the module docstring)."""
    ids = common_items(before, after)
    if not ids or any(a[i].tries is None for a in after.values() for i in ids):
        return None
    net = net_of_selection(after)
    drop = tested(-matrix(before, net, ids, "score"))  # clean - mean of the tries, on the 0-1 score
    logodds = all(before[i].logodds is not None and a[i].logodds is not None for a in net.values() for i in ids)
    return VsControl(control=null_condition(cond), n=len(ids), drop=drop,
                     shift=tested(matrix(before, net, ids, "logodds"), bounds=UNBOUNDED) if logodds else None)
