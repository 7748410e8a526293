"""The throwaway PostgreSQL server the store tests use (tests/pg.py, fixtures in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pg import PASSWORD, PASSWORD_USER, PostgresServer

try:
    import psycopg
except ImportError as e:  # the PostgreSQL tests must run under CI: fail there, skip elsewhere
    if os.environ.get("CI"):
        raise
    pytest.skip(f"psycopg is not installed: {e}", allow_module_level=True)


def test_url_connects_over_tcp_and_stores_rows(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://autoscout@127.0.0.1:")
    with psycopg.connect(postgres_url) as conn:
        assert conn.info.host == "127.0.0.1"
        conn.execute("CREATE TABLE trials (id serial PRIMARY KEY, config jsonb NOT NULL, seconds double precision)")
        conn.execute("INSERT INTO trials (config, seconds) VALUES (%s, %s), (%s, %s)", ('{"bs": 8}', 1.5, "{}", 2.0))
        conn.commit()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT config->>'bs', seconds FROM trials ORDER BY id").fetchall()
    assert rows == [("8", 1.5), (None, 2.0)]


def test_each_test_database_is_its_own(postgres_server: PostgresServer, postgres_url: str) -> None:
    other = postgres_server.create_database("autoscout_isolation_check")
    try:
        with psycopg.connect(postgres_url) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
            conn.commit()
        with psycopg.connect(other) as conn:
            found = conn.execute("SELECT to_regclass('only_here')").fetchone()
        assert found == (None,)
    finally:
        postgres_server.drop_database("autoscout_isolation_check")
    with psycopg.connect(postgres_server.url("postgres")) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert "autoscout_isolation_check" not in names
    assert postgres_url.rsplit("/", 1)[1] in names


def test_drop_database_closes_connections_left_open(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("autoscout_left_open")
    conn = psycopg.connect(url)
    try:
        postgres_server.drop_database("autoscout_left_open")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()


def test_password_url_needs_the_right_password(postgres_server: PostgresServer, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    url = postgres_server.password_url(database)
    assert url.startswith(f"postgresql://{PASSWORD_USER}:{PASSWORD}@127.0.0.1:")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (PASSWORD_USER, database)
        conn.execute("CREATE TABLE t (x int)")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.password_url(database, password="wrong"))
    without = url.replace(f":{PASSWORD}@", "@")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(without, connect_timeout=10)


def test_server_listens_on_loopback_only(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an unreaped zombie has already exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


@pytest.mark.slow
def test_stop_ends_the_server_and_removes_its_folder() -> None:
    server = PostgresServer()
    try:
        server.start()
    except Exception as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot start PostgreSQL: {e}")
    root, pid, url = server.root, server.pid, server.url()
    assert _alive(pid)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    server.stop()
    assert not server.running
    assert not _alive(pid)
    assert not root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5)
    server.stop()  # a second stop is harmless
