"""A wall-clock limit for code running in this process (an in-process trial), from any thread, that
never touches the user's timers.

The limit is kept by a watchdog thread, not by `setitimer`/`SIGALRM`: an `ITIMER_REAL` alarm the user
set keeps running and still reaches the user's handler. When the limit passes, the watchdog raises
`TrialTimeout` in the limited thread:
- on the main thread, through a signal sent to that thread alone (`pthread_kill`), so a blocking call
  (a sleep, a wait on a lock or a socket) is interrupted; the signal is a real-time one nobody else
  uses, and one that arrives for someone else while the limit is active goes to their handler;
- on any other thread, as an asynchronous exception (`PyThreadState_SetAsyncExc`), raised at the next
  Python instruction that thread runs: a loop, a polling wait or a sequence of short calls is stopped
  at once, a single C call that never returns (a collective without a timeout) only when it returns.
  The exception is raised again every `repeat_s` until the thread leaves the block, so code that
  catches it and retries (a polling wait with a retry wrapper) is still stopped.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_SIGNAL: int | None = signal.SIGRTMIN + 5 if hasattr(signal, "SIGRTMIN") else getattr(signal, "SIGUSR2", None)
"""The signal that interrupts the main thread: SIGRTMIN+5 on Linux (no library we know uses it),
SIGUSR2 elsewhere."""


class TrialTimeout(TimeoutError):
    """Code under `wall_clock_limit` ran past its limit."""


def _exception_type(message: str) -> type[TrialTimeout]:
    """A `TrialTimeout` subclass whose instances carry `message`: an asynchronous exception is set as a
    type, so the message travels with the type."""

    def init(self: TrialTimeout, *args: Any) -> None:
        TrialTimeout.__init__(self, *(args or (message,)))

    return type("TrialTimeout", (TrialTimeout,), {"__init__": init, "__module__": __name__})


class _Limit:
    """One active limit: the watchdog and the signal handler agree through `lock`, so the exception is
    never raised once the limited block has ended. The lock is reentrant: the handler runs on the main
    thread, possibly while that thread holds the lock to end the block."""

    def __init__(self, seconds: float, what: str, repeat_s: float) -> None:
        self.seconds, self.repeat_s = seconds, repeat_s
        self.message = f"{what} ran past its {seconds:g} s limit"
        self.thread = threading.current_thread()
        self.on_main = self.thread is threading.main_thread()
        self.lock = threading.RLock()
        self.done = threading.Event()
        self.fired = False
        self.previous: Any = None

    # ---------------------------------------------------------------- main thread
    def handler(self, signum: int, frame: FrameType | None) -> None:
        with self.lock:
            ours = self.fired and not self.done.is_set()
        if ours:
            raise _exception_type(self.message)()
        if callable(self.previous):  # someone else's signal: theirs to handle
            self.previous(signum, frame)

    # ---------------------------------------------------------------- the watchdog
    def watch(self) -> None:
        if self.done.wait(self.seconds):
            return
        while True:
            with self.lock:
                if self.done.is_set():
                    return
                self.fired = True
                self._interrupt()
            if self.done.wait(self.repeat_s):
                return

    def _interrupt(self) -> None:
        ident = self.thread.ident
        if ident is None:
            return
        if self.on_main and _SIGNAL is not None:
            signal.pthread_kill(ident, _SIGNAL)
        else:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                       ctypes.py_object(_exception_type(self.message)))

    def clear_pending(self) -> None:
        """Withdraw an asynchronous exception set after the block ended (a watchdog that lost the race)."""
        if not self.on_main and self.thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident), None)


@contextmanager
def wall_clock_limit(seconds: float, what: str, *, repeat_s: float = 0.5) -> Iterator[None]:
    """Raise `TrialTimeout` (a `TimeoutError`) in this thread once `seconds` have passed in the block.

    Example:
        >>> import time
        >>> try:
        ...     with wall_clock_limit(0.2, "the trial"):
        ...         time.sleep(30)
        ... except TimeoutError as exc:
        ...     print(exc)
        the trial ran past its 0.2 s limit
    """
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"a wall-clock limit must be a positive number of seconds, got {seconds!r}")
    limit = _Limit(seconds, what, repeat_s)
    install = limit.on_main and _SIGNAL is not None
    if install:
        limit.previous = signal.signal(_SIGNAL, limit.handler)  # type: ignore[arg-type]
    watchdog = threading.Thread(target=limit.watch, name="autoscout-deadline", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        try:
            with limit.lock:  # from here on the watchdog sends nothing
                limit.done.set()
        finally:  # also when the exception arrived just before the lock was taken
            limit.done.set()
            watchdog.join()
            limit.clear_pending()
            if install:
                signal.signal(_SIGNAL, limit.previous)  # type: ignore[arg-type]

