"""`local`: K trial jobs at once on this machine, each in its own process (tests, small boxes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..profiling import TrialOutcome
from .base import PoolExecutor
from .jobs import TrialJob
from .worker import outcome_from_json

GRACE_S = 10.0


@dataclass
class _Slot:
    process: subprocess.Popen[bytes]
    folder: Path


class LocalExecutor(PoolExecutor):
    """Runs each job in a worker process of this machine (`python -m autoscout_plugin.parallel.worker`),
    at most `slots` at once. A worker that dies without an outcome is a `crash` trial."""

    name = "local"

    def submit(self, job: TrialJob) -> _Slot:
        folder = Path(tempfile.mkdtemp(prefix="autoscout-job-"))
        (folder / "job.json").write_text(json.dumps(job.to_json()), encoding="utf-8")
        process = subprocess.Popen([sys.executable, "-m", "autoscout_plugin.parallel.worker",
                                    str(folder / "job.json"), str(folder / "outcome.json")],
                                   start_new_session=True, stdin=subprocess.DEVNULL)
        return _Slot(process, folder)

    def finished(self, handle: _Slot) -> TrialOutcome | None:
        code = handle.process.poll()
        if code is None:
            return None
        path = handle.folder / "outcome.json"
        try:
            outcome = outcome_from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            outcome = TrialOutcome(status="error", failure="crash",
                                   error=f"the local trial worker exited with code {code} and no outcome")
        self._remove(handle)
        return outcome

    def cancel(self, handle: _Slot) -> None:
        """SIGTERM: the worker stops its trial's whole process tree (SIGKILL after a grace period)."""
        try:
            os.killpg(handle.process.pid, signal.SIGTERM)
            handle.process.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(handle.process.pid, signal.SIGKILL)
            handle.process.wait()
        except ProcessLookupError:
            pass
        self._remove(handle)

    @staticmethod
    def _remove(handle: _Slot) -> None:
        for name in ("job.json", "outcome.json", "outcome.json.partial"):
            (handle.folder / name).unlink(missing_ok=True)
        try:
            handle.folder.rmdir()
        except OSError:
            pass


__all__ = ["LocalExecutor"]
