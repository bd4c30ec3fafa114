"""A throw-away PostgreSQL server on loopback for tests of ``chaosfm tune --storage postgresql://``.

The server binaries are Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``;
``pg_config --bindir`` may name the client's folder instead). A cluster is made with ``initdb`` in a
temporary folder (trust authentication: it listens on 127.0.0.1 and a unix socket in that folder
only), started with ``pg_ctl`` on a free port, stopped and removed afterwards. PostgreSQL refuses to
run as root, so as root both run as ``nobody``. Without the binaries a test skips, unless
``CHAOSFM_REQUIRE_POSTGRES=1`` (CI), where it fails.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = "apt-get install -y postgresql"
SERVER = ("initdb", "pg_ctl", "postgres")
TIMEZONE = "Pacific/Chatham"
"""The server's own time zone: UTC+12:45 or +13:45, so a heartbeat kept in the server's local
time instead of UTC is off by half a day, not by nothing."""


def server_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates = []
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)  # a symlink on PATH points into Debian's folder
    if shutil.which("pg_config"):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        candidates += [Path(bindir)] if bindir else []
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in SERVER):
            return folder
    return None


def require_server() -> Path:
    """The server binaries' folder; skips the test without them (fails with CHAOSFM_REQUIRE_POSTGRES=1)."""
    bindir = server_bindir()
    if bindir is not None:
        return bindir
    where = "on PATH, in `pg_config --bindir` or in /usr/lib/postgresql/*/bin"
    if os.environ.get("CHAOSFM_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"CHAOSFM_REQUIRE_POSTGRES=1 and no PostgreSQL server (initdb, pg_ctl, postgres) {where}:"
                    f" install it ({INSTALL})")
    pytest.skip(f"no PostgreSQL server (initdb, pg_ctl, postgres) {where} ({INSTALL};"
                " CHAOSFM_REQUIRE_POSTGRES=1 makes this a failure)")


def _others_can_enter(folder: Path) -> bool:
    """Whether a user other than the owner may pass through ``folder`` and each of its parents."""
    import stat

    folder = folder.resolve()
    return all(path.stat().st_mode & stat.S_IXOTH for path in (folder, *folder.parents))


def _unprivileged() -> list[str]:
    """The command prefix that runs the server's tools as ``nobody`` when this process is root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    raise RuntimeError("PostgreSQL does not run as root, and neither runuser nor setpriv is here to drop to nobody")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


@contextlib.contextmanager
def postgres_server(bindir: Path) -> Iterator[tuple[str, int]]:
    """A running server, as ``(host, port)``; superuser ``postgres``, no password (trust on loopback).

    Stopped (immediate shutdown: nothing in it is kept) and its folder removed on exit, also when
    the body raised.
    """
    as_user = _unprivileged()
    # Not pytest's tmp_path: its parents are private to the current user, and the server may be nobody.
    # Nor a TMPDIR nobody cannot enter (a private temporary folder): then the system's /tmp.
    parent = None if not as_user or _others_can_enter(Path(tempfile.gettempdir())) else "/tmp"
    root = Path(tempfile.mkdtemp(prefix="chaosfm-pg-", dir=parent))
    data = root / "data"
    try:
        if as_user:
            shutil.chown(root, "nobody", "nogroup")
        _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--encoding=UTF8", "--locale=C", "--no-sync"], timeout=120)
        for attempt in range(3):  # the free port can be taken between the probe and the start
            port = free_port()
            options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c timezone={TIMEZONE}"
            try:
                _run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                      "-w", "-t", "60", "-o", options, "start"], timeout=120)
                break
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"the server did not start; its log:\n{(root / 'server.log').read_text()}")
        try:
            yield "127.0.0.1", port
        finally:
            _run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(host: str, port: int, name: str) -> str:
    """A new, empty database on the server; its URL as a user writes it (``postgresql://``)."""
    import psycopg2

    connection = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return f"postgresql://postgres@{host}:{port}/{name}"
