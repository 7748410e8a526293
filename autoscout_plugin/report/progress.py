"""The progress the user sees while trials run: a tqdm bar over the trial budget on a terminal, one
line per finished trial."""

from __future__ import annotations

import sys
from typing import Any

from ..trial import Fidelity, Trial
from .result import format_config, status_label


class Progress:
    """A tqdm bar over the trial budget with one line per finished trial."""

    def __init__(self, total: int | None, *, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():  # a log file gets the lines only, not the bar's redraws
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="AutoScout trials", unit="trial", file=sys.stderr)

    def trial(self, trial: Trial, tuner: Any = None) -> None:
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
