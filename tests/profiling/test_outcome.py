"""Fault classification, `TrialOutcome.checked` and the core `StepProbe`."""

from __future__ import annotations

import math

import pytest

from autoscout_plugin.profiling import StepProbe, TrialOutcome, classify_exception, describe_exception


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


def test_step_probe_times_only_the_steps_after_the_warmup() -> None:
    probe = StepProbe(warmup=2, measure=3)
    probe.begin(0.0)
    ticks = [10.0, 20.0, 21.0, 22.0, 23.0]  # slow warm-up steps (compiling), then 1 s per step
    outcomes = [probe.step(8, now=t) for t in ticks]
    assert outcomes[:4] == [None] * 4
    assert outcomes[4] is not None and outcomes[4].value == pytest.approx(8.0)  # 24 samples in 3 s
    assert outcomes[4].metrics == {"step_s": pytest.approx(1.0), "timed_steps": 3.0, "spread": 0.0}
    assert probe.step(8, now=99.0) is outcomes[4]  # decided: later steps change nothing


def _run(probe: StepProbe, seconds: list[float], samples: int = 8) -> tuple[int, TrialOutcome | None]:
    """Feed `probe` steps of `seconds` each: (the steps it took to decide, its outcome)."""
    probe.begin(0.0)
    now = 0.0
    for count, step_s in enumerate(seconds, 1):
        now += step_s
        outcome = probe.step(samples, now=now)
        if outcome is not None:
            return count, outcome
    return len(seconds), None


NOISY = [1.0, 1.0, 1.3, 0.8, 1.2, 0.9, 1.25, 0.85, 1.1, 0.95, 1.2, 0.8, 1.0, 1.1, 0.9, 1.0, 1.05, 0.95]
"""Step seconds that vary +-20%: four timed steps give a 95% interval of about +-25%."""


def test_a_steady_trial_stops_at_its_least_steps_and_a_noisy_one_times_on_to_its_most() -> None:
    steady, outcome = _run(StepProbe(warmup=1, measure=4, max_measure=12, precision=0.05), [5.0] + [1.0] * 20)
    assert steady == 5 and outcome is not None and outcome.metrics["timed_steps"] == 4.0
    assert outcome.metrics["spread"] == 0.0
    noisy, outcome = _run(StepProbe(warmup=1, measure=4, max_measure=12, precision=0.05), [5.0] + NOISY)
    assert noisy == 13 and outcome is not None and outcome.metrics["timed_steps"] == 12.0  # never within 5%
    assert outcome.metrics["spread"] > 0.05 and "cut_short" not in outcome.metrics
    assert outcome.value == pytest.approx(8 * 12 / sum(NOISY[:12]))  # the mean over every timed step
    fixed, _ = _run(StepProbe(warmup=1, measure=4, max_measure=12), [5.0] + NOISY)  # no precision: exactly 4
    assert fixed == 5


def test_a_noisy_trial_clearly_beside_the_best_stops_as_soon_as_that_is_clear() -> None:
    # 8 samples per ~1 s step: about 8 samples/s, +-25% after 4 steps: against a best of 20 (or of 3) it
    # is known to lose (or to win) at once; against a best of 8 it times on to its most.
    for best, steps in ((20.0, 4), (3.0, 4), (8.0, 12)):
        taken, outcome = _run(StepProbe(warmup=0, measure=4, max_measure=12, precision=0.05, best=best), NOISY)
        assert (taken, best) == (steps, best) and outcome is not None and outcome.status == "ok"


def test_a_trial_whose_training_ends_between_its_least_and_most_steps_keeps_the_speed_it_showed() -> None:
    probe = StepProbe(warmup=1, measure=4, max_measure=12, precision=0.05)
    taken, outcome = _run(probe, [5.0] + NOISY[:6])
    assert (taken, outcome) == (7, None)  # still timing
    ended = probe.ended()
    assert ended is not None and ended.status == "ok" and ended.metrics["timed_steps"] == 6.0
    assert ended.value == pytest.approx(8 * 6 / sum(NOISY[:6]))
    short = StepProbe(warmup=1, measure=4, max_measure=12, precision=0.05)
    _run(short, [5.0] + NOISY[:3])
    assert short.ended() is None  # under its least steps: the caller's error


def test_step_probe_counts_every_process_and_reads_the_memory_once() -> None:
    reads: list[int] = []
    probe = StepProbe(warmup=0, measure=2, world=2, memory=lambda: reads.append(1) or 123.0)
    probe.begin(0.0)
    assert probe.step(4, now=1.0) is None
    outcome = probe.step(4, now=2.0)
    assert outcome is not None and outcome.value == pytest.approx(8.0) and outcome.peak_mem_mb == 123.0
    assert reads == [1]


@pytest.mark.parametrize("compiling", [False, True])
def test_step_probe_cuts_a_losing_trial_short(compiling: bool) -> None:
    probe = StepProbe(warmup=2, measure=5, cut_off=30.0, compiling=compiling)
    probe.begin(0.0)
    first = probe.step(8, now=2.0)  # 4 samples/s: under a third of the cut-off
    if compiling:  # a compiling warm-up is slow by nature: it goes on, and its timed step is judged
        assert first is None and probe.step(8, now=4.0) is None
        cut = probe.step(8, now=6.0)
    else:
        cut = first
    assert cut is not None and cut.metrics.get("cut_short") == 1.0 and cut.value == pytest.approx(4.0)


def test_step_probe_ends_a_nan_trial() -> None:
    probe = StepProbe(warmup=1, measure=2)
    outcome = probe.nan("at step 1")
    assert outcome.status == "nan" and "non-finite loss at step 1" in (outcome.error or "")
