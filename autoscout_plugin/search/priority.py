"""Knob prioritisation: how much each knob moves the objective, and which knobs to hold.

Importance is the first-order (main-effect) share of variance, as in functional ANOVA (Hutter et al.
2014, "An Efficient Approach for Assessing Hyperparameter Importance"), computed on the current
model's predictions over the candidate set: Var_v(E[y | knob = v]) / Var(y). An inactive knob counts
as one more level. Knobs below a threshold are held at the incumbent's value; the holds are recomputed
on every ask, so a knob whose effect shows up in new data is released.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..space import Config


def main_effects(configs: Sequence[Config], values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Each knob's main-effect share of the variance of `values` over `configs` (sums to <= 1).

    Example:
        >>> cs = [{"a": a, "b": b} for a in (0, 1) for b in (0, 1)]
        >>> ys = np.array([float(c["a"]) for c in cs])
        >>> {k: round(v, 2) for k, v in main_effects(cs, ys, ["a", "b"]).items()}
        {'a': 1.0, 'b': 0.0}
    """
    total = float(np.var(values))
    if total <= 1e-12 or len(configs) < 2:
        return {name: 0.0 for name in names}
    grand = float(np.mean(values))
    out = {}
    for name in names:
        groups: dict[str, list[float]] = defaultdict(list)
        for config, y in zip(configs, values):
            groups[repr(config.get(name))].append(float(y))
        between = sum(len(ys) * (np.mean(ys) - grand) ** 2 for ys in groups.values()) / len(values)
        out[name] = float(between / total)
    return out


def held_knobs(importances: dict[str, float], threshold: float) -> list[str]:
    """Knobs whose share of variance is below `threshold`."""
    return [name for name, share in importances.items() if share < threshold]


def restrict(configs: Sequence[Config], incumbent: Config, held: Sequence[str]) -> list[int]:
    """Indices of `configs` that agree with `incumbent` on every held knob active in both."""
    keep = []
    for i, config in enumerate(configs):
        if all(config.get(k) == incumbent.get(k) for k in held if k in config and k in incumbent):
            keep.append(i)
    return keep
