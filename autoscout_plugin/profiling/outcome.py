"""What a profile run reports, and how a failure is named (framework-free)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..failures import FailureClass, describe_exception
from ..trial import Fidelity, Status

__all__ = ["ProfileFn", "Profiler", "TrialOutcome", "classify_exception", "describe_exception"]


@dataclass(slots=True, kw_only=True)
class TrialOutcome:
    """The result of profiling one config.

    Example:
        >>> TrialOutcome(value=float("nan")).checked().status
        'nan'
    """

    status: Status = "ok"
    value: float | None = None
    """Samples per second (higher is better)."""
    cost_s: float | None = None
    """Wall seconds of the whole trial; the tuner measures it when the profiler does not."""
    peak_mem_mb: float | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    failure: FailureClass | None = None
    """The failure class when the profiler knows it; else it is diagnosed from `status` and `error`."""
    where: str | None = None
    """Where it ran, when an executor ran it (a host, a Ray node, a Slurm job)."""

    def checked(self) -> TrialOutcome:
        """A non-finite or missing value of an `ok` outcome becomes a `nan` failure."""
        if self.status == "ok" and (self.value is None or not math.isfinite(self.value) or self.value <= 0):
            self.status = "nan"
            self.error = self.error or f"the measured value is {self.value!r}"
            self.value = None
        return self


class Profiler(Protocol):
    """Runs a config for a few steps (F2) or longer (F3) and reports how fast it went."""

    def __call__(self, config: dict[str, Any], fidelity: Fidelity) -> TrialOutcome: ...


ProfileFn = Callable[[dict[str, Any], Fidelity], TrialOutcome]

_OOM_MARKERS = ("out of memory", "outofmemoryerror", "cannot allocate memory", "std::bad_alloc",
                "defaultcpuallocator: can't allocate memory")


def classify_exception(exc: BaseException) -> Status:
    """The failure status of an exception raised by a trial: `oom`, `timeout`, `nan` or `error`."""
    if isinstance(exc, MemoryError):
        return "oom"
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = f"{type(exc).__name__}: {exc}".lower()
    if any(marker in text for marker in _OOM_MARKERS):
        return "oom"
    if re.search(r"\bnan\b", text) or "non-finite" in text:  # "nan" as a word: "NaN.", "(nan)"
        return "nan"
    return "error"

