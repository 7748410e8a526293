"""A throwaway PostgreSQL server for the tests.

``PostgresServer().start()`` makes a fresh cluster in a temporary folder (``initdb``), starts it on a free TCP port
on 127.0.0.1 and returns once it accepts connections; ``stop()`` kills it and removes the folder. Every started
server is also stopped when the Python process exits.

Roles:

* ``autoscout``: superuser, no password (``trust`` over 127.0.0.1); ``url(db)`` connects as it.
* ``autoscout_pw`` with password ``s3cret-pw``: superuser, ``scram-sha-256`` over 127.0.0.1;
  ``password_url(db)`` connects as it.

PostgreSQL refuses to run as root, so when this process is root, ``initdb``, ``pg_ctl`` and the server run as the
``postgres`` user; otherwise they run as the current user. The server binaries are looked up in
``$AUTOSCOUT_PG_BINDIR``, next to ``initdb`` on ``PATH``, then in ``/usr/lib/postgresql/<version>/bin``.
Administration (roles, databases) goes through ``psql`` from the same folder, so this module needs no Python driver.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "autoscout"
PASSWORD_USER = "autoscout_pw"
PASSWORD = "s3cret-pw"
HOST = "127.0.0.1"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RUNNING: set[PostgresServer] = set()


class PostgresError(RuntimeError):
    """The server could not be set up, started or administered; the message says why."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``; raises PostgresError if none has all."""
    needed = ("initdb", "pg_ctl", "postgres", "psql")
    candidates: list[Path] = []
    if os.environ.get("AUTOSCOUT_PG_BINDIR"):
        candidates.append(Path(os.environ["AUTOSCOUT_PG_BINDIR"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: int(p.split("/")[-2]), reverse=True)]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in needed):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "nowhere (no initdb on PATH, no /usr/lib/postgresql/*/bin)"
    raise PostgresError(
        f"PostgreSQL server binaries not found: need {', '.join(needed)} in one folder; looked in {looked}. "
        "Install the PostgreSQL server (Debian: postgresql) or set AUTOSCOUT_PG_BINDIR."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _quote_ident(name: str) -> str:
    """``name`` double-quoted, after checking it is a plain identifier (no quoting tricks needed)."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


class PostgresServer:
    """One throwaway PostgreSQL cluster; use ``start()``/``stop()`` or ``with PostgresServer() as server:``."""

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        self.base_dir = base_dir
        self.root: Path | None = None
        self.port: int | None = None
        self.start_seconds: float | None = None
        self._bindir: Path | None = None
        self._run_as: pwd.struct_passwd | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self, attempts: int = 3) -> PostgresServer:
        """Make the cluster and start the server; retries on a port race. Raises PostgresError on failure."""
        if self.root is not None:
            raise PostgresError("server already started")
        began = time.monotonic()
        self._bindir = find_bindir()
        self._run_as = self._server_user()
        self.root = Path(tempfile.mkdtemp(prefix="autoscout-pg-", dir=self._base_dir()))
        _RUNNING.add(self)
        try:
            if self._run_as is not None:
                os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
            self._initdb()
            for attempt in range(attempts):
                self.port = free_port()
                self._configure()
                try:
                    self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), timeout=90)
                    break
                except PostgresError:
                    if attempt == attempts - 1 or "Address already in use" not in self.log():
                        raise
            self.psql(
                "postgres",
                f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'",
            )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Kill the server (``pg_ctl -m immediate``) and remove its folder; safe to call twice."""
        _RUNNING.discard(self)
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "60", timeout=90)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = self.port = None

    def __enter__(self) -> PostgresServer:
        return self.start() if self.root is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and administration ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether ``start()`` succeeded and ``stop()`` has not been called yet."""
        return self.root is not None and self.port is not None

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder."""
        return self._root() / "data"

    @property
    def log_file(self) -> Path:
        """The server's log (also holds initdb's failures)."""
        return self._root() / "server.log"

    @property
    def pid(self) -> int:
        """The postmaster's process id, from ``postmaster.pid``."""
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, database: str = "postgres") -> str:
        """``postgresql://autoscout@127.0.0.1:PORT/DATABASE`` (no password needed)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self._port()}/{database}"

    def password_url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        """``postgresql://autoscout_pw:PASSWORD@127.0.0.1:PORT/DATABASE``; pass a wrong password to test failures."""
        return f"postgresql://{PASSWORD_USER}:{password}@{HOST}:{self._port()}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (a plain identifier) and return its URL."""
        self.psql("postgres", f"CREATE DATABASE {_quote_ident(name)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, closing any connections still open to it."""
        self.psql("postgres", f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` with psql as the superuser over TCP; returns unaligned, tuples-only output."""
        cmd = [str(self._bindir_() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        cmd += ["-h", HOST, "-p", str(self._port()), "-U", SUPERUSER, "-d", database]
        proc = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PostgresError(f"psql failed ({proc.returncode}) running {sql!r}: {proc.stderr.strip()}")
        return proc.stdout

    def log(self) -> str:
        """The server log's text ('' if there is none yet)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals ------------------------------------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise PostgresError("server not started")
        return self.root

    def _port(self) -> int:
        if self.port is None:
            raise PostgresError("server not started")
        return self.port

    def _bindir_(self) -> Path:
        if self._bindir is None:
            raise PostgresError("server not started")
        return self._bindir

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        """None to run as ourselves; the ``postgres`` account when we are root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return None
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresError(
                "running as root, and PostgreSQL refuses to run as root, but there is no 'postgres' user "
                "to run it as (create one, e.g. with the Debian postgresql package, or run the tests as non-root)"
            ) from None
        if user.pw_uid == 0:
            raise PostgresError("the 'postgres' user has uid 0; PostgreSQL refuses to run as root")
        return user

    def _base_dir(self) -> str:
        """Where to make the temporary folder: one the server user can reach (as root: every parent o+x)."""
        base = str(self.base_dir) if self.base_dir is not None else tempfile.gettempdir()
        if self._run_as is None or self.base_dir is not None:
            return base
        path = Path(base).resolve()
        if all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents]):
            return str(path)
        return "/tmp"

    def _run(self, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the server user, from a folder it can read; raise PostgresError on failure."""
        kwargs: dict[str, object] = {}
        env = _clean_env()
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
            env.update(HOME=self._run_as.pw_dir, USER=self._run_as.pw_name, LOGNAME=self._run_as.pw_name)
        try:
            proc = subprocess.run(
                args, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
            )
        except subprocess.TimeoutExpired as e:
            raise PostgresError(f"{what} timed out after {timeout} s; log:\n{self.log()[-3000:]}") from e
        except PermissionError as e:
            raise PostgresError(f"{what}: cannot switch to user {self._run_as.pw_name!r}: {e}") from e
        if proc.returncode != 0:
            detail = (proc.stdout + proc.stderr).strip()
            raise PostgresError(f"{what} failed ({proc.returncode}): {detail}\nlog:\n{self.log()[-3000:]}")
        return proc

    def _initdb(self) -> None:
        args = [str(self._bindir_() / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", SUPERUSER]
        args += ["--no-sync", "--no-instructions", "--locale=C", "-E", "UTF8"]
        self._run(args, timeout=120, what="initdb")

    def _configure(self) -> None:
        """Write postgresql.conf's overrides (port, sockets, speed) and pg_hba.conf (password role first)."""
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "100",
            "shared_buffers": "16MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "password_encryption": "'scram-sha-256'",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
            "local all all trust\n"
            f"host all {PASSWORD_USER} {HOST}/32 scram-sha-256\n"
            f"host all all {HOST}/32 trust\n"
        )
        if self._run_as is not None:
            for path in (conf, hba):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _pg_ctl(self, *args: str, timeout: float = 90) -> None:
        cmd = [str(self._bindir_() / "pg_ctl"), "-D", str(self.data_dir), *args]
        self._run(cmd, timeout=timeout, what=f"pg_ctl {args[0]}")


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables (PGHOST, PGDATA, ... would redirect the tools)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C")
    return env


@atexit.register
def _stop_all() -> None:
    """Stop every server still running when the interpreter exits."""
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception:  # best effort at exit
            pass
