"""Shared history (issue 18): many worker processes tune one study in one store, concurrently.

Every worker is a real OS process running a real `Tuner` on the same space (so the same fingerprint, so
the same study) against one store, with the study's budget (`--trials`) shared by all of them. A trial
is simulated: the profiler sleeps 50-150 ms (`--trial-s`) and returns a synthetic value. The workers
start their trials together (a go file, once all are ready). Each worker logs every trial (config,
start, end, worker, pid) to its own JSON-lines file, and the parent checks the store against those logs:

- `plain`: `--workers` workers on PostgreSQL, every one with search seed 0 (the default of `TuneOptions`,
  what the same command started on many machines gets); the trials stored are numbered exactly
  0..budget-1, no config ran on two workers at overlapping times, every trial a worker finished is
  stored (and nothing else), no worker failed, and at most 2 connections per worker were open at any
  time (`pg_stat_activity`, sampled every 50 ms);
- `distinct`: `plain` with seeds 0..N-1, for comparison (same-seed workers propose the same configs);
- `kill`: the same, and one worker is SIGKILLed mid-trial (after a few trials of its own) and not
  replaced. Twice: once under its default name (`host:pid`, so the others see at once that the process
  is gone) and once as `victim-remote` (a name the host check cannot read, so only its lease ends its
  claim). The killed config must run again on another worker exactly once (attempt 2), not before the
  claim is stale, and the study must still end with the whole budget;
- `sqlite`: `plain` on an SQLite file (one machine), for comparison.

    .venv/bin/python -m benchmarks.shared_store [--url URL] [--workers 8] [--trials 200] [--lease 3]
        [--only plain,distinct,kill,sqlite] [--search random] [--trial-s 0.05,0.15] [--json OUT] [--logs DIR]

Without `--url` a throwaway PostgreSQL server is started (`tests/pg.py`, needs the server binaries). With
`--url` the scenarios share that database, each in a study of its own (a run tag in the space keeps their
fingerprints apart). The exit code is 1 when any property fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRIAL_S = (0.05, 0.15)
"""A simulated trial sleeps this long (uniform, seconds)."""
VICTIM_TRIALS_FIRST = 2
"""The victim is killed inside its trial after this many finished ones."""
VICTIM_TRIAL_S = 1.0
"""How long the victim's later trials sleep, so that the kill lands mid-trial."""
KILL_AFTER_S = 0.3
"""The victim is killed this long after its last trial started (well inside it)."""
CONNECTIONS_PER_WORKER = 2
"""The PostgreSQL store's pool (`PostgresStore(pool_size=2)`): the trial loop and its heartbeat."""
READY_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 180.0


# ---------------------------------------------------------------- the worker process
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """What one worker process runs; sent to it as JSON on its command line."""

    store: str
    tag: str
    """The study's run tag: one value of the space's `run` knob, so every scenario has its own study."""
    budget: int
    lease_s: float
    search: str
    log: str
    """This worker's JSON-lines trial log."""
    go: str
    """A file the parent creates once every worker is ready: the trials start together."""
    name: str | None = None
    """The worker's name in the study (None: `host:pid`)."""
    seed: int = 0
    """The search's seed (`TuneOptions.seed`): 0 in every worker (the default), or the worker's index."""
    trial_s: tuple[float, float] = TRIAL_S
    victim: bool = False
    """Trials after the first `VICTIM_TRIALS_FIRST` sleep `VICTIM_TRIAL_S` (the parent kills it in one)."""


def make_space(tag: str) -> Any:
    """288 configs (6 x 8 x 3 x 2) and a one-valued tag knob that keeps each scenario's study apart."""
    from autoscout_plugin.space import Bool, Categorical, Int, Space

    return Space([
        Int(name="micro_batch_size", choices=(1, 2, 4, 8, 16, 32)),
        Int(name="num_threads", choices=tuple(range(1, 9))),
        Categorical(name="attention", choices=("math", "flash", "mem_efficient")),
        Bool("pin_memory"),
        Categorical(name="run", choices=(tag,)),
    ])


def synthetic_value(config: dict[str, Any]) -> float:
    """A made-up throughput with one best config (64 at micro_batch_size 8, 4 threads, flash, pinned)."""
    mbs = {1: 0.3, 2: 0.5, 4: 0.8, 8: 1.0, 16: 0.9, 32: 0.6}[config["micro_batch_size"]]
    threads = 1.0 - abs(config["num_threads"] - 4) / 8
    attention = {"math": 0.7, "flash": 1.0, "mem_efficient": 0.85}[config["attention"]]
    return round(64.0 * mbs * threads * attention * (1.0 if config["pin_memory"] else 0.95), 4)


def run_worker(spec: WorkerSpec) -> int:
    """One worker: build the Tuner, wait for the go file, tune, print the outcome as one JSON line."""
    from autoscout_plugin.profiling import TrialOutcome
    from autoscout_plugin.store.fingerprint import canonical_json
    from autoscout_plugin.tuner import TuneOptions, Tuner

    rng = random.Random(f"{spec.tag}:{os.getpid()}")
    finished = 0
    with open(spec.log, "a", encoding="utf-8", buffering=1) as log:
        def event(kind: str, key: str | None = None, **extra: Any) -> None:
            log.write(json.dumps({"event": kind, "key": key, "t": time.time(), "worker": tuner.worker,
                                  "pid": os.getpid(), **extra}) + "\n")
            log.flush()

        def profile(config: dict[str, Any], fidelity: Any) -> TrialOutcome:
            nonlocal finished
            key = canonical_json(config)
            sleep_s = VICTIM_TRIAL_S if spec.victim and finished >= VICTIM_TRIALS_FIRST else rng.uniform(*spec.trial_s)
            event("start", key)  # the marker the parent waits for before a kill
            time.sleep(sleep_s)
            event("end", key)
            finished += 1
            return TrialOutcome(value=synthetic_value(config), cost_s=sleep_s)

        options = TuneOptions(store=spec.store, worker=spec.name, lease_s=spec.lease_s, max_trials=spec.budget,
                              confirm_top=0, patience=None, search=spec.search, seed=spec.seed)
        tuner = Tuner(make_space(spec.tag), profile, options)
        event("ready")
        while not os.path.exists(spec.go):
            time.sleep(0.01)
        result = tuner.run()
        event("exit", stop_reason=result.stop_reason)
    print(json.dumps({"worker": tuner.worker, "trials_run": finished, "stop_reason": result.stop_reason}))
    return 0


# ---------------------------------------------------------------- the parent
@dataclass
class Scenario:
    """One scenario's figures and checked properties (the JSON output)."""

    name: str
    store: str
    workers: int
    budget: int
    lease_s: float
    search: str
    seeds: str
    """The workers' search seeds: `0 each` (the default of `TuneOptions`) or `0..N-1`."""
    trials: int = 0
    numbers_ok: bool = False
    overlapping: int = 0
    """Configs that ran on two workers at overlapping times (from the workers' logs)."""
    measured_twice: int = 0
    """Configs with more than one trial in the store."""
    lost: int = 0
    """Trials a worker logged as finished that are not in the store."""
    phantom: int = 0
    """Stored trials no worker logged as finished."""
    wall_s: float = 0.0
    """From the go signal to the last worker's exit."""
    trials_per_s: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    tracebacks: int = 0
    """Workers whose stderr holds a Traceback."""
    peak_connections: int | None = None
    stop_reasons: dict[str, int] = field(default_factory=dict)
    kill: dict[str, Any] | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    out: Path
    err: Path


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # a line being written is skipped


def _spawn(spec: WorkerSpec, folder: Path, index: int) -> _Worker:
    out, err = folder / f"worker{index}.out", folder / f"worker{index}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.shared_store", "--worker", json.dumps(asdict(spec))],
                                cwd=REPO, stdout=stdout, stderr=stderr)
    return _Worker(proc, Path(spec.log), out, err)


def _stop_all(workers: list[_Worker]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


@contextlib.contextmanager
def _connection_sampler(url: str | None) -> Iterator[list[int]]:
    """Counts the store's connections (`application_name = 'autoscout'`) every 50 ms while the block runs."""
    counts: list[int] = []
    if url is None:
        yield counts
        return
    import psycopg

    stop = threading.Event()
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")

    def sample() -> None:
        with psycopg.connect(conninfo, application_name="autoscout-benchmark", autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                   " AND application_name = 'autoscout'").fetchone()
                counts.append(int(row[0]) if row else 0)
                stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()


def _claim_row(store: str, key: str) -> dict[str, Any]:
    """The claims table's row of config `key` in the store's only study with it (the database's times)."""
    import sqlalchemy as sa

    from autoscout_plugin.store import open_store

    db = open_store(store)
    try:
        with db._engine.connect() as conn:  # the claims table as it is: no API hides it
            row = conn.execute(sa.text("SELECT state, worker, attempt, lease_s, claimed_s, heartbeat_s FROM claims"
                                       " WHERE config_key = :k"), {"k": _config_hash(key)}).mappings().first()
    finally:
        db.close()
    return dict(row) if row else {}


def _config_hash(key: str) -> str:
    """The claims table's key of a config (`sql._config_key`: sha256 of its canonical JSON)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _kill_mid_trial(victim: _Worker, store: str, deadline: float) -> dict[str, Any]:
    """SIGKILL the victim inside a trial after it finished `VICTIM_TRIALS_FIRST`, and reap it at once (as a
    shell would: a zombie still answers `kill(pid, 0)`, so it would not look gone). Returns what was killed,
    with its claim as the database holds it at the kill (its last heartbeat, in the database's time)."""
    while time.time() < deadline and victim.proc.poll() is None:
        events = [e for e in _events(victim.log) if e["event"] in ("start", "end")]
        ended = sum(1 for e in events if e["event"] == "end")
        if events and events[-1]["event"] == "start" and ended >= VICTIM_TRIALS_FIRST:
            started = events[-1]
            before = _claim_row(store, started["key"])
            time.sleep(max(0.0, started["t"] + KILL_AFTER_S - time.time()))
            victim.proc.send_signal(signal.SIGKILL)
            killed_t = time.time()
            victim.proc.wait()
            after = _claim_row(store, started["key"])  # a host-local victim's claim may be expired or taken over
            mid_trial = not any(e["event"] == "end" and e["key"] == started["key"] for e in _events(victim.log))
            return {"key": started["key"], "worker": started["worker"], "trial_started_t": started["t"],
                    "killed_t": killed_t, "mid_trial": mid_trial,
                    "claim": after if after.get("worker") == started["worker"] and after.get("heartbeat_s") else before}
        time.sleep(0.01)
    return {}


def run_scenario(name: str, store: str, args: argparse.Namespace, folder: Path, *, distinct_seeds: bool = False,
                 kill: bool = False, victim_name: str | None = None, conn_url: str | None = None) -> Scenario:
    """Start the workers, let them tune one study together (killing one when asked), and check the result."""
    folder.mkdir(parents=True)
    tag = f"{folder.name}-{uuid.uuid4().hex[:8]}"
    go = folder / "go"
    sc = Scenario(name=name, store="postgresql" if conn_url else "sqlite", workers=args.workers, budget=args.trials,
                  lease_s=args.lease, search=args.search, seeds="0..N-1" if distinct_seeds else "0 each")
    workers = []
    for i in range(args.workers):
        victim = kill and i == 0
        spec = WorkerSpec(store=store, tag=tag, budget=args.trials, lease_s=args.lease, search=args.search,
                          log=str(folder / f"worker{i}.jsonl"), go=str(go), seed=i if distinct_seeds else 0,
                          trial_s=args.trial_s, victim=victim, name=victim_name if victim else None)
        workers.append(_spawn(spec, folder, i))
    killed: dict[str, Any] | None = None
    try:
        deadline = time.time() + READY_TIMEOUT_S
        while not all(any(e["event"] == "ready" for e in _events(w.log)) for w in workers):
            if time.time() > deadline or any(w.proc.poll() is not None for w in workers):
                sc.problems.append("a worker exited or hung before it was ready")
                break
            time.sleep(0.05)
        with _connection_sampler(conn_url) as connections:
            go.touch()
            began = time.time()
            if kill:
                killed = _kill_mid_trial(workers[0], store, began + RUN_TIMEOUT_S)
            for w in workers:
                try:
                    w.proc.wait(timeout=max(1.0, began + RUN_TIMEOUT_S - time.time()))
                except subprocess.TimeoutExpired:
                    sc.problems.append(f"worker pid {w.proc.pid} still running after {RUN_TIMEOUT_S:.0f} s: killed")
                    break
            ended = time.time()
    finally:
        _stop_all(workers)
    sc.wall_s = round(ended - began, 2)
    sc.peak_connections = max(connections) if conn_url and connections else None
    sc.exit_codes = [int(w.proc.returncode) for w in workers]
    sc.tracebacks = sum(1 for w in workers if "Traceback" in w.err.read_text(errors="replace"))
    for w in workers:
        lines = w.out.read_text(errors="replace").strip().splitlines()
        if lines and lines[-1].startswith("{"):
            reason = json.loads(lines[-1])["stop_reason"]
            sc.stop_reasons[reason] = sc.stop_reasons.get(reason, 0) + 1
    _check(sc, store, tag, [_events(w.log) for w in workers], killed)
    return sc


def _stored(store: str, tag: str) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The study's trials, and its claims by config key (read after every worker stopped)."""
    import sqlalchemy as sa

    from autoscout_plugin.store import fingerprint, open_store

    space = make_space(tag).to_json()
    db = open_store(store)
    try:
        study = db.open_study(fingerprint({}, {}, space), workload={}, hardware={}, space=space)
        trials = db.trials(study)
        with db._engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT config_key, state, worker, attempt, claimed_s FROM claims"
                                        " WHERE study_id = :s"), {"s": study}).mappings().all()
    finally:
        db.close()
    return trials, {row["config_key"]: dict(row) for row in rows}


def _check(sc: Scenario, store: str, tag: str, logs: list[list[dict[str, Any]]], killed: dict[str, Any] | None) -> None:
    from autoscout_plugin.store.fingerprint import canonical_json

    trials, claims = _stored(store, tag)
    sc.trials = len(trials)
    sc.numbers_ok = [t.number for t in trials] == list(range(len(trials)))
    sc.trials_per_s = round(len(trials) / sc.wall_s, 1) if sc.wall_s else 0.0
    stored = Counter(canonical_json(t.config) for t in trials)
    sc.measured_twice = sum(1 for n in stored.values() if n > 1)
    # Each trial as a time interval on a worker; the killed one ends at the kill.
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    finished: Counter[str] = Counter()
    for events in logs:
        open_at: dict[str, dict[str, Any]] = {}
        for e in events:
            if e["event"] == "start":
                open_at[e["key"]] = e
            elif e["event"] == "end":
                start = open_at.pop(e["key"])
                spans[e["key"]].append((start["t"], e["t"], e["worker"]))
                finished[e["key"]] += 1
        for key, start in open_at.items():
            spans[key].append((start["t"], killed["killed_t"] if killed else time.time(), start["worker"]))
    sc.overlapping = sum(1 for runs in spans.values() if _overlap(runs))
    sc.lost = sum((finished - stored).values())
    sc.phantom = sum((stored - finished).values())
    survivors = sc.exit_codes[1:] if killed is not None else sc.exit_codes
    sc.checks = {
        "budget stored": sc.trials == sc.budget,
        "numbers 0..N-1": sc.numbers_ok,
        "no overlapping runs": sc.overlapping == 0,
        "nothing lost": sc.lost == 0 and sc.phantom == 0,
        "exit codes 0": all(code == 0 for code in survivors),
        "no tracebacks": sc.tracebacks == 0,
        "no problems": not sc.problems,
    }
    if sc.peak_connections is not None:
        sc.checks["connections <= 2/worker"] = sc.peak_connections <= CONNECTIONS_PER_WORKER * sc.workers
    if killed is not None:
        sc.kill = _check_kill(sc, killed, spans, claims, stored)


def _overlap(runs: list[tuple[float, float, str]]) -> bool:
    """Whether two runs of one config on different workers overlap in time."""
    runs = sorted(runs)
    return any(b[0] < a[1] and a[2] != b[2] for i, a in enumerate(runs) for b in runs[i + 1:])


def _check_kill(sc: Scenario, killed: dict[str, Any], spans: dict[str, list[tuple[float, float, str]]],
                claims: dict[str, dict[str, Any]], stored: Counter[str]) -> dict[str, Any]:
    sc.checks["kill landed mid-trial"] = bool(killed) and killed["mid_trial"] and sc.exit_codes[0] == -signal.SIGKILL
    if not killed:
        return {}
    key = killed["key"]
    reruns = [run for run in spans.get(key, []) if run[2] != killed["worker"]]
    claim = claims.get(_config_hash(key), {})
    remote = not killed["worker"].rpartition(":")[2].isdigit()
    sc.checks["rerun once, attempt 2"] = (len(reruns) == 1 and stored[key] == 1 and claim.get("attempt") == 2
                                          and claim.get("state") == "done")
    pickup_s = round(reruns[0][0] - killed["killed_t"], 2) if reruns else None
    # The database's times: the victim's last heartbeat (read right after the kill) and the takeover.
    beat = killed["claim"].get("heartbeat_s")
    after_beat_s = round(claim["claimed_s"] - beat, 2) if reruns and beat and claim.get("attempt") == 2 else None
    if remote:  # only the lease frees it: never before the claim is stale, and soon after
        sc.checks["picked up at the lease"] = after_beat_s is not None and \
            sc.lease_s <= after_beat_s <= sc.lease_s + 1.5
    else:  # this host sees that the process is gone: well before the lease
        sc.checks["picked up at once"] = pickup_s is not None and pickup_s < sc.lease_s / 2
    if not reruns:
        sc.problems.append(
            f"the killed config never ran again; the survivors stopped with {sc.stop_reasons} while the dead claim"
            f" still counted in the budget (its lease of {sc.lease_s:g} s had not run out)")
    return {"victim": killed["worker"], "config": json.loads(key), "reruns": len(reruns),
            "rerun_by": reruns[0][2] if reruns else None, "attempt": claim.get("attempt"),
            "claim_state": claim.get("state"), "pickup_after_kill_s": pickup_s,
            "takeover_after_last_heartbeat_s": after_beat_s, "detected_by": "lease" if remote else "process gone"}


# ---------------------------------------------------------------- report
def print_table(scenarios: list[Scenario]) -> None:
    print("| scenario | store | workers | seeds | trials / budget | numbers 0..N-1 | overlapping | measured twice"
          " | lost | wall s | trials/s | exit codes | tracebacks | peak connections |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sc in scenarios:
        conns = "-" if sc.peak_connections is None else f"{sc.peak_connections} (<= {2 * sc.workers})"
        codes = ",".join(str(c) for c in sorted(set(sc.exit_codes)))
        print(f"| {sc.name} | {sc.store} | {sc.workers} | {sc.seeds} | {sc.trials} / {sc.budget} |"
              f" {'yes' if sc.numbers_ok else 'NO'} | {sc.overlapping} | {sc.measured_twice} | {sc.lost + sc.phantom} |"
              f" {sc.wall_s:.2f} | {sc.trials_per_s:.1f} | {codes} | {sc.tracebacks} | {conns} |")
    for sc in scenarios:
        if sc.kill:
            k = sc.kill
            print(f"{sc.name}: killed {k['victim']} mid-trial; its config ran again {k['reruns']}x (attempt "
                  f"{k['attempt']}, by {k['rerun_by']}), {k['pickup_after_kill_s']} s after the kill, taken over "
                  f"{k['takeover_after_last_heartbeat_s']} s after its last heartbeat (lease {sc.lease_s:g} s;"
                  f" detected by: {k['detected_by']})")
    for sc in scenarios:
        print(f"{sc.name}: stop reasons {sc.stop_reasons}")
        for name, ok in sc.checks.items():
            if not ok:
                print(f"FAIL {sc.name}: {name}")
        for problem in sc.problems:
            print(f"     {sc.name}: {problem}")


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.pg import PostgresServer

    with PostgresServer() as server:
        yield server.create_database("autoscout_shared_store")


def _seconds_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in seconds, got {text!r}") from None
    if not 0 < low <= high <= 60:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH <= 60, got {text!r}")
    return low, high


SCENARIOS = ("plain", "distinct", "kill", "sqlite")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a postgresql:// URL of a database to use (default: a throwaway server)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=200, help="the study's budget, shared by the workers")
    parser.add_argument("--lease", type=float, default=3.0, help="lease_s of every worker")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"some of {','.join(SCENARIOS)}")
    parser.add_argument("--search", default="random")
    parser.add_argument("--trial-s", type=_seconds_range, default=TRIAL_S, metavar="LOW,HIGH",
                        help="a simulated trial sleeps between these (default 0.05,0.15)")
    parser.add_argument("--json", help="write every scenario to this JSON file")
    parser.add_argument("--logs", help="keep the workers' logs, stdout and stderr in this folder (default: removed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a worker process's spec (JSON)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        return run_worker(WorkerSpec(**{**spec, "trial_s": tuple(spec["trial_s"])}))
    wanted = set(args.only.split(","))
    if unknown := wanted - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.workers < 2 or args.trials < args.workers:
        parser.error("need at least 2 workers and at least one trial per worker")
    import autoscout_plugin.store  # noqa: F401 - imported before the clock matters (a kill lands in time)

    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="autoscout-shared-") as tmp:
        work = Path(args.logs or tmp)
        if wanted - {"sqlite"}:
            with _postgres(args.url) as url:
                if "plain" in wanted:
                    scenarios.append(run_scenario("plain", url, args, work / "plain", conn_url=url))
                if "distinct" in wanted:
                    scenarios.append(run_scenario("plain, seeds 0..N-1", url, args, work / "distinct",
                                                  distinct_seeds=True, conn_url=url))
                if "kill" in wanted:
                    scenarios.append(run_scenario("kill (process gone)", url, args, work / "kill", kill=True,
                                                  conn_url=url))
                    scenarios.append(run_scenario("kill (lease)", url, args, work / "lease", kill=True,
                                                  victim_name="victim-remote", conn_url=url))
        if "sqlite" in wanted:
            scenarios.append(run_scenario("sqlite", str(work / "trials.sqlite"), args, work / "sqlite"))
    print_table(scenarios)
    if args.json:
        Path(args.json).write_text(json.dumps([{**asdict(s), "ok": s.ok} for s in scenarios], indent=1),
                                   encoding="utf-8")
    return 0 if scenarios and all(s.ok for s in scenarios) else 1


if __name__ == "__main__":
    raise SystemExit(main())
