"""The Lightning callback and `tune_trainer` inside a job whose ranks span two nodes (two launches on this
machine, one per node, gloo over 127.0.0.1): every rank of both nodes runs each trial in lockstep, rank 0
alone searches and writes the store, a trial that fails on one node only is recorded once and skipped on
both, and killing one node stops the other within a minute with an error that names the dead node.

Each launch is what a user runs on each machine: `torchrun --nnodes 2 --node_rank R --rdzv_backend c10d
...` or `accelerate launch --num_machines 2 --machine_rank R --multi_gpu ...` (with `ACCELERATE_USE_CPU=1`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.profiling import free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LIGHTNING_JOB = HERE / "multinode_lightning_job.py"
HF_JOB = HERE / "multinode_hf_job.py"
JOB_TIMEOUT_S = 200
"""A whole two-node job (its tuning and its 3-step main run) takes 20-40 s on a quiet 2-core machine."""
DEATH_S = 60
"""How long the surviving node may take to stop after the other one died."""


# ---------------------------------------------------------------- two nodes on this machine
@dataclass
class Node:
    rank: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(out: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "AUTOSCOUT_CPU_BENCH": "0",
            "TORCHINDUCTOR_CACHE_DIR": str(out / "inductor"), "ACCELERATE_USE_CPU": "1"}


def _command(launcher: str, node: int, port: int, run_id: str, script: Path, args: list[str]) -> list[str]:
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
                "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                "--rdzv_id", run_id, str(script), *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "2", "--machine_rank", str(node),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--num_processes", "2",
            "--multi_gpu", str(script), *args]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _tree(pid: int) -> list[int]:
    """`pid` and every process below it (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def kill_node(node: Node) -> None:
    """The node's machine is gone: its launch and every process it started die at once."""
    for pid in _tree(node.proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[Any]:
    """Start a job on two nodes: `start(launcher, script, *args)` -> [node 0, node 1]. Node 0 starts first
    and hosts the rendezvous, as the machine at the rendezvous endpoint does; whatever is still running at
    the end is killed."""
    started: list[Node] = []

    def start(launcher: str, script: Path, *args: str) -> list[Node]:
        port, run_id = free_port(), uuid.uuid4().hex[:8]
        for node in (0, 1):
            log = tmp_path / f"launch{node}.log"
            proc = subprocess.Popen(_command(launcher, node, port, run_id, script, [str(tmp_path), *args]),
                                    env=_env(tmp_path), cwd=str(tmp_path), stdout=log.open("wb"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
            started.append(Node(node, proc, log))
            deadline = time.monotonic() + 60
            while node == 0 and not _listening(port):
                assert proc.poll() is None and time.monotonic() < deadline, started[0].output[-3000:]
                time.sleep(0.1)
        return started

    yield start
    for node in started:
        if node.proc.poll() is None:
            kill_node(node)
            node.proc.wait(timeout=30)


def finish(nodes: list[Node], timeout: float = JOB_TIMEOUT_S) -> list[dict[str, Any]]:
    """Wait for both launches to succeed; what each node's rank wrote (`node{GROUP_RANK}.json`)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        try:
            code = node.proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"node {node.rank}'s launch ran past {timeout} s:\n{node.output[-3000:]}")
        assert code == 0, f"node {node.rank}'s launch failed ({code}):\n{node.output[-4000:]}"
    out = nodes[0].log.parent
    return [json.loads((out / f"node{n}.json").read_text()) for n in (0, 1)]


def store_rows(path: Path) -> tuple[int, int]:
    """(studies, trial rows) in an SQLite trial store."""
    with sqlite3.connect(path) as conn:
        return (conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])


def check_lockstep_run(tmp_path: Path, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """What every two-node tuning must show; the report."""
    report = json.loads((tmp_path / "report.json").read_text())
    # 1. both nodes apply the config rank 0 chose
    best = report["best_config"]
    assert best is not None and [s["node"] for s in seen] == [0, 1]
    for node in seen:
        assert node["applied"] == best, node
        assert node["threads"] == best["num_threads"] and node["batch_size"] == best["micro_batch_size"]
    assert seen[0]["accumulate"] == seen[1]["accumulate"]
    assert seen[0]["batch_size"] * seen[0]["accumulate"] * 2 == 16  # the user's 8 per rank x 2 ranks
    # 2. one history row per trial: rank 0 alone writes the store
    assert store_rows(tmp_path / "store.sqlite") == (1, len(report["trials"]))
    return report


def check_failed_on_node_1(report: dict[str, Any]) -> None:
    """3. The job's own settings (1 thread: `OMP_NUM_THREADS=1`), always the first trial, crash on node 1
    only: that trial is one row, failed, with node 1's error (never another rank's "failed on another
    rank"), and the ranks went on to the next trial together; every 2-thread trial ran on both nodes."""
    first = report["trials"][0]
    assert first["config"]["num_threads"] == 1 and first["status"] == "error", report["trials"]
    for trial in report["trials"]:
        if trial["config"]["num_threads"] == 1:
            assert trial["status"] == "error" and trial["error"].startswith("rank 1 (node 1, ")
            assert "a crash on node 1 with 1 threads" in trial["error"]
        else:
            assert trial["status"] == "ok", trial
    assert report["best_config"]["num_threads"] == 2


def wait_started(out: Path, nodes: list[Node]) -> None:
    """Until both nodes run their first training step (the first trial), where they wait (`OUT/hold`)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not all((out / f"started{n}").exists() for n in (0, 1)):
        for node in nodes:
            assert node.proc.poll() is None, f"node {node.rank} stopped:\n{node.output[-3000:]}"
        assert time.monotonic() < deadline, "the nodes never started tuning"
        time.sleep(0.2)


def check_survivor_names_the_dead_node(nodes: list[Node]) -> str:
    """4. Kill node 1 (its launch and its worker) while both nodes are inside a trial: node 0's launch
    fails within `DEATH_S`, and what it printed names node 1. How long node 0 took."""
    worker = int((nodes[0].log.parent / "started1").read_text())
    # c10d numbers the nodes by their launcher's process id: node 0's launch, started first, is node 0
    assert worker in _tree(nodes[1].proc.pid), "the second launch did not become node 1"
    killed = time.monotonic()
    kill_node(nodes[1])
    (nodes[0].log.parent / "hold").unlink()  # node 0 goes on, into the trial's next meeting with node 1
    try:
        code = nodes[0].proc.wait(timeout=DEATH_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node 0 still runs {DEATH_S} s after node 1 died:\n{nodes[0].output[-3000:]}")
    took = time.monotonic() - killed
    output = nodes[0].output
    assert code != 0, output[-3000:]
    assert "NodeLost: AutoScout lost node 1 (" in output and "rank 1) while tuning: its heartbeat stopped" in output, \
        output[-4000:]
    return f"{took:.1f} s"


# ---------------------------------------------------------------- Lightning
@pytest.mark.timeout(300)
def test_lightning_on_two_nodes_tunes_in_lockstep_and_skips_a_trial_that_fails_on_one_node(
        tmp_path: Path, two_nodes: Any) -> None:
    seen = finish(two_nodes("torchrun", LIGHTNING_JOB, "--fail-threads", "1"))
    report = check_lockstep_run(tmp_path, seen)
    # 3. the trial that crashed on node 1 only: recorded once, failed, with node 1's error; skipped on both
    check_failed_on_node_1(report)
    assert all(t["metrics"]["tier"] == 0 for t in report["trials"] if t["status"] == "ok")  # in place, in this process
    for node in seen:
        assert node["steps"] == 3 and node["world"] == 2
        assert node["no_trace"] is True  # the main fit's weights are those of the winner set by hand
    # the process count is the launch's: pinned, and the command that would tune it is recommended
    assert "2 nodes x 1 process" in report["notes"]["pinned"]["num_processes"]
    assert report["notes"]["recommended_launch"].startswith("autoscout launch --autoscout --num_machines 2")


# ---------------------------------------------------------------- Hugging Face Trainer
@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_hf_on_two_nodes_tunes_in_lockstep_and_skips_a_trial_that_fails_on_one_node(
        tmp_path: Path, two_nodes: Any, launcher: str) -> None:
    seen = finish(two_nodes(launcher, HF_JOB, "--fail-threads", "1"))
    report = check_lockstep_run(tmp_path, seen)
    check_failed_on_node_1(report)
    for node in seen:
        assert node["steps"] == 3 and node["world"] == 2
    assert report["notes"]["pinned"]["num_processes"] == "the launch: 2 nodes x 1 process"
    assert report["notes"]["recommended_launch"].startswith("autoscout launch --autoscout --num_machines 2")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("launcher", "job"), [("torchrun", LIGHTNING_JOB), ("accelerate", HF_JOB)],
                         ids=["lightning", "hf"])
def test_a_two_node_job_stops_with_the_dead_node_named_when_one_dies(tmp_path: Path, two_nodes: Any,
                                                                     launcher: str, job: Path) -> None:
    (tmp_path / "hold").touch()
    nodes = two_nodes(launcher, job)
    wait_started(tmp_path, nodes)
    print(f"node 0 stopped {check_survivor_names_the_dead_node(nodes)} after node 1 died")


# ---------------------------------------------------------------- bad input
@pytest.mark.timeout(300)
@pytest.mark.parametrize("job", [LIGHTNING_JOB, HF_JOB], ids=["lightning", "hf"])
def test_parallel_trials_in_a_two_node_job_are_refused_on_every_node_before_any_trial(
        tmp_path: Path, two_nodes: Any, job: Path) -> None:
    nodes = two_nodes("torchrun", job, "--parallel", "2")
    for node in nodes:
        assert node.proc.wait(timeout=JOB_TIMEOUT_S) != 0
        assert ("ValueError: parallel=2, executor=None: this job runs on 2 nodes x 1 process, and each of its trials"
                " runs on every rank of every node at once") in node.output, node.output[-3000:]
    assert not (tmp_path / "started0").exists() and not (tmp_path / "store.sqlite").exists()


# ---------------------------------------------------------------- telling a dead node apart (no job needed)
def _liveness(store: Any, rank: int, **kwargs: Any) -> Any:
    from autoscout_plugin.integrations._lockstep import Liveness, Member

    liveness = Liveness(store, "127.0.0.1:1", "test", rank, 2, beat_s=0.1, still_s=2.0, **kwargs)
    liveness.members = [Member(0, 0, "host-a", 10), Member(1, 1, "host-b", 11)]
    liveness.beat()
    return liveness


def test_a_rank_whose_heartbeat_stands_still_is_named_with_its_node_and_host() -> None:
    import threading

    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    alive, other = _liveness(store, 0), _liveness(store, 1)
    stop = threading.Event()

    def beat() -> None:  # rank 1 beats (its own thread, as in its process) until `stop`
        while not stop.wait(0.1):
            other.beat()

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    alive.start()
    try:
        assert alive.wait_verdict(1.0) is None  # everyone beats: a failure was something else
        stop.set()
        verdict = alive.wait_verdict(10.0)
        assert verdict is not None and verdict.who == "node 1 (host-b, rank 1)"
        assert verdict.why.startswith("its heartbeat stopped")
    finally:
        stop.set()
        alive.stop()


def test_a_store_that_stops_answering_is_blamed_on_the_node_that_hosts_it() -> None:
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    client = dist.TCPStore("127.0.0.1", server.port, is_master=False, wait_for_workers=False)
    liveness = _liveness(client, 1)
    liveness.start()
    try:
        del server  # the store's host is gone
        verdict = liveness.wait_verdict(15.0)
        assert verdict is not None and verdict.who == "node 0 (host-a, rank 0)"  # it hosts the store
        assert verdict.why.startswith("the job's store at 127.0.0.1:1, which lives there under torchrun")
    finally:
        liveness.stop()


HANG = '''
import time, torch.distributed as dist
from tests.integrations.test_multinode_frameworks import _liveness
store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
_liveness(store, 1)  # node 1 beat once (every rank does before tuning), then died
_liveness(store, 0, silence_s=1.0, grace_s=1.0).start()
time.sleep(120)  # as if waiting in a collective that node 1 never joins
'''


@pytest.mark.timeout(120)
def test_a_collective_that_hangs_on_a_dead_node_ends_the_process_with_the_node_named() -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HANG], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "AutoScout lost node 1 (host-b, rank 1) while tuning: its heartbeat stopped" in proc.stderr
    assert "This process stops now" in proc.stderr
    assert time.monotonic() - started < 60
