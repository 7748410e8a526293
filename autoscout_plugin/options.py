"""The options every integration takes (Lightning callback, Hugging Face, launcher): one frozen,
validated object, so a bad option fails before anything is profiled."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .space.catalogue import CATALOGUE
from .tuner import TuneOptions

OBJECTIVES = ("samples_per_s", "tokens_per_s")


def default_store() -> str:
    """`$AUTOSCOUT_STORE`, else `$XDG_CACHE_HOME/autoscout/trials.sqlite` (`~/.cache/...`)."""
    if os.environ.get("AUTOSCOUT_STORE"):
        return os.environ["AUTOSCOUT_STORE"]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "autoscout" / "trials.sqlite")


@dataclass(frozen=True, kw_only=True)
class AutoScoutOptions:
    """What to tune and how much to spend.

    Example:
        >>> AutoScoutOptions(include=("micro_batch_size", "num_threads"), pin={"num_threads": 2})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: knob 'num_threads' is pinned to 2 and also listed in include; a pinned knob is not tuned...
    """

    max_trials: int | None = 8
    """Profiling runs, the user's own config included; None for no trial limit."""
    max_seconds: float | None = None
    """Profiling seconds."""
    max_fraction: float | None = None
    """At most this fraction of the planned main run (estimated from the measured speed)."""
    objective: str = "samples_per_s"
    """`samples_per_s` or `tokens_per_s` (the same ranking for a fixed sequence length)."""
    include: tuple[str, ...] | None = None
    """Knobs to tune (catalogue names); None tunes every knob that applies."""
    pin: Mapping[str, Any] = field(default_factory=dict)
    """Knob -> value held fixed."""
    store: str | None = None
    """SQLite file of trials and winners; None uses `default_store()`."""
    relaunch: bool = True
    """May re-run the script with a winner that needs another strategy or process count."""
    report: str | None = None
    """Write `REPORT.json` and `REPORT.html` here."""
    warmup_steps: int = 2
    """Optimizer steps run before timing (compilation happens here)."""
    measure_steps: int = 4
    """Optimizer steps timed per trial (confirmation runs too: they are repeated, not lengthened)."""
    trial_timeout_s: float = 600.0
    """A trial still running after this is stopped and recorded as a timeout."""
    cut_below: float | None = 0.5
    """A trial running slower than this fraction of the best speed so far is cut short (recorded with
    the speed it showed) instead of finishing its steps; None runs every trial to the end."""
    confirm_top: int = 1
    """Best configs re-measured against your own config before choosing (0 skips the confirmation)."""
    confirm_rounds: int = 2
    """Rounds of that confirmation: your config and each contender run interleaved (A B, B A, ...) and the
    decision is on the per-round speed ratios, so a load burst cannot favour either side."""
    patience: int | None = 4
    seed: int = 0
    search: str = "autoscout"
    progress: bool = True
    """Show a progress bar and one line per trial."""

    def __post_init__(self) -> None:
        if self.include is not None:
            if isinstance(self.include, str):
                raise ValueError(f"include must be a list of knob names, got the string {self.include!r}")
            object.__setattr__(self, "include", tuple(self.include))
        if not isinstance(self.pin, Mapping):
            raise ValueError(f"pin must be a mapping of knob -> value, got {type(self.pin).__name__}")
        object.__setattr__(self, "pin", MappingProxyType(dict(self.pin)))
        for name in list(self.include or ()) + list(self.pin):
            if name not in CATALOGUE and name != "grad_accum":
                raise ValueError(f"unknown knob {name!r}; known knobs: {sorted(CATALOGUE)}")
        if "grad_accum" in (self.include or ()) or "grad_accum" in self.pin:
            raise ValueError("grad_accum is derived from the global batch, not tuned or pinned; pin"
                             " micro_batch_size instead")
        for name in self.include or ():
            if name in self.pin:
                raise ValueError(f"knob {name!r} is pinned to {self.pin[name]!r} and also listed in include;"
                                 " a pinned knob is not tuned: remove it from one of them")
        if self.include is not None and not self.include:
            raise ValueError("include is empty: nothing to tune; give knob names or None for all")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; use one of {list(OBJECTIVES)}")
        for name in ("warmup_steps", "measure_steps"):
            value = getattr(self, name)
            low = 0 if name == "warmup_steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        timeout = self.trial_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise ValueError(f"trial_timeout_s must be a positive number of seconds, got {timeout!r}")
        cut = self.cut_below
        if cut is not None and (isinstance(cut, bool) or not isinstance(cut, (int, float)) or not 0 < cut < 1):
            raise ValueError(f"cut_below must be a fraction between 0 and 1 (or None), got {cut!r}")
        self.tune_options(planned_samples=1.0)  # the budget's own checks (zero trials, no budget, ...)

    def tune_options(self, *, planned_samples: float | None = None, store: str | None = None) -> TuneOptions:
        """The core tuner's options for this run; `planned_samples` sizes the main run for `max_fraction`."""
        if self.max_fraction is not None and not planned_samples:
            raise ValueError(f"max_fraction={self.max_fraction!r} needs the length of the main run, which is"
                             " unknown here: set the number of steps (e.g. Trainer(max_steps=...)) or use"
                             " max_seconds")
        return TuneOptions(max_trials=self.max_trials, max_seconds=self.max_seconds,
                           max_fraction=self.max_fraction,
                           planned_samples=planned_samples if self.max_fraction is not None else None,
                           patience=self.patience, confirm_top=self.confirm_top,
                           confirm_rounds=self.confirm_rounds, search=self.search,
                           seed=self.seed, store=store)
