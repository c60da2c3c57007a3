"""Every example and the demo run to completion and print what the docs promise."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._postgres import NoPostgres, postgres_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    """Each example runs on its own, exits 0 and prints something."""
    assert _run(str(path)).strip()


def test_tour_output() -> None:
    """The tour shows siblings cancelled, a swallowed cancellation re-delivered, and a timeout."""
    out = _run(str(ROOT / "examples" / "tour.py"))
    assert "1. ConnectionError('replica 2 is down') ['replica-3']" in out
    assert "2. swallowed: cancelled by scope 'poll': deadline exceeded" in out
    assert "2. moved on: True" in out
    assert "3. cleanup done; cancel requested: True" in out
    assert "3. scope 'checkout' timed out (deadline exceeded) | a TimeoutError too: True" in out


def test_composing_output() -> None:
    """The composing patterns: timeouts, race losers, pipeline, watchdog, token, SQLite."""
    out = _run(str(ROOT / "examples" / "composing.py"))
    assert "1. scope 'fetch' timed out (deadline exceeded)" in out
    assert "1. download: cancel token timed out (deadline exceeded)" in out
    assert "2. rows from primary | stopped: ['replica']" in out
    assert "| pipeline: consumer has enough" in out
    assert "4. watchdog: memory over limit | stopped: ['a', 'b']" in out
    assert "5. scope 'job 42' was cancelled: cancelled by the user" in out
    assert "6. query interrupted: True" in out


def test_demo_module() -> None:
    """`python -m cancelscope.demo` contrasts gather's zombies with a scope's cleanup."""
    out = _run("-m", "cancelscope.demo")
    assert "asyncio.gather : ['replica-3']" in out
    assert "cancelscope    : none" in out
    assert "moved on: True" in out


def _scenario(name: str, *args: str) -> dict[str, object]:
    """Run ``examples/<name>.py``'s scenario(*args) in a fresh interpreter; return its dict."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        f"import {name}; print(json.dumps({name}.scenario(*sys.argv[2:])))"
    )
    result: dict[str, object] = json.loads(_run("-c", code, str(ROOT / "examples"), *args))
    return result


def _check_zombies(result: dict[str, object]) -> None:
    assert result["incident"] == "zombie queries"
    assert result["fixed"] is True
    rows = {row[0]: row[1:] for row in result["rows"]}  # type: ignore[attr-defined]
    assert rows["connections held after the failure"] == ["2", "0"]
    assert rows["queries interrupted in the database"][0] == "0"
    assert rows["queries interrupted in the database"][1] != "0"
    assert rows["burst: requests refused (pool of 4)"][0] != "0"
    assert rows["burst: requests refused (pool of 4)"][1] == "0"


def test_zombie_queries_sqlite() -> None:
    """SQLite: gather keeps 2 connections and exhausts the pool; a scope interrupts the queries."""
    _check_zombies(_scenario("zombie_queries"))


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    """A throw-away PostgreSQL server, or a skip saying why none could be started."""
    try:
        with postgres_server() as dsn:
            yield dsn
    except NoPostgres as exc:
        pytest.skip(f"no PostgreSQL server for the --postgres example: {exc}")


def test_zombie_queries_postgres(postgres_dsn: str) -> None:
    """PostgreSQL via asyncpg: the same story against a real server (`--postgres DSN`)."""
    out = _run(str(ROOT / "examples" / "zombie_queries.py"), "--postgres", postgres_dsn)
    assert "PostgreSQL (asyncpg)" in out
    _check_zombies(_scenario("zombie_queries", postgres_dsn))


def test_abandoned_fetch() -> None:
    """Only a scope on the client plus CancelOnDisconnect on the server leave nothing running."""
    result = _scenario("abandoned_fetch")
    assert result["incident"] == "abandoned fetch"
    assert result["fixed"] is True
    assert result["rows"] == [
        ["asyncio.gather client", "client 2, server 2", "client 2, server 2"],
        ["cancelscope scope client", "client 0, server 2", "client 0, server 0"],
    ]
