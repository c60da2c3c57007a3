"""A throw-away PostgreSQL server for the tests that need one, or a clear reason why not."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NoPostgres", "postgres_server"]


class NoPostgres(Exception):
    """No PostgreSQL server could be started here; the message says why."""


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = candidates[-1] if candidates else None
    if found is None:
        raise NoPostgres(
            f"{name} not found on PATH or in /usr/lib/postgresql/*/bin "
            "(install PostgreSQL, e.g. `apt-get install postgresql`)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL in a temporary directory on a loopback port; yield its DSN; stop it."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own account
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if runuser is None:
            raise NoPostgres("running as root, and no 'postgres' user to run the server as")
        run_as = [runuser, "-u", "postgres", "--"]
    with tempfile.TemporaryDirectory(prefix="cancelscope-pg-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if run_as:
            shutil.chown(tmp, "postgres")
            shutil.chown(data, "postgres")
        port = _free_port()

        def run(*args: str) -> None:
            proc = subprocess.run(
                [*run_as, *args], capture_output=True, text=True, timeout=60, check=False
            )
            if proc.returncode != 0:
                raise NoPostgres(f"{Path(args[0]).name} failed: {proc.stderr.strip()[-500:]}")

        run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(Path(tmp) / "log"), "-w", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
