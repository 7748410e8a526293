"""The default trial store: one SQLite file, safe for several processes writing at once.

`SQLStore` on an SQLite file (see `sql.py` for what every store does). Each process opens its own
`SQLiteStore` on the path: a store is never shared across processes (using one after `fork` or passing one
to a child raises `StoreError`). Threads of one process may share an instance. Writes run in
`BEGIN IMMEDIATE` transactions, so trial numbers are race-free across processes; WAL mode lets readers go
on while one process writes, and a process killed mid-write leaves the file consistent (SQLite rolls the
unfinished transaction back). Every process using the file is on this machine, so the file's clock
(this machine's) times the leases.

All data is JSON text in plain columns (never pickle, never eval), so a store can be inspected
with any SQLite client:

    sqlite3 trials.sqlite "SELECT number, status, value, fidelity FROM trials WHERE study_id='study-1'"
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .base import UNDECODABLE
from .errors import StoreError
from .sql import APP_NAME, SCHEMA_VERSION, UPGRADABLE, SQLStore


class SQLiteStore(SQLStore):
    """The `TrialStore` contract in one SQLite file, created (with its folders) on first use.

    Args:
        path: The store file. A new or empty file becomes a store; an existing AutoScout store is
            reopened (an older one upgraded); anything else (another program's database, a directory)
            raises `StoreError`.
        timeout_s: How long a write waits for another process's write to finish before giving up.

    Example:
        >>> import tempfile, pathlib
        >>> from autoscout_plugin.trial import Trial
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs" / "trials.sqlite"
        >>> with SQLiteStore(path) as store:
        ...     sid = store.open_study("fp", workload={}, hardware={}, space={})
        ...     store.add_trial(sid, Trial(config={"compile": "off"}, value=3.5))
        0
        >>> with SQLiteStore(path) as store:  # a later process resumes the same study
        ...     [t.value for t in store.trials(store.open_study("fp", workload={}, hardware={}, space={}))]
        [3.5]
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        _prepare_path(self.path)
        engine = sa.create_engine(
            sa.engine.URL.create("sqlite+pysqlite", database=str(self.path)),
            connect_args={"timeout": timeout_s, "check_same_thread": False},
            pool_size=2, max_overflow=2, pool_timeout=timeout_s,
        )
        sa.event.listen(engine, "connect", _on_connect)
        sa.event.listen(engine, "begin", _on_begin)
        super().__init__(engine, str(self.path), timeout_s=timeout_s)

    def __getstate__(self) -> Any:
        raise StoreError(
            f"an SQLiteStore cannot be sent to another process; pass the path ({self.path}) and open "
            "SQLiteStore(path) in that process"
        )

    def _prepare_schema(self) -> None:
        # Classify before changing anything, so another program's database is left untouched.
        with self._engine.connect() as conn, conn.begin():
            tables = set(sa.inspect(conn).get_table_names())
            if tables:
                self._check_schema(conn, tables)
        self._use_wal()
        super()._prepare_schema()

    def _use_wal(self) -> None:
        """Put the file in WAL mode (persistent in the file; a no-op once set). Outside any transaction, as the
        pragma requires. The switch needs the file to itself: when another process holds it (two ranks opening
        a new store at once), SQLite answers "locked" at once rather than wait, so it is tried again until
        `timeout_s` (by then the other process has usually switched it)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            raw = self._engine.raw_connection()
            try:
                cursor = raw.cursor()
                if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.Error as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise StoreError(self._explain(exc)) from exc
            finally:
                raw.close()
            time.sleep(0.05)

    def _describe(self, exc: sa.exc.DBAPIError) -> str:
        return self._explain(exc.orig)

    def _explain(self, error: BaseException | None) -> str:
        text = str(error)
        if _busy(error):
            return (f"gave up after {self.timeout_s:g} s waiting for another process to finish writing {self.path}; "
                    "check for a hung process using this store, or pass a larger timeout_s")
        if "file is not a database" in text:
            return f"{self.path} is not an SQLite database ({text}); pass a new path or an AutoScout trial store"
        if "unable to open" in text:
            return f"cannot open the trial store {self.path}: {text}; check the path and its permissions"
        if isinstance(error, sqlite3.OperationalError):
            return f"SQLite error on {self.path}: {text}"
        return f"SQLite error on {self.path}: {text}; the file may be damaged"

    def _elsewhere(self) -> str:
        return "pass a new path for the store"


def _busy(error: BaseException | None) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # BEGIN is issued by `_on_begin`, not by the driver
    dbapi_conn.text_factory = _text


def _on_begin(conn: Connection) -> None:
    """A write takes the file's write lock first (`BEGIN IMMEDIATE`), so the reads inside it (the next
    trial number) cannot be raced by another process; a read begins a plain (deferred) transaction."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("autoscout_write") else "BEGIN")


def _text(raw: bytes) -> str:
    """A TEXT value as str; bytes that are not UTF-8 (a damaged page) read as `UNDECODABLE`, which the
    readers skip, instead of failing the whole query."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return UNDECODABLE


def _prepare_path(path: Path) -> None:
    if path.is_dir():
        raise StoreError(
            f"the trial store path {path} is a directory; pass a file path such as {path / 'trials.sqlite'}"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"cannot read and write the trial store {path}; fix its permissions or choose another path"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder for the trial store {path}: {exc}") from exc


__all__ = ["APP_NAME", "SCHEMA_VERSION", "UPGRADABLE", "SQLiteStore"]
