"""interleave: several async iterators (one per request) read at once, as one stream.

Used by the inference API (several requests of one call) and the server (a
completions request with a list of prompts). It yields what each iterator has
produced since the last yield, so tokens that arrive together reach the caller
as one update. Leaving early, or an error in any iterator, cancels them all
(which aborts their engine requests).
"""
import asyncio
from typing import AsyncIterator, Sequence, TypeVar

T = TypeVar('T')
_DONE = object()


async def interleave(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[list[tuple[int, T]]]:
    if len(streams) == 1:  # the common case needs no task or queue per item
        async for item in streams[0]:
            yield [(0, item)]
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, stream):
        try:
            async for item in stream:
                queue.put_nowait((i, item))
        except Exception as e:  # handed to the reader, which raises it and cancels the rest
            queue.put_nowait((i, e))
        finally:
            queue.put_nowait((i, _DONE))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            items = []
            for i, item in batch:
                if item is _DONE:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    items.append((i, item))
            if items:
                yield items
    finally:
        for task in tasks:
            task.cancel()
        # Until each has aborted its request: a caller that waits for this generator's end (an interrupted
        # cell) finds the engine with none of them running.
        await asyncio.gather(*tasks, return_exceptions=True)
