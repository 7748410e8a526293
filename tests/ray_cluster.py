"""A throwaway Ray cluster of two "machines" on this one, for the tests.

``RayCluster().start()`` starts a head node and one worker node (``ray start --block``, 1 CPU each, on
127.0.0.1, each in its own process group, sharing a fresh temp folder) and returns once both are alive.
``kill_worker()`` SIGKILLs the worker node's whole process tree (a machine lost mid-trial); ``add_worker()``
starts another; ``stop()`` ends everything. Failure detection is shortened (health checks every 0.5 s) so
that a dead node is noticed in seconds, not half a minute.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HOST = "127.0.0.1"
FAST_FAILURE = {"RAY_health_check_initial_delay_ms": "500", "RAY_health_check_period_ms": "500",
                "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3",
                "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class RayClusterError(RuntimeError):
    """The cluster could not start; the message says why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RayCluster:
    def __init__(self, cpus_per_node: int = 1) -> None:
        self.cpus = cpus_per_node
        self.port = _free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp"))  # short: Ray's socket paths are capped
        self.head: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, **FAST_FAILURE}

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _ray(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        ray = str(Path(sys.executable).with_name("ray"))
        with open(self.temp / log, "ab") as out:
            return subprocess.Popen([ray, "start", *args, "--num-cpus", str(self.cpus), "--block",
                                     "--disable-usage-stats"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start(self, timeout_s: float = 120) -> RayCluster:
        atexit.register(self.stop)
        self.head = self._ray("--head", "--node-ip-address", HOST, "--port", str(self.port), "--include-dashboard",
                              "false", "--temp-dir", str(self.temp), log="head.log")
        self._wait_nodes(1, timeout_s)
        self.add_worker(timeout_s)
        return self

    def add_worker(self, timeout_s: float = 120) -> None:
        alive = self.alive_nodes()
        self.workers.append(self._ray("--address", self.address, "--node-ip-address", HOST,
                                      log=f"worker{len(self.workers)}.log"))
        self._wait_nodes(alive + 1, timeout_s)

    def alive_nodes(self) -> int:
        ray = str(Path(sys.executable).with_name("ray"))
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False);"
                " print(sum(1 for n in ray.nodes() if n['Alive']))")
        out = subprocess.run([sys.executable, "-c", code, self.address], env=self.env, capture_output=True,
                             text=True, timeout=60)
        del ray
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def _wait_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.head is not None and self.head.poll() is not None:
                raise RayClusterError(f"the Ray head exited: {self.log('head.log')[-2000:]}")
            if self.alive_nodes() >= count:
                return
            time.sleep(1)
        raise RayClusterError(f"{count} Ray nodes were not up after {timeout_s:g} s: {self.log('head.log')[-2000:]}")

    def log(self, name: str) -> str:
        try:
            return (self.temp / name).read_text(errors="replace")
        except OSError:
            return ""

    def worker_pids(self) -> set[int]:
        """Every process of the live worker nodes (raylet, Ray workers, the trials they run)."""
        out: set[int] = set()
        for worker in self.workers:
            if worker.poll() is None:
                try:
                    root = psutil.Process(worker.pid)
                    out |= {root.pid, *(p.pid for p in root.children(recursive=True))}
                except psutil.NoSuchProcess:
                    pass
        return out

    def kill_worker(self) -> None:
        """SIGKILL the newest worker node's whole tree: a machine lost, without a word to anyone."""
        worker = self.workers[-1]
        pids = set()
        try:
            root = psutil.Process(worker.pid)
            pids = {root.pid, *(p.pid for p in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.wait(30)

    def stop(self) -> None:
        for proc in [*self.workers, *([self.head] if self.head else [])]:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.workers, self.head = [], None
        shutil.rmtree(self.temp, ignore_errors=True)
