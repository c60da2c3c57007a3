"""Test configuration: event-loop flavours and the virtual clock.

Every async test runs on the default asyncio loop. Tests marked ``all_loops``
also run with the eager task factory (3.12+) and on uvloop. Tests marked
``virtual_clock`` run on a looptime loop whose clock starts at 0 and jumps to
the next timer whenever the loop would sleep, so deadlines can be asserted
exactly and cost no real time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping

import looptime
import pytest
from hypothesis import settings

from ._helpers import eager_loop

try:
    import uvloop

    HAVE_UVLOOP = True
except ImportError:  # pragma: no cover - uvloop is not on every platform
    HAVE_UVLOOP = False

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# Under CI the generated tests draw the same examples on every run: a CI run
# cannot fail on a draw the last one did not make. New draws happen in local
# runs and soak runs (CANCELSCOPE_SOAK=1), which keep hypothesis's database.
# (Recent hypothesis loads a profile like this by itself when CI is set; this
# keeps it for the older ones pyproject.toml allows.)
_CI = os.environ.get("CI", "") not in ("", "0", "false")
_SOAK = os.environ.get("CANCELSCOPE_SOAK", "") not in ("", "0")
if _CI and not _SOAK:
    settings.register_profile("cancelscope-ci", derandomize=True, database=None, print_blob=True)
    settings.load_profile("cancelscope-ci")


def _virtual(factory: LoopFactory) -> LoopFactory:
    def make() -> asyncio.AbstractEventLoop:
        loop = factory()
        assert isinstance(loop, asyncio.BaseEventLoop)
        return looptime.patch_event_loop(loop, start=0)

    return make


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("all_loops") is not None:
        if sys.version_info >= (3, 12):
            factories["eager"] = eager_loop
        if HAVE_UVLOOP:
            factories["uvloop"] = uvloop.new_event_loop
    if item.get_closest_marker("virtual_clock") is not None:
        # looptime patches the loop's class, which uvloop's compiled loop refuses.
        factories = {k: _virtual(f) for k, f in factories.items() if k != "uvloop"}
    return factories
