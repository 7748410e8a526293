"""Trial history: studies keyed by fingerprint, their trials and winners; resume and warm start.

`open_store(path_or_url)` opens one: a file path (the default, `SQLiteStore`: one machine, several
processes) or a `postgresql://` URL (`PostgresStore`: one history shared by every machine and teammate).
Both are one implementation on SQLAlchemy Core (`sql.py`). `InMemoryStore` serves tests and replay. All
follow the `TrialStore` contract and keep everything as JSON.
"""

from __future__ import annotations

import os

from .base import MAX_ATTEMPTS, Claim, TrialStore
from .errors import StoreError, UnknownStudyError
from .fingerprint import canonical_json, fingerprint, hardware_key, similarity
from .memory import InMemoryStore
from .postgres import PostgresStore, is_postgres_url
from .sql import SCHEMA_VERSION, SQLStore
from .sqlite import SQLiteStore


def open_store(spec: str | os.PathLike[str], *, timeout_s: float = 30.0) -> SQLStore:
    """The trial store named by `spec`: a `postgresql://user@host:port/db` URL, an `sqlite:///path` URL, or
    a file path.

    Example:
        >>> import tempfile, pathlib
        >>> with open_store(pathlib.Path(tempfile.mkdtemp()) / "trials.sqlite") as store:
        ...     type(store).__name__
        'SQLiteStore'
    """
    if is_postgres_url(spec):
        return PostgresStore(str(spec), timeout_s=timeout_s)
    path = store_path(spec)
    if path is None:
        scheme = os.fspath(spec).partition("://")[0]
        raise StoreError(
            f"the trial store {describe_store(spec)!r} is a {scheme}:// URL; AutoScout reads postgresql:// URLs,"
            " sqlite:///relative/path or sqlite:////absolute/path URLs, and file paths"
        )
    return SQLiteStore(path, timeout_s=timeout_s)


def store_path(spec: str | os.PathLike[str]) -> str | None:
    """The SQLite file `spec` names (a path, or an `sqlite:///` URL read as SQLAlchemy reads it: three slashes
    then a relative path, four for an absolute one), or None when it names a server or another scheme.

    Example:
        >>> store_path("runs/trials.sqlite"), store_path("sqlite:////tmp/t.sqlite"), store_path("sqlite:///t.sqlite")
        ('runs/trials.sqlite', '/tmp/t.sqlite', 't.sqlite')
        >>> store_path("postgresql://tuner@db:5432/autoscout") is None
        True
    """
    text = os.fspath(spec)
    if not isinstance(text, str):
        return None
    if "://" not in text:
        return text
    scheme, _, rest = text.partition("://")
    if scheme.lower() != "sqlite" or not rest.startswith("/") or not rest[1:].strip():
        return None
    return rest[1:]


def describe_store(spec: str | os.PathLike[str]) -> str:
    """`spec` safe to print: a URL's password masked."""
    from ..redact import redact

    return redact(os.fspath(spec)) or ""


__all__ = [
    "MAX_ATTEMPTS",
    "SCHEMA_VERSION",
    "Claim",
    "InMemoryStore",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "StoreError",
    "TrialStore",
    "UnknownStudyError",
    "canonical_json",
    "describe_store",
    "fingerprint",
    "hardware_key",
    "is_postgres_url",
    "open_store",
    "similarity",
    "store_path",
]
