"""EngineLoop's bridges, on plain coroutines: they must work from sync code, from inside a running
loop (as in a Jupyter cell), and refuse to deadlock on the loop thread."""
import asyncio

import pytest

from swiftnb.engine.base import EngineClosedError
from swiftnb.engine.loop import EngineLoop


@pytest.fixture
def loop():
    engine_loop = EngineLoop()
    yield engine_loop
    engine_loop.stop()


async def add(a, b):
    await asyncio.sleep(0.01)
    return a + b


async def count(n, log=None):
    try:
        for i in range(n):
            await asyncio.sleep(0.005)
            yield i
    finally:
        if log is not None:
            log.append('closed')


def test_run_from_sync_code(loop):
    assert loop.run(add(1, 2)) == 3


def test_run_from_inside_a_running_loop(loop):
    # A cell's code runs while the kernel's loop is running: asyncio.run() would fail here.
    async def cell():
        return loop.run(add(2, 3)), await loop.run_async(add(4, 5))
    assert asyncio.run(cell()) == (5, 9)


def test_blocking_call_on_the_loop_thread_raises_instead_of_deadlocking(loop):
    async def inner():
        return loop.run(add(1, 1))
    with pytest.raises(RuntimeError, match='deadlock'):
        loop.run(inner())


def test_run_async_on_the_loop_thread_awaits_directly(loop):
    async def inner():
        return await loop.run_async(add(1, 1))
    assert loop.run(inner()) == 2


def test_iterate_sync_and_async(loop):
    assert list(loop.iterate(lambda: count(5))) == [0, 1, 2, 3, 4]

    async def consume():
        return [i async for i in loop.aiterate(lambda: count(4))]
    assert asyncio.run(consume()) == [0, 1, 2, 3]


def test_breaking_out_closes_the_generator_on_the_loop(loop):
    log = []
    for i in loop.iterate(lambda: count(1000, log)):
        if i == 2:
            break
    loop.run(asyncio.sleep(0.05))
    assert log == ['closed']


def test_errors_cross_the_bridge(loop):
    async def boom():
        yield 1
        raise ValueError('bad thing')
    with pytest.raises(ValueError, match='bad thing'):
        list(loop.iterate(boom))

    async def consume():
        return [i async for i in loop.aiterate(boom)]
    with pytest.raises(ValueError, match='bad thing'):
        asyncio.run(consume())


def test_stopped_loop_gives_a_clear_error():
    engine_loop = EngineLoop()
    engine_loop.stop()
    with pytest.raises(EngineClosedError, match='cannot answer: it was shut down; create a new one'):
        engine_loop.run(add(1, 1))
