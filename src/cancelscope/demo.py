"""``python -m cancelscope.demo [--json] [--examples DIR]``: the production incidents, side by side.

Runs each incident example's comparison (plain asyncio, then cancelscope) and prints one
summary table, with a progress line per scenario. Everything runs locally: real sockets
on 127.0.0.1, real subprocesses and signals, an embedded SQLite; no server to install.

Each example ``examples/<name>.py`` defines ``scenario() -> dict`` returning at least
``incident``, ``plain``, ``cancelscope`` (short texts) and ``fixed`` (True when plain
asyncio showed the incident and cancelscope did not); optionally ``details`` and ``more``
(further rows of the same shape, each with a ``name``). The examples are found in the
repository checkout (``examples/``), else in the copy packaged with the wheel
(``cancelscope/_examples``), or in ``--examples DIR``. A missing example is reported as
not available. ``--json`` prints the results as JSON on stdout (progress goes to stderr).
Exit status: 0 when every available scenario ran and showed its fix, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import cancelscope

# (example name, the incident it shows): the order of the summary.
INCIDENTS: tuple[tuple[str, str], ...] = (
    ("zombie_queries", "gather fails, sibling queries keep their pool slots"),
    ("abandoned_fetch", "an abandoned request's fetch keeps running"),
    ("port_still_bound", "Ctrl-C during start-up leaves the port bound"),
    ("swallowed_cancel", "try/except swallows a cancellation"),
    ("foreign_timeout", "a timeout deep in the stack swallows the caller's cancel"),
    ("shielded_cleanup", "shutdown cuts a shielded commit half-way"),
)

_NOT_AVAILABLE = "not available"


def examples_dir() -> Path | None:
    """The examples of the checkout (editable install) or of the wheel, if any."""
    package = Path(cancelscope.__file__).resolve().parent
    for candidate in (package.parents[1] / "examples", package / "_examples"):
        if (candidate / "_table.py").is_file():
            return candidate
    return None


def _run_scenario(path: Path, name: str) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"cancelscope_example_{name}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always loads
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: object = module.scenario()
    if not isinstance(result, dict):
        raise TypeError(f"{path.name}: scenario() returned {type(result).__name__}, not a dict")
    result = cast("dict[str, Any]", result)
    missing = {"incident", "plain", "cancelscope", "fixed"} - set(result)
    if missing:
        raise KeyError(f"{path.name}: scenario() result lacks {sorted(missing)}")
    return result


def _row(name: str, result: dict[str, Any], status: str, seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "incident": str(result["incident"]),
        "plain": str(result["plain"]),
        "cancelscope": str(result["cancelscope"]),
        "fixed": bool(result["fixed"]),
        "status": status,
        "seconds": round(seconds, 3),
        "details": result.get("details"),
    }


def run_all(directory: Path | None, progress: TextIO) -> list[dict[str, Any]]:
    """Run every incident's scenario; one progress line each; return the rows."""
    rows: list[dict[str, Any]] = []
    for number, (name, incident) in enumerate(INCIDENTS, 1):
        prefix = f"[{number}/{len(INCIDENTS)}] {name}: "
        path = None if directory is None else directory / f"{name}.py"
        if path is None or not path.is_file():
            print(f"{prefix}{_NOT_AVAILABLE}", file=progress, flush=True)
            rows.append(
                _row(name, {"incident": incident, "plain": _NOT_AVAILABLE,
                            "cancelscope": _NOT_AVAILABLE, "fixed": False}, _NOT_AVAILABLE, 0.0)
            )
            continue
        print(f"{prefix}running...", end="", file=progress, flush=True)
        start = time.perf_counter()
        try:
            result = _run_scenario(path, name)
        except Exception as exc:  # a broken scenario is reported, the others still run
            seconds = time.perf_counter() - start
            print(f" error ({type(exc).__name__}: {exc})", file=progress, flush=True)
            rows.append(
                _row(name, {"incident": incident, "plain": "-", "cancelscope": "-",
                            "fixed": False}, f"error: {type(exc).__name__}: {exc}", seconds)
            )
            continue
        seconds = time.perf_counter() - start
        found = [_row(name, result, "ok", seconds)]
        for extra in result.get("more") or ():
            found.append(_row(f"{name}/{extra.get('name', len(found))}", extra, "ok", 0.0))
        verdict = "fixed" if all(r["fixed"] for r in found) else "NOT fixed"
        print(f" {verdict} ({seconds:.1f}s)", file=progress, flush=True)
        rows.extend(found)
    return rows


def _print_summary(rows: list[dict[str, Any]]) -> None:
    headers = ["incident", "plain asyncio", "cancelscope"]
    cells = [
        [r["incident"], r["plain"], r["cancelscope"] if r["status"] == "ok" else r["status"]]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    ran = [r for r in rows if r["status"] == "ok"]
    fixed = sum(r["fixed"] for r in ran)
    missing = sum(r["status"] == _NOT_AVAILABLE for r in rows)
    print()
    line = f"cancelscope fixed {fixed} of {len(ran)} incidents shown"
    if missing:
        line += f" ({missing} not available here)"
    print(line + ". Each row is a runnable example: python examples/<name>.py")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m cancelscope.demo",
        description="The production incidents cancelscope ends, plain asyncio beside it.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--examples", type=Path, metavar="DIR", help="where the example files are"
    )
    args = parser.parse_args(argv)
    directory: Path | None = args.examples or examples_dir()
    if directory is not None:
        # The examples import their shared helper (_table) from beside them.
        sys.path.insert(0, str(directory))
    progress = sys.stderr if args.json else sys.stdout
    if not args.json:
        print("cancelscope demo: each incident, first with plain asyncio, then with cancelscope")
    rows = run_all(directory, progress)
    if args.json:
        ran = [r for r in rows if r["status"] == "ok"]
        json.dump(
            {
                "incidents": rows,
                "fixed": sum(r["fixed"] for r in ran),
                "ran": len(ran),
                "not_available": sum(r["status"] == _NOT_AVAILABLE for r in rows),
            },
            sys.stdout,
            indent=2,
            default=str,
        )
        print()
    else:
        _print_summary(rows)
    bad = [r for r in rows if r["status"] != _NOT_AVAILABLE and not (
        r["status"] == "ok" and r["fixed"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
