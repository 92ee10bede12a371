"""pytest plugin: a throwaway PostgreSQL server for the tests that need one.

The session starts one server on loopback from the newest PostgreSQL server
binaries installed (``initdb``/``pg_ctl``), in a temporary directory that is
removed at the end. With ``DURABLE_TEST_POSTGRES_URL`` set, that server is used
instead. ``postgres_dsn`` gives each test a fresh, empty database and drops it
afterwards. No server and no URL is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_VARIABLE = "DURABLE_TEST_POSTGRES_URL"
_START_ATTEMPTS = 3


def find_bindir() -> Path | None:
    """The bin directory of the newest installed PostgreSQL server (one with initdb and pg_ctl)."""
    candidates: list[Path] = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    candidates += [Path(p) for p in glob.glob("/usr/pgsql-*/bin")]  # RPM layout
    candidates += [Path(p) for p in glob.glob("/opt/homebrew/opt/postgresql@*/bin")]
    for tool in ("pg_config", "initdb"):
        found = shutil.which(tool)
        if found is None:
            continue
        if tool == "pg_config":
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([found, "--bindir"], capture_output=True, text=True,
                                     timeout=10, check=True).stdout.strip()
                if out:
                    candidates.append(Path(out))
        else:
            candidates.append(Path(found).resolve().parent)
    usable = {c.resolve() for c in candidates
              if (c / "initdb").is_file() and (c / "pg_ctl").is_file() and (c / "postgres").is_file()}
    if not usable:
        return None
    return max(usable, key=_server_version)


def _server_version(bindir: Path) -> tuple[int, ...]:
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return (0,)
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    return tuple(int(part) for part in match.groups() if part) if match else (0,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A PostgreSQL cluster in a temporary directory, run as ``postgres`` when we are root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="durable-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            try:
                shutil.chown(self.root, user="postgres", group=None)
            except (LookupError, OSError) as error:
                shutil.rmtree(self.root, ignore_errors=True)
                pytest.fail(f"running as root, the test PostgreSQL server must run as the "
                            f"'postgres' user, which is not usable here: {error}", pytrace=False)
            os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            runuser = shutil.which("runuser")
            command = ([runuser, "-u", "postgres", "--", *command] if runuser
                       else ["su", "postgres", "-s", "/bin/sh", "-c", _quote(command)])
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, check=False)

    def start(self) -> None:
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--no-sync")
        if done.returncode != 0:
            self.cleanup()
            pytest.fail(f"initdb failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
        for attempt in range(_START_ATTEMPTS):
            self.port = _free_port()
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.root}'",
                "fsync": "on",
                "max_connections": "200",
                "shared_buffers": "32MB",
                "track_commit_timestamp": "on",  # lets tests count the transactions that wrote rows
            }
            with open(self.data / "postgresql.auto.conf", "a") as conf:
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", "60", "start")
            if done.returncode == 0:
                return
            if attempt == _START_ATTEMPTS - 1:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                self.cleanup()
                pytest.fail(f"the test PostgreSQL server did not start:\n{done.stdout}\n"
                            f"{done.stderr}\n{log}", pytrace=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        self.cleanup()

    def halt(self) -> None:
        """Stop the server and keep its data, as an outage would; ``resume`` starts it again."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if done.returncode != 0:
            pytest.fail(f"the test PostgreSQL server did not stop:\n{done.stdout}\n{done.stderr}",
                        pytrace=False)

    def resume(self) -> None:
        """Start a halted server again, on the same port."""
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                         "start")
        if done.returncode != 0:
            pytest.fail(f"the test PostgreSQL server did not start again:\n{done.stdout}\n"
                        f"{done.stderr}", pytrace=False)

    def processes(self) -> list[int]:
        """The server's processes: the postmaster (its pid file's first line) and its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _quote(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A server URL for an administrative database (``DURABLE_TEST_POSTGRES_URL`` or our own)."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield given
        return
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(f"the PostgreSQL tests need a server: install the PostgreSQL server "
                    f"(initdb, pg_ctl, postgres) or set {URL_VARIABLE} to a server URL",
                    pytrace=False)
    server = LocalServer(bindir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def with_database(url: str, dbname: str) -> str:
    """The same server, another database; URLs stay URLs (for ``open_store``)."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + dbname))
    import psycopg.conninfo
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture
def postgres_dsn(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"durable_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))
