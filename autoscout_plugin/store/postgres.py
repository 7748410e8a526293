"""The shared trial store: one PostgreSQL database that every worker, machine and teammate reads and writes.

`SQLStore` on PostgreSQL (see `sql.py` for what every store does), reached by a URL such as
`postgresql://tuner@db.example:5432/autoscout` (the password, when there is one, best comes from
`PGPASSWORD` or `~/.pgpass` rather than the URL; either way it is masked in every message and log line).
The driver is psycopg 3 (`pip install "autoscout-plugin[postgresql]"`).

Each worker keeps at most `pool_size` connections (2: the trial loop and its heartbeat), so a hundred
workers stay well under a default server's `max_connections`. Every change is one short transaction, and
the server ends any transaction left idle for a minute (`idle_in_transaction_session_timeout`), so a
stuck client can never hold a study's lock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .errors import StoreError
from .sql import _SCHEMA_LOCK, SQLStore

SCHEMES = ("postgresql", "postgres")
"""URL schemes (before any `+driver`) that name a PostgreSQL store."""


class PostgresStore(SQLStore):
    """The `TrialStore` contract, claims and leases included, in a PostgreSQL database.

    Args:
        url: `postgresql://user[:password]@host[:port]/database` (`postgres://` and `postgresql+psycopg://`
            too). The database must exist; the tables are created on first use. A database that holds
            other tables and no AutoScout store is refused and left untouched.
        timeout_s: How long a connection attempt, or a write waiting for a lock, waits before giving up.
        pool_size: Connections this store keeps at most.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, pool_size: int = 2) -> None:
        parsed = _parse(url)
        self.url = parsed.set(drivername=url.split("://", 1)[0]).render_as_string(hide_password=True)
        """The URL as given, its password masked: safe to print."""
        connect_args = {
            "connect_timeout": max(1, round(timeout_s)),
            "application_name": "autoscout",
            "options": f"-c lock_timeout={round(timeout_s * 1000)} -c idle_in_transaction_session_timeout=60000",
        }
        try:
            engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=0, pool_timeout=timeout_s,
                                      pool_pre_ping=True, connect_args=connect_args)
        except ModuleNotFoundError as exc:  # the driver is an extra
            raise StoreError(
                f"the PostgreSQL trial store {self.url} needs the psycopg driver ({exc}); install it with "
                'pip install "autoscout-plugin[postgresql]"'
            ) from exc
        super().__init__(engine, self.url, timeout_s=timeout_s)

    def _schema_lock(self, conn: Connection) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})

    def _secret_bearing(self, exc: sa.exc.DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) is None  # raised while connecting: it holds the connection info

    def _describe(self, exc: sa.exc.DBAPIError) -> str:
        text = _message(exc.orig)
        code = getattr(exc.orig, "sqlstate", None)  # None for a failed connection: psycopg reads the text only
        if code in ("28P01", "28000") or "password authentication failed" in text or "no password supplied" in text:
            return (f"the server refused the login to {self.url}: {text}; check the user and the password"
                    " (PGPASSWORD, ~/.pgpass or the URL)")
        if code == "3D000" or ("database" in text and "does not exist" in text):
            return (f"the database of {self.url} does not exist: {text}; create it first (createdb, or "
                    "CREATE DATABASE in psql)")
        if code == "53300" or "too many clients" in text or "remaining connection slots" in text:
            return (f"the server of {self.url} has no connection left ({text}); raise its max_connections or run "
                    "fewer workers")
        if code == "55P03":
            return (f"gave up after {self.timeout_s:g} s waiting for a lock in {self.url}; check for a hung client"
                    " of this store (pg_stat_activity), or pass a larger timeout_s")
        if code is None or code.startswith("08"):
            return (f"cannot connect to the trial store {self.url}: {text}; check that the server is running and "
                    "reachable, and the user, password and database name")
        return f"PostgreSQL error on {self.url}: {text}"

    def _elsewhere(self) -> str:
        return "create a database for AutoScout (CREATE DATABASE autoscout) and pass its URL"


def is_postgres_url(spec: Any) -> bool:
    """Whether `spec` names a PostgreSQL store (a URL), not a file path."""
    return isinstance(spec, str) and spec.split("://", 1)[0].split("+", 1)[0].lower() in SCHEMES and "://" in spec


def _parse(url: str) -> sa.engine.URL:
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise StoreError(
            f"cannot read the store URL {_masked(url)!r}: {exc}; write it as postgresql://user@host:port/database"
        ) from None
    scheme, _, driver = parsed.drivername.partition("+")
    if scheme not in SCHEMES or driver not in ("", "psycopg"):
        raise StoreError(
            f"the store URL {_masked(url)!r} names {parsed.drivername!r}; AutoScout reads postgresql:// URLs"
            " (driver psycopg) or SQLite file paths"
        )
    if not parsed.host and not parsed.query.get("host"):
        raise StoreError(f"the store URL {_masked(url)!r} names no host; write postgresql://user@host:port/database")
    if not parsed.database:
        raise StoreError(
            f"the store URL {_masked(url)!r} names no database; write postgresql://user@host:port/database"
        )
    return parsed.set(drivername="postgresql+psycopg")


def _masked(url: str) -> str:
    from ..redact import redact

    return redact(url) or ""


def _message(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else "unknown error"
    return " ".join(text.split())[:400] or type(error).__name__
