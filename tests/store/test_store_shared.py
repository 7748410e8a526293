"""The trial store shared by many processes and machines: real processes, each with its own store, on one
PostgreSQL database (and, where it is cheap, one SQLite file); what a team's store meets that one process
never does: numbering races, claim races, a worker killed or frozen while it holds a config, a database that
is not ours, wrong passwords and unreachable servers, malformed URLs, and the `autoscout launch` command line
with a server URL. The single-process contract is `test_store_contract.py`'s (not repeated here)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin import validate
from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.outputs import usable_store
from autoscout_plugin.store import (
    SCHEMA_VERSION,
    PostgresStore,
    SQLiteStore,
    StoreError,
    open_store,
)
from autoscout_plugin.trial import Trial
from autoscout_plugin.tuner import TuneOptions
from tests.pg import PASSWORD, PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[2]
FP = "shared-fingerprint"
SPEC: dict[str, dict[str, Any]] = {"workload": {}, "hardware": {}, "space": {}}
STEP_S = 60.0
"""The longest any one step of a worker process may take (start, a batch of writes) on a loaded machine."""

# One worker process: its own store on `spec`, driven by lines on stdin, answering JSON lines on stdout.
# Every worker waits for "go" after it started, so that they all race from the same moment.
CHILD = r'''
import json, sys, time
from autoscout_plugin.store import open_store
from autoscout_plugin.store.lease import Heartbeat
from autoscout_plugin.trial import Trial

def say(**answer):
    print(json.dumps(answer), flush=True)

def wait():
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("the test went away")
    return line.strip()

spec, task, name, arg = sys.argv[1:5]
say(state="ready")
wait()
with open_store(spec) as store:
    sid = store.open_study("shared-fingerprint", workload={}, hardware={}, space={})
    if task == "add":
        say(numbers=[store.add_trial(sid, Trial(config={"worker": name, "i": i}, value=float(i)))
                     for i in range(int(arg))])
    elif task == "claim":  # the same configs, in the same order, as every other worker: head-to-head races
        say(claimed=[c for c in json.loads(arg) if store.claim(sid, c, worker=name, lease_s=600) is not None])
    elif task == "budget":  # configs of its own, under a budget that every worker shares
        configs = [{"worker": name, "i": i} for i in range(5)]
        say(claimed=[c for c in configs if store.claim(sid, c, worker=name, lease_s=600, limit=int(arg))])
    elif task == "hold":  # hold one config with heartbeats until told to finish, then record its result
        claim = store.claim(sid, {"config": "held"}, worker=name, lease_s=float(arg))
        with Heartbeat(store, claim) as beat:
            say(claimed=claim is not None, attempt=claim.attempt if claim else None)
            wait()
            deadline = time.monotonic() + 30  # a lost claim is noticed at the next beat
            while not beat.lost and time.monotonic() < deadline:
                time.sleep(0.02)
        number = store.add_trial(sid, Trial(config=claim.config, value=1.0), claim=claim)
        say(number=number, lost=beat.lost)
'''


class Worker:
    """A process of its own (a stand-in for a worker on another machine) running `CHILD`'s `task`."""

    def __init__(self, spec: str, task: str, name: str, arg: object, stderr: Path) -> None:
        self.name = name
        self.stderr_path = stderr
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with stderr.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", CHILD, spec, task, name, str(arg)], cwd=ROOT, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read(self, timeout: float = STEP_S) -> dict[str, Any]:
        """The worker's next answer; fails the test (with the worker's stderr) if none comes."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"worker {self.name} gave no answer in {timeout:g} s:\n{self.stderr()}")
        if line is None:
            pytest.fail(f"worker {self.name} exited ({self.proc.wait(10)}) without answering:\n{self.stderr()}")
        return json.loads(line)

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        """Wait for a clean exit."""
        code = self.proc.wait(timeout=STEP_S)
        assert code == 0, f"worker {self.name} exited with {code}:\n{self.stderr()}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """`spawn(spec, task, name, arg)` starts a `Worker`; any still running at the end is killed."""
    started: list[Worker] = []

    def start(spec: str, task: str, name: str, arg: object = "") -> Worker:
        worker = Worker(spec, task, name, arg, tmp_path / f"{name}.err")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            os.kill(worker.proc.pid, signal.SIGCONT)  # a stopped one cannot die until it runs again
            worker.proc.kill()
            worker.proc.wait(timeout=30)


def race(workers: list[Worker]) -> list[dict[str, Any]]:
    """Let every worker go at once (all started, all ready); their answers, in order."""
    for worker in workers:
        assert worker.read() == {"state": "ready"}
    for worker in workers:
        worker.send()
    answers = [worker.read() for worker in workers]
    for worker in workers:
        worker.finish()
    return answers


@pytest.fixture(params=["postgresql", "sqlite"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store every worker opens: a fresh PostgreSQL database, or an SQLite file (processes of one machine)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "trials.sqlite")


# ---------------------------------------------------------------- numbering and claims across processes
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_six_processes_adding_at_once_number_trials_0_to_89_without_gaps_or_duplicates(shared: str, spawn: Any
                                                                                       ) -> None:
    # The workers open the (fresh) store, create the one study and add their trials all at once: the schema,
    # the study and every trial number are raced for.
    workers = [spawn(shared, "add", f"w{k}", 15) for k in range(6)]
    answers = race(workers)
    numbers = sorted(n for answer in answers for n in answer["numbers"])
    assert numbers == list(range(90))
    with closing(open_store(shared)) as store:
        sid = store.open_study(FP, **SPEC)
        trials = store.trials(sid)
        assert [t.number for t in trials] == list(range(90))
        # every trial stored once, under the number its worker was told
        told = {(w.name, i): n for w, answer in zip(workers, answers) for i, n in enumerate(answer["numbers"])}
        assert {(t.config["worker"], t.config["i"]): t.number for t in trials} == told
        assert len(store.studies()) == 1  # six processes creating the same study made one


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_six_processes_claiming_the_same_ten_configs_get_each_exactly_once(shared: str, spawn: Any) -> None:
    configs = [{"micro_batch_size": 2 ** k} for k in range(10)]
    with closing(open_store(shared)) as store:
        sid = store.open_study(FP, **SPEC)
    workers = [spawn(shared, "claim", f"w{k}", json.dumps(configs)) for k in range(6)]
    answers = race(workers)
    claimed = [json.dumps(c, sort_keys=True) for answer in answers for c in answer["claimed"]]
    assert sorted(claimed) == sorted(json.dumps(c, sort_keys=True) for c in configs), answers
    with closing(open_store(shared)) as store:
        holders = {json.dumps(c.config, sort_keys=True): c.worker for c in store.running(sid)}
    told = {json.dumps(c, sort_keys=True): w.name for w, answer in zip(workers, answers) for c in answer["claimed"]}
    assert holders == told


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_trial_budget_shared_by_six_processes_is_kept_at_the_database(shared: str, spawn: Any) -> None:
    with closing(open_store(shared)) as store:
        sid = store.open_study(FP, **SPEC)
        store.add_trial(sid, Trial(config={"done": 1}, value=1.0))  # one trial of the budget already spent
    answers = race([spawn(shared, "budget", f"w{k}", 7) for k in range(6)])
    assert sum(len(answer["claimed"]) for answer in answers) == 6  # 7 - 1 done, whatever the interleaving
    with closing(open_store(shared)) as store:
        assert len(store.running(sid)) == 6


# ---------------------------------------------------------------- a worker killed or frozen while it holds a config
LEASE_S = 3.0
"""Long enough that a loaded machine (CI's two cores, a slow disk under SQLite's fsync) never delays a beat
past it: three beats per lease, so a claim survives two beats that each came up to 1 s late."""


def _hold(spawn: Any, spec: str, name: str = "holder") -> Worker:
    worker = spawn(spec, "hold", name, LEASE_S)
    assert worker.read() == {"state": "ready"}
    worker.send()
    assert worker.read() == {"claimed": True, "attempt": 1}
    return worker


def _reclaim_within(store: Any, sid: str, limit_s: float) -> tuple[Any, float]:
    """Poll `reclaim_stale` until it hands a claim over: (the claim, seconds it took)."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        claim = store.reclaim_stale(sid, worker="rescuer", lease_s=600)
        if claim is not None:
            return claim, time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"the dead worker's claim was not offered again within {limit_s:g} s")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_sigkilled_holder_loses_its_config_to_another_process_after_its_lease(
        shared: str, spawn: Any, record_property: Any) -> None:
    with closing(open_store(shared)) as store:
        sid = store.open_study(FP, **SPEC)
        holder = _hold(spawn, shared)
        time.sleep(2.5 * LEASE_S)  # well past the lease: only the holder's heartbeats keep its claim
        assert store.reclaim_stale(sid, worker="rescuer", lease_s=600) is None
        assert [c.worker for c in store.running(sid)] == ["holder"]
        holder.proc.kill()
        holder.proc.wait(timeout=30)
        claim, took_s = _reclaim_within(store, sid, 3 * LEASE_S)
        record_property("reclaimed_after_kill_s", round(took_s, 3))
        print(f"reclaimed {took_s:.2f} s after SIGKILL (lease {LEASE_S:g} s)")
        assert claim.attempt == 2 and claim.config == {"config": "held"} and claim.worker == "rescuer"
        assert store.add_trial(sid, Trial(config=claim.config, value=2.0), claim=claim) == 0
        assert store.running(sid) == []


def _busy_backends(server: PostgresServer, database: str) -> int:
    """AutoScout connections to `database` inside a transaction (or a statement) right now."""
    sql = (f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND application_name = 'autoscout'"
           " AND state <> 'idle'")
    return int(server.psql("postgres", sql).strip())


def _freeze_between_transactions(worker: Worker, server: PostgresServer, database: str) -> None:
    """SIGSTOP the worker at a moment it holds no transaction open (a process frozen inside one would hold
    its row lock until the server's idle timeout: a different test)."""
    for _ in range(50):
        os.kill(worker.proc.pid, signal.SIGSTOP)
        if _busy_backends(server, database) == 0:
            return
        os.kill(worker.proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    pytest.fail("the worker was inside a transaction at every try")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_frozen_holder_that_wakes_after_its_claim_was_taken_over_records_its_result_late(
        postgres_server: PostgresServer, postgres_url: str, spawn: Any, record_property: Any) -> None:
    # A machine paused (a VM migrated, a laptop lid closed) past its lease: its config goes to another
    # worker; when it wakes, its result is still recorded, nothing raises, and the new holder keeps its claim.
    with closing(open_store(postgres_url)) as store:
        sid = store.open_study(FP, **SPEC)
        holder = _hold(spawn, postgres_url)
        _freeze_between_transactions(holder, postgres_server, postgres_url.rsplit("/", 1)[1])
        claim, took_s = _reclaim_within(store, sid, 3 * LEASE_S)
        record_property("reclaimed_after_sigstop_s", round(took_s, 3))
        assert claim.attempt == 2 and claim.worker == "rescuer"
        os.kill(holder.proc.pid, signal.SIGCONT)
        holder.send("finish")
        assert holder.read() == {"number": 0, "lost": True}  # its heartbeat saw the loss; its add_trial did not raise
        holder.finish()
        assert [c.worker for c in store.running(sid)] == ["rescuer"]  # the late result left the new claim alone
        assert store.heartbeat(claim)
        assert store.add_trial(sid, Trial(config=claim.config, value=2.0), claim=claim) == 1
        assert [(t.number, t.value) for t in store.trials(sid)] == [(0, 1.0), (1, 2.0)]
        assert store.running(sid) == []


@pytest.mark.timeout(60)
def test_a_claim_that_missed_its_lease_still_records_its_trial(shared: str) -> None:
    # The same late result within one process: two stores (two connections), no heartbeats at all.
    with open_store(shared) as slow, open_store(shared) as other:
        sid = slow.open_study(FP, **SPEC)
        late = slow.claim(sid, {"config": "slow"}, worker="slow", lease_s=0.2)
        assert late is not None
        time.sleep(0.5)
        taken = other.reclaim_stale(sid, worker="rescuer", lease_s=600)
        assert taken is not None and taken.attempt == 2
        assert slow.heartbeat(late) is False
        assert slow.add_trial(sid, Trial(config=late.config, value=1.0), claim=late) == 0
        assert [c.worker for c in other.running(sid)] == ["rescuer"]
        slow.release(late)  # releasing a claim already taken over does not free the new holder's
        assert [c.worker for c in other.running(sid)] == ["rescuer"]


# ---------------------------------------------------------------- a database that is not (or no longer) ours
def _layout(server: PostgresServer, database: str) -> str:
    """Every table, column and row count of the database's public schema, as text to compare."""
    columns = server.psql(database, "SELECT table_name, column_name, data_type FROM information_schema.columns"
                                    " WHERE table_schema = 'public' ORDER BY 1, 2")
    tables = server.psql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").split()
    counts = [server.psql(database, f'SELECT {t!r}, count(*) FROM "{t}"') for t in tables]
    return columns + "".join(counts)


def test_a_store_written_by_a_newer_autoscout_is_refused_and_left_as_it_is(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    with closing(PostgresStore(postgres_url)) as store:
        store.add_trial(store.open_study(FP, **SPEC), Trial(config={"a": 1}, value=1.0))
    postgres_server.psql(database, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    before = _layout(postgres_server, database)
    with pytest.raises(StoreError, match="newer AutoScout") as refused:
        PostgresStore(postgres_url)
    assert "upgrade" in str(refused.value)
    with pytest.warns(RuntimeWarning, match="newer AutoScout"):
        fallback = usable_store(postgres_url)
    assert Path(fallback).name == "trials.sqlite" and Path(fallback).parent.is_dir()
    assert _layout(postgres_server, database) == before
    assert postgres_server.psql(database, "SELECT version FROM schema_version").strip() == str(SCHEMA_VERSION + 1)


@pytest.mark.parametrize("theirs", [
    "CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users VALUES (1, 'ann'), (2, 'bob')",
    # tables with our names, of another program
    "CREATE TABLE studies (id text PRIMARY KEY, title text); CREATE TABLE trials (id int);"
    " INSERT INTO trials VALUES (7)",
    # a migration tool's own version table (Flyway's before 5.0 was named exactly so)
    "CREATE TABLE schema_version (installed_rank int, version text, success bool);"
    " INSERT INTO schema_version VALUES (1, '1.0', true)",
], ids=["users", "our-table-names", "another-schema_version"])
def test_a_database_with_someone_elses_tables_is_refused_and_left_untouched(
        postgres_server: PostgresServer, postgres_url: str, theirs: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    postgres_server.psql(database, theirs)
    before = _layout(postgres_server, database)
    with pytest.raises(StoreError, match="not an AutoScout trial store") as refused:
        PostgresStore(postgres_url)
    assert "CREATE DATABASE" in str(refused.value)  # what to do instead
    assert _layout(postgres_server, database) == before


# ---------------------------------------------------------------- passwords and servers that cannot be reached
WRONG_PASSWORDS = ["Wr0ng-pass-77", "Wr0ng/pa+ss=77"]
"""An ordinary one, and a base64-looking one: generated passwords hold `/`, `+` and `=`."""


@pytest.fixture
def password_db(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of its own, for URLs with a password (`postgres_server.password_url(name)`)."""
    name = f"autoscout_pw_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    yield name
    postgres_server.drop_database(name)


def _no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"the password {secret!r} leaked: {text}"


@pytest.mark.timeout(60)
def test_a_wrong_password_says_the_login_was_refused(postgres_server: PostgresServer, password_db: str) -> None:
    with pytest.raises(StoreError) as refused:
        PostgresStore(postgres_server.password_url(password_db, password=WRONG_PASSWORDS[0]), timeout_s=5)
    message = str(refused.value)
    assert "refused the login" in message, message
    assert re.search(r"check the user and (the )?password", message), message  # not "is the server running?"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wrong", WRONG_PASSWORDS)
def test_a_wrong_password_never_shows_in_the_error_or_the_fallback_warning(
        postgres_server: PostgresServer, password_db: str, wrong: str) -> None:
    bad_url = postgres_server.password_url(password_db, password=wrong)
    with pytest.raises(StoreError, match="password authentication failed") as refused:
        PostgresStore(bad_url, timeout_s=5)
    _no_secret("".join(traceback.format_exception(refused.value)), wrong, PASSWORD)  # the whole chain, as logged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = usable_store(bad_url)
    assert caught, "falling back to a local store must be said"
    for warning in caught:
        _no_secret(str(warning.message), wrong, PASSWORD)
    assert Path(fallback).name == "trials.sqlite" and Path(fallback).parent.name.startswith("autoscout-fallback-")


def test_the_right_password_opens_the_store_and_never_shows_in_it(postgres_server: PostgresServer,
                                                                   password_db: str) -> None:
    url = postgres_server.password_url(password_db)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert usable_store(url) == url
    assert not caught
    with closing(open_store(url)) as store:
        assert isinstance(store, PostgresStore)
        store.add_trial(store.open_study(FP, **SPEC), Trial(config={"a": 1}, value=1.0))
        for shown in (repr(store), str(store.where), store.url):
            _no_secret(shown, PASSWORD)
            assert "***" in shown  # masked, not dropped: the user sees a password was given


@pytest.mark.timeout(60)
def test_a_missing_database_says_to_create_it(postgres_server: PostgresServer) -> None:
    with pytest.raises(StoreError, match="does not exist") as refused:
        PostgresStore(postgres_server.url(f"nonesuch_{uuid.uuid4().hex[:8]}"), timeout_s=5)
    assert "CREATE DATABASE" in str(refused.value) or "createdb" in str(refused.value)


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_a_clear_error_in_time_and_the_run_falls_back_to_a_local_store() -> None:
    url = f"postgresql://tuner:{PASSWORD}@127.0.0.1:{free_port()}/autoscout"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect") as refused:
        PostgresStore(url, timeout_s=2)
    assert time.monotonic() - start < 10
    _no_secret("".join(traceback.format_exception(refused.value)), PASSWORD)
    with pytest.warns(RuntimeWarning, match="cannot use the trial store") as caught:
        fallback = usable_store(url)
    for warning in caught:
        _no_secret(str(warning.message), PASSWORD)
        assert "postgresql://tuner:***@127.0.0.1" in str(warning.message)
    with closing(SQLiteStore(fallback)) as store:  # a usable local store
        store.open_study(FP, **SPEC)


# ---------------------------------------------------------------- malformed URLs: refused before anything runs
MALFORMED = {
    "no-database": ("postgresql://tuner:{pw}@127.0.0.1:5432", "names no database"),
    "no-database-slash": ("postgresql://tuner:{pw}@127.0.0.1:5432/", "names no database"),
    "no-host": ("postgresql://tuner:{pw}@/autoscout", "names no host"),
    "mysql": ("mysql://tuner:{pw}@db.example/autoscout", "postgresql://"),
    "other-driver": ("postgresql+asyncpg://tuner:{pw}@db.example/autoscout", "psycopg"),
    "bad-port": ("postgresql://tuner:{pw}@db.example:fivefour/autoscout", "postgresql://user@host:port/database"),
}
SECRET = "Hunter2-secret"
OPTIONS = {
    "validate.store": lambda url: validate.store("store", url),
    "AutoScoutOptions": lambda url: AutoScoutOptions(store=url),
    "TuneOptions": lambda url: TuneOptions(store=url),
}


@pytest.mark.parametrize("entry", OPTIONS)
@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_store_url_is_a_clear_value_error_without_the_password(entry: str, case: str) -> None:
    template, says = MALFORMED[case]
    with pytest.raises(ValueError, match="store") as refused:
        OPTIONS[entry](template.format(pw=SECRET))
    assert says in str(refused.value)
    _no_secret(str(refused.value), SECRET)


@pytest.mark.parametrize("entry", OPTIONS)
def test_a_malformed_url_with_a_base64_password_does_not_show_it(entry: str) -> None:
    # SQLAlchemy reads `Ab3/x+Yz=` as the password (it holds no @): it must be masked like any other.
    secret = "Ab3/x+Yz=Q9"
    with pytest.raises(ValueError, match="names no database") as refused:
        OPTIONS[entry](f"postgresql://tuner:{secret}@127.0.0.1:5432")
    _no_secret(str(refused.value), secret, "Ab3", "x+Yz")


# ---------------------------------------------------------------- `autoscout launch` with a server URL
SCRIPT = """
import sys
from pathlib import Path
import autoscout_plugin as autoscout

batch = autoscout.knob("micro_batch_size", 8)
for _ in range(4):
    autoscout.step()
mode = (autoscout.launch_spec() or {}).get("mode")
if mode != "trial":
    Path(sys.argv[1], "ran").write_text(str(mode))
"""
LAUNCH_S = 240


class Machine:
    """A working directory, HOME, cache and temp folder of their own (nothing shared with another Machine)."""

    def __init__(self, root: Path, cwd: Path | None = None) -> None:
        self.root = root
        self.cwd, self.home, self.tmp = cwd or root / "cwd", root / "home", root / "tmp"
        for folder in (self.cwd, self.home, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        (self.cwd / "train.py").write_text(textwrap.dedent(SCRIPT))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("AUTOSCOUT_STORE", "AUTOSCOUT_LAUNCH", "AUTOSCOUT_DECLARED") and not k.startswith("PG")}
        return {**env, "PYTHONPATH": str(ROOT), "HOME": str(self.home), "XDG_CACHE_HOME": str(self.home / ".cache"),
                "TMPDIR": str(self.tmp), "TORCHINDUCTOR_CACHE_DIR": str(self.root / "inductor"),
                "HF_HOME": str(self.root / "hf"), "OMP_NUM_THREADS": "1"}

    def launch(self, store: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-store", store,
                "--autoscout-trials", "2", "--autoscout-warmup", "1", "--autoscout-measure", "2",
                "--autoscout-confirm", "0", "--autoscout-include", "num_threads", "--autoscout-timeout", "120",
                *extra, "--num_processes", "1", "train.py", str(self.cwd)]
        return subprocess.run(argv, cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=LAUNCH_S,
                              check=False)

    def stray_files(self) -> list[str]:
        """Files named after a URL, or the old `.launch.json` sidecar, anywhere in this machine's folders."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if "postgres" in p.name or p.name.endswith(".launch.json") or ":" in p.name)


@pytest.mark.slow
@pytest.mark.timeout(LAUNCH_S + 60)
def test_launch_with_an_unreachable_server_goes_on_with_a_local_store_and_no_file_named_like_the_url(
        tmp_path: Path) -> None:
    machine = Machine(tmp_path / "machine")
    url = f"postgresql://u:Cli-Secret-91@127.0.0.1:{free_port()}/db"
    done = machine.launch(url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cannot use the trial store postgresql://u:***@127.0.0.1" in done.stderr
    assert "Cli-Secret-91" not in done.stderr + done.stdout
    assert (machine.cwd / "ran").read_text() == "apply"  # the real run happened, with the tuned config
    assert machine.stray_files() == []
    fallback = re.search(r"uses a fresh store at (\S+trials\.sqlite)", done.stderr)
    assert fallback and Path(fallback[1]).is_relative_to(machine.tmp)
    with closing(SQLiteStore(fallback[1])) as store:
        assert [len(store.trials(s["id"])) for s in store.studies()] == [2]


@pytest.mark.slow
@pytest.mark.timeout(3 * LAUNCH_S)
def test_launch_with_a_server_url_keeps_trials_and_declared_knobs_in_it_for_the_next_machine(
        tmp_path: Path, postgres_url: str) -> None:
    first = Machine(tmp_path / "first")
    done = first.launch(postgres_url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cannot use the trial store" not in done.stderr
    assert "trial 0 runs your own settings" in done.stderr
    assert first.stray_files() == []
    with closing(PostgresStore(postgres_url)) as store:
        (study,) = store.studies()
        assert len(store.trials(study["id"])) == 2 and study["winner"] is not None
        notes = store.notes()
        assert list(notes) == [f"launch:{study['workload']['job']}"]
        assert notes[f"launch:{study['workload']['job']}"]["declared"] == {"micro_batch_size": 8}
    # Another machine with the same checkout path (a container's /workspace): it reads what the script
    # declared and the winner from the server, so it runs no trial at all.
    (first.cwd / "ran").unlink()
    second = Machine(tmp_path / "second", cwd=first.cwd)
    again = second.launch(postgres_url)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 0 runs your own settings" not in again.stderr
    assert "reused the stored winner" in again.stderr
    assert (first.cwd / "ran").read_text() == "apply"
    assert second.stray_files() == [] and first.stray_files() == []
    with closing(PostgresStore(postgres_url)) as store:
        assert [len(store.trials(s["id"])) for s in store.studies()] == [2]  # no new trial


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("url", ["mysql://u:Cli-Secret-91@db/x", "postgresql://u:Cli-Secret-91@127.0.0.1:5432"])
def test_launch_refuses_a_malformed_store_url_before_running_anything(tmp_path: Path, url: str) -> None:
    machine = Machine(tmp_path / "machine")
    done = machine.launch(url)
    assert done.returncode == 2
    assert "--autoscout-store" in done.stderr and "Cli-Secret-91" not in done.stderr
    assert not (machine.cwd / "ran").exists() and machine.stray_files() == []
