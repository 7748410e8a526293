"""`wall_clock_limit`: stops a hanging block on the main thread and on any other thread, and leaves the
user's own timers and signal handlers alone."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from autoscout_plugin.profiling.deadline import _SIGNAL, TrialTimeout, wall_clock_limit

pytestmark = pytest.mark.timeout(60)


def test_a_blocking_sleep_on_the_main_thread_is_interrupted() -> None:
    start = time.monotonic()
    with pytest.raises(TrialTimeout, match="the trial ran past its 0.3 s limit"):
        with wall_clock_limit(0.3, "the trial"):
            time.sleep(40)
    assert time.monotonic() - start < 20  # not the 40 s sleep: interrupted, however loaded the machine
    assert signal.getsignal(_SIGNAL) in (signal.SIG_DFL, None)  # our handler is gone again


def _in_thread(target) -> dict:  # type: ignore[no-untyped-def]
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - the test looks at whatever came out
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(40)
    box["alive"] = thread.is_alive()
    return box


def test_a_hang_in_a_worker_thread_is_stopped_even_by_code_that_retries() -> None:
    swallowed: list[BaseException] = []

    def hang() -> str:
        with wall_clock_limit(0.3, "the trial", repeat_s=0.1):
            while True:  # a polling wait whose retry wrapper swallows the first errors it sees
                try:
                    time.sleep(0.01)
                except Exception as exc:
                    if len(swallowed) >= 3:
                        raise
                    swallowed.append(exc)
        return "unreachable"

    box = _in_thread(hang)
    assert not box["alive"], "the limited thread still runs: the limit did nothing off the main thread"
    assert isinstance(box.get("error"), TimeoutError) and "ran past its 0.3 s limit" in str(box["error"])
    assert len(swallowed) == 3 and all(isinstance(exc, TrialTimeout) for exc in swallowed)


def test_a_block_that_ends_in_time_is_never_interrupted_later() -> None:
    def quick() -> str:
        with wall_clock_limit(0.2, "the trial", repeat_s=0.05):
            pass
        time.sleep(0.6)  # past the limit, outside the block
        return "done"

    assert _in_thread(quick) == {"value": "done", "alive": False}
    with wall_clock_limit(0.2, "the trial"):
        pass
    time.sleep(0.6)  # the main thread too: no stray signal, no stray exception


def test_the_users_alarm_timer_and_handler_are_untouched() -> None:
    fired: list[float] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)  # the user's alarm, due while a trial runs
        with wall_clock_limit(30, "the trial"):
            deadline = time.monotonic() + 20
            while not fired and time.monotonic() < deadline:
                time.sleep(0.01)
        assert fired, "the user's ITIMER_REAL alarm never reached the user's handler"
        signal.setitimer(signal.ITIMER_REAL, 100)  # a long user timer survives a limited block
        with wall_clock_limit(5, "the trial"):
            pass
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert remaining > 50
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_signal_meant_for_someone_else_goes_to_their_handler() -> None:
    seen: list[int] = []
    previous = signal.signal(_SIGNAL, lambda signum, frame: seen.append(signum))
    try:
        with wall_clock_limit(30, "the trial"):
            signal.pthread_kill(threading.main_thread().ident, _SIGNAL)  # not ours: the limit has not passed
            time.sleep(0.05)
        assert seen == [_SIGNAL]
        assert signal.getsignal(_SIGNAL) is not None and signal.getsignal(_SIGNAL) != signal.SIG_DFL
    finally:
        signal.signal(_SIGNAL, previous)


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan")])
def test_a_limit_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        with wall_clock_limit(seconds, "the trial"):
            pass
