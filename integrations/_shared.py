"""What every integration shares, importing no framework: the plan of a run (the user's own config,
which knobs are pinned and why, which are tuned) and the progress the user sees while trials run (a
tqdm bar over the trial budget on a terminal, one line per finished trial)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from autoscout_plugin.report.result import format_config, status_label
from autoscout_plugin.space import Config
from autoscout_plugin.trial import Fidelity, Trial
from autoscout_plugin.tuner import Tuner


@dataclass
class Plan:
    """What this run can tune, what is pinned and why, and the user's own config."""

    current: Config
    pinned: dict[str, str] = field(default_factory=dict)
    """knob -> why it is pinned."""
    tunable: list[str] = field(default_factory=list)
    global_batch: int = 1
    world: int = 1


class Progress:
    """A tqdm bar over the trial budget with one line per finished trial."""

    def __init__(self, total: int | None, *, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():  # a log file gets the lines only, not the bar's redraws
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="AutoScout trials", unit="trial", file=sys.stderr)

    def trial(self, trial: Trial, tuner: Tuner) -> None:
        value = f"{trial.value:8.2f} samples/s" if trial.value is not None else f"{'-':>8} samples/s"
        line = (f"  #{trial.number:<2} {trial.fidelity.value} {status_label(trial):11} {value}  {trial.cost_s:6.1f} s"
                f"  {format_config(trial.config)}" + (f"  ({trial.error})" if trial.error else ""))
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            if trial.fidelity == Fidelity.F2:
                self.bar.update(1)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
