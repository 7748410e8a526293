"""Trial protocol: outcomes, fault classification, step timing, the subprocess runner and its supervisor."""

from __future__ import annotations

from .outcome import ProfileFn, Profiler, TrialOutcome, classify_exception, describe_exception
from .probe import StepProbe, most_timed_steps
from .runner import (
    RESULT_ENV,
    Stopped,
    free_port,
    report_and_exit,
    run_subprocess_trial,
    run_supervised,
    stop_signals,
    write_result,
)

__all__ = ["RESULT_ENV", "ProfileFn", "Profiler", "StepProbe", "Stopped", "TrialOutcome", "classify_exception",
           "describe_exception", "free_port", "most_timed_steps", "report_and_exit", "run_subprocess_trial",
           "run_supervised", "stop_signals", "write_result"]
