"""Fault classification, `TrialOutcome.checked` and `StepTimer`."""

from __future__ import annotations

import math
import time

import pytest

from autoscout_plugin.profiling import StepTimer, TrialOutcome, classify_exception, describe_exception


class OutOfMemoryError(RuntimeError):
    """Named like `torch.cuda.OutOfMemoryError`, without importing torch."""


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (MemoryError(), "oom"),
        (MemoryError("cannot allocate 4 GiB"), "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"), "oom"),
        (OSError(12, "Cannot allocate memory"), "oom"),
        (OutOfMemoryError("tried to allocate 20 MiB"), "oom"),
        (TimeoutError(), "timeout"),
        (TimeoutError("collective did not finish in 30 s"), "timeout"),
        (FloatingPointError("loss is nan"), "nan"),
        (ValueError("NaN loss at step 4"), "nan"),
        (RuntimeError("Loss is NaN."), "nan"),
        (RuntimeError("grad norm (nan) at step 7"), "nan"),
        (RuntimeError("gradient became non-finite"), "nan"),
        (RuntimeError("shape mismatch"), "error"),
        (KeyError("strategy"), "error"),
        (ValueError("nanny process died"), "error"),  # 'nan' inside a word is not NaN
        (ZeroDivisionError("division by zero"), "error"),
    ],
)
def test_classify_exception(exc: BaseException, status: str) -> None:
    assert classify_exception(exc) == status


def test_describe_exception_names_the_type_and_is_bounded() -> None:
    assert describe_exception(RuntimeError("boom")) == "RuntimeError: boom"
    long = describe_exception(ValueError("x" * 1000), limit=50)
    assert len(long) == 50 and long.startswith("ValueError: x") and long.endswith("...")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None, 0.0, -3.0])
def test_checked_turns_a_bad_ok_value_into_nan(value: float | None) -> None:
    outcome = TrialOutcome(value=value).checked()
    assert outcome.status == "nan"
    assert outcome.value is None
    assert outcome.error is not None and repr(value) in outcome.error


def test_checked_keeps_good_values_and_failures() -> None:
    assert TrialOutcome(value=12.5).checked().status == "ok"
    assert TrialOutcome(value=12.5).checked().value == 12.5
    failed = TrialOutcome(status="oom", error="too big").checked()
    assert (failed.status, failed.error) == ("oom", "too big")


def test_step_timer_discards_warmup_steps() -> None:
    timer = StepTimer(warmup=2, samples_per_step=8)
    sleeps = [0.05, 0.05, 0.001, 0.001, 0.001]  # the slow warm-up steps must not count
    for s in sleeps:
        timer.start()
        time.sleep(s)
        timer.stop()
    assert timer.timed_steps == 3
    assert len(timer.durations_s) == 3
    assert all(d < 0.04 for d in timer.durations_s)
    assert timer.samples_per_s == pytest.approx(8 * 3 / sum(timer.durations_s))
    assert timer.samples_per_s > 8 / 0.04
    assert timer.median_step_s == sorted(timer.durations_s)[1]


def test_step_timer_without_timed_steps_has_no_rate() -> None:
    timer = StepTimer(warmup=3)
    for _ in range(3):
        timer.start()
        timer.stop()
    assert timer.timed_steps == 0
    assert timer.samples_per_s is None
    assert timer.median_step_s is None


def test_step_timer_stop_before_start_raises() -> None:
    timer = StepTimer()
    with pytest.raises(RuntimeError, match="before start"):
        timer.stop()
    timer.start()
    timer.stop()
    with pytest.raises(RuntimeError, match="before start"):  # each stop needs its own start
        timer.stop()


def test_step_timer_calls_sync_at_each_mark() -> None:
    calls: list[str] = []
    timer = StepTimer(warmup=0, sync=lambda: calls.append("sync"))
    timer.start()
    timer.stop()
    assert calls == ["sync", "sync"]
    assert timer.timed_steps == 1
