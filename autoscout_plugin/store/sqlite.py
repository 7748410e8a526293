"""The default trial store: one SQLite file, safe for several processes writing at once.

Each process must open its own `SQLiteStore` on the path: a connection is never shared across
processes (using one after `fork` or passing one to a child raises `StoreError`). Threads of one
process may share an instance. Writes run in `BEGIN IMMEDIATE` transactions, so trial numbers are
race-free across processes; WAL mode lets readers go on while one process writes, and a process
killed mid-write leaves the file consistent (SQLite rolls the unfinished transaction back).

All data is JSON text in plain columns (never pickle, never eval), so a store can be inspected
with any SQLite client:

    sqlite3 trials.sqlite "SELECT number, status, value, fidelity FROM trials WHERE study_id='study-1'"
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..trial import Trial
from .base import (
    UNDECODABLE,
    TrialStore,
    check_fingerprint,
    dump_trial,
    readable_json,
    readable_trials,
    study_id_for,
    study_texts,
    trial_data,
    winner_text,
)
from .errors import StoreError, UnknownStudyError
from .fingerprint import hardware_key

SCHEMA_VERSION = 2
"""The layout this code writes and reads; a file with an unknown version is refused, not guessed at.
Version 2: trials carry their failure class and blamed knobs (`Trial.failure`, `Trial.blame`) in
`data`; a version-1 file is upgraded in place on open (its trials are diagnosed when read), after
which an older AutoScout refuses it with a clear error instead of misreading it."""
UPGRADABLE = (1,)
"""Versions this code upgrades on open: the tables are the same, only the trials' JSON gained keys."""
APP_NAME = "autoscout"
"""Written in `schema_version.app`: tells an AutoScout store from another file with such a table."""

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE schema_version (app TEXT NOT NULL, version INTEGER NOT NULL)",
    """CREATE TABLE studies (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL UNIQUE,
        hardware_key TEXT NOT NULL,
        workload TEXT NOT NULL,
        hardware TEXT NOT NULL,
        space TEXT NOT NULL,
        created_s REAL NOT NULL,
        winner_config TEXT,
        winner_value REAL
    )""",
    "CREATE INDEX studies_by_hardware ON studies (hardware_key)",
    """CREATE TABLE trials (
        study_id TEXT NOT NULL REFERENCES studies (id),
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        value REAL,
        cost_s REAL NOT NULL,
        fidelity TEXT NOT NULL,
        data TEXT NOT NULL,
        created_s REAL NOT NULL,
        PRIMARY KEY (study_id, number)
    )""",
)
_TABLES = frozenset({"schema_version", "studies", "trials"})


class SQLiteStore(TrialStore):
    """The `TrialStore` contract in one SQLite file, created (with its folders) on first use.

    Args:
        path: The store file. A new or empty file becomes a store; an existing AutoScout store is
            reopened; anything else (another program's database, a directory) raises `StoreError`.
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
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = _connect(self.path, timeout_s)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def __getstate__(self) -> Any:
        raise StoreError(
            f"an SQLiteStore cannot be sent to another process; pass the path ({self.path}) and open "
            "SQLiteStore(path) in that process"
        )

    def open_study(
        self, fingerprint: str, *, workload: dict[str, Any], hardware: dict[str, Any], space: dict[str, Any]
    ) -> str:
        check_fingerprint(fingerprint)
        workload_text, hardware_text, space_text = study_texts(workload, hardware, space)
        found = self._read("SELECT id FROM studies WHERE fingerprint = ?", (fingerprint,))
        if found:
            return str(found[0][0])
        with self._write() as conn:  # someone may have created it since the read: check again
            row = conn.execute("SELECT id FROM studies WHERE fingerprint = ?", (fingerprint,)).fetchone()
            if row:
                return str(row[0])
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM studies").fetchone()[0]
            study_id = study_id_for(seq)
            conn.execute(
                "INSERT INTO studies (seq, id, fingerprint, hardware_key, workload, hardware, space,"
                " created_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, study_id, fingerprint, hardware_key(hardware), workload_text, hardware_text,
                 space_text, time.time()),
            )
        return study_id

    def add_trial(self, study_id: str, trial: Trial) -> int:
        data = trial_data(trial)
        with self._write() as conn:
            self._require_study(conn, study_id)
            number = conn.execute(
                "SELECT COALESCE(MAX(number), -1) + 1 FROM trials WHERE study_id = ?", (study_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO trials (study_id, number, status, value, cost_s, fidelity, data, created_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (study_id, number, trial.status, trial.value, trial.cost_s, trial.fidelity.value,
                 dump_trial({**data, "number": number}), time.time()),
            )
        trial.number = number
        return int(number)

    def trials(self, study_id: str) -> list[Trial]:
        self._require_study(None, study_id)
        rows = self._read("SELECT number, data FROM trials WHERE study_id = ? ORDER BY number", (study_id,))
        return readable_trials(rows, f"{self.path} ({study_id})")

    def set_winner(self, study_id: str, config: dict[str, Any], value: float) -> None:
        config_text, winner_value = winner_text(config, value)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE studies SET winner_config = ?, winner_value = ? WHERE id = ?",
                (config_text, winner_value, study_id),
            )
            if cursor.rowcount == 0:
                raise UnknownStudyError(study_id)

    def winner(self, fingerprint: str) -> tuple[dict[str, Any], float] | None:
        rows = self._read(
            "SELECT winner_config, winner_value FROM studies"
            " WHERE fingerprint = ? AND winner_config IS NOT NULL",
            (fingerprint,),
        )
        config = readable_json(rows[0][0], f"stored winner in {self.path}") if rows else None
        return (config, float(rows[0][1])) if isinstance(config, dict) else None

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        # A forked child must not close its parent's connection: just drop it.
        if conn is not None and os.getpid() == self._pid:
            conn.close()

    def _candidates(self, hardware_key: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._read(
            "SELECT s.id, s.workload FROM studies AS s WHERE s.hardware_key = ?"
            " AND EXISTS (SELECT 1 FROM trials AS t WHERE t.study_id = s.id) ORDER BY s.seq",
            (hardware_key,),
        )
        decoded = [(str(study_id), readable_json(text, f"workload of study {study_id} in {self.path}"))
                   for study_id, text in rows]
        return [(study_id, workload) for study_id, workload in decoded if isinstance(workload, dict)]

    def _require_study(self, conn: sqlite3.Connection | None, study_id: str) -> None:
        """Raise `UnknownStudyError` unless the study exists (inside a write when `conn` is given)."""
        query, args = "SELECT 1 FROM studies WHERE id = ?", (study_id,)
        found = conn.execute(query, args).fetchall() if conn is not None else self._read(query, args)
        if not found:
            raise UnknownStudyError(study_id)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store at {self.path} is closed; open it again with SQLiteStore(path)")
        if os.getpid() != self._pid:
            raise StoreError(
                f"this SQLiteStore ({self.path}) was opened in process {self._pid} and used in process "
                f"{os.getpid()}; open a new SQLiteStore(path) in each process"
            )
        return self._conn

    def _read(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock, _sqlite_errors(self.path):
            return self._connection().execute(query, args).fetchall()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction: takes the file's write lock first, so the reads inside
        (e.g. the next trial number) cannot be raced by another process."""
        with self._lock, _sqlite_errors(self.path, self.timeout_s):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


@contextmanager
def _sqlite_errors(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Turn sqlite3 errors into `StoreError`s that name the file and say what to do."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if timeout_s is not None and "locked" in str(exc):
            raise StoreError(
                f"gave up after {timeout_s:g} s waiting for another process to finish writing {path}; "
                "check for a hung process using this store, or pass a larger timeout_s"
            ) from exc
        raise StoreError(f"SQLite error on {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite error on {path}: {exc}; the file may be damaged") from exc


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    _prepare_path(path)
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; the lock makes threads safe.
        conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        conn.text_factory = _text
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot open the trial store {path}: {exc}; check the path and its permissions"
        ) from exc
    try:
        _prepare_schema(conn, path, timeout_s)
    except BaseException:
        conn.close()
        raise
    return conn


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


def _prepare_schema(conn: sqlite3.Connection, path: Path, timeout_s: float) -> None:
    # Classify before changing anything, so another program's database is left untouched.
    with _sqlite_errors(path):
        try:
            tables = _tables(conn)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path} is not an SQLite database ({exc}); pass a new path or an AutoScout trial store"
            ) from exc
        version = _check_schema(conn, path, tables) if tables else None
    with _sqlite_errors(path, timeout_s):
        conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file; a no-op once set
        if not tables:
            _create_schema(conn, path)
        elif version != SCHEMA_VERSION:
            _upgrade(conn, path)


def _create_schema(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = _tables(conn)  # another process may have created the schema since we looked
        if tables:
            _check_schema(conn, path, tables)
        else:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (APP_NAME, SCHEMA_VERSION))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_schema(conn, path, _tables(conn))  # another process may have upgraded it
        if version in UPGRADABLE:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_schema(conn: sqlite3.Connection, path: Path, tables: set[str]) -> int:
    """The file's schema version, when this code can read it (now or after `_upgrade`); else StoreError."""
    rows: list[tuple[Any, ...]] = []
    if "schema_version" in tables:
        rows = conn.execute("SELECT app, version FROM schema_version").fetchall()
    if len(rows) != 1 or rows[0][0] != APP_NAME:
        raise StoreError(
            f"{path} is an SQLite database but not an AutoScout trial store"
            f" (tables: {', '.join(sorted(tables))}); pass a new path for the store"
        )
    version = rows[0][1]
    if version != SCHEMA_VERSION and version not in UPGRADABLE:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise StoreError(
            f"{path} holds trial-store schema version {version!r}, "
            + ("written by a newer AutoScout" if newer else "which this AutoScout does not know")
            + f" (this one reads version {SCHEMA_VERSION}); "
            + ("upgrade autoscout-plugin" if newer else "use the AutoScout that wrote it")
            + " or pass another path"
        )
    if not _TABLES <= tables:
        raise StoreError(
            f"{path} is an AutoScout trial store missing tables {sorted(_TABLES - tables)}; it is damaged:"
            " move it aside and pass a new path"
        )
    return int(version)
