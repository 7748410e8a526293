"""Every path a run writes is checked before its first trial: an unusable store or report path is
replaced (with a warning) and never stops the run; a damaged store is set aside or read around."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import warnings
from pathlib import Path

import pytest

from autoscout_plugin.outputs import prepare_outputs, usable_report, usable_store
from autoscout_plugin.report.html import report_paths, write_report
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Trial


@pytest.fixture(autouse=True)
def _fallbacks_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.delenv("AUTOSCOUT_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "tmp"


def _store_with_trials(path: Path, n: int = 3) -> str:
    store = SQLiteStore(path)
    study = store.open_study("f" * 16, workload={"global_batch": 8}, hardware={"kind": "cpu", "cores": 2},
                             space={"knobs": []})
    for i in range(n):
        store.add_trial(study, Trial(config={"num_threads": i + 1}, value=float(i + 1), cost_s=1.0))
    store.set_winner(study, {"num_threads": n}, float(n))
    store.close()
    return study


def _no_warning(call):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def test_usable_paths_are_kept_without_a_word(tmp_path: Path) -> None:
    study = _store_with_trials(tmp_path / "s.sqlite")
    outputs = _no_warning(lambda: prepare_outputs(str(tmp_path / "s.sqlite"), str(tmp_path / "out" / "r")))
    assert outputs.store == str(tmp_path / "s.sqlite") and outputs.report == str(tmp_path / "out" / "r")
    assert len(SQLiteStore(tmp_path / "s.sqlite").trials(study)) == 3  # and untouched


def test_a_directory_or_foreign_file_is_left_alone_and_a_fresh_store_used(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    script = tmp_path / "train.py"
    script.write_text("print('my training script')\n")
    for path in (folder, script):
        with pytest.warns(RuntimeWarning, match=f"cannot use the trial store {path} .* uses a fresh store at"):
            fresh = usable_store(str(path))
        assert fresh != str(path) and Path(fresh).parent.parent == tmp_path / "tmp"
        SQLiteStore(fresh).close()  # usable
    assert not any(folder.iterdir()) and script.read_text() == "print('my training script')\n"


def test_a_newer_schema_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _store_with_trials(path)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    before = path.read_bytes()
    with pytest.warns(RuntimeWarning, match="cannot use the trial store"):
        assert usable_store(str(path)) != str(path)
    assert path.read_bytes() == before


def _damage_pages(path: Path) -> None:
    """Overwrite every page but the first (the header) with junk: a torn or damaged file."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for offset in range(page, len(data)):
        data[offset] = 0xA5
    path.write_bytes(bytes(data))


def test_a_damaged_store_is_set_aside_and_a_fresh_one_started_in_its_place(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _store_with_trials(path)
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage_pages(path)
    with pytest.warns(RuntimeWarning, match=r"the trial store .* is damaged .* moved to .*s\.sqlite\.damaged-"):
        assert usable_store(str(path)) == str(path)
    aside = list(tmp_path.glob("s.sqlite.damaged-*"))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))]
    store = SQLiteStore(path)  # fresh, empty, usable
    assert store.winner("f" * 16) is None
    store.close()


def test_junk_at_the_default_store_path_is_set_aside(tmp_path: Path) -> None:
    from autoscout_plugin.options import default_store

    path = Path(default_store())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\x01 not a database, ours though")
    with pytest.warns(RuntimeWarning, match="is damaged"):
        assert prepare_outputs(None, None).store == str(path)
    assert list(path.parent.glob("trials.sqlite.damaged-*"))


def test_damaged_records_are_skipped_with_a_warning_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    study = _store_with_trials(path)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE trials SET data = CAST(X'FFFE7B22' AS TEXT) WHERE number = 0")  # not UTF-8
        raw.execute("UPDATE trials SET data = '{\"config\": ' WHERE number = 1")  # cut short
        raw.execute("UPDATE studies SET winner_config = '{not json'")
        raw.execute("UPDATE studies SET workload = CAST(X'C3' AS TEXT)")
    store = SQLiteStore(path)
    with pytest.warns(RuntimeWarning, match=r"skipped 2 damaged trial record\(s\) .*#0, #1"):
        trials = store.trials(study)
    assert [t.config for t in trials] == [{"num_threads": 3}]
    with pytest.warns(RuntimeWarning, match="skipped the damaged stored winner"):
        assert store.winner("f" * 16) is None
    with pytest.warns(RuntimeWarning, match="skipped the damaged workload"):
        assert store.similar({"global_batch": 8}, {"kind": "cpu", "cores": 2}) == []
    store.close()


def test_an_unwritable_report_path_goes_to_a_fallback_with_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "r.html").mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for base in (tmp_path / "r", blocker / "sub" / "r"):  # a folder in the way; a file where a folder must be
        with pytest.warns(RuntimeWarning, match=f"cannot write the report at {base} .* written to .*r.json"):
            fallback = usable_report(str(base))
        json_path, html_path = write_report(TuneResult(best_config=None), fallback)
        assert json_path.name == "r.json" and html_path.is_file()


def test_report_names_keep_their_dots(tmp_path: Path) -> None:
    written = {write_report(TuneResult(best_config=None), tmp_path / name)[0].name
               for name in ("lr_0.001", "lr_0.01", "exp.v1", "exp.v2", "plain.json")}
    assert written == {"lr_0.001.json", "lr_0.01.json", "exp.v1.json", "exp.v2.json", "plain.json"}
    assert [p.name for p in report_paths("a/b.c.html")] == ["b.c.json", "b.c.html"]
    assert json.loads((tmp_path / "exp.v1.json").read_text())["best_config"] is None
