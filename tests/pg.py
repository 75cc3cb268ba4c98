"""A real, throwaway PostgreSQL server for tests, started by ``scripts/postgres.sh``.

No pytest-postgresql: the script installs the server when needed (apt-get), initialises a cluster
in a temporary folder owned by the ``postgres`` user and serves it on a free loopback port. A
server that cannot be started is a test failure with the script's own message, never a skip:
multi-worker tuning must be tested in CI.

Use: ``from pg import postgres_url`` in a test module, then take ``postgres_url`` as a fixture.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "postgres.sh"


@dataclass
class PostgresServer:
    """A running server: its folder (for stopping it) and how to reach it."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(*args: str, timeout: float) -> str:
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/postgres.sh {' '.join(args)} failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc.stdout.strip()


def start_postgres() -> PostgresServer:
    """Install if needed, then start a server; raises RuntimeError saying why it could not."""
    _script("install", timeout=900)
    last: Exception | None = None
    for _ in range(3):  # the port may be taken between choosing and binding it
        port = free_port()
        try:
            folder = _script("start", str(port), timeout=120).splitlines()[-1]
            return PostgresServer(folder=Path(folder), port=port)
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"could not start PostgreSQL: {last}")


def stop_postgres(server: PostgresServer) -> None:
    _script("stop", str(server.folder), timeout=60)


def create_database(server: PostgresServer) -> str:
    """A fresh database on the server (one per test keeps tests independent); returns its URL."""
    import psycopg2

    name = "t_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return f"postgresql+psycopg2://postgres@127.0.0.1:{server.port}/{name}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except Exception as exc:  # the reason becomes the failure message
        pytest.fail(f"PostgreSQL server could not be started: {exc}", pytrace=False)
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL of an empty database on the running test server."""
    return create_database(postgres_server)
