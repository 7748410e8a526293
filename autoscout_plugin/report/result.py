"""The result of a tuning run: the winner, every trial, knob importances, and a console table."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..failures import Exclusion
from ..trial import Fidelity, Trial


@dataclass(slots=True, kw_only=True)
class PairedComparison:
    """A confirmed config against the reference (the user's config) measured in the same rounds.

    Example:
        >>> p = PairedComparison(config={"num_threads": 2}, reference={"num_threads": 1}, ratios=[1.2, 1.1])
        >>> round(p.ratio, 3), p.spread
        (1.149, (1.1, 1.2))
    """

    config: dict[str, Any]
    reference: dict[str, Any]
    ratios: list[float] = field(default_factory=list)
    """Per round: the config's speed over the reference's, both measured in that round."""
    failed: bool = False
    """A confirmation run of the config failed: it is never applied."""

    @property
    def ratio(self) -> float:
        """The geometric mean of the round ratios (nan without any)."""
        return math.exp(statistics.fmean(math.log(r) for r in self.ratios)) if self.ratios else math.nan

    @property
    def spread(self) -> tuple[float, float]:
        """The lowest and highest round ratio."""
        return (min(self.ratios), max(self.ratios)) if self.ratios else (math.nan, math.nan)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "reference": self.reference, "ratios": self.ratios, "failed": self.failed,
                "ratio": None if not self.ratios else self.ratio, "spread": None if not self.ratios else self.spread}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairedComparison:
        return cls(config=data["config"], reference=data["reference"], ratios=list(data.get("ratios", [])),
                   failed=bool(data.get("failed", False)))


@dataclass(slots=True, kw_only=True)
class TuneResult:
    """What `Tuner.run()` returns.

    Example:
        >>> r = TuneResult(best_config={"num_threads": 2}, best_value=20.0, baseline_value=10.0)
        >>> r.speedup
        2.0
    """

    best_config: dict[str, Any] | None
    """The winner (canonical config), or None when no trial succeeded."""
    best_value: float | None = None
    """Its confirmed samples/s."""
    baseline_config: dict[str, Any] | None = None
    baseline_value: float | None = None
    """The user's own settings, measured first, for the speed-up."""
    trials: list[Trial] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    tuning_s: float = 0.0
    """Seconds spent profiling (the sum of trial costs)."""
    wall_s: float = 0.0
    """Wall seconds of the whole tuning run, search overhead included."""
    reused: bool = False
    """True when the winner came from the store with zero trials."""
    stop_reason: str = ""
    fingerprint: str | None = None
    derived: dict[str, Any] = field(default_factory=dict)
    """Values that follow from the winner (e.g. `grad_accum`)."""
    pinned: dict[str, Any] = field(default_factory=dict)
    """Knobs the user fixed; not searched."""
    paired: list[PairedComparison] = field(default_factory=list)
    """The confirmation's paired comparisons with the user's config (see `TuneOptions.confirm_rounds`)."""
    exclusions: list[dict[str, Any]] = field(default_factory=list)
    """Settings the study stopped trying after an `unsupported` failure: knob, values, reason."""
    net: dict[str, Any] = field(default_factory=dict)
    """What the net-gain rule saw (`TuneOptions.net_gain`): the main run's samples, its last look-ahead, a
    confirmation it skipped; the tuning flow adds the job's estimated and realised net speed-up."""

    @property
    def chosen_pair(self) -> PairedComparison | None:
        """The paired comparison of the applied config with the user's, when the confirmation made one."""
        return next((p for p in self.paired if p.config == self.best_config), None)

    @property
    def speedup(self) -> float | None:
        """The chosen config's speed over the user's: the paired ratio when the confirmation measured one,
        else the ratio of their mean measured speeds."""
        if self.best_config is not None and self.best_config == self.baseline_config:
            return 1.0 if self.baseline_value else None
        pair = self.chosen_pair
        if pair is not None and pair.ratios:
            return pair.ratio
        if self.best_value and self.baseline_value:
            return self.best_value / self.baseline_value
        return None

    def mean_value(self, config: dict[str, Any]) -> float | None:
        """The mean measured speed of `config` over its successful trials (every fidelity); None if none."""
        values = [t.value for t in self.trials if t.ok and t.value is not None and t.config == config]
        return statistics.fmean(values) if values else None

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    def to_json(self) -> dict[str, Any]:
        return {
            "best_config": self.best_config, "best_value": self.best_value,
            "baseline_config": self.baseline_config, "baseline_value": self.baseline_value,
            "speedup": self.speedup, "trials": [t.to_json() for t in self.trials],
            "importances": self.importances, "tuning_s": self.tuning_s, "wall_s": self.wall_s,
            "reused": self.reused, "stop_reason": self.stop_reason, "fingerprint": self.fingerprint,
            "derived": self.derived, "pinned": self.pinned,
            "paired": [p.to_json() for p in self.paired], "exclusions": self.exclusions, "net": self.net,
        }

    def save(self, path: str | Path) -> Path:
        """The result as JSON at `path`, with its verdict (`report.verdict.make_verdict`)."""
        from .verdict import make_verdict

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_json() | {"verdict": make_verdict(self).to_json()}
        path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        return path

    def table(self) -> str:
        """A plain-text summary: trials, then default vs chosen."""
        lines = [f"{'#':>3} {'fid':3} {'status':11} {'samples/s':>10} {'pred':>8} {'cost s':>7}  config"]
        for t in self.trials:
            value = f"{t.value:10.2f}" if t.value is not None else f"{'-':>10}"
            pred = f"{t.predicted:8.2f}" if t.predicted is not None else f"{'-':>8}"
            lines.append(f"{t.number:>3} {t.fidelity.value:3} {status_label(t):11} {value} {pred} {t.cost_s:7.1f}  "
                         + format_config(t.config) + (f"  [{t.where}]" if t.where else ""))
        lines.append("")
        for ex in self.exclusions:
            lines.append(f"excluded {Exclusion.from_json(ex).describe()}: {ex['reason']}")
        if self.reused:
            lines.append("reused the stored winner for this workload and machine: 0 trials")
        if self.baseline_value is not None and self.baseline_config is not None:
            lines.append(f"default: {self.baseline_value:.2f} samples/s  {format_config(self.baseline_config)}")
        if self.best_config is not None:
            best = f"{self.best_value:.2f} samples/s" if self.best_value is not None else "(stored)"
            lines.append(f"chosen:  {best}  {format_config(self.best_config)}")
        else:
            lines.append("no trial succeeded: keep your own settings")
        if self.speedup is not None:
            lines.append(f"speed-up {self.speedup:.2f}x; tuning cost {self.tuning_s:.0f} s over {self.n_trials} trials")
        for pair in self.paired:
            if pair.ratios:
                low, high = pair.spread
                verdict = "applied" if pair.config == self.best_config else "not applied"
                lines.append(f"paired with your settings over {len(pair.ratios)} rounds: {pair.ratio:.3f}x"
                             f" (rounds {low:.3f}-{high:.3f}x), {verdict}: {format_config(pair.config)}")
        if self.importances:
            top = sorted(self.importances.items(), key=lambda kv: -kv[1])[:5]
            lines.append("knob importance: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        if self.stop_reason:
            lines.append(f"stopped: {self.stop_reason}")
        return "\n".join(lines)

    def confirmed(self) -> list[Trial]:
        return [t for t in self.trials if t.fidelity == Fidelity.F3]


def status_label(trial: Trial) -> str:
    """`ok`, or the failure class with the status where they differ (`unsupported`, `crash/timeout`)."""
    if trial.ok or trial.failure is None:
        return trial.status
    if trial.failure == trial.status or trial.status == "error":
        return trial.failure
    return f"{trial.failure}/{trial.status}"


def format_config(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(config.items()))
