"""Every example and the demo run to completion and print what the docs promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


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
