"""Several machines, one tuning: the nodes of a multi-node `autoscout launch` run each trial in lockstep.

The same command runs on every node (`--num_machines N --machine_rank R --main_process_ip HOST
--main_process_port PORT`, as with `accelerate launch`). Before the real run the nodes talk through a
`torch.distributed.TCPStore` that machine rank 0 hosts on HOST:PORT (the port the real run uses later,
free again by then), with no ssh and nothing else to install:

- every node joins (`node/R`: host, process, the job's identity); rank 0 refuses nodes that run
  another command, and a node that cannot reach rank 0 within the join timeout stops with an error
  naming HOST:PORT, never a silent one-node run;
- rank 0 searches; for trial `n` it posts `trial/n` (the config, the launch spec, a fresh rendezvous
  port and id); every node runs the trial's `accelerate launch` and posts `result/n/R`; a node whose
  trial fails posts `abort/n`, and the others stop theirs at once (a trial failed on one node is failed
  on all, recorded once, by rank 0); the trial's speed is the slowest node's;
- rank 0 posts `end` (the config for the real run); each node acknowledges, rank 0 closes the store,
  and every node starts the real run with the same config.

Every node adds to its heartbeat counter `beat/R` each `BEAT_S`; a node whose counter stands still for
`SILENCE_S` is gone, and so is rank 0 when its store stops answering: the surviving nodes stop their
trial and exit with `NodeLost`, whose message names the node (its rank and host). So a dead node ends
the job within `SILENCE_S` plus a trial's shutdown grace, never a hang.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from autoscout_plugin.profiling import TrialOutcome

BEAT_S = 1.0
"""How often each node adds to its heartbeat counter."""
SILENCE_S = 20.0
"""A node whose heartbeat stands still this long is gone."""
POLL_S = 0.2
"""How often a node looks for the key it waits for."""
JOIN_TIMEOUT_S = 300.0
"""Default seconds for every node to join (`--autoscout-join-timeout`): machines started by hand, or
by a scheduler that starts them apart, need minutes."""
GOODBYE_S = 30.0
"""How long rank 0 waits for every node to read the decision before it closes the store."""


class NodeError(RuntimeError):
    """The nodes cannot tune together (a node missing, unreachable, or running another command)."""


class NodeLost(NodeError):
    """A node stopped answering while the nodes were tuning."""


class TrialAborted(Exception):
    """Another node's part of this trial failed: this node's part is stopped."""


@dataclass(frozen=True, slots=True)
class Node:
    rank: int
    host: str
    pid: int

    def __str__(self) -> str:
        return f"machine rank {self.rank} ({self.host}, process {self.pid})"


def outcome_to_json(outcome: TrialOutcome) -> dict[str, Any]:
    return asdict(outcome)


def outcome_from_json(data: dict[str, Any]) -> TrialOutcome:
    return TrialOutcome(**data)


class Nodes:
    """This node's place among the nodes of one launch.

    Args:
        host, port: where machine rank 0 hosts the store (`--main_process_ip`, `--main_process_port`).
        count: `--num_machines`.
        rank: `--machine_rank`.
        job: the job's identity; every node must run the same one.
        join_timeout_s: how long every node has to join.
        silence_s: how long a node's heartbeat may stand still before it counts as gone.
    """

    def __init__(self, host: str, port: int, count: int, rank: int, *, job: str,
                 join_timeout_s: float = JOIN_TIMEOUT_S, silence_s: float = SILENCE_S) -> None:
        from torch.distributed import TCPStore

        self.host, self.port, self.count, self.rank = host, port, count, rank
        self.silence_s = silence_s
        self.me = Node(rank, socket.gethostname(), os.getpid())
        self.nodes: dict[int, Node] = {rank: self.me}
        try:
            self.store: Any = TCPStore(host, port, world_size=count, is_master=rank == 0,
                                       timeout=timedelta(seconds=join_timeout_s), wait_for_workers=False)
        except Exception as exc:  # noqa: BLE001 - DistNetworkError, RuntimeError: one message either way
            why = str(exc).splitlines()[0][:200]
            if rank == 0:
                raise NodeError(f"machine rank 0 cannot host the nodes' store on port {port} of this machine ({why});"
                                " give a free --main_process_port") from None
            raise NodeError(f"the main node {host}:{port} (machine rank 0) cannot be reached ({why}): start the same"
                            " command with --machine_rank 0 on the machine at --main_process_ip, check"
                            " --main_process_ip and --main_process_port, or raise --autoscout-join-timeout") from None
        self._lock = threading.Lock()
        """One store operation at a time: the heartbeat thread and this one share the store's connection."""
        self._seen: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._beat_error: str | None = None
        self._post(f"node/{rank}", {"host": self.me.host, "pid": self.me.pid, "job": job})
        self._beater = threading.Thread(target=self._beat, name="autoscout-node-beat", daemon=True)
        self._beater.start()
        self._join(job, join_timeout_s)
        with self._lock:  # from here on a store that does not answer within the silence is as good as gone
            self.store.set_timeout(timedelta(seconds=silence_s))

    # ------------------------------------------------------------ the store, guarded
    def _lost_main(self, exc: BaseException) -> NodeLost:
        return NodeLost(f"lost machine rank 0 ({self.nodes.get(0, self.host)}, store {self.host}:{self.port}):"
                        f" {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}; it stopped or its"
                        " machine is unreachable")

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._lock:
                return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the store's server went away with rank 0
            if self.rank == 0:
                raise
            raise self._lost_main(exc) from None

    def _post(self, key: str, value: Any) -> None:
        self._call(self.store.set, key, json.dumps(value))

    def _peek(self, key: str) -> Any:
        """The value at `key`, or None when not there yet."""
        if not self._call(self.store.check, [key]):
            return None
        return json.loads(self._call(self.store.get, key))

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                with self._lock:
                    self.store.add(f"beat/{self.rank}", 1)
            except Exception as exc:  # noqa: BLE001 - seen by the next `check_alive`
                self._beat_error = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                return

    def check_alive(self) -> None:
        """Raise `NodeLost` naming a node that stopped: rank 0 watches every node, the others rank 0."""
        if self._beat_error is not None and self.rank != 0:
            raise self._lost_main(RuntimeError(self._beat_error))
        now = time.monotonic()
        for rank in (range(1, self.count) if self.rank == 0 else (0,)):
            count = int(self._call(self.store.add, f"beat/{rank}", 0))
            last = self._seen.get(rank)
            if last is None or last[0] != count:
                self._seen[rank] = (count, now)
            elif now - last[1] > self.silence_s:
                node = self.nodes.get(rank, f"machine rank {rank}")
                raise NodeLost(f"lost {node}: no heartbeat for {now - last[1]:.0f} s; its process stopped or its"
                               " machine is unreachable")

    def _wait_for(self, key: str, timeout_s: float | None = None, what: str = "") -> Any:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            value = self._peek(key)
            if value is not None:
                return value
            self.check_alive()
            if deadline is not None and time.monotonic() > deadline:
                raise NodeError(what or f"no {key} after {timeout_s:g} s")
            time.sleep(POLL_S)

    # ------------------------------------------------------------ joining
    def _join(self, job: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        if self.rank != 0:
            ready = self._wait_for("ready", timeout_s + 5.0, f"machine rank 0 did not start the tuning within"
                                                             f" {timeout_s:g} s")
            if ready.get("error"):
                raise NodeError(f"machine rank 0 refused this node: {ready['error']}")
            self.nodes = {int(r): Node(int(r), n["host"], int(n["pid"])) for r, n in ready["nodes"].items()}
            return
        while True:
            missing = [r for r in range(1, self.count) if not self._call(self.store.check, [f"node/{r}"])]
            if not missing:
                break
            if time.monotonic() > deadline:
                error = (f"machine rank(s) {', '.join(map(str, missing))} of {self.count} did not join within"
                         f" {timeout_s:g} s: start the same command with --machine_rank {missing[0]} on that machine,"
                         " or raise --autoscout-join-timeout")
                self._post("ready", {"error": error})
                raise NodeError(error)
            time.sleep(POLL_S)
        for rank in range(1, self.count):
            data = self._peek(f"node/{rank}")
            self.nodes[rank] = Node(rank, data["host"], int(data["pid"]))
            if data["job"] != job:
                error = (f"{self.nodes[rank]} runs another command than machine rank 0 (job {data['job']} against"
                         f" {job}): every node must run the same script, arguments and launch options")
                self._post("ready", {"error": error})
                raise NodeError(error)
        self._post("ready", {"nodes": {r: {"host": n.host, "pid": n.pid} for r, n in self.nodes.items()}})

    # ------------------------------------------------------------ trials
    def _watch(self, n: int) -> Callable[[], None]:
        def watch() -> None:
            reason = self._peek(f"abort/{n}")
            if reason is not None:
                raise TrialAborted(reason)
            self.check_alive()
        return watch

    def _run_part(self, n: int, run: Callable[[Callable[[], None]], TrialOutcome]) -> TrialOutcome:
        """This node's part of trial `n`; a failure tells the other nodes to stop theirs."""
        try:
            outcome = run(self._watch(n))
        except TrialAborted as why:
            outcome = TrialOutcome(status="error", error=str(why), metrics={"stopped_by_other_node": 1.0})
        if outcome.status != "ok" and not outcome.metrics.get("stopped_by_other_node"):
            self._post(f"abort/{n}", f"{self.me}: {outcome.error or outcome.status}"[:300])
        self._post(f"result/{n}/{self.rank}", outcome_to_json(outcome))
        return outcome

    def lead_trial(self, n: int, payload: dict[str, Any],
                   run: Callable[[Callable[[], None]], TrialOutcome]) -> TrialOutcome:
        """Rank 0: post trial `n`, run its own part, gather every node's; the combined outcome."""
        self._post(f"trial/{n}", payload)
        parts = {0: self._run_part(n, run)}
        for rank in range(1, self.count):
            parts[rank] = outcome_from_json(self._wait_for(f"result/{n}/{rank}"))
        return self.combine(parts)

    def combine(self, parts: dict[int, TrialOutcome]) -> TrialOutcome:
        """One outcome of a trial's parts: the first failure that was not a stop on another's behalf
        (named by its node), else the slowest node's speed, the largest memory, the longest time."""
        failed = [(r, o) for r, o in sorted(parts.items()) if o.status != "ok"]
        cost = max((o.cost_s or 0.0) for o in parts.values())
        if failed:
            rank, first = next(((r, o) for r, o in failed if not o.metrics.get("stopped_by_other_node")), failed[0])
            node = self.nodes.get(rank, f"machine rank {rank}")
            error = first.error or first.status
            if not error.startswith("machine rank"):
                error = f"{node}: {error}"
            return TrialOutcome(status=first.status, cost_s=cost, peak_mem_mb=first.peak_mem_mb, error=error[:300],
                                metrics=dict(first.metrics), failure=first.failure, where=f"machine rank {rank}")
        slowest = min(parts, key=lambda r: parts[r].value or 0.0)
        outcome = parts[slowest]
        mems = [o.peak_mem_mb for o in parts.values() if o.peak_mem_mb is not None]
        metrics = {**outcome.metrics, **{f"node{r}_samples_per_s": float(o.value or 0.0) for r, o in parts.items()}}
        return TrialOutcome(status="ok", value=outcome.value, cost_s=cost, peak_mem_mb=max(mems) if mems else None,
                            metrics=metrics, where=f"{self.count} nodes")

    def follow(self, run: Callable[[dict[str, Any], Callable[[], None]], TrialOutcome]) -> dict[str, Any]:
        """Ranks above 0: run every trial rank 0 posts, until it posts the end; the end's payload."""
        n = 0
        while True:
            trial, end = self._peek(f"trial/{n}"), self._peek("end")
            if trial is not None:
                self._run_part(n, lambda watch, payload=trial: run(payload, watch))
                n += 1
                continue
            if end is not None:
                self._post(f"left/{self.rank}", True)
                self._until_closed()
                return dict(end)
            self.check_alive()
            time.sleep(POLL_S)

    def _until_closed(self) -> None:
        """Wait (bounded) until rank 0 has closed the store: the real run's rendezvous takes its port next,
        and must not find this store there."""
        deadline = time.monotonic() + GOODBYE_S + 5.0
        while time.monotonic() < deadline:
            try:
                with self._lock:
                    self.store.check(["end"])
            except Exception:  # noqa: BLE001 - closed: what this waits for
                return
            time.sleep(POLL_S)
        raise NodeError(f"machine rank 0 ({self.nodes.get(0, self.host)}) kept its store on {self.host}:{self.port}"
                        f" open {GOODBYE_S + 5.0:g} s after the decision; the real run cannot take that port")

    def finish(self, payload: dict[str, Any], *, wait_s: float = GOODBYE_S, strict: bool = True) -> None:
        """Rank 0: post the end, wait (bounded) until every node has read it, then close the store.
        `strict`: a node that has not read it by then is an error (`NodeError` naming it), not a real run
        started without it."""
        self._post("end", payload)
        deadline = time.monotonic() + wait_s
        missing = list(range(1, self.count))
        while missing:
            missing = [r for r in missing if not self._call(self.store.check, [f"left/{r}"])]
            if not missing or time.monotonic() >= deadline:
                break
            self.check_alive()
            time.sleep(POLL_S)
        self.close()
        if missing and strict:
            raise NodeError(", ".join(str(self.nodes.get(r, f"machine rank {r}")) for r in missing)
                            + f" did not take the decision within {wait_s:g} s; no real run was started")

    def close(self) -> None:
        """Stop the heartbeat and drop the store (rank 0: its port is free again for the real run)."""
        self._stop.set()
        self._beater.join(timeout=BEAT_S + 1.0)
        self.store = None


__all__ = ["JOIN_TIMEOUT_S", "SILENCE_S", "Node", "NodeError", "NodeLost", "Nodes", "TrialAborted"]
