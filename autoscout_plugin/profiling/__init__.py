"""Trial protocol: outcomes, fault classification, step timing, the subprocess runner."""

from __future__ import annotations

from .outcome import ProfileFn, Profiler, TrialOutcome, classify_exception, describe_exception
from .probe import StepProbe
from .runner import RESULT_ENV, free_port, report_and_exit, run_subprocess_trial, write_result

__all__ = ["RESULT_ENV", "ProfileFn", "Profiler", "StepProbe", "TrialOutcome", "classify_exception",
           "describe_exception", "free_port", "report_and_exit", "run_subprocess_trial", "write_result"]
