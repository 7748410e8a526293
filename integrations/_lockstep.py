"""Trials in lockstep on every rank of a distributed run, on one machine or several (the Lightning
callback and `tune_trainer`): rank 0 searches, every rank runs each trial, every rank gets the decision.

- **One trial, every rank.** The ranks end a trial at the same step, and a trial that raises on one rank
  fails on all of them (`RankMeetings`: the ranks meet after every forward and every optimizer step, one
  all-reduce of a verdict each). Rank 0 records it once, with the error of the first rank whose own trial
  failed (`Lockstep._gather`).
- **A dead node is not a failed trial.** Every rank adds to its own heartbeat counter in the job's store
  every `BEAT_S` (`Liveness`, one thread per rank, on its own connection to the default process group's
  store). When a collective fails, the ranks whose counter stood still for `STILL_S` are gone, and the
  survivors stop with `NodeLost`, whose message names the node (its rank among the nodes, its host, its
  ranks). A collective that hangs instead of failing (a machine gone from the network) is bounded too: a
  counter still for `SILENCE_S` is a dead rank, and a process still inside the tuning `GRACE_S` later
  writes the same message and exits. Either way a dead node never holds the others for a minute.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, NamedTuple, TypeVar

import torch.distributed as dist

from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.profiling import StepProbe, TrialOutcome, classify_exception, describe_exception
from autoscout_plugin.tuning import TrialFn, TrialRequest

from . import _compat, _torch

BEAT_S = 1.0
"""How often each rank adds to its heartbeat counter (and reads everyone's)."""
STILL_S = 5.0
"""After a failed collective: a counter that stood still this long belongs to a dead rank."""
SILENCE_S = 30.0
"""Without a failed collective (a hang): a counter still this long belongs to a dead rank."""
GRACE_S = 15.0
"""After a hang's verdict: how long the tuning has to end by itself before this process exits."""
STORE_TIMEOUT_S = 10.0
"""The heartbeat connection's timeout, so a store on a vanished machine cannot block the monitor."""
FAILED = 3
"""A meeting's verdict above any trial outcome's (0 go on, 1 done, 2 nan): a rank's trial raised."""
_RESTART = "TORCHELASTIC_RESTART_COUNT"


class OtherRankFailed(RuntimeError):
    """Raised on a rank whose trial ran fine when another rank's trial raised (the whole trial fails)."""


class NodeLost(BaseException):
    """A rank or node of the job died while it was tuning. Not a trial's failure: the job cannot go on
    without it, so this passes through the tuner's `except Exception` (as `KeyboardInterrupt` does) and
    ends the tuning on every surviving rank."""


# ---------------------------------------------------------------- where this process runs
@dataclass(frozen=True, slots=True)
class Topology:
    """This process's place in the job: `rank` of `world` processes, on node `node_rank` of `nodes`
    (each running `per_node` processes).

    Example:
        >>> str(Topology.from_env(4, 3, {"LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}))
        '2 nodes x 2 processes'
    """

    world: int = 1
    rank: int = 0
    nodes: int = 1
    node_rank: int = 0
    per_node: int = 1

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    def __str__(self) -> str:
        return (f"{self.nodes} node{'s' if self.nodes != 1 else ''} x {self.per_node}"
                f" process{'es' if self.per_node != 1 else ''}")

    @classmethod
    def from_env(cls, world: int, rank: int, env: Mapping[str, str] | None = None) -> Topology:
        """From what torchrun (which `accelerate launch` runs) tells each worker: `LOCAL_WORLD_SIZE` processes
        per node and the node's rank `GROUP_RANK`; one node when the launcher says neither."""
        env = os.environ if env is None else env
        per_node = _number(env.get("LOCAL_WORLD_SIZE")) or world
        if per_node < 1 or world % per_node:
            per_node = world
        node = _number(env.get("GROUP_RANK"))
        if node is None:
            node = _number(env.get("NODE_RANK"))
        return cls(world=world, rank=rank, nodes=world // per_node, per_node=per_node,
                   node_rank=node if node is not None else rank // per_node)


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def check_options(options: AutoScoutOptions, topology: Topology) -> None:
    """What cannot work in lockstep over several nodes, refused before anything is profiled."""
    if topology.multi_node and (options.parallel > 1 or options.executor is not None):
        raise ValueError(f"parallel={options.parallel}, executor={options.executor!r}: this job runs on {topology},"
                         " and each of its trials runs on every rank of every node at once, so trials run one at a"
                         " time; leave parallel=1 and executor=None")


def launch_hint(topology: Topology, argv: list[str] | None = None) -> str:
    """The command that lets AutoScout tune the process count too, run on each node with its own rank:
    the running job's process count is fixed by its launch."""
    script = " ".join(argv if argv is not None else sys.argv) or "train.py"
    return (f"autoscout launch --autoscout --num_machines {topology.nodes} --machine_rank {topology.node_rank}"
            f" --main_process_ip <node 0's address> --main_process_port <a free port>"
            f" --num_processes {topology.world} {script}")


# ---------------------------------------------------------------- who is alive
@dataclass(frozen=True, slots=True)
class Member:
    """One rank of the job, as every rank sees it."""

    rank: int
    node: int
    host: str
    pid: int


def describe_ranks(members: list[Member], ranks: set[int]) -> str:
    """`node 1 (host-b, ranks 2-3)`; `rank 3 of node 1 (host-b)` where the node has other, live ranks.

    Example:
        >>> members = [Member(r, r // 2, "host-" + "ab"[r // 2], 100 + r) for r in range(4)]
        >>> describe_ranks(members, {2, 3}), describe_ranks(members, {3})
        ('node 1 (host-b, ranks 2-3)', 'rank 3 of node 1 (host-b)')
    """
    parts = []
    for node in sorted({m.node for m in members if m.rank in ranks}):
        on_node = [m for m in members if m.node == node]
        hosts = ", ".join(sorted({m.host for m in on_node}))
        lost = sorted(m.rank for m in on_node if m.rank in ranks)
        if len(lost) == len(on_node):
            parts.append(f"node {node} ({hosts}, {_ranks(lost)})")
        else:
            parts.append(f"{_ranks(lost)} of node {node} ({hosts})")
    return "; ".join(parts)


def _ranks(ranks: list[int]) -> str:
    """`rank 3`, `ranks 8-15`, `ranks 1, 5`."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return "ranks " + ", ".join(map(str, ranks))


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit].rstrip() + "..."


class Verdict(NamedTuple):
    """Who is gone (`node 1 (host-b, rank 1)`) and how it shows."""

    who: str
    why: str


class Liveness:
    """Every rank's heartbeat counter in the job's store: one thread adds to this rank's counter and reads
    everyone's every `BEAT_S`. `verdict` names the ranks whose counter stood still; a counter still for
    `SILENCE_S` (a collective hung rather than failed) ends this process `GRACE_S` later unless `stop` came
    first."""

    def __init__(self, store: Any, where: str, prefix: str, rank: int, world: int, *, beat_s: float = BEAT_S,
                 still_s: float = STILL_S, silence_s: float = SILENCE_S, grace_s: float = GRACE_S) -> None:
        self.store, self.where, self.rank = store, where, rank
        self.beat_s, self.still_s, self.silence_s, self.grace_s = beat_s, still_s, silence_s, grace_s
        self.members: list[Member] = []
        """Every rank, in rank order (set before `start`)."""
        self.keys = [f"{prefix}/beat/{r}" for r in range(world)]
        now = time.monotonic()
        self._seen: list[bytes | None] = [None] * world
        self._changed = [now] * world
        self._polled = now
        self._store_error: str | None = None
        self._stop = threading.Event()
        self.lost: Verdict | None = None
        """Set when a hang's verdict is out (the monitor then ends the process after `grace_s`)."""
        self._thread = threading.Thread(target=self._watch, name="autoscout-liveness", daemon=True)

    def beat(self) -> None:
        self.store.add(self.keys[self.rank], 1)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.beat_s)  # one blocked in the store ends on its own (a daemon)

    def _watch(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self.beat()
                values = self.store.multi_get(self.keys)
            except Exception as exc:  # noqa: BLE001 - the store's host is gone or unreachable: see `verdict`
                self._store_error = _first_line(exc)
            else:
                now = time.monotonic()
                for i, value in enumerate(values):
                    if value != self._seen[i]:
                        self._seen[i], self._changed[i] = value, now
                self._polled, self._store_error = now, None
            verdict = self.verdict(self.silence_s)
            if verdict is not None:
                self.lost = verdict
                if not self._stop.wait(self.grace_s):
                    print(f"{lost_message(verdict, None)} This process stops now: it waits in a collective that"
                          " the lost node will never join.", file=sys.stderr, flush=True)
                    sys.stdout.flush()
                    os._exit(1)
                return

    def verdict(self, still_s: float) -> Verdict | None:
        """Who is gone: the ranks whose counter stood still for `still_s` while the others moved, or the
        node that hosts the store when the store stopped answering that long; None while everyone beats."""
        gone = {m.rank for i, m in enumerate(self.members) if m.rank != self.rank
                and self._polled - self._changed[i] >= still_s}
        if gone:
            since = max(self._polled - self._changed[i] for i, m in enumerate(self.members) if m.rank in gone)
            return Verdict(describe_ranks(self.members, gone), f"its heartbeat stopped {since:.0f} s ago")
        if self._store_error is not None and time.monotonic() - self._polled >= still_s:
            zero = next((m.node for m in self.members if m.rank == 0), 0)
            host = describe_ranks(self.members, {m.rank for m in self.members if m.node == zero})
            return Verdict(host, f"the job's store at {self.where}, which lives there under torchrun and"
                                 f" accelerate launch, stopped answering ({self._store_error})")
        return None

    def wait_verdict(self, wait_s: float) -> Verdict | None:
        """After a failed collective: who is gone, waiting up to `wait_s` for a dead rank's counter to
        have stood still `still_s`; None when everyone still beats (the failure was something else)."""
        deadline = time.monotonic() + wait_s
        while True:
            verdict = self.lost or self.verdict(self.still_s)
            if verdict is not None or time.monotonic() >= deadline:
                return verdict
            time.sleep(0.1)


def lost_message(verdict: Verdict, exc: BaseException | None) -> str:
    """What `NodeLost` says: who is gone and how it shows (`Liveness.verdict`), what failed, what to do."""
    cause = f"; a collective failed: {_first_line(exc)}" if exc is not None else ""
    return (f"AutoScout lost {verdict.who} while tuning: {verdict.why}{cause}. The job cannot go on without it:"
            " start it again on every node (the trial store keeps every finished trial).")


def _heartbeat_store() -> tuple[Any, str]:
    """A connection of its own to the default process group's store (with a short timeout, so a store on
    a vanished machine cannot block the monitor), and where that store is; the store itself where it is
    not a TCPStore."""
    store = _compat.default_store()
    inner = store
    while hasattr(inner, "underlying_store"):
        inner = inner.underlying_store
    if isinstance(inner, dist.TCPStore):
        client = dist.TCPStore(inner.host, inner.port, is_master=False, wait_for_workers=False,
                               timeout=timedelta(seconds=STORE_TIMEOUT_S))
        return client, f"{inner.host}:{inner.port}"
    return store, type(inner).__name__


# ---------------------------------------------------------------- meetings inside one trial
class RankMeetings:
    """Where the ranks of one distributed trial meet: after every forward (`after_forward`) and after
    every optimizer step (`agree`), one all-reduce (MAX) of a verdict each. A rank whose trial raised joins
    the next meeting with `FAILED` (`announce`), and the others raise `OtherRankFailed` there. That holds
    for a failure in the forward, the optimizer step or a backward without gradient sync; a failure inside
    the backward that all-reduces gradients (`phase` `backward-sync`) or while the trial is set up
    (`setup`) cannot be announced: the others are then in a collective of their own. With one process
    (`world` 1) there is no one to meet: only the phase is kept."""

    def __init__(self, device: Any, world: int) -> None:
        self.device, self.world = device, world
        self.phase = "setup"
        """`setup` (until training starts), `forward`, `backward` (without gradient sync) or `backward-sync`,
        `step`."""
        self.announced = False

    def meet(self, code: int, step: int) -> int:
        """One all-reduce (MAX) of this rank's verdict; raises `OtherRankFailed` when a rank failed."""
        agreed = _torch.all_reduce_max(code, self.device)
        if agreed >= FAILED:
            self.announced = True
            raise OtherRankFailed(f"the trial failed on another rank (this rank: {self.phase}, step {step})")
        return agreed

    def after_forward(self, step: int, *, sync_backward: bool) -> None:
        """The ranks learn whether any forward raised before any of them enters the backward's all-reduce."""
        if self.world > 1:
            self.meet(0, step)
        self.phase = "backward-sync" if sync_backward else "backward"

    def agree(self, core: StepProbe, mine: TrialOutcome | None, step: int, now: float) -> TrialOutcome | None:
        """Every rank stops at the same step, or the one that goes on waits in a gradient all-reduce that no
        other rank joins. Each rank's clock and loss are its own, so the verdicts are reduced: the trial
        ends when any rank ends it, as `nan` when any rank saw one."""
        self.phase = "forward"
        if self.world == 1:
            return mine
        code = 0 if mine is None else (2 if mine.status == "nan" else 1)
        agreed = self.meet(code, step)
        if agreed == code:
            return mine
        if agreed == 2:
            return core.finish(TrialOutcome(status="nan", error=f"non-finite loss on another rank at step {step}"))
        timed = core.timed(now)  # another rank's clock ended it: early, or past the least steps (its precision)
        if not core.enough:
            timed.metrics["cut_short"] = 1.0
        return core.finish(timed)

    def announce(self, *, finished: bool) -> None:
        """This rank's trial raised: join the others' next meeting with `FAILED`, once, where it can be
        matched. Once the ranks agreed on the outcome (`finished`) there is no meeting left."""
        if self.world == 1 or self.announced or finished or self.phase in ("setup", "backward-sync"):
            return
        self.announced = True
        _torch.all_reduce_max(FAILED, self.device)


# ---------------------------------------------------------------- the session
Payload = TypeVar("Payload")


class Lockstep(Generic[Payload]):
    """One tuning of a distributed run on every rank. Rank 0 runs `decide(trial)` (the search, each trial
    through `trial`, which every rank then runs with `run_trial`); the other ranks follow; every rank
    returns what `decide` returned.

        with Lockstep(topology, run_one_trial) as lockstep:
            result = lockstep.run(lambda trial: tuning.run(trial))
    """

    _sessions = 0
    """Tunings started in this process: the n-th of this job has the same number on every rank."""

    def __init__(self, topology: Topology, run_trial: TrialFn) -> None:
        self.topology, self.run_trial = topology, run_trial
        self.members: list[Member] = []
        self.liveness: Liveness | None = None

    def __enter__(self) -> Lockstep[Payload]:
        me = Member(self.topology.rank, self.topology.node_rank, socket.gethostname(), os.getpid())
        Lockstep._sessions += 1
        prefix = f"autoscout/lockstep/{os.environ.get(_RESTART, '0')}/{Lockstep._sessions}"
        liveness: Liveness | None = None
        try:
            store, where = _heartbeat_store()
            liveness = Liveness(store, where, prefix, me.rank, self.topology.world)
            liveness.beat()  # before the gather: once it is done, every rank's counter exists
        except Exception as exc:  # noqa: BLE001 - tuning goes on, without telling a dead node apart
            warnings.warn(f"AutoScout: rank {me.rank} cannot reach the job's store for heartbeats ({_first_line(exc)});"
                          " a node that dies while tuning will not be named", RuntimeWarning, stacklevel=2)
            liveness = None
        entries: list[Any] = [None] * self.topology.world
        dist.all_gather_object(entries, (me, liveness is not None))
        self.members = [member for member, _ in entries]
        # All or none: a rank that cannot beat would look dead to the others.
        if liveness is not None and all(beats for _, beats in entries):
            liveness.members = self.members
            self.liveness = liveness
            liveness.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.liveness is not None:
            self.liveness.stop()

    def run(self, decide: Callable[[TrialFn], Payload]) -> Payload:
        return self._lead(decide) if self.topology.rank == 0 else self._follow()

    def trial(self, request: TrialRequest) -> TrialOutcome:
        """Rank 0's trial function: every rank runs `request`; the trial's outcome over all ranks."""
        self._send(("trial", request))
        return self._gather(self._guarded(request))

    # ---------------------------------------------------------- rank 0 and the others
    def _lead(self, decide: Callable[[TrialFn], Payload]) -> Payload:
        try:
            payload = decide(self.trial)
        except NodeLost:
            raise
        except BaseException as exc:
            self._send(("error", f"{type(exc).__name__}: {exc}"))  # or the others wait for the next trial forever
            raise
        self._send(("done", payload))
        return payload

    def _follow(self) -> Payload:
        while True:
            kind, payload = self._send()
            if kind == "trial":
                self._gather(self._guarded(payload))
            elif kind == "done":
                return payload  # type: ignore[no-any-return]
            else:
                raise RuntimeError(f"AutoScout failed on rank 0: {payload}")

    # ---------------------------------------------------------- collectives, and telling a death apart
    def _collective(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`; when it fails because a rank is gone, `NodeLost` naming its node."""
        if self.liveness is not None and self.liveness.lost:
            raise NodeLost(lost_message(self.liveness.lost, None))
        try:
            return fn(*args)
        except Exception as exc:
            liveness = self.liveness
            verdict = liveness.wait_verdict(liveness.still_s + 2 * liveness.beat_s) if liveness is not None else None
            if verdict is None:
                raise
            raise NodeLost(lost_message(verdict, exc)) from exc

    def _send(self, message: Any = None) -> Any:
        box = [message]
        self._collective(dist.broadcast_object_list, box, 0)
        return box[0]

    def _guarded(self, request: TrialRequest) -> TrialOutcome:
        try:
            return self.run_trial(request)
        except OtherRankFailed as exc:  # the failing rank's own outcome names the failure
            return TrialOutcome(status="error", error=str(exc), metrics={"other_rank_failed": 1.0})
        except Exception as exc:  # noqa: BLE001 - every rank must report, or the others wait forever
            return TrialOutcome(status=classify_exception(exc), error=describe_exception(exc))

    def _gather(self, outcome: TrialOutcome) -> TrialOutcome:
        """Every rank's outcome: the trial failed if any rank's did, with the status and error of the
        first rank whose own trial failed (a trial that failed on a node only is failed on all)."""
        statuses: list[Any] = [None] * self.topology.world
        mine = (outcome.status, outcome.error, bool(outcome.metrics.get("other_rank_failed")))
        self._collective(dist.all_gather_object, statuses, mine)
        if outcome.status == "ok" or mine[2]:
            for rank, (status, error, secondhand) in enumerate(statuses):
                if status != "ok" and not secondhand:
                    return TrialOutcome(status=status, cost_s=outcome.cost_s, error=f"{self._who(rank)}: {error}")
        return outcome

    def _who(self, rank: int) -> str:
        if not self.topology.multi_node or rank >= len(self.members):
            return f"rank {rank}"
        member = self.members[rank]
        return f"rank {rank} (node {member.node}, {member.host})"


__all__ = ["FAILED", "Liveness", "Lockstep", "Member", "NodeLost", "OtherRankFailed", "RankMeetings", "Topology",
           "Verdict", "check_options", "describe_ranks", "launch_hint", "lost_message"]
