"""`autoscout history migrate/show`: a real SQLite history moved into a real PostgreSQL store (and SQLite to
SQLite), field by field; safe to run twice; the source never written or created; passwords never shown."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.cli import main
from autoscout_plugin.history import MigrationReport, migrate, show
from autoscout_plugin.store import StoreError, open_store
from autoscout_plugin.trial import Fidelity, Trial
from autoscout_plugin.tuner import Tuner

from .pg import PASSWORD, PostgresServer
from .tuner_helpers import HARDWARE, Recorder, cost_model_objective, options, training_space, workload

REPO = Path(__file__).resolve().parents[1]
HW = {"kind": "cpu", "cores": 2, "mem_gb": 24}


# ------------------------------------------------------------------ a user's history
def _trials(n: int, scale: float) -> list[Trial]:
    """Trials with every field set: ok ones, an oom, a diverged one (NaN), a confirmation at F3."""
    out = []
    for i in range(n):
        config = {"num_threads": i + 1, "compile": i % 2 == 0}
        if i == 1:
            out.append(Trial(config=config, status="oom", cost_s=2.5, error="CUDA out of memory", peak_mem_mb=8e3))
        elif i == 2:
            out.append(Trial(config=config, status="nan", value=float("nan"), cost_s=1.0, error="loss is NaN"))
        else:
            out.append(Trial(config=config, value=scale * (i + 1), cost_s=3.25 + i, predicted=scale * i,
                             peak_mem_mb=123.5, metrics={"step_s": 0.1 * (i + 1), "loss": 2.0},
                             fidelity=Fidelity.F3 if i == n - 1 else Fidelity.F2))
    return out


STUDIES: list[dict[str, Any]] = [
    {"fp": "fp-gpt", "workload": {"family": "transformer", "name": "gpt2-small", "n_layer": 2}, "trials": 5,
     "winner": ({"num_threads": 5, "compile": True}, 50.0)},
    {"fp": "fp-cnn", "workload": {"family": "cnn"}, "trials": 4, "winner": ({"num_threads": 4}, 0.1 + 0.2)},
    {"fp": "fp-open", "workload": {"family": "mlp"}, "trials": 3, "winner": None},  # interrupted: no winner
    {"fp": "fp-empty", "workload": {}, "trials": 0, "winner": None},  # opened, never ran a trial
]
NOTES = {"launch/abc": {"knobs": ["num_threads"], "pinned": {"compile": False}}, "plain": [1, 2.5, "x", None]}
N_TRIALS = sum(s["trials"] for s in STUDIES)


def _make_history(spec: str | Path) -> None:
    with open_store(spec) as store:
        for k, study in enumerate(STUDIES):
            sid = store.open_study(study["fp"], workload=study["workload"], hardware=HW,
                                   space={"knobs": ["num_threads", "compile"], "k": k})
            for trial in _trials(study["trials"], scale=10.0 * (k + 1)):
                store.add_trial(sid, trial)
            if study["winner"]:
                store.set_winner(sid, *study["winner"])
        for key, value in NOTES.items():
            store.set_note(key, value)


def _content(trial: Trial) -> str:
    data = trial.to_json()
    del data["number"]
    return json.dumps(data, sort_keys=True)  # NaN equals NaN as text


def _snapshot(spec: str | Path) -> dict[str, Any]:
    """Everything a store holds, by fingerprint: descriptions, trials (numbers apart), numbers, winner; notes."""
    with open_store(spec) as store:
        studies = {}
        for study in store.studies():
            trials = store.trials(study["id"])
            studies[study["fingerprint"]] = {
                "workload": study["workload"], "hardware": study["hardware"], "space": study["space"],
                "trials": [_content(t) for t in trials], "numbers": [t.number for t in trials],
                "winner": store.winner(study["fingerprint"])}
        return {"studies": studies, "notes": store.notes()}


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "trials.sqlite"
    _make_history(path)
    return path


@pytest.fixture
def password_db(postgres_server: PostgresServer) -> Iterator[tuple[PostgresServer, str]]:
    """A fresh database and its name, to be reached with the password role."""
    name = f"history_pw_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    try:
        yield postgres_server, name
    finally:
        postgres_server.drop_database(name)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ migration
def _check_copy(src: Path, dst: str | Path, report: MigrationReport) -> None:
    assert report == MigrationReport(source=str(src), destination=report.destination, studies_copied=len(STUDIES),
                                     studies_skipped=0, trials=N_TRIALS, winners=2, notes=len(NOTES))
    before, after = _snapshot(src), _snapshot(dst)
    assert after == before  # descriptions, every trial field but the number, numbers 0..n-1, winners, notes
    assert list(after["studies"]) == [s["fp"] for s in STUDIES]  # oldest first
    for study in STUDIES:
        assert after["studies"][study["fp"]]["numbers"] == list(range(study["trials"]))
        assert after["studies"][study["fp"]]["winner"] == study["winner"]


def test_sqlite_to_postgres_round_trip(history: Path, postgres_url: str) -> None:
    digest = _digest(history)
    report = migrate(history, postgres_url)
    _check_copy(history, postgres_url, report)
    assert report.destination == postgres_url  # no password in it: nothing to mask
    assert report.summary() == (f"copied 4 studies ({N_TRIALS} trials, 2 winners, 2 notes) from {history} to "
                                f"{postgres_url}")
    assert _digest(history) == digest  # the source file is only read
    with open_store(postgres_url) as dst:
        trial = dst.trials(dst.open_study("fp-gpt", workload={}, hardware={}, space={}))[1]
    assert (trial.status, trial.error, trial.failure, trial.peak_mem_mb) == ("oom", "CUDA out of memory", "oom", 8e3)


def test_sqlite_to_sqlite(history: Path, tmp_path: Path) -> None:
    dst = tmp_path / "elsewhere" / "shared.sqlite"
    report = migrate(str(history), f"sqlite:///{os.path.relpath(dst)}")  # the URL form reads relative paths
    _check_copy(history, dst, report)
    assert dst.exists()


def test_running_it_twice_copies_nothing(history: Path, postgres_url: str) -> None:
    migrate(history, postgres_url)
    copied = _snapshot(postgres_url)
    again = migrate(history, postgres_url)
    assert (again.studies_copied, again.trials, again.winners, again.notes) == (0, 0, 0, 0)
    assert again.studies_skipped == len(STUDIES)
    assert again.summary().endswith("; 4 studies already there")
    assert _snapshot(postgres_url) == copied


def test_an_interrupted_migration_is_completed(history: Path, tmp_path: Path) -> None:
    """A destination holding the first trials of a study, and nothing else of it, gets the rest."""
    dst = tmp_path / "dst.sqlite"
    with open_store(history) as src, open_store(dst) as target:
        study = src.studies()[0]
        sid = target.open_study(study["fingerprint"], workload=study["workload"], hardware=study["hardware"],
                                space=study["space"])
        for trial in src.trials(study["id"])[:2]:
            target.add_trial(sid, trial)
    report = migrate(history, dst)
    assert (report.studies_copied, report.trials, report.winners) == (len(STUDIES), N_TRIALS - 2, 2)
    assert _snapshot(dst) == _snapshot(history)


def test_what_the_destination_holds_wins(history: Path, tmp_path: Path) -> None:
    """A study the destination tuned itself, and a note it has, are left as they are."""
    dst = tmp_path / "team.sqlite"
    with open_store(dst) as target:
        sid = target.open_study("fp-cnn", workload={"family": "cnn"}, hardware=HW, space={"theirs": True})
        target.add_trial(sid, Trial(config={"num_threads": 8}, value=99.0))
        target.set_winner(sid, {"num_threads": 8}, 99.0)
        target.set_note("plain", "theirs")
    report = migrate(history, dst)
    assert (report.studies_copied, report.studies_skipped, report.notes) == (len(STUDIES) - 1, 1, 1)
    assert report.trials == N_TRIALS - 4 and report.winners == 1
    with open_store(dst) as target:
        assert target.winner("fp-cnn") == ({"num_threads": 8}, 99.0)
        assert [t.value for t in target.trials(sid)] == [99.0]
        assert target.note("plain") == "theirs"
        assert target.note("launch/abc") == NOTES["launch/abc"]


def test_a_migrated_winner_is_reused_and_warm_starts(tmp_path: Path, postgres_url: str) -> None:
    """What a Tuner solved on SQLite is reused with zero trials from PostgreSQL, and warm-starts a similar study."""
    src = str(tmp_path / "trials.sqlite")
    small, large = workload(global_batch=32), workload(global_batch=64)
    opts = options(max_trials=6, search="random", seed=3, confirm_top=1, store=src)
    first = Tuner(training_space(32), Recorder(cost_model_objective(small)), opts, workload=small,
                  hardware=HARDWARE).run()
    assert first.best_config is not None
    migrate(src, postgres_url)
    with open_store(src) as source, open_store(postgres_url) as store:
        assert store.winner(first.fingerprint) == source.winner(first.fingerprint) is not None

        profile = Recorder(cost_model_objective(small))
        again = Tuner(training_space(32), profile, options(max_trials=6, reuse=True), workload=small,
                      hardware=HARDWARE, store=store).run()
        assert again.reused and profile.calls == [] and again.best_config == first.best_config
        assert again.best_value == first.best_value

        profile = Recorder(cost_model_objective(large))
        warm = Tuner(training_space(64), profile, options(max_trials=2, search="random", seed=3), workload=large,
                     hardware=HARDWARE, store=store).run()
        assert not warm.reused and profile.configs()[0] == first.best_config


# ------------------------------------------------------------------ refusals
def test_a_missing_source_is_refused_and_not_created(tmp_path: Path) -> None:
    missing, dst = tmp_path / "typo" / "trials.sqlite", tmp_path / "dst.sqlite"
    for spec in (missing, str(missing), f"sqlite:///{os.path.relpath(missing)}"):
        with pytest.raises(StoreError, match=r"the source store .*trials\.sqlite does not exist; pass the path"):
            migrate(spec, dst)
    with pytest.raises(StoreError, match="does not exist"):
        show(missing)
    assert not missing.exists() and not missing.parent.exists() and not dst.exists()


def test_an_empty_source_file_is_refused_and_left_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(StoreError, match="is an empty file, not a trial store"):
        migrate(empty, tmp_path / "dst.sqlite")
    assert empty.stat().st_size == 0 and not (tmp_path / "dst.sqlite").exists()


def test_a_store_is_not_migrated_into_itself(history: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.sqlite"
    link.symlink_to(history)
    hard = tmp_path / "hard.sqlite"
    os.link(history, hard)
    relative = os.path.relpath(history)
    for dst in (history, str(history), link, hard, relative, f"sqlite:///{relative}"):
        with pytest.raises(StoreError, match="the source and destination are the same trial store"):
            migrate(history, dst)


def test_a_server_store_is_not_migrated_into_itself(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("samedb")  # never created: refused before connecting
    for dst in (url, url.replace("127.0.0.1", "localhost"), postgres_server.password_url("samedb"),
                url.replace("postgresql://", "postgresql+psycopg://")):
        with pytest.raises(StoreError, match="the same trial store") as refused:
            migrate(url, dst)
        assert PASSWORD not in str(refused.value)


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://tuner:hunter22@db/autoscout", r"is a mysql:// URL; AutoScout reads postgresql:// URLs"),
    ("postgresql://tuner:hunter22@/autoscout", r"names no host"),
    ("postgresql://tuner:hunter22@db:5432", r"names no database"),
    ("postgresql://tuner:hunter22@db:notaport/autoscout", r"cannot read the store URL"),
])
def test_a_bad_url_is_refused_clearly(history: Path, url: str, message: str) -> None:
    for src, dst in ((history, url), (url, history)):
        with pytest.raises(StoreError, match=message) as refused:
            migrate(src, dst)
        assert "hunter22" not in str(refused.value)


# ------------------------------------------------------------------ the command line
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["history", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_migrate_and_show(history: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "migrate", str(history), postgres_url)
    assert (code, err) == (0, "")
    assert out == f"copied 4 studies ({N_TRIALS} trials, 2 winners, 2 notes) from {history} to {postgres_url}\n"
    code, out, err = _cli(capsys, "migrate", str(history), postgres_url)
    assert out == f"copied 0 studies (0 trials, 0 winners, 0 notes) from {history} to {postgres_url}; 4 studies " \
                  "already there\n"
    code, out, err = _cli(capsys, "show", postgres_url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{postgres_url}: 4 studies, {N_TRIALS} trials, 2 notes"
    assert [line.split()[:3] for line in lines[1:]] == [
        ["study-1", "5", "trials"], ["study-2", "4", "trials"], ["study-3", "3", "trials"], ["study-4", "0", "trials"]]
    assert lines[1].split()[3:] == ["winner", "50", "transformer", "gpt2-small"]
    assert lines[2].split()[3:] == ["winner", "0.3", "cnn"]
    assert lines[3].split()[3:] == ["no", "winner", "mlp"]
    assert lines[4].split()[3:] == ["no", "winner"]


def test_a_password_is_never_shown(history: Path, password_db: tuple[PostgresServer, str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    server, name = password_db
    url = server.password_url(name)
    assert PASSWORD in url
    masked = url.replace(PASSWORD, "***")
    code, out, err = _cli(capsys, "migrate", str(history), url)
    assert (code, err) == (0, "")
    assert out.rstrip().endswith(f" to {masked}")
    code, out, err = _cli(capsys, "show", url)
    assert code == 0 and out.startswith(f"{masked}: 4 studies")
    code, out, err = _cli(capsys, "migrate", url, url)
    assert code == 2 and "the same trial store" in err
    code, out, err = _cli(capsys, "migrate", str(history), server.password_url(name, password="wr0ng-pw"))
    assert code == 2 and "password authentication failed" in err and "wr0ng-pw" not in err
    code, out, err = _cli(capsys, "show", server.password_url("no_such_db"))
    assert code == 2 and "does not exist" in err
    assert PASSWORD not in out + err


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoscout_plugin.cli", "history", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_errors_exit_2_without_a_traceback(history: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    cases = [
        (("migrate", str(missing), str(tmp_path / "dst.sqlite")), "does not exist"),
        (("migrate", str(history), str(history)), "the same trial store"),
        (("migrate", str(history), "mysql://u:hunter22@db/x"), "mysql:// URL"),
        (("show", str(missing)), "does not exist"),
        (("show", str(tmp_path)), "is a directory"),
        (("migrate", str(history)), "the following arguments are required: DST"),
        ((), "the following arguments are required: {migrate,show}"),
    ]
    for argv, reason in cases:
        proc = _run_cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("autoscout: error: ") and reason in last, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and "hunter22" not in proc.stderr and proc.stdout == ""
    assert not missing.exists() and not (tmp_path / "dst.sqlite").exists()


def test_history_loads_no_framework() -> None:
    probe = ("import sys, autoscout_plugin.history; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'transformers')))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    assert proc.stdout.strip() == "[]"
