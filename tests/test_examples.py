"""Every example and the demo run to completion and print what the docs promise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cancelscope
from cancelscope import demo

from ._postgres import NoPostgres, postgres_server

ROOT = Path(__file__).resolve().parent.parent
# Files starting with "_" are helpers of the examples, not examples.
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def _run(*args: str, rc: int = 0, stderr: bool = False) -> str:
    """Run ``python ARGS`` (bounded by a generous timeout); check its exit status and stderr."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == rc, proc.stderr
    if not stderr:
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


def _table_rows(out: str) -> dict[str, list[str]]:
    """The rows of the tables an example printed: first cell -> the other cells, stripped."""
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def test_port_still_bound_output() -> None:
    """The naive server keeps its port after SIGINT; under cs.run the restart binds it."""
    out = _run(str(ROOT / "examples" / "port_still_bound.py"))
    lines = _table_rows(out)
    assert lines["health check caught"] == ["CancelledError", "CancelledError"]
    assert lines["after the signal"] == [
        "kept starting up (health check 2)",
        "closed the server, exited 130",
    ]
    assert lines["restart on the same port"] == [
        "cannot bind: EADDRINUSE (Address already in use)",
        "bound the port",
    ]


def test_swallowed_cancel_output() -> None:
    """task.cancel() is swallowed and the batch goes on; a scope's cancel stops it."""
    out = _run(str(ROOT / "examples" / "swallowed_cancel.py"))
    rows = _table_rows(out)
    assert rows["jobs done after the cancel"] == ["7", "0"]
    assert rows["the except block caught"] == [
        "CancelledError()",
        "cancelled by scope 'batch': shutting down",
    ]


def test_foreign_timeout_output() -> None:
    """A hand-rolled timeout swallows the caller's cancel; a scope or with_timeout does not."""
    rows = _table_rows(_run(str(ROOT / "examples" / "foreign_timeout.py")))
    assert rows["the helper"] == [
        "raised TimeoutError",
        "raised TimeoutError",
        "let it through: cancelled by scope 'request': client went away",
    ]
    assert rows["then the handler"] == [
        "went on: served the cached price",
        "stopped at the next await",
        "-",
    ]


def test_shielded_cleanup_output() -> None:
    """asyncio.shield loses records at shutdown; the cancelscope shield commits all, bounded."""
    out = _run(str(ROOT / "examples" / "shielded_cleanup.py"))
    rows = _table_rows(out)
    assert rows["records written in the end"][1] == "3 of 3"
    assert rows["records written in the end"][0] in ("1 of 3", "2 of 3")
    assert rows["tasks left running then"] == ["1", "0"]
    assert rows["commit saw the shutdown"][1] == "skipped warm-up: server shutting down"
    assert rows["if the store hangs"][1] == (
        "TimeoutFailure: scope 'commit-deadline' timed out (deadline exceeded)"
    )


def _demo_json(*args: str, rc: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        _run("-m", "cancelscope.demo", "--json", *args, rc=rc, stderr=True)
    )
    return result


def test_demo_json() -> None:
    """`python -m cancelscope.demo --json` runs every incident of the repository, each fixed."""
    result = _demo_json()
    rows = {row["name"]: row for row in result["incidents"]}
    assert [name for name, _ in demo.INCIDENTS] == [n for n in rows if "/" not in n]
    for name, _incident in demo.INCIDENTS:
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["fixed"] is True, rows[name]
    assert rows["swallowed_cancel/who_cancelled"]["cancelscope"] == (
        "cancelled by scope 'batch': shutting down"
    )
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["fixed"] is True, row
    assert result["fixed"] == result["ran"] == len(rows)
    assert result["not_available"] == 0


def test_demo_text() -> None:
    """The demo prints a progress line per incident, then one summary table."""
    out = _run("-m", "cancelscope.demo")
    for number, (name, _incident) in enumerate(demo.INCIDENTS, 1):
        assert f"[{number}/{len(demo.INCIDENTS)}] {name}: " in out
    assert "| plain asyncio" in out
    assert "| cancelscope" in out
    assert "Ctrl-C during start-up leaves the port bound" in out
    assert "cancelscope fixed " in out


def test_demo_reports_missing_and_broken_examples(tmp_path: Path) -> None:
    """A missing example is "not available", a broken one an error; the rest still run."""
    shutil.copy(ROOT / "examples" / "_table.py", tmp_path)
    shutil.copy(ROOT / "examples" / "swallowed_cancel.py", tmp_path)
    (tmp_path / "shielded_cleanup.py").write_text(
        "def scenario():\n    raise RuntimeError('broken on purpose')\n"
    )
    result = _demo_json("--examples", str(tmp_path), rc=1)
    rows = {row["name"]: row for row in result["incidents"]}
    assert rows["zombie_queries"]["status"] == "not available"
    assert rows["port_still_bound"]["status"] == "not available"
    assert rows["swallowed_cancel"]["status"] == "ok"
    assert rows["shielded_cleanup"]["status"] == "error: RuntimeError: broken on purpose"
    assert result["not_available"] == 4


def test_examples_dir_in_a_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed from a wheel, the demo finds the examples packaged as cancelscope/_examples."""
    package = tmp_path / "site-packages" / "cancelscope"
    (package / "_examples").mkdir(parents=True)
    (package / "_examples" / "_table.py").write_text("")
    monkeypatch.setattr(cancelscope, "__file__", str(package / "__init__.py"))
    assert demo.examples_dir() == package / "_examples"


def test_examples_dir_in_the_checkout() -> None:
    """In an editable install the demo runs the repository's examples/."""
    assert demo.examples_dir() == ROOT / "examples"
