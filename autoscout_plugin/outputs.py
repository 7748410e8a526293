"""Every path a tuning run writes (the trial store, the report), checked before its first trial.

AutoScout's own output must never cost the user their run: a path that cannot be used is found before
anything is profiled, a warning says what was wrong and where the output goes instead, and the run
goes on.
- A trial store that is damaged (an SQLite file that fails its integrity check, or any unreadable file
  at the default path, which is ours) is moved aside to `PATH.damaged-<time>` and a fresh store is
  started at the same path.
- A store path that cannot be used for another reason (a directory, no permission, a newer schema,
  another program's database, a file that is not SQLite at a path the user chose) is left untouched:
  this run uses a fresh store in a new temporary folder.
- A PostgreSQL store that cannot be used (the server is down, a wrong password, a newer schema) is left
  untouched the same way: this run uses a fresh SQLite store in a new temporary folder, and the warning
  says why (the URL's password masked).
- A report path that cannot be written (a directory in the way, a read-only folder) is replaced by the
  same file name in a new temporary folder.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .options import default_store
from .report.html import report_paths
from .store import PostgresStore, SQLiteStore, StoreError, describe_store, is_postgres_url, store_path

_SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class Outputs:
    """The paths this run writes, each one checked (possibly a fallback)."""

    store: str
    report: str | None


def prepare_outputs(store: str | None, report: str | None) -> Outputs:
    """Check the store (None: `default_store()`) and the report base path; warn and fall back where
    one cannot be used (see the module's docstring). Never raises for a path."""
    return Outputs(store=usable_store(store or default_store()), report=usable_report(report) if report else None)


def usable_store(path: str) -> str:
    """`path` when a trial store can be used there (created if missing), else the fresh store used
    instead, with a warning."""
    if is_postgres_url(path):
        return _usable_server_store(path)
    path = store_path(path) or path  # an sqlite:/// URL: its file (another scheme fails in _store_problem)
    damaged, reason = _store_problem(Path(path))
    if reason is None:
        return path
    if damaged:
        aside = _set_aside(Path(path))
        if aside is not None and _store_problem(Path(path))[1] is None:
            _warn(f"the trial store {path} is damaged ({reason}); it was moved to {aside} and this run starts"
                  f" a fresh store at {path} (earlier trials and winners are not reused)")
            return path
    fresh = _fallback_folder() / "trials.sqlite"
    _warn(f"cannot use the trial store {path} ({reason}); this run uses a fresh store at {fresh} and reuses"
          f" nothing: fix or remove {path}, or pass another store path")
    return str(fresh)


def _usable_server_store(url: str) -> str:
    try:
        PostgresStore(url, timeout_s=SERVER_PROBE_S).close()
    except StoreError as exc:
        fresh = _fallback_folder() / "trials.sqlite"
        _warn(f"cannot use the trial store {describe_store(url)} ({exc}); this run uses a fresh store at {fresh}"
              " and shares nothing with other workers: fix the server or the URL, or pass another store")
        return str(fresh)
    return url


SERVER_PROBE_S = 10.0
"""How long the check before the first trial waits for a store's server."""


def usable_report(base: str) -> str:
    """`base` when both report files can be written there, else the same name in a new temporary
    folder, with a warning."""
    reason = next(filter(None, (_unwritable(p) for p in report_paths(base))), None)
    if reason is None:
        return base
    fallback = _fallback_folder() / report_paths(base)[0].stem
    _warn(f"cannot write the report at {base} ({reason}); it will be written to {fallback}.json and"
          f" {fallback}.html instead")
    return str(fallback)


def _store_problem(path: Path) -> tuple[bool, str | None]:
    """(whether the file is a damaged store that may be moved aside, why it cannot be used); the reason
    is None when a store can be used at `path`."""
    ours = path == Path(default_store())
    if path.is_file() and path.stat().st_size > 0:
        try:
            with path.open("rb") as fh:
                header = fh.read(len(_SQLITE_HEADER))
        except OSError as exc:
            return False, f"cannot read it: {exc.strerror or exc}"
        if header != _SQLITE_HEADER:
            return ours, "not an SQLite file"
    try:
        SQLiteStore(path).close()
    except StoreError as exc:
        text = str(exc)
        damaged = path.is_file() and ("malformed" in text or "damaged" in text or "not an SQLite database" in text)
        return damaged, text
    check = _integrity(path)
    return (True, check) if check else (False, None)


def _integrity(path: Path) -> str | None:
    """What `PRAGMA quick_check` found wrong in the store file (None when it is sound)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"integrity check failed: {exc}"
    return None if rows == [("ok",)] else "integrity check: " + "; ".join(str(r[0]) for r in rows[:3])


def _set_aside(path: Path) -> Path | None:
    """Move a damaged store (and its WAL files) to `PATH.damaged-<time>`; None when it cannot be moved."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    for extra in ("-wal", "-shm"):
        try:
            os.replace(f"{path}{extra}", f"{aside}{extra}")
        except OSError:
            pass  # there was none
    return aside


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot be written (None when it can): its folder is created and a file tried in it."""
    if path.is_dir():
        return f"{path} is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".autoscout-probe-"):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc}: {exc.filename or path.parent}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is read-only"
    return None


def _fallback_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="autoscout-fallback-"))


def _warn(message: str) -> None:
    warnings.warn(f"AutoScout: {message}", RuntimeWarning, stacklevel=4)


__all__ = ["Outputs", "prepare_outputs", "usable_report", "usable_store"]
