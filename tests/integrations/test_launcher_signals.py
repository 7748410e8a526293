"""`autoscout launch --autoscout` stopped from outside, end to end: the real command line in a process of its
own, real `accelerate launch` trials whose script leaves a grandchild in its own session, real signals.
Nothing of the launcher's process tree and none of its temp files may remain; a SIGKILLed study resumes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guarantees are Linux's (prctl)")]

ROOT = Path(__file__).resolve().parents[2]
STARTED_WITHIN_S = 180.0
"""Until a trial (or the real run) is up: the launcher imports torch, each trial starts `accelerate launch`."""
GONE_WITHIN_S = 30.0
"""How long a stopped launcher's processes may take to go: the guarantee is the grace (3 s for a trial, 10 s
for the real run) plus about a second; the rest is room for a loaded test machine."""
MARKER_ENV = "AUTOSCOUT_TEST_MARKER"

SCRIPT = """
import json, os, subprocess, sys, time
from pathlib import Path
import autoscout_plugin as autoscout

work = Path(sys.argv[1])
batch = autoscout.knob("micro_batch_size", 8)
mode = (autoscout.launch_spec() or {}).get("mode")
if mode == "trial":
    with open(work / "trials.log", "a") as fh:
        fh.write("trial\\n")
    number = str(len((work / "trials.log").read_text().splitlines()))
    hang_after = work / "hang-after-trials"  # holds how many trials finish before one hangs
    hang = hang_after.exists() and int(number) > int(hang_after.read_text())
else:
    number, hang = "run", (work / "hang-run").exists()
if hang:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    pids = [os.getpid(), subprocess.Popen(sleeper).pid, subprocess.Popen(sleeper, start_new_session=True).pid]
    (work / f"pids.{number}.tmp").write_text(json.dumps(pids))
    os.replace(work / f"pids.{number}.tmp", work / f"pids.{number}")
    time.sleep(600)
for _ in range(6):
    time.sleep(0.02)
    autoscout.step()
(work / f"done.{number}").write_text(str(mode))
"""


class Launch:
    """One `autoscout launch --autoscout` of the test's script, in a process of its own, with its own temp
    folder (TMPDIR) and a marker in its environment that every process it starts inherits."""

    def __init__(self, tmp_path: Path, trials: int) -> None:
        self.work = tmp_path / "work"
        self.temp = tmp_path / "tmp"
        self.store = tmp_path / "store.sqlite"
        self.marker = uuid.uuid4().hex
        for folder in (self.work, self.temp):
            folder.mkdir(exist_ok=True)
        script = tmp_path / "train.py"
        script.write_text(textwrap.dedent(SCRIPT))
        self.argv = [sys.executable, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-store",
                     str(self.store), "--autoscout-trials", str(trials), "--autoscout-warmup", "1",
                     "--autoscout-measure", "2", "--autoscout-confirm", "0", "--autoscout-include",
                     "precision,num_threads", "--autoscout-timeout", "300", "--num_processes", "1", str(script),
                     str(self.work)]
        self.env = {k: v for k, v in os.environ.items() if k not in ("AUTOSCOUT_LAUNCH", "AUTOSCOUT_DECLARED")}
        self.env.update({MARKER_ENV: self.marker, "TMPDIR": str(self.temp), "HF_HOME": str(tmp_path / "hf"),
                         "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1"})
        self.err = tmp_path / "launcher.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        return self.proc

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, name: str) -> list[int]:
        """The pids a hanging trial or run wrote to `name`, once it did."""
        assert self.proc is not None
        path, deadline = self.work / name, time.monotonic() + STARTED_WITHIN_S
        while not path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the launcher exited ({self.proc.returncode}) before {name}:\n{self.stderr()[-3000:]}")
            assert time.monotonic() < deadline, f"no {name} after {STARTED_WITHIN_S:g} s"
            time.sleep(0.1)
        return [int(pid) for pid in json.loads(path.read_text())]

    def running(self) -> list[int]:
        """Live processes (not zombies) with this launch's marker in their environment, after waiting up to
        GONE_WITHIN_S for them to go."""
        deadline = time.monotonic() + GONE_WITHIN_S
        while True:
            found = [pid for pid in _live_pids() if _has_marker(pid, self.marker)]
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def temp_files(self) -> list[str]:
        return sorted(p.name for p in self.temp.iterdir() if p.name.startswith("autoscout-"))

    def trials(self) -> list[tuple[str, int, str, float]]:
        """The store's trials, as (study, number, status, recorded at)."""
        if not self.store.exists():
            return []
        with sqlite3.connect(self.store) as conn:
            return list(conn.execute("SELECT study_id, number, status, created_s FROM trials ORDER BY number"))

    def stop(self) -> None:
        """Kill what a failing test left: the launcher and everything carrying the marker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        for pid in _live_pids():
            if _has_marker(pid, self.marker):
                os.kill(pid, signal.SIGKILL)


def _live_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0] not in b"ZX":
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def _has_marker(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    made = Launch(tmp_path, trials=3)
    yield made
    made.stop()


@pytest.mark.timeout(300)
def test_sigterm_during_a_trial_ends_its_whole_tree_and_removes_its_temp_files(launch: Launch) -> None:
    (launch.work / "hang-after-trials").write_text("0")  # trial 0 (your own settings) hangs
    proc = launch.start()
    pids = launch.wait_for("pids.1")
    assert len(pids) == 3 and launch.temp_files(), "the trial's temp files exist while it runs"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=GONE_WITHIN_S) == 128 + signal.SIGTERM
    assert "AutoScout: stopped by SIGTERM" in launch.stderr()
    assert launch.running() == []
    assert launch.temp_files() == []
    assert not any(launch.work.glob("done.*"))  # nothing went on to a real run


@pytest.mark.timeout(400)
def test_sigterm_during_the_real_run_is_passed_on_to_it(launch: Launch) -> None:
    (launch.work / "hang-run").write_text("")
    proc = launch.start()
    pids = launch.wait_for("pids.run")
    assert len(pids) == 3
    assert launch.trials(), "the tuning finished before the real run"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=GONE_WITHIN_S) == 128 + signal.SIGTERM
    assert launch.running() == []
    assert launch.temp_files() == []


@pytest.mark.timeout(600)
def test_a_sigkilled_launcher_leaves_nothing_running_and_its_study_resumes(launch: Launch) -> None:
    (launch.work / "hang-after-trials").write_text("1")  # trial 0 finishes, the next one hangs
    proc = launch.start()
    launch.wait_for("pids.2")
    finished = launch.trials()
    assert [status for _, _, status, _ in finished] == ["ok"]
    proc.kill()  # no handler runs: only the supervisor's parent-death signal is left to end the trial
    proc.wait(timeout=60)
    assert launch.running() == []
    # the supervisor also removed the trial's result file and the launcher's temp folder
    deadline = time.monotonic() + GONE_WITHIN_S
    while launch.temp_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert launch.temp_files() == []

    (launch.work / "hang-after-trials").unlink()
    again = subprocess.run(launch.argv, env=launch.env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (launch.work / "done.run").read_text() == "apply"  # the real run, with the winner
    assert "trial 0 runs your own settings" not in again.stderr  # what it declared was kept, too
    after = launch.trials()
    assert after[:len(finished)] == finished  # the first run's trial, as it was recorded
    assert len(after) == 3  # the budget counts it: two more trials, not three
    assert launch.running() == [] and launch.temp_files() == []
