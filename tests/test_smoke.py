"""Smoke checks of the test infrastructure itself."""

from __future__ import annotations

import asyncio

import pytest

import cancelscope as cs


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_loop_flavours_run() -> None:
    """Every loop flavour can enter and exit a scope."""
    async with cs.cancellable() as scope:
        assert cs.CancellationScope.current() is scope
    assert cs.CancellationScope.current() is None


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_virtual_clock_starts_at_zero() -> None:
    """The virtual clock starts at 0 and a one-hour timeout fires in no real time."""
    loop = asyncio.get_running_loop()
    assert loop.time() == 0
    with pytest.raises(cs.TimeoutFailure):
        async with cs.with_timeout(3600):
            await asyncio.sleep(7200)
    assert loop.time() == pytest.approx(3600)
