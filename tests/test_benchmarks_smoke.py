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


_ANNOTATE_SAMPLE = """\
--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
795,563,839 (100.0%)  PROGRAM TOTALS
90,283,385 (11.35%)  /tmp/build/Python/generated_cases.c.h:_PyEval_EvalFrameDefault'2
32,557,096 ( 4.09%)  ./elf/../sysdeps/x86_64/tls_get_addr.S:__tls_get_addr [/usr/lib/ld.so.2]
    1,135 ( 0.00%)  ???:OPENSSL_LH_insert [/usr/lib/libcrypto.so.3]
      700 ( 0.00%)  /tmp/other/Python/generated_cases.c.h:_PyEval_EvalFrameDefault'2
"""


def test_instruction_split_reads_callgrind_annotate() -> None:
    """``--functions`` keys each C function by file base name and drops the program total."""
    from benchmarks import instructions

    assert instructions.parse_annotate(_ANNOTATE_SAMPLE) == {
        "generated_cases.c.h:_PyEval_EvalFrameDefault'2": 90_284_085,
        "tls_get_addr.S:__tls_get_addr": 32_557_096,
        "???:OPENSSL_LH_insert": 1_135,
    }


def test_instruction_split_sorts_by_cancelscopes_excess() -> None:
    """The rows go from the function cancelscope spends most more in; totals are exact."""
    from benchmarks import instructions

    split = {
        "cancelscope": {"eval": 30.0, "alloc": 5.0, "only_ours": 2.0},
        "stdlib": {"eval": 20.0, "alloc": 7.0, "only_std": 1.0},
    }
    rows = instructions.function_table("E", split, top=3)
    body = rows[3:]
    assert body == [
        "| eval | 30 | 20 | +10 |",
        "| only_ours | 2 | 0 | +2 |",
        "| only_std | 0 | 1 | -1 |",
        "| (all functions) | 37 | 28 | +9 |",
    ]
    assert "Case E (fired timeout)" in rows[0]


def test_instruction_counts_refuse_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import instructions

    assert instructions.main(["E", "-n", "0"]) == 2
    assert "-n and --top need a positive number" in capsys.readouterr().err
    assert instructions.main(["E", "--functions", "--top", "0"]) == 2
    assert "-n and --top need a positive number" in capsys.readouterr().err
