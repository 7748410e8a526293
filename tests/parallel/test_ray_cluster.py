"""Parallel trials on a real two-node Ray cluster (a head and a worker, 1 CPU each, on 127.0.0.1), through
`autoscout launch --autoscout-parallel 2 --autoscout-executor ray:ADDRESS`: trials land on both nodes,
never more than 2 at once; a worker node killed mid-trial fails that trial, Ray offers it again once, and
the tuning finishes; a driver killed mid-tuning is resumed from the store by the next one."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..ray_cluster import RayCluster, RayClusterError
from .jobs import most_at_once

pytestmark = [pytest.mark.slow]

SCRIPT = """
import json, os, sys, time
import psutil
import autoscout_plugin as autoscout
log, step_s = sys.argv[1], float(sys.argv[2])  # not an env variable: a trial on a node has the node's
batch = autoscout.knob("micro_batch_size", 8)
accum = autoscout.knob("grad_accum", 1)
spec = autoscout.launch_spec() or {}
threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
mark = {"pid": os.getpid(), "config": spec.get("config"), "mode": spec.get("mode"), "t0": time.time(),
        "ancestors": [p.pid for p in psutil.Process().parents()]}
name = os.path.join(log, f"{spec.get('mode')}-{os.getpid()}")
with open(name + ".start", "w") as f:
    json.dump(mark, f)
for _ in range(4):
    time.sleep(step_s / threads)
    with open(name + ".end", "w") as f:  # a trial ends inside its last step()
        json.dump({"t1": time.time()}, f)
    autoscout.step()
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    try:
        started = RayCluster(cpus_per_node=1).start()
    except (RayClusterError, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the Ray cluster of the tests did not start: {exc}")
        pytest.skip(f"no local Ray cluster: {exc}")
    yield started
    started.stop()


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("AUTOSCOUT_STORE", str(tmp_path / "store.sqlite"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    log = tmp_path / "log"
    log.mkdir()
    return script, log


def argv(cluster: RayCluster, script: Path, log: Path, trials: int, report: Path, step_s: float = 0.3) -> list[str]:
    return ["--autoscout", "--autoscout-trials", str(trials), "--autoscout-parallel", "2", "--autoscout-executor",
            f"ray:{cluster.address}", "--autoscout-confirm", "0", "--autoscout-warmup", "1", "--autoscout-measure",
            "2", "--autoscout-include", "num_threads,micro_batch_size", "--autoscout-report", str(report),
            "--num_machines", "1", "--num_processes", "1", str(script), str(log), str(step_s)]


def launch(args: list[str]) -> None:
    """`autoscout launch ARGS` as a user runs it: its own process (and its own Ray driver: a process that
    already ran a local Ray session keeps state that Ray workers of a later session may choke on)."""
    done = subprocess.run([sys.executable, "-m", "autoscout_plugin.cli", "launch", *args], capture_output=True,
                          text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def marks(log: Path, mode: str = "trial") -> list[dict]:
    out = []
    for start in log.glob(f"{mode}-*.start"):
        data = json.loads(start.read_text())
        end = start.with_suffix(".end")
        data["t1"] = json.loads(end.read_text())["t1"] if end.exists() else None
        out.append(data)
    return sorted(out, key=lambda m: m["t0"])


def f2_trials(store: Path) -> list[dict]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT data FROM trials ORDER BY study_id, number").fetchall()
    return [t for t in (json.loads(r[0]) for r in rows) if t["fidelity"] == "F2"]


@pytest.mark.timeout(400)
def test_trials_land_on_both_nodes_never_more_than_k_at_once(cluster: RayCluster, job: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    script, log = job
    report = tmp_path / "report"
    # steps long beside a trial's start-up, so that trials overlap
    launch(argv(cluster, script, log, 5, report, step_s=1.5))
    data = json.loads(report.with_suffix(".json").read_text())
    trials = [t for t in data["trials"] if t["fidelity"] == "F2"]
    assert len(trials) == 5 and all(t["status"] == "ok" for t in trials)
    # trial 0 ran here (it learns which knobs the script reads); every measured trial, your own settings
    # included, ran on the cluster, on both nodes
    nodes = {t["where"] for t in trials}
    assert len(nodes) == 2 and all(n.startswith("ray node ") for n in nodes), nodes
    spans = [(m["t0"], m["t1"]) for m in marks(log)[1:] if m["t1"]]
    assert len(spans) == 5 and most_at_once(spans) <= 2
    assert most_at_once(spans) == 2  # the cap is reached: two trials did run at once
    assert len(marks(log, "apply")) == 1  # the real run, with the winner, here


@pytest.mark.timeout(500)
def test_a_worker_node_killed_mid_trial_is_offered_again_once_and_the_tuning_finishes(
        cluster: RayCluster, job: tuple[Path, Path], tmp_path: Path) -> None:
    script, log = job
    killed: list[dict] = []

    def kill_when_a_trial_runs_on_the_worker() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            on_worker = cluster.worker_pids()
            for mark in marks(log):
                if mark["t1"] is None and set(mark["ancestors"]) & on_worker:
                    cluster.kill_worker()
                    killed.append(mark)
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_when_a_trial_runs_on_the_worker, daemon=True)
    watcher.start()
    try:
        report = tmp_path / "report"
        launch(argv(cluster, script, log, 4, report, step_s=2.0))  # trials long enough to be caught running
    finally:
        watcher.join(5)
        cluster.add_worker()  # the next tests have two nodes again
    assert killed, "no trial ran on the worker node"
    data = json.loads(report.with_suffix(".json").read_text())
    trials = [t for t in data["trials"] if t["fidelity"] == "F2"]
    assert len(trials) == 4  # the tuning finished its budget
    starts = [m for m in marks(log)[1:] if m["config"] == killed[0]["config"]]  # [0]: trial 0, here
    assert len(starts) == 2  # the killed trial was offered again, once, on the node left
    again = next(t for t in trials if t["config"] == {k: v for k, v in killed[0]["config"].items()
                                                       if k != "grad_accum"})
    assert again["status"] == "ok" and again["where"] != killed[0].get("where")


@pytest.mark.timeout(500)
def test_a_restarted_driver_resumes_from_the_shared_history(cluster: RayCluster, job: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    script, log = job
    store = tmp_path / "store.sqlite"
    command = [sys.executable, "-m", "autoscout_plugin.cli", "launch",
               *argv(cluster, script, log, 6, tmp_path / "report", step_s=1.0)]
    env = {**os.environ, "AUTOSCOUT_STORE": str(store)}
    first = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if store.exists() and len(f2_trials(store)) >= 3:
            break
        time.sleep(0.5)
    assert first.poll() is None, "the first driver ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies: its running trials die with its Ray job
    first.wait(30)
    before = f2_trials(store)
    assert 3 <= len(before) < 6
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    after = f2_trials(store)
    assert len(after) == 6  # the study's budget, counted over both drivers
    assert [t["number"] for t in after[: len(before)]] == [t["number"] for t in before]
    configs = [json.dumps(t["config"], sort_keys=True) for t in after]
    assert len(set(configs)) == len(configs)  # nothing measured twice
    assert "trial 0 runs your own settings" not in done.stderr  # what the script declares was kept
