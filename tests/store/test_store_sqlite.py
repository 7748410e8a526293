"""What only the SQLite store has to get right: processes, crashes, the file format, bad paths."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.store import SCHEMA_VERSION, SQLiteStore, StoreError, fingerprint
from autoscout_plugin.store import sqlite as sqlite_module
from autoscout_plugin.trial import Fidelity, Trial

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = {"family": "transformer", "n_layer": 2, "d_model": 128}
HARDWARE = {"kind": "cpu", "cores": 2}
SPACE: dict[str, Any] = {"knobs": ["num_threads"]}
FP = fingerprint(WORKLOAD, HARDWARE, SPACE)


def _open(store: SQLiteStore) -> str:
    return store.open_study(FP, workload=WORKLOAD, hardware=HARDWARE, space=SPACE)


def _writer(path: str, writer: int, n_trials: int, barrier: Any) -> None:
    """A separate process: its own store on the shared file, racing the other writer."""
    with SQLiteStore(path) as store:
        barrier.wait(timeout=30)
        study = _open(store)
        for i in range(n_trials):
            store.add_trial(study, Trial(config={"writer": writer, "i": i}, value=float(i), cost_s=0.01))


def test_two_writer_processes_number_trials_without_gaps_or_duplicates(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, w, 40, barrier)) for w in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
        proc.join(timeout=5)
    assert not hung, "a writer process hung"
    assert [proc.exitcode for proc in procs] == [0, 0]

    with SQLiteStore(path) as store:
        trials = store.trials(_open(store))
    assert [t.number for t in trials] == list(range(80))
    for w in (0, 1):
        own = [t.config["i"] for t in trials if t.config["writer"] == w]
        assert own == list(range(40)), f"writer {w}'s trials are missing or out of order"


_KILLED_CHILD = """
import sqlite3, sys, time
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Trial
path, fp = sys.argv[1], sys.argv[2]
store = SQLiteStore(path)
study = store.open_study(fp, workload={"family": "transformer", "n_layer": 2, "d_model": 128},
                         hardware={"kind": "cpu", "cores": 2}, space={"knobs": ["num_threads"]})
for i in range(5):
    store.add_trial(study, Trial(config={"i": i}, value=float(i)))
# Die in the middle of a write: hold the write lock with an uncommitted sixth trial.
raw = sqlite3.connect(path, isolation_level=None)
raw.execute("BEGIN IMMEDIATE")
raw.execute("INSERT INTO trials VALUES (?, 5, 'ok', 1.0, 0.0, 'F2', '{}', 0.0)", (study,))
print(study, flush=True)
time.sleep(600)
"""


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"the child printed nothing within {timeout_s} s"
    return proc.stdout.readline().strip()


def test_a_study_resumes_after_its_process_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "resume.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(path), FP], stdout=subprocess.PIPE,
                            text=True, cwd=REPO_ROOT, env=env)
    try:
        child_study = _read_line(proc, timeout_s=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert child_study.startswith("study-")

    # A short timeout: if the dead child's write lock survived, this fails in 5 s instead of hanging.
    with SQLiteStore(path, timeout_s=5) as store:
        study = _open(store)
        assert study == child_study
        trials = store.trials(study)
        assert [(t.number, t.config) for t in trials] == [(i, {"i": i}) for i in range(5)]
        assert store.add_trial(study, Trial(config={"i": 5}, value=5.0)) == 5
        assert [t.number for t in store.trials(study)] == list(range(6))


def test_the_file_holds_json_text_not_pickle(tmp_path: Path) -> None:
    path = tmp_path / "trials.sqlite"
    stored = [Trial(config={"precision": "bf16-mixed", "num_threads": 2}, value=42.5, cost_s=3.25,
                    fidelity=Fidelity.F3, predicted=40.0, metrics={"step_s": 0.5}),
              Trial(config={"micro_batch_size": 256}, status="timeout", cost_s=60.0, error="no step in 60 s")]
    with SQLiteStore(path) as store:
        study = _open(store)
        for trial in stored:
            store.add_trial(study, trial)
        store.set_winner(study, {"precision": "bf16-mixed", "num_threads": 2}, 42.5)

    raw = sqlite3.connect(path)
    try:
        rows = raw.execute("SELECT study_id, number, status, value, cost_s, fidelity, data, typeof(data)"
                           " FROM trials ORDER BY number").fetchall()
        assert len(rows) == 2
        for row, trial in zip(rows, stored, strict=True):
            study_id, number, status, value, cost_s, fidelity, data, data_type = row
            assert data_type == "text"
            assert json.loads(data) == trial.to_json()
            assert (study_id, number, status, value, cost_s, fidelity) == (
                study, trial.number, trial.status, trial.value, trial.cost_s, trial.fidelity.value)
        study_row = raw.execute("SELECT workload, hardware, space, winner_config, winner_value FROM studies"
                                ).fetchone()
        assert [json.loads(text) for text in study_row[:4]] == [
            WORKLOAD, HARDWARE, SPACE, {"precision": "bf16-mixed", "num_threads": 2}]
        assert study_row[4] == 42.5
        for (table,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for cells in raw.execute(f"SELECT * FROM {table}").fetchall():
                assert not any(isinstance(cell, bytes) for cell in cells), f"a blob in table {table}"
        assert raw.execute("SELECT app, version FROM schema_version").fetchall() == [("autoscout", SCHEMA_VERSION)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_another_programs_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE users (name TEXT)")
    raw.close()
    with pytest.raises(StoreError, match="not an AutoScout trial store") as info:
        SQLiteStore(path)
    assert str(path) in str(info.value) and "users" in str(info.value)
    raw = sqlite3.connect(path)
    try:
        tables = raw.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == [("users",)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        raw.close()


def test_a_foreign_schema_version_table_is_not_enough(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE schema_version (app TEXT, version INTEGER)")
        raw.execute("INSERT INTO schema_version VALUES ('someapp', 1)")
    raw.close()
    with pytest.raises(StoreError, match="not an AutoScout trial store"):
        SQLiteStore(path)


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = "these are my notes, not a database\n" * 200
    path.write_text(content)
    with pytest.raises(StoreError, match="not an SQLite database") as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)
    assert path.read_text() == content


def test_a_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory") as info:
        SQLiteStore(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(("version", "advice"),
                         [(SCHEMA_VERSION + 1, "newer AutoScout.*upgrade"), (0, "does not know")])
def test_an_unknown_schema_version_is_refused(tmp_path: Path, version: int, advice: str) -> None:
    path = tmp_path / "trials.sqlite"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (version,))
    raw.close()
    with pytest.raises(StoreError, match=advice) as info:
        SQLiteStore(path)
    assert str(path) in str(info.value) and f"version {version}" in str(info.value)


def test_a_version_1_store_is_upgraded_and_its_failed_trials_get_a_class(tmp_path: Path) -> None:
    """Version 1 stored trials without `failure`/`blame`: they are diagnosed when read, and the file is
    marked with the current version so that an older AutoScout refuses it instead of misreading it."""
    path = tmp_path / "trials.sqlite"
    with SQLiteStore(path) as store:
        study = store.open_study("fp", workload=WORKLOAD, hardware=HARDWARE, space=SPACE)
        store.add_trial(study, Trial(config={"compile": "default"}, status="error",
                                     error="torch._dynamo.exc.Unsupported: generic_jump"))
    with sqlite3.connect(path) as raw:  # what version 1 wrote: no failure keys, version 1
        (data,) = raw.execute("SELECT data FROM trials").fetchone()
        old = {k: v for k, v in json.loads(data).items() if k not in ("failure", "blame")}
        raw.execute("UPDATE trials SET data = ?", (json.dumps(old),))
        raw.execute("UPDATE schema_version SET version = 1")
        raw.execute("DROP TABLE claims")
        raw.execute("DROP TABLE notes")
    raw.close()
    with SQLiteStore(path) as store:
        (trial,) = store.trials(store.open_study("fp", workload={}, hardware={}, space={}))
    assert (trial.failure, trial.blame) == ("unsupported", ["compile"])
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    raw.close()


def test_a_version_2_store_gains_the_claims_and_notes_tables_and_keeps_its_winners(tmp_path: Path) -> None:
    """What every AutoScout before shared history wrote: the same studies and trials, no claims or notes."""
    path = tmp_path / "trials.sqlite"
    with SQLiteStore(path) as store:
        study = store.open_study("fp", workload=WORKLOAD, hardware=HARDWARE, space=SPACE)
        store.add_trial(study, Trial(config={"compile": "off"}, value=2.0))
        store.set_winner(study, {"compile": "off"}, 2.0)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE claims")
        raw.execute("DROP TABLE notes")
        raw.execute("UPDATE schema_version SET version = 2")
    raw.close()
    with SQLiteStore(path) as store:
        assert store.winner("fp") == ({"compile": "off"}, 2.0)
        claim = store.claim(study, {"compile": "default"}, worker="w1")
        assert claim is not None and store.claim(study, {"compile": "default"}, worker="w2") is None
        store.set_note("job", {"declared": {}})
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    raw.close()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trials.sqlite"
    SQLiteStore(path).close()
    path.chmod(0)
    try:
        with pytest.raises(StoreError, match="permissions") as info:
            SQLiteStore(path)
        assert str(path) in str(info.value)
    finally:
        path.chmod(0o600)


def test_a_file_without_access_rights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trials.sqlite"
    SQLiteStore(path).close()
    monkeypatch.setattr(sqlite_module.os, "access", lambda *args, **kwargs: False)  # what root never sees
    with pytest.raises(StoreError, match="cannot read and write .*permissions") as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)


def test_a_write_blocked_by_another_process_fails_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "trials.sqlite"
    with SQLiteStore(path, timeout_s=0.2) as store:
        study = _open(store)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=r"gave up after 0.2 s .*timeout_s"):
                store.add_trial(study, Trial(config={}, value=1.0))
        finally:
            blocker.close()
        assert store.add_trial(study, Trial(config={}, value=1.0)) == 0


def test_a_store_is_not_sent_to_or_used_in_another_process(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "trials.sqlite")
    try:
        with pytest.raises(StoreError, match="open SQLiteStore\\(path\\) in that process"):
            pickle.dumps(store)
        study = _open(store)
        monkeypatch.setattr(sqlite_module.os, "getpid", lambda: -1)
        with pytest.raises(StoreError, match="in each process"):
            store.trials(study)
        monkeypatch.undo()
        assert store.trials(study) == []
    finally:
        store.close()



def test_a_store_opened_while_another_process_writes_waits_to_switch_to_wal(tmp_path: Path) -> None:
    """Switching a file to WAL needs it to itself, and SQLite answers "database is locked" at once (no busy
    wait) while another connection writes: two DDP ranks opening a new store together hit it. The switch is
    tried again until the writer is done, within `timeout_s`; past it, the refusal says what to do."""
    path = tmp_path / "trials.sqlite"
    SQLiteStore(path).close()
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=DELETE")  # as a store someone else just created, not yet switched
    writer.execute("BEGIN IMMEDIATE")
    done = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    done.start()
    try:
        started = time.perf_counter()
        SQLiteStore(path, timeout_s=30).close()
        assert time.perf_counter() - started >= 0.4  # it waited for the writer
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
        writer.execute("PRAGMA journal_mode=DELETE")
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match=r"gave up after 0.3 s .*timeout_s"):
            SQLiteStore(path, timeout_s=0.3)
    finally:
        done.join()
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        writer.close()
