"""The benchmark command still runs (its quickest mode); benchmarks assert no timings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNAVAILABLE = ("not installed", "needs Python", "no equivalent", "n/a")
PEERS = {"anyio": "anyio", "trio": "trio", "quattro": "quattro", "aiofence": "aiofence"}


def test_quick_benchmark_run(tmp_path: Path) -> None:
    """``python -m benchmarks --quick`` exits 0 and writes a row per implementation."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())

    ran = {case["id"] for case in result["benchmarks"]}
    assert ran == set(result["ids"]) == set("ABCDEFGH")
    for case in result["benchmarks"]:
        cells: dict[str, dict[str, Any]] = case["cells"]
        where = f"{case['key']}: {cells}"
        assert cells["cancelscope"]["status"] == "ok", where
        assert isinstance(cells["cancelscope"]["median"], float), where
        stdlib = "ok" if sys.version_info >= (3, 11) else "needs Python 3.11+"
        assert cells["stdlib"]["status"] == stdlib, where
        for name, cell in cells.items():
            status = cell["status"]
            assert status == "ok" or status.startswith(UNAVAILABLE), f"{name} in {where}"
        for column, module in PEERS.items():
            too_old = column == "aiofence" and sys.version_info < (3, 12)
            if not too_old and importlib.util.find_spec(module) is None:
                assert cells[column]["status"] == "not installed", where


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the stdlib cases need 3.11+")
@pytest.mark.parametrize("case", ["A", "B", "C", "D.cancel", "E", "H"])
def test_instruction_cases_run(case: str) -> None:
    """Every case of ``python -m benchmarks.instructions`` runs (no valgrind) for each column."""
    from benchmarks import instructions

    for column, _ in instructions.CASES[case]:
        instructions._child(case, column, 3)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring needs 3.12+")
def test_bytecode_counts_name_the_functions_that_ran(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.bytecodes`` counts per function, and per line with --lines."""
    from benchmarks import bytecodes

    assert bytecodes.main(["C", "-n", "2", "--top", "40"]) == 0
    out = capsys.readouterr().out
    cancelscope, stdlib = out.split("## cancelscope\n")[1].split("## stdlib\n")
    assert "_child_main (cancelscope/_tasks.py:" in cancelscope
    assert "TaskGroup.create_task (asyncio/taskgroups.py:" in stdlib
    assert "_child_main" not in stdlib
    assert bytecodes.main(["C", "-n", "2", "--column", "cancelscope", "--lines", "spawn"]) == 0
    out = capsys.readouterr().out
    assert "spawn (cancelscope/_tasks.py:" in out
    assert "loop.create_task(main, name=label)" in out
    assert bytecodes.main(["Z"]) == 2
    assert "unknown case 'Z'" in capsys.readouterr().err
