"""Trial protocol: outcomes, fault classification, step timing, the subprocess runner."""

from __future__ import annotations

from .outcome import ProfileFn, Profiler, TrialOutcome, classify_exception, describe_exception
from .runner import RESULT_ENV, run_subprocess_trial, write_result
from .timer import StepTimer

__all__ = ["RESULT_ENV", "ProfileFn", "Profiler", "StepTimer", "TrialOutcome", "classify_exception",
           "describe_exception", "run_subprocess_trial", "write_result"]
