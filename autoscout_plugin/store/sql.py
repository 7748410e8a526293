"""The trial store on a relational database, one implementation for SQLite and PostgreSQL (SQLAlchemy Core).

`SQLiteStore` (one file, the default) and `PostgresStore` (a server shared by many machines) are this class
with their own engine; every query below is written once and SQLAlchemy renders it for the dialect. The
few things that differ are named here and nowhere else: the database's clock (`_server_now`), how the
schema is locked while it is created, and the errors a driver raises.

Concurrency, for any number of processes on any number of machines:
- every change is one short transaction; none is held across a trial (a trial runs for minutes);
- a change to a study first locks the study's row (`SELECT ... FOR UPDATE` on PostgreSQL, the file's write
  lock on SQLite), so trial numbers are assigned one writer at a time: unique and gap-free;
- a worker claims a config before running it (`claim`); nobody else gets that config while its claim
  lives. A claim lives while its heartbeats come (`heartbeat`, in the database's time, never the
  workers' clocks); `lease_s` after the last one it is stale and `reclaim_stale` offers it to another
  worker once; a config whose second worker also stops is recorded as a failed trial. A result that
  arrives after its claim went stale is still recorded (`add_trial`), never refused.

All data is JSON text in plain columns (never pickle, never eval), so a store can be read with any client:

    psql "$URL" -c "SELECT number, status, value, fidelity FROM trials WHERE study_id='study-1'"
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..redact import redact
from ..trial import Fidelity, Trial
from .base import (
    MAX_ATTEMPTS,
    Claim,
    TrialStore,
    check_fingerprint,
    check_lease,
    config_key,
    dump_trial,
    readable_json,
    readable_trials,
    study_id_for,
    study_texts,
    trial_data,
    winner_text,
)
from .errors import StoreError, UnknownStudyError
from .fingerprint import canonical_json, hardware_key

SCHEMA_VERSION = 3
"""The layout this code writes and reads; a database with an unknown version is refused, not guessed at.
Version 2: trials carry their failure class and blamed knobs in `data`. Version 3: the `claims` table
(who runs which config, with a heartbeat) and the `notes` table (what a job's script declared). Older
versions are upgraded in place on open; after that an older AutoScout refuses the store with a clear
error instead of misreading it."""
UPGRADABLE = (1, 2)
"""Versions this code upgrades on open: the old tables stay as they are, new tables are added."""
APP_NAME = "autoscout"
"""Written in `schema_version.app`: tells an AutoScout store from another database with such a table."""

_META = sa.MetaData()
_SCHEMA_VERSION = sa.Table(
    "schema_version", _META,
    sa.Column("app", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)
_STUDIES = sa.Table(
    "studies", _META,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("fingerprint", sa.Text, nullable=False, unique=True),
    sa.Column("hardware_key", sa.Text, nullable=False, index=True),
    sa.Column("workload", sa.Text, nullable=False),
    sa.Column("hardware", sa.Text, nullable=False),
    sa.Column("space", sa.Text, nullable=False),
    sa.Column("created_s", sa.Double, nullable=False),
    sa.Column("winner_config", sa.Text),
    sa.Column("winner_value", sa.Double),
)
_TRIALS = sa.Table(
    "trials", _META,
    sa.Column("study_id", sa.Text, sa.ForeignKey("studies.id"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("value", sa.Double),
    sa.Column("cost_s", sa.Double, nullable=False),
    sa.Column("fidelity", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_s", sa.Double, nullable=False),
)
_CLAIMS = sa.Table(
    "claims", _META,
    sa.Column("study_id", sa.Text, sa.ForeignKey("studies.id"), primary_key=True),
    sa.Column("config_key", sa.Text, primary_key=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # running | done | abandoned
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("lease_s", sa.Double, nullable=False),
    sa.Column("claimed_s", sa.Double, nullable=False),
    sa.Column("heartbeat_s", sa.Double, nullable=False),
)
_NOTES = sa.Table(
    "notes", _META,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_s", sa.Double, nullable=False),
)
_TABLES = frozenset(_META.tables)
_ADDED_IN_3 = (_CLAIMS, _NOTES)
_SCHEMA_LOCK = 0x4155_544F  # PostgreSQL advisory lock held while the schema is created or upgraded


class SQLStore(TrialStore):
    """The `TrialStore` contract, claims and leases included, on an SQLAlchemy engine.

    Not built directly: use `SQLiteStore(path)`, `PostgresStore(url)`, or `open_store(path_or_url)`.
    Each process opens its own store (a store used after `fork` raises `StoreError`); threads of one
    process may share one. Connections come from a small pool (PostgreSQL: 2, no overflow), so a worker
    never holds more than that many, whatever its threads do.
    """

    def __init__(self, engine: Engine, where: str, *, timeout_s: float) -> None:
        self.where = where
        """Where the store is, for messages: a path, or a URL with its password masked."""
        self.timeout_s = timeout_s
        self._pid = os.getpid()
        self._closed = threading.Event()
        self._engine = engine
        try:
            with self._errors():
                self._prepare_schema()
        except BaseException:
            engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    def __getstate__(self) -> Any:
        raise StoreError(
            f"a {type(self).__name__} cannot be sent to another process; pass its location ({self.where}) and "
            "open it again in that process with open_store()"
        )

    # ------------------------------------------------------------------ studies and trials
    def open_study(
        self, fingerprint: str, *, workload: dict[str, Any], hardware: dict[str, Any], space: dict[str, Any]
    ) -> str:
        check_fingerprint(fingerprint)
        workload_text, hardware_text, space_text = study_texts(workload, hardware, space)
        by_fingerprint = sa.select(_STUDIES.c.id).where(_STUDIES.c.fingerprint == fingerprint)
        found = self._read(lambda conn: conn.execute(by_fingerprint).scalar())
        if found is not None:
            return str(found)

        def create(conn: Connection) -> str:
            existing = conn.execute(by_fingerprint).scalar()  # created by someone since the read?
            if existing is not None:
                return str(existing)
            seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(_STUDIES.c.seq), 0) + 1)).scalar_one()
            conn.execute(_STUDIES.insert().values(
                seq=seq, id=study_id_for(seq), fingerprint=fingerprint, hardware_key=hardware_key(hardware),
                workload=workload_text, hardware=hardware_text, space=space_text, created_s=time.time()))
            return study_id_for(seq)

        return self._write(create, retry_conflicts=True)  # two new studies at once: one retries

    def add_trial(self, study_id: str, trial: Trial, *, claim: Claim | None = None) -> int:
        data = trial_data(trial)

        def insert(conn: Connection) -> int:
            self._lock_study(conn, study_id)
            number = _insert_trial(conn, study_id, trial, data)
            if claim is not None:  # a late result (its claim went to another worker) is recorded all the same
                conn.execute(_CLAIMS.update().where(*_held(claim)).values(state="done"))
            return number

        number = self._write(insert)
        trial.number = number
        return number

    def trials(self, study_id: str, *, after: int = -1) -> list[Trial]:
        query = (sa.select(_TRIALS.c.number, _TRIALS.c.data)
                 .where(_TRIALS.c.study_id == study_id, _TRIALS.c.number > after).order_by(_TRIALS.c.number))

        def read(conn: Connection) -> list[Any]:
            self._require_study(conn, study_id)
            return list(conn.execute(query))

        return readable_trials(self._read(read), f"{self.where} ({study_id})")

    def set_winner(self, study_id: str, config: dict[str, Any], value: float) -> None:
        config_text, winner_value = winner_text(config, value)

        def update(conn: Connection) -> None:
            done = conn.execute(_STUDIES.update().where(_STUDIES.c.id == study_id)
                                .values(winner_config=config_text, winner_value=winner_value))
            if done.rowcount == 0:
                raise UnknownStudyError(study_id)

        self._write(update)

    def winner(self, fingerprint: str) -> tuple[dict[str, Any], float] | None:
        query = sa.select(_STUDIES.c.winner_config, _STUDIES.c.winner_value).where(
            _STUDIES.c.fingerprint == fingerprint, _STUDIES.c.winner_config.is_not(None))
        row = self._read(lambda conn: conn.execute(query).first())
        config = readable_json(row[0], f"stored winner in {self.where}") if row else None
        return (config, float(row[1])) if isinstance(config, dict) and row else None

    def _candidates(self, hardware_key: str) -> list[tuple[str, dict[str, Any]]]:
        has_trials = sa.exists().where(_TRIALS.c.study_id == _STUDIES.c.id)
        query = (sa.select(_STUDIES.c.id, _STUDIES.c.workload)
                 .where(_STUDIES.c.hardware_key == hardware_key, has_trials).order_by(_STUDIES.c.seq))
        rows = self._read(lambda conn: list(conn.execute(query)))
        decoded = [(str(study_id), readable_json(text, f"workload of study {study_id} in {self.where}"))
                   for study_id, text in rows]
        return [(study_id, workload) for study_id, workload in decoded if isinstance(workload, dict)]

    def studies(self) -> list[dict[str, Any]]:
        """Every study as JSON data, oldest first (for migration): id, fingerprint, workload, hardware, space and
        winner (`[config, value]` or None). Its trials come from `trials(id)`."""
        query = sa.select(_STUDIES).order_by(_STUDIES.c.seq)
        rows = self._read(lambda conn: [row._asdict() for row in conn.execute(query)])
        out = []
        for row in rows:
            entry = {key: readable_json(row[key], f"{key} of study {row['id']} in {self.where}")
                     for key in ("workload", "hardware", "space")}
            if any(value is None for value in entry.values()):
                continue
            winner = readable_json(row["winner_config"], f"winner of study {row['id']}") if row["winner_config"] \
                else None
            out.append({"id": row["id"], "fingerprint": row["fingerprint"], **entry,
                        "winner": [winner, row["winner_value"]] if isinstance(winner, dict) else None})
        return out

    # ------------------------------------------------------------------ claims and leases
    def claim(self, study_id: str, config: dict[str, Any], *, worker: str, lease_s: float = 30.0,
              limit: int | None = None, after: int = -1) -> Claim | None:
        lease_s = check_lease(lease_s)
        key, text = config_key(config)

        def take(conn: Connection) -> Claim | None:
            self._lock_study(conn, study_id)
            now = _server_now(conn)
            if limit is not None and self._taken(conn, study_id, after) >= limit:
                return None
            row = conn.execute(sa.select(_CLAIMS.c.state, _CLAIMS.c.attempt, _CLAIMS.c.heartbeat_s,
                                         _CLAIMS.c.lease_s)
                               .where(_CLAIMS.c.study_id == study_id, _CLAIMS.c.config_key == key)).first()
            token = uuid.uuid4().hex
            if row is None:
                conn.execute(_CLAIMS.insert().values(
                    study_id=study_id, config_key=key, config=text, state="running", worker=worker, token=token,
                    attempt=1, lease_s=lease_s, claimed_s=now, heartbeat_s=now))
                return Claim(study_id, json.loads(text), key, worker, token, 1, lease_s)
            state, attempt, heartbeat_s, row_lease = row
            if state == "running" and now - heartbeat_s <= row_lease:
                return None  # someone runs it now
            # Finished earlier (a config may be measured again), or stale: a new holding. A stale one is
            # `reclaim_stale`'s to offer, counted as the next attempt.
            attempt = attempt + 1 if state == "running" else 1
            if attempt > MAX_ATTEMPTS:
                return None
            conn.execute(_CLAIMS.update().where(_CLAIMS.c.study_id == study_id, _CLAIMS.c.config_key == key)
                         .values(state="running", worker=worker, token=token, attempt=attempt, lease_s=lease_s,
                                 claimed_s=now, heartbeat_s=now))
            return Claim(study_id, json.loads(text), key, worker, token, attempt, lease_s)

        return self._write(take)

    @staticmethod
    def _taken(conn: Connection, study_id: str, after: int) -> int:
        """The study's F2 trials numbered above `after`, done and running (every running claim: a stale one is
        offered again, or recorded as a crash)."""
        done = conn.execute(sa.select(sa.func.count()).select_from(_TRIALS).where(
            _TRIALS.c.study_id == study_id, _TRIALS.c.fidelity == Fidelity.F2.value, _TRIALS.c.number > after)
        ).scalar_one()
        running = conn.execute(sa.select(sa.func.count()).select_from(_CLAIMS).where(
            _CLAIMS.c.study_id == study_id, _CLAIMS.c.state == "running")).scalar_one()
        return int(done) + int(running)

    def heartbeat(self, claim: Claim) -> bool:
        def beat(conn: Connection) -> bool:
            done = conn.execute(_CLAIMS.update().where(*_held(claim)).values(heartbeat_s=_server_now(conn)))
            return bool(done.rowcount)

        return self._write(beat)

    def release(self, claim: Claim) -> None:
        self._write(lambda conn: conn.execute(_CLAIMS.delete().where(*_held(claim))))

    def expire(self, claim: Claim) -> None:
        self._write(lambda conn: conn.execute(_CLAIMS.update().where(*_held(claim)).values(heartbeat_s=0.0)))

    def reclaim_stale(self, study_id: str, *, worker: str, lease_s: float = 30.0) -> Claim | None:
        lease_s = check_lease(lease_s)

        def take(conn: Connection) -> Claim | None:
            self._lock_study(conn, study_id)
            now = _server_now(conn)
            stale = conn.execute(
                sa.select(_CLAIMS.c.config_key, _CLAIMS.c.config, _CLAIMS.c.attempt, _CLAIMS.c.claimed_s,
                          _CLAIMS.c.heartbeat_s, _CLAIMS.c.worker)
                .where(_CLAIMS.c.study_id == study_id, _CLAIMS.c.state == "running",
                       _CLAIMS.c.heartbeat_s + _CLAIMS.c.lease_s < now)
                .order_by(_CLAIMS.c.heartbeat_s)).all()
            for key, text, attempt, claimed_s, heartbeat_s, previous in stale:
                where = (_CLAIMS.c.study_id == study_id, _CLAIMS.c.config_key == key)
                if attempt >= MAX_ATTEMPTS:  # its second worker stopped too: recorded as a failure, not retried
                    conn.execute(_CLAIMS.update().where(*where).values(state="abandoned"))
                    self._record_abandoned(conn, study_id, text, attempt, previous, max(0.0, heartbeat_s - claimed_s))
                    continue
                token = uuid.uuid4().hex
                conn.execute(_CLAIMS.update().where(*where).values(
                    worker=worker, token=token, attempt=attempt + 1, lease_s=lease_s, claimed_s=now,
                    heartbeat_s=now))
                return Claim(study_id, json.loads(text), key, worker, token, attempt + 1, lease_s)
            return None

        return self._write(take)

    def running(self, study_id: str, *, include_stale: bool = False) -> list[Claim]:
        def read(conn: Connection) -> list[Claim]:
            self._require_study(conn, study_id)
            live = (sa.select(_CLAIMS.c.config_key, _CLAIMS.c.config, _CLAIMS.c.worker, _CLAIMS.c.token,
                              _CLAIMS.c.attempt, _CLAIMS.c.lease_s)
                    .where(_CLAIMS.c.study_id == study_id, _CLAIMS.c.state == "running")
                    .order_by(_CLAIMS.c.claimed_s))
            if not include_stale:
                live = live.where(_CLAIMS.c.heartbeat_s + _CLAIMS.c.lease_s >= _server_now(conn))
            return [Claim(study_id, json.loads(text), key, owner, token, attempt, lease)
                    for key, text, owner, token, attempt, lease in conn.execute(live)]

        return self._read(read)

    def _record_abandoned(self, conn: Connection, study_id: str, config_text: str, attempts: int, worker: str,
                          cost_s: float) -> None:
        trial = Trial(config=json.loads(config_text), status="error", value=None, cost_s=cost_s,
                      error=f"the worker running this config stopped sending heartbeats on all {attempts} attempts"
                            f" (last: {worker}); it is not offered again", failure="crash")
        _insert_trial(conn, study_id, trial, trial_data(trial))

    # ------------------------------------------------------------------ notes
    def note(self, key: str) -> Any | None:
        row = self._read(lambda conn: conn.execute(sa.select(_NOTES.c.value).where(_NOTES.c.key == key)).first())
        return readable_json(row[0], f"note {key!r} in {self.where}") if row else None

    def set_note(self, key: str, value: Any) -> None:
        text = canonical_json(value)

        def upsert(conn: Connection) -> None:
            done = conn.execute(_NOTES.update().where(_NOTES.c.key == key).values(value=text, updated_s=time.time()))
            if done.rowcount == 0:
                conn.execute(_NOTES.insert().values(key=key, value=text, updated_s=time.time()))

        self._write(upsert, retry_conflicts=True)

    def notes(self) -> dict[str, Any]:
        """Every note by key (for migration); damaged ones are skipped with a warning."""
        rows = self._read(lambda conn: list(conn.execute(sa.select(_NOTES.c.key, _NOTES.c.value)
                                                          .order_by(_NOTES.c.key))))
        decoded = {key: readable_json(text, f"note {key!r} in {self.where}") for key, text in rows}
        return {key: value for key, value in decoded.items() if value is not None}

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        # A forked child must not close its parent's connections: it only forgets them.
        self._engine.dispose(close=os.getpid() == self._pid)

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError(f"the store at {self.where} is closed; open it again with open_store()")
        if os.getpid() != self._pid:
            raise StoreError(
                f"this {type(self).__name__} ({self.where}) was opened in process {self._pid} and used in process "
                f"{os.getpid()}; open a new store in each process"
            )

    def _read(self, body: Callable[[Connection], Any]) -> Any:
        self._check_open()
        with self._errors(), self._engine.connect() as conn, conn.begin():
            return body(conn)

    def _write(self, body: Callable[[Connection], Any], *, retry_conflicts: bool = False) -> Any:
        """`body` in one short write transaction (SQLite: `BEGIN IMMEDIATE`, the file's write lock first).
        With `retry_conflicts`, a unique-key conflict with another writer (two creating the same row) is
        retried: the second try sees the first one's row."""
        self._check_open()
        for attempt in range(5):
            try:
                with self._errors(), self._engine.connect().execution_options(autoscout_write=True) as conn:
                    with conn.begin():
                        return body(conn)
            except StoreError as exc:
                if not (retry_conflicts and isinstance(exc.__cause__, sa.exc.IntegrityError)) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _lock_study(self, conn: Connection, study_id: str) -> None:
        """Lock the study's row for this transaction (PostgreSQL; SQLite holds the file's write lock already);
        `UnknownStudyError` when there is none."""
        found = conn.execute(sa.select(_STUDIES.c.seq).where(_STUDIES.c.id == study_id).with_for_update()).first()
        if found is None:
            raise UnknownStudyError(study_id)

    @staticmethod
    def _require_study(conn: Connection, study_id: str) -> None:
        if conn.execute(sa.select(_STUDIES.c.seq).where(_STUDIES.c.id == study_id)).first() is None:
            raise UnknownStudyError(study_id)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors as `StoreError`s that name the store (its password masked) and say what to do."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            # A driver's connection error may carry the password in its attributes (psycopg's `pgconn`): it is
            # not chained; the message says everything it said.
            raise StoreError(redact(self._describe(exc))) from (None if self._secret_bearing(exc) else exc)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(redact(f"database error on {self.where}: {exc}")) from exc

    def _secret_bearing(self, exc: sa.exc.DBAPIError) -> bool:
        """Whether the driver's exception may hold connection secrets (not chained to the `StoreError`)."""
        return False

    def _describe(self, exc: sa.exc.DBAPIError) -> str:
        """What a driver error means, for the dialect (subclasses say more)."""
        return f"database error on {self.where}: {_first_line(exc.orig)}"

    # ------------------------------------------------------------------ schema
    def _prepare_schema(self) -> None:
        with self._engine.connect().execution_options(autoscout_write=True) as conn, conn.begin():
            self._schema_lock(conn)
            tables = set(sa.inspect(conn).get_table_names())
            if not tables:
                _META.create_all(conn)
                conn.execute(_SCHEMA_VERSION.insert().values(app=APP_NAME, version=SCHEMA_VERSION))
                return
            version = self._check_schema(conn, tables)
            if version in UPGRADABLE:
                for table in _ADDED_IN_3:
                    table.create(conn, checkfirst=True)
                conn.execute(_SCHEMA_VERSION.update().values(version=SCHEMA_VERSION))

    def _schema_lock(self, conn: Connection) -> None:
        """Hold off other processes creating or upgrading the schema until this transaction ends."""

    def _check_schema(self, conn: Connection, tables: set[str]) -> int:
        """The store's schema version, when this code can read it (now or after an upgrade); else StoreError."""
        rows: list[Any] = []
        if "schema_version" in tables and {"app", "version"} <= {
                column["name"] for column in sa.inspect(conn).get_columns("schema_version")}:  # not someone else's
            rows = list(conn.execute(sa.select(_SCHEMA_VERSION.c.app, _SCHEMA_VERSION.c.version)))
        if len(rows) != 1 or rows[0][0] != APP_NAME:
            raise StoreError(
                f"{self.where} is a database but not an AutoScout trial store"
                f" (tables: {', '.join(sorted(tables))}); {self._elsewhere()}"
            )
        version = rows[0][1]
        if version != SCHEMA_VERSION and version not in UPGRADABLE:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise StoreError(
                f"{self.where} holds trial-store schema version {version!r}, "
                + ("written by a newer AutoScout" if newer else "which this AutoScout does not know")
                + f" (this one reads version {SCHEMA_VERSION}); "
                + ("upgrade autoscout-plugin" if newer else "use the AutoScout that wrote it")
                + f" or {self._elsewhere()}"
            )
        required = _TABLES - {t.name for t in _ADDED_IN_3} if version in UPGRADABLE else _TABLES
        if not required <= tables:
            raise StoreError(
                f"{self.where} is an AutoScout trial store missing tables {sorted(required - tables)}; it is damaged:"
                f" move it aside and {self._elsewhere()}"
            )
        return int(version)

    def _elsewhere(self) -> str:
        return "pass another store"


def _insert_trial(conn: Connection, study_id: str, trial: Trial, data: dict[str, Any]) -> int:
    """Insert `trial` as the study's next number (the caller holds the study's lock) and return the number."""
    number = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(_TRIALS.c.number), -1) + 1)
                              .where(_TRIALS.c.study_id == study_id)).scalar_one())
    conn.execute(_TRIALS.insert().values(
        study_id=study_id, number=number, status=trial.status, value=trial.value, cost_s=trial.cost_s,
        fidelity=trial.fidelity.value, data=dump_trial({**data, "number": number}), created_s=time.time()))
    return number


def _held(claim: Claim) -> tuple[Any, ...]:
    """The WHERE clause of a claim still held by its holder (not taken over since)."""
    return (_CLAIMS.c.study_id == claim.study_id, _CLAIMS.c.config_key == claim.key, _CLAIMS.c.token == claim.token,
            _CLAIMS.c.state == "running")


def _server_now(conn: Connection) -> float:
    """The database's clock in seconds since the epoch: leases never depend on the workers' clocks agreeing."""
    if conn.dialect.name == "postgresql":
        clock = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
    else:  # SQLite: every process that opens the file is on this machine; its clock is the file's clock
        clock = "(julianday('now') - 2440587.5) * 86400.0"
    return float(conn.execute(sa.text(f"SELECT {clock}")).scalar_one())


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else "unknown error"
    return text.splitlines()[0] if text else type(error).__name__
