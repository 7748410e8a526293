"""The verdict of a tuning run: one sentence with the decision and why, and what changed from the user's
own settings. One source for the terminal summary, the JSON report and the HTML page.

Example:
    >>> from autoscout_plugin.trial import Trial
    >>> r = TuneResult(best_config={"num_threads": 4}, best_value=30.0, baseline_config={"num_threads": 1},
    ...                baseline_value=10.0, tuning_s=12.0,
    ...                trials=[Trial(config={"num_threads": 1}, value=10.0, number=0),
    ...                        Trial(config={"num_threads": 4}, value=30.0, number=1)])
    >>> v = make_verdict(r)
    >>> v.sentence.startswith("Applied: num_threads 1 → 4, 3.00x faster than your settings (short profiles")
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .result import TuneResult

STORE_FAILED_PREFIX = "the trial store failed"
"""How `Tuning` begins a stop reason when the store broke mid-run (`tuning.STORE_FAILED`)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One knob whose applied value differs from the user's."""

    knob: str
    yours: Any
    applied: Any
    follows: bool = False
    """True for a value that follows from the tuned ones (`grad_accum` from the micro-batch)."""

    def describe(self) -> str:
        return f"{self.knob} {show(self.yours)} → {show(self.applied)}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision of a tuning run, in one sentence and as data."""

    decision: str
    """`applied` (a config other than the user's), `kept` (the user's settings) or `reused` (a stored
    winner, zero trials)."""
    sentence: str
    changes: list[Change] = field(default_factory=list)
    pinned: list[tuple[str, Any, str]] = field(default_factory=list)
    """(knob, value, who pinned it) for every knob the search left alone."""
    speedup: float | None = None
    """The applied config's speed over the user's (1.0 when kept)."""
    basis: str = ""
    """How `speedup` was measured: `paired` (interleaved confirmation), `profiles` (short profiles) or ``."""
    spread: tuple[float, float] | None = None
    """The lowest and highest paired round ratio."""
    rounds: int = 0
    trials: int = 0
    tuning_s: float = 0.0
    recommended: list[Change] = field(default_factory=list)
    """The winner's changes when it was recommended rather than applied (it needs a relaunch, which is off)."""

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "sentence": self.sentence, "speedup": self.speedup, "basis": self.basis,
                "spread": list(self.spread) if self.spread else None, "rounds": self.rounds, "trials": self.trials,
                "tuning_s": round(self.tuning_s, 2),
                "changes": [{"knob": c.knob, "yours": c.yours, "applied": c.applied, "follows": c.follows}
                            for c in self.changes],
                "recommended": [{"knob": c.knob, "yours": c.yours, "applied": c.applied} for c in self.recommended],
                "pinned": [{"knob": k, "value": v, "by": by} for k, v, by in self.pinned]}


def show(value: Any) -> str:
    """A knob value as the user wrote it: `None` as `-`, booleans as `on`/`off`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def changes_between(yours: dict[str, Any], applied: dict[str, Any],
                    derived: dict[str, Any] | None = None) -> list[Change]:
    """The knobs of `applied` whose value differs from `yours`; values in `derived` (following from the
    others) are listed after the tuned knobs, where your own value of them is known."""
    derived = derived or {}
    out = [Change(k, yours.get(k), v) for k, v in sorted(applied.items())
           if k not in derived and k in yours and yours.get(k) != v]
    out += [Change(k, yours[k], v, follows=True) for k, v in sorted(applied.items())
            if k in derived and k in yours and yours[k] != v]
    return out


def _list(changes: list[Change], limit: int = 4) -> str:
    tuned = [c for c in changes if not c.follows] or changes
    text = ", ".join(c.describe() for c in tuned[:limit])
    more = len(tuned) - limit
    return text + (f" and {more} more (see the table)" if more > 0 else "")


def make_verdict(result: TuneResult, notes: dict[str, Any] | None = None) -> Verdict:
    """The verdict of `result`; `notes` are `Tuning.conclude`'s (what was `applied`, who `pinned` what,
    a `recommended` config that needs a relaunch)."""
    notes = notes or {}
    yours = dict(result.baseline_config or {})
    applied = notes["applied"] if "applied" in notes else result.best_config
    applied = dict(applied) if applied else None
    pinned_by = notes.get("pinned") or {}
    pinned = [(k, v, str(pinned_by.get(k) or "you")) for k, v in result.pinned.items()]
    n, spent = result.n_trials, result.tuning_s
    effort = f"{n} trial{'s' if n != 1 else ''} / {spent:.0f} s"
    changes = changes_between(yours, applied, result.derived) if applied else []
    recommended = notes.get("recommended")
    advice = changes_between(yours, dict(recommended)) if recommended else []
    tail = (f" Recommended for your next launch (a relaunch is needed and is off): {_list(advice)}."
            if advice else "")
    common = {"pinned": pinned, "trials": n, "tuning_s": spent, "recommended": advice}

    if result.reused:
        if changes:
            return Verdict("reused", f"Applied the stored winner for this workload and machine: {_list(changes)}"
                           " (0 trials; measured when it was found)." + tail, changes=changes, **common)
        return Verdict("reused", "Kept your settings: the stored winner for this workload and machine is your own"
                       " (0 trials)." + tail, speedup=1.0, **common)

    if applied is None or not [c for c in changes if not c.follows]:
        if result.stop_reason.startswith(STORE_FAILED_PREFIX):
            why = f"{result.stop_reason}"
        elif n == 0:
            why = f"no trial ran ({result.stop_reason or 'nothing to tune'})"
        elif not any(t.ok for t in result.trials):
            why = f"every trial failed (see the status column), {effort}"
        elif advice:
            why = f"the fastest config needs the script relaunched, and relaunching is off, {effort}"
        elif result.net.get("unconfirmed"):
            skipped = result.net["unconfirmed"]
            why = (f"the best candidate ran {skipped['ratio']:.2f}x in short profiles, within their noise, and"
                   f" {skipped['reason']}, {effort}")
        else:
            why = f"nothing measured faster than your settings{_closest(result)}, {effort}"
        speed = 1.0 if result.baseline_value else None
        advise = f" Recommended for your next launch: {_list(advice)}." if advice else ""
        return Verdict("kept", f"Kept your settings: {why}." + advise, speedup=speed, **common)

    tuned = {k: v for k, v in applied.items() if k not in result.derived}
    pair = result.chosen_pair if tuned == result.best_config else None
    if pair is not None and pair.ratios:
        low, high = pair.spread
        speedup, basis, spread, rounds = pair.ratio, "paired", (low, high), len(pair.ratios)
        how = f"paired measurement over {rounds} rounds, {low:.2f}–{high:.2f}x"
    else:
        mine, base = result.mean_value(tuned), result.baseline_value
        speedup = mine / base if mine and base else None
        basis, spread, rounds, how = ("profiles" if speedup else ""), None, 0, "short profiles, not confirmed"
    if speedup is None or not math.isfinite(speedup):
        gain = "your settings were not measured (their trial failed)"
        speedup = None
    else:
        word = "faster" if speedup >= 1.0 else "slower"
        factor = speedup if speedup >= 1.0 else 1.0 / speedup
        gain = f"{factor:.2f}x {word} than your settings ({how})"
    sentence = f"Applied: {_list(changes)}, {gain}, found in {effort}." + tail
    return Verdict("applied", sentence, changes=changes, speedup=speedup, basis=basis, spread=spread,
                   rounds=rounds, **common)


def _closest(result: TuneResult) -> str:
    """What the best challenger measured against the user's config, for a kept verdict."""
    pairs = [p for p in result.paired if p.ratios]
    if pairs:
        best = max(pairs, key=lambda p: p.ratio)
        low, high = best.spread
        return f" (the best candidate ran {best.ratio:.2f}x in paired measurement, rounds {low:.2f}–{high:.2f}x)"
    if result.baseline_value:
        others = [t.value for t in result.trials if t.ok and t.value and t.config != result.baseline_config]
        if others:
            return f" (the best other config measured {max(others) / result.baseline_value:.2f}x in a short profile)"
    return ""


__all__ = ["Change", "Verdict", "changes_between", "make_verdict", "show"]
