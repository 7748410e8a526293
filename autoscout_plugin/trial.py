"""The record of one trial, shared by the search, the store, the tuner and the report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal

from .failures import FAILURE_CLASSES, FailureClass, diagnose

Status = Literal["ok", "oom", "error", "timeout", "nan", "invalid"]
STATUSES: tuple[str, ...] = ("ok", "oom", "error", "timeout", "nan", "invalid")


class Fidelity(str, Enum):
    """The fidelity ladder (docs/design.md): F0 model, F1 surrogates, F2 short profile, F3 confirmation."""

    F0 = "F0"
    F1 = "F1"
    F2 = "F2"
    F3 = "F3"


@dataclass(slots=True, kw_only=True)
class Trial:
    """One evaluated config.

    Example:
        >>> Trial(config={"num_threads": 2}, status="ok", value=12.5, cost_s=8.0).ok
        True
    """

    config: dict[str, Any]
    """The canonical config (active knobs only)."""
    status: Status = "ok"
    """`ok`, or why it failed: `oom`, `error`, `timeout`, `nan`, `invalid` (not runnable)."""
    value: float | None = None
    """The measured objective (samples/s, higher is better); None unless `ok`."""
    cost_s: float = 0.0
    """Wall seconds the trial took, warm-up and compile included."""
    fidelity: Fidelity = Fidelity.F2
    predicted: float | None = None
    """What the search predicted for `value` before running it."""
    peak_mem_mb: float | None = None
    error: str | None = None
    """A short description of the failure, for the report."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Anything else measured (step times, loss)."""
    number: int = -1
    """Position in the study (0-based); set by the tuner or the store."""
    failure: FailureClass | None = None
    """A failed trial's class (`autoscout_plugin.failures`): `unsupported`, `oom`, `timeout`, `nan`,
    `transient` or `crash`; diagnosed from `status` and `error` when not given. None when `ok`."""
    blame: list[str] = field(default_factory=list)
    """The knobs the failure's evidence names (a dynamo error in a compiled trial: `compile`)."""
    where: str | None = None
    """Where the trial ran when an executor ran it (`autoscout_plugin.parallel`): a host, a Ray node, a Slurm
    job; None for a trial of the tuner's own process."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial status {self.status!r} is not one of {STATUSES}")
        if self.status == "ok" and (self.value is None or not math.isfinite(self.value)):
            raise ValueError(f"an ok trial needs a finite value, got {self.value!r}")
        self.fidelity = Fidelity(self.fidelity)
        if self.status == "ok":
            self.failure, self.blame = None, []
        elif self.failure is None:
            diagnosis = diagnose(self.status, self.error, self.config)
            assert diagnosis is not None
            self.failure, self.blame = diagnosis.failure, list(diagnosis.blame)
        elif self.failure not in FAILURE_CLASSES:
            raise ValueError(f"trial failure class {self.failure!r} is not one of {FAILURE_CLASSES}")
        self.blame = list(self.blame)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fidelity"] = self.fidelity.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trial:
        return cls(**data)
