"""Claims while their trials run: the heartbeat thread, and whether a worker process of this machine lives."""

from __future__ import annotations

import os
import threading
import warnings
from types import TracebackType

from .base import Claim, TrialStore
from .errors import StoreError

BEATS_PER_LEASE = 3
"""Heartbeats per lease: a claim survives two missed beats (a slow database, a paused process)."""


class Heartbeat:
    """While the `with` block runs, renew `claim` every `claim.lease_s / BEATS_PER_LEASE` seconds.

    Does nothing for `claim=None`. A beat that fails (the database is briefly away) is retried at the next
    beat, with one warning; a lost claim (another worker took it over as stale) stops the beats: the
    trial's result is still recorded when it comes.

    Example:
        >>> from autoscout_plugin.store import InMemoryStore
        >>> store = InMemoryStore()
        >>> sid = store.open_study("fp", workload={}, hardware={}, space={})
        >>> claim = store.claim(sid, {"num_threads": 2}, worker="w1", lease_s=0.3)
        >>> import time
        >>> with Heartbeat(store, claim):
        ...     time.sleep(0.6)  # longer than the lease: the beats keep it
        >>> [c.worker for c in store.running(sid)]
        ['w1']
    """

    def __init__(self, store: TrialStore, claim: Claim | None) -> None:
        self.store = store
        self.claim = claim
        self.lost = False
        """Whether the claim was taken over while the block ran."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.claim is not None:
            self._thread = threading.Thread(target=self._beat, name="autoscout-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        assert self.claim is not None
        interval = self.claim.lease_s / BEATS_PER_LEASE
        warned = False
        while not self._stop.wait(interval):
            try:
                if not self.store.heartbeat(self.claim):
                    self.lost = True
                    return
            except StoreError as exc:
                if not warned:
                    warnings.warn(f"AutoScout: a heartbeat for the running trial failed ({exc}); retrying",
                                  RuntimeWarning, stacklevel=1)
                    warned = True


def process_exists(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): alive as far as we can tell
