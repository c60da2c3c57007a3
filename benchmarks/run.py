"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only A,B] [--json PATH]``.

All implementations run in one process. Each repeat runs every benchmark id once per
implementation, in a shuffled order, so drift on a noisy machine spreads over all of them;
the tables show medians over the repeats, ratios against the stdlib, and the spread.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import importlib.metadata
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import QUICK, Cell, Column, Params

IDS = "ABCDEFGH"
RECURSION_LIMIT = 20_000


@dataclass(frozen=True)
class Case:
    key: str
    id: str
    title: str
    unit: str
    higher_is_better: bool = False
    ratio: bool = True  # F is judged as CPU % of wall time, not against the stdlib


def cases(p: Params) -> list[Case]:
    out = [
        Case("A", "A", "enter+exit, no deadline", "ns"),
        Case("B", "B", "enter+exit, deadline 1000 s", "ns"),
        Case("C", "C", f"{p.children} sleeping children: start-to-exit", "ms"),
        Case("C'", "C", f"{p.children} sleeping children: cancel-to-exit", "ms"),
    ]
    for depth in p.depths:
        out.append(Case(f"D.cancel.{depth}", "D", f"nest of {depth}: cancel-to-exit", "µs"))
    for depth in p.depths:
        out.append(Case(f"D.nest.{depth}", "D", f"nest of {depth}: enter-to-exit", "µs"))
    out += [
        Case("E", "E", "timeout(0) fires around a sleep", "ns"),
        Case("F", "F", "CPU while cancelled inside a shield", "% wall", ratio=False),
        Case("G", "G", f"bytes per open scope ({p.open_scopes} open)", "B"),
        Case("G.deadline", "G", "bytes per open scope with a deadline", "B"),
        Case("H", "H", f"{p.requests} requests, 3 awaits each", "req/s", higher_is_better=True),
    ]
    return out


# column name -> (module, requirement)
COLUMNS: list[tuple[str, str]] = [
    ("cancelscope (with)", "impl_cancelscope"),
    ("cancelscope", "impl_cancelscope"),
    ("stdlib", "impl_stdlib"),
    ("anyio", "impl_anyio"),
    ("trio", "impl_trio"),
    ("quattro", "impl_quattro"),
    ("aiofence", "impl_aiofence"),
]
MIN_PYTHON = {"impl_stdlib": (3, 11), "impl_aiofence": (3, 12)}
DISTRIBUTIONS = ["asyncio-cancelscope", "anyio", "trio", "quattro", "aiofence", "sniffio"]

# (case key, column, comparison, bound): the targets of issue 3
TARGETS: list[tuple[str, str, str, float]] = [
    ("A", "cancelscope (with)", "<=", 0.8),
    ("A", "cancelscope", "<=", 1.0),
    ("B", "cancelscope", "<=", 1.0),
    ("C", "cancelscope", "<=", 1.1),
    ("C'", "cancelscope", "<=", 1.1),
    ("D.cancel.1000", "cancelscope", "<=", 1.5),
    ("E", "cancelscope", "<=", 1.0),
    ("F", "cancelscope", "<", 5.0),  # % of wall time, not a ratio
    ("G", "cancelscope", "<=", 1.5),
    ("G.deadline", "cancelscope", "<=", 1.5),
    ("H", "cancelscope", ">=", 0.9),
]


def load_columns() -> tuple[dict[str, Column], dict[str, str]]:
    """The columns that can run, and a reason for each one that cannot."""
    loaded: dict[str, Column] = {}
    missing: dict[str, str] = {}
    modules: dict[str, dict[str, Column] | str] = {}
    for name, module in COLUMNS:
        if module not in modules:
            need = MIN_PYTHON.get(module)
            if need is not None and sys.version_info < need:
                modules[module] = f"needs Python {need[0]}.{need[1]}+"
            else:
                try:
                    mod = importlib.import_module(f"benchmarks.{module}")
                except ImportError as exc:
                    top = (exc.name or "").split(".")[0]
                    if top in ("anyio", "trio", "quattro", "aiofence", "attrs", "sniffio"):
                        modules[module] = "not installed"
                    else:
                        raise
                else:
                    modules[module] = mod.columns()
        got = modules[module]
        if isinstance(got, str):
            missing[name] = got
        else:
            loaded[name] = got[name]
    return loaded, missing


def _stats(samples: list[float]) -> dict[str, Any]:
    s = sorted(samples)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1 = q3 = s[0]
    return {
        "median": statistics.median(s),
        "q1": q1,
        "q3": q3,
        "min": s[0],
        "max": s[-1],
        "samples": samples,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cancelscope_source": _source(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": versions,
    }


def _source() -> str | None:
    """The commit of the working tree benchmarked, with ``+dirty`` if src/ has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def short(status: str) -> str:
    for prefix in ("no equivalent", "n/a", "error"):
        if status.startswith(prefix):
            return prefix
    return status.replace("Python ", "")


def table(header: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def render(result: dict[str, Any], names: list[str]) -> str:
    out = io.StringIO()
    bench = result["benchmarks"]
    head = ["case", "unit", *names]

    def rows(kind: str) -> list[list[str]]:
        rs = []
        for case in bench:
            row = [f"{case['key']}: {case['title']}", case["unit"]]
            for name in names:
                cell = case["cells"][name]
                if cell["status"] != "ok":
                    row.append("—" if kind != "median" else short(cell["status"]))
                elif kind == "median":
                    row.append(fmt(cell["median"]))
                elif kind == "ratio":
                    r = cell.get("ratio")
                    row.append("—" if r is None else f"{r:.2f}")
                else:
                    m = cell["median"] or 1.0
                    iqr = 100 * (cell["q3"] - cell["q1"]) / m
                    rng = 100 * (cell["max"] - cell["min"]) / m
                    row.append(f"{iqr:.0f}% ({rng:.0f}%)")
            if kind == "ratio":
                row[1] = "x" if not case["higher_is_better"] else "x (higher=better)"
                if not case["ratio"]:
                    row[1] = "n/a"
            rs.append(row)
        return rs

    print(f"Medians over {result['repeats']} repeats:\n", file=out)
    print(table(head, rows("median")), file=out)
    print("\nRatio of medians vs stdlib (time: lower is better; H throughput: higher):\n",
          file=out)
    print(table(head, rows("ratio")), file=out)
    print("\nSpread: IQR as % of the median (max-min as % of the median):\n", file=out)
    print(table(head, rows("spread")), file=out)
    grouped: dict[tuple[str, str], list[str]] = {}
    for case in bench:
        for name, cell in case["cells"].items():
            text = cell.get("note") or (cell["status"] if cell["status"] != "ok" else None)
            if text:
                ids = grouped.setdefault((name, text), [])
                if case["id"] not in ids:
                    ids.append(case["id"])
    if grouped:
        print("\nNotes:", file=out)
        for (name, text), ids in sorted(grouped.items()):
            print(f"- {name} ({','.join(ids)}): {text}", file=out)
    if result["targets"]:
        print("\nTargets (issue 3):", file=out)
        for t in result["targets"]:
            got = "—" if t["value"] is None else f"{t['value']:.2f}"
            verdict = {True: "ok", False: "MISSED", None: "not measured"}[t["met"]]
            print(f"- {t['key']} {t['column']}: {got} (target {t['op']} {t['bound']}) {verdict}",
                  file=out)
        if result.get("d_linearity") is not None:
            print(f"- D linear in depth: cancel-to-exit grows {result['d_linearity']:.1f}x "
                  f"from depth {result['params']['depths'][0]} to "
                  f"{result['params']['depths'][-1]}", file=out)
    return out.getvalue()


def header(result: dict[str, Any]) -> str:
    m = result["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    return (
        f"Python {m['python']} on {m['cpu']} ({m['nproc']} CPUs), {result['date']}; "
        f"cancelscope at {m['cancelscope_source']}; packages: {packages}"
    )


def run(
    params: Params, ids: str, repeats: int, warmup: int, seed: int, verbose: bool
) -> tuple[dict[str, Any], bool]:
    # anyio (and aiofence through it) delivers a cancel recursively, one frame per nested
    # scope: D's nest of 1000 needs more than the default limit of 1000 frames.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    columns, missing = load_columns()
    names = [name for name, _ in COLUMNS]
    all_cases = [c for c in cases(params) if c.id in ids]
    samples: dict[tuple[str, str], list[float]] = {}
    errors: dict[tuple[str, str], str] = {}  # (id, column) -> message
    rng = random.Random(seed)
    t_start = time.perf_counter()
    for rep in range(-warmup, repeats):
        for bid in ids:
            todo: list[tuple[str, Cell]] = [
                (name, col.cells[bid])
                for name, col in columns.items()
                if bid in col.cells and (bid, name) not in errors
            ]
            rng.shuffle(todo)
            for name, fn in todo:
                try:
                    if rep >= 0:
                        # An untimed run first: what the previous cell left behind
                        # (10,000 freed tasks, say) is not charged to this sample.
                        # Without it, A's spread on 3.13 went from 3% to 27% of the
                        # median when C ran before it.
                        fn(params)
                    values = fn(params)
                except Exception as exc:  # a broken cell is reported, not fatal
                    errors[bid, name] = f"error: {type(exc).__name__}: {exc}"
                    if verbose:
                        traceback.print_exc()
                    continue
                if rep < 0:
                    continue
                for key, value in values.items():
                    samples.setdefault((key, name), []).append(value)
        if verbose:
            label = "warm-up" if rep < 0 else f"repeat {rep + 1}/{repeats}"
            print(f"  {label} done at {time.perf_counter() - t_start:.1f} s", file=sys.stderr)

    bench: list[dict[str, Any]] = []
    failed = bool(errors)
    for case in all_cases:
        cells: dict[str, dict[str, Any]] = {}
        for name in names:
            col = columns.get(name)
            if name in missing:
                cell: dict[str, Any] = {"status": missing[name]}
            elif col is not None and case.id in col.unsupported:
                cell = {"status": col.unsupported[case.id]}
            elif (case.id, name) in errors:
                cell = {"status": errors[case.id, name]}
            elif col is not None and case.id not in col.cells:
                cell = {"status": "no equivalent"}
            elif (case.key, name) in samples:
                cell = {"status": "ok", **_stats(samples[case.key, name])}
            else:
                cell = {"status": "error: the cell returned no value for this case"}
                failed = True
            if col is not None and case.id in col.notes:
                cell["note"] = col.notes[case.id]
            cells[name] = cell
        base = cells.get("stdlib", {})
        for cell in cells.values():
            if case.ratio and cell["status"] == "ok" and base.get("status") == "ok":
                cell["ratio"] = cell["median"] / base["median"] if base["median"] else None
        bench.append(
            {**asdict(case), "higher_is_better": case.higher_is_better, "cells": cells}
        )

    by_key = {c["key"]: c for c in bench}
    targets = []
    for key, column, op, bound in TARGETS:
        if key not in by_key:
            continue
        cell = by_key[key]["cells"][column]
        got: float | None = cell.get("median" if not by_key[key]["ratio"] else "ratio")
        met = None
        if got is not None:
            met = {"<=": got <= bound, "<": got < bound, ">=": got >= bound}[op]
        targets.append(
            {"key": key, "column": column, "op": op, "bound": bound, "value": got, "met": met}
        )
    d_lin = None
    lo, hi = params.depths[0], params.depths[-1]
    d_lo = by_key.get(f"D.cancel.{lo}", {}).get("cells", {}).get("cancelscope", {})
    d_hi = by_key.get(f"D.cancel.{hi}", {}).get("cells", {}).get("cancelscope", {})
    if lo != hi and d_lo.get("status") == "ok" and d_hi.get("status") == "ok":
        d_lin = d_hi["median"] / d_lo["median"]

    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "params": asdict(params),
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "ids": list(ids),
        "columns": names,
        "benchmarks": bench,
        "targets": targets,
        "d_linearity": d_lin,
        "elapsed_s": time.perf_counter() - t_start,
    }
    return result, failed


def profile(params: Params, ids: str, column: str) -> None:
    """Run one column's cells of ``ids`` once under cProfile and print the top entries."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    columns, missing = load_columns()
    if column not in columns:
        print(f"{column}: {missing.get(column, 'unknown column')}", file=sys.stderr)
        return
    for bid in ids:
        cell = columns[column].cells.get(bid)
        if cell is None:
            continue
        prof = cProfile.Profile()
        prof.runcall(cell, params)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        print(f"===== {bid} ({column}) =====")
        print(buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and 2 repeats: a smoke test, not a measurement")
    ap.add_argument("--only", default=",".join(IDS),
                    help="comma-separated benchmark ids (default: all)")
    ap.add_argument("--json", type=Path, help="where to write the JSON results "
                    "(default: benchmarks/results/latest-<python>.json)")
    ap.add_argument("--repeats", type=int, help="repeats per cell (default 7, --quick 2)")
    ap.add_argument("--warmup", type=int, help="discarded warm-up rounds (default 1, --quick 0)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the shuffled cell order")
    ap.add_argument("--profile", metavar="COLUMN",
                    help="instead of measuring, run COLUMN's cells once under cProfile")
    ap.add_argument("--show", type=Path, metavar="JSON",
                    help="print the tables of an earlier run's JSON file and exit")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    if args.show:
        result = json.loads(args.show.read_text())
        print(header(result))
        print(render(result, result["columns"]))
        return 0

    ids = "".join(dict.fromkeys(x.strip().upper() for x in args.only.split(",") if x.strip()))
    bad = [x for x in ids if x not in IDS] + [x for x in args.only.split(",") if len(x.strip()) > 1]
    if bad or not ids:
        ap.error(f"--only takes ids among {','.join(IDS)}, got {args.only!r}")
    params = QUICK if args.quick else Params()
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if repeats < 1 or warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")

    if args.profile:
        profile(params, ids, args.profile)
        return 0

    result, failed = run(params, ids, repeats, warmup, args.seed, not args.quiet)
    print(header(result))
    print(render(result, result["columns"]))
    path = args.json
    if path is None:
        v = sys.version_info
        path = Path(__file__).resolve().parent / "results" / f"latest-{v[0]}.{v[1]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"JSON written to {path} ({result['elapsed_s']:.1f} s)")
    if failed:
        print("some cells failed (see 'error' above)", file=sys.stderr)
        return 1
    return 0
