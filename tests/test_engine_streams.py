"""interleave: several async iterators as one stream; an error or leaving early cancels them all."""
import asyncio

import pytest

from swiftnb.engine.streams import interleave


async def ticks(name, n, log, delay=0.001, fail_at=None):
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            if i == fail_at:
                raise ValueError(f'{name} failed')
            yield f'{name}{i}'
    finally:
        log.append(f'{name} closed')


async def collect(streams):
    return [item async for batch in interleave(streams) for item in batch]


def test_every_item_arrives_tagged_with_its_stream():
    log = []
    items = asyncio.run(collect([ticks('a', 3, log), ticks('b', 2, log)]))
    assert sorted(items) == [(0, 'a0'), (0, 'a1'), (0, 'a2'), (1, 'b0'), (1, 'b1')]
    assert [x for i, x in items if i == 0] == ['a0', 'a1', 'a2']  # order kept within a stream
    assert asyncio.run(collect([ticks('solo', 2, log)])) == [(0, 'solo0'), (0, 'solo1')]


def test_an_error_in_one_stream_cancels_the_others():
    log = []
    with pytest.raises(ValueError, match='b failed'):
        asyncio.run(collect([ticks('a', 1000, log), ticks('b', 5, log, fail_at=2)]))
    assert sorted(log) == ['a closed', 'b closed']


def test_leaving_early_cancels_every_stream():
    log = []

    async def first_batch():
        agen = interleave([ticks('a', 1000, log), ticks('b', 1000, log)])
        batch = await agen.__anext__()
        await agen.aclose()
        await asyncio.sleep(0.01)
        return batch
    assert asyncio.run(first_batch())
    assert sorted(log) == ['a closed', 'b closed']
