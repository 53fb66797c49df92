"""EngineLoop: one asyncio loop on a daemon thread, and bridges to it from sync and async code.

A Jupyter kernel already runs a loop in its main thread, so `asyncio.run()`
fails in a cell. The engine lives on a loop of its own instead; every public
call is written once as a coroutine and reaches that loop through one of the
four bridges below, from a script, a cell, or any other running loop.
"""
import asyncio
import concurrent.futures
import queue
import threading
from typing import AsyncIterator, Awaitable, Callable, Iterator, TypeVar

from swiftnb.engine.interrupts import ABORT_WAIT_S, shield_children_of_this_thread, stopped
from swiftnb.errors import EngineClosedError

T = TypeVar('T')
_END = object()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (vLLM brings it; its own server runs on it): less overhead per token."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class EngineLoop:
    def __init__(self, name: str = 'swiftnb-engine-loop'):
        self.stopped_because = 'it was shut down'  # said by the error of any call after stop()
        self.asyncio_loop = _new_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self):
        shield_children_of_this_thread()  # vLLM's processes start from here: a kernel interrupt is not for them
        asyncio.set_event_loop(self.asyncio_loop)
        self.asyncio_loop.run_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.asyncio_loop.is_closed()

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future:
        """Start a coroutine on the loop; the caller gets a concurrent Future and need not wait."""
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError('a blocking swiftnb call was made from the engine loop itself; '
                               'it would deadlock. Use the async form (await ..._async(...)) there.')
        if not self.running:
            coro.close()
            raise EngineClosedError(f'this engine cannot answer: {self.stopped_because}; create a new one')
        return asyncio.run_coroutine_threadsafe(coro, self.asyncio_loop)

    def _submit_noting_end(self, coro: Awaitable[T], on_end: Callable[[], None]) -> concurrent.futures.Future:
        """submit(), with `on_end()` called on the loop once the coroutine has finished in any way (a cancelled
        one after its cleanup, the abort of its engine requests, has run)."""
        async def noting_end():
            try:
                return await coro
            finally:
                on_end()
        wrapper = noting_end()
        try:
            return self.submit(wrapper)
        except BaseException:
            coro.close()  # submit closed the wrapper, which never started it
            raise

    def run(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the loop and wait for it (sync code, or a cell).

        An interrupt (Ctrl-C, the kernel's stop button) cancels the task, which aborts its engine requests, waits
        until it has, and raises a short KeyboardInterrupt: the engine is ready for the next call."""
        ended = threading.Event()
        future = self._submit_noting_end(coro, ended.set)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            ended.wait(ABORT_WAIT_S)
            raise KeyboardInterrupt(stopped('the call')) from None
        except BaseException:
            future.cancel()
            raise

    async def run_async(self, coro: Awaitable[T]) -> T:
        """Await a coroutine that must run on the loop, from any loop (or from the loop itself). Cancelling the
        caller (ipykernel cancels an awaiting cell on an interrupt) cancels it as run() does."""
        if self.on_loop_thread():
            return await coro
        caller, ended = asyncio.get_running_loop(), asyncio.Event()
        future = self._submit_noting_end(coro, lambda: _call_soon(caller, ended.set))
        try:
            return await asyncio.wrap_future(future)  # cancelling this cancels `future`
        except asyncio.CancelledError:
            await _at_most(ended.wait(), ABORT_WAIT_S)
            raise asyncio.CancelledError(stopped('the call')) from None

    def iterate(self, agen_factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate an async generator made on the loop, from sync code.

        Breaking out of the loop (or an exception in the caller) cancels the generator's task; an interrupt while
        it waits does as in run().
        """
        items = queue.Queue()
        task = self.submit(self._pump(agen_factory, items.put))
        try:
            while True:
                item = items.get()
                if item is _END:
                    break
                yield item
            task.result()  # re-raise what ended the generator, if anything did
        except KeyboardInterrupt:
            self._cancel_until_end(task, items)
            raise KeyboardInterrupt(stopped('the stream')) from None
        except GeneratorExit:  # the caller stopped iterating (a break; an error or an interrupt in its own code
            self._cancel_until_end(task, items)  # between two items): its requests are aborted before it goes on
            raise
        finally:
            task.cancel()

    def _cancel_until_end(self, task: concurrent.futures.Future, items: queue.Queue) -> None:
        """Cancel an iteration's task and wait for its _END, which comes once its engine requests are aborted."""
        task.cancel()
        try:
            while self.running and items.get(timeout=ABORT_WAIT_S) is not _END:
                pass
        except queue.Empty:
            pass

    async def aiterate(self, agen_factory: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Iterate an async generator made on the loop, from another loop (e.g. a cell's)."""
        if self.on_loop_thread():
            async for item in agen_factory():
                yield item
            return
        caller = asyncio.get_running_loop()
        items = asyncio.Queue()
        task = self.submit(self._pump(agen_factory, lambda x: _call_soon(caller, items.put_nowait, x)))
        try:
            while True:
                item = await items.get()
                if item is _END:
                    break
                yield item
            await asyncio.wrap_future(task)
        except asyncio.CancelledError:  # as in run_async()
            task.cancel()
            await _at_most(_until_end(items), ABORT_WAIT_S)
            raise asyncio.CancelledError(stopped('the stream')) from None
        finally:
            task.cancel()

    @staticmethod
    async def _pump(agen_factory, put):
        try:
            agen = agen_factory()
            try:
                async for item in agen:
                    put(item)
            finally:
                await agen.aclose()
        finally:
            put(_END)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running:
            return
        self.asyncio_loop.call_soon_threadsafe(self.asyncio_loop.stop)
        if not self.on_loop_thread():
            self._thread.join(timeout)


def _call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """callback(*args) on another thread's loop; nothing once that loop has closed (its caller is gone)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


async def _until_end(items: asyncio.Queue) -> None:
    while await items.get() is not _END:
        pass


async def _at_most(awaitable, timeout: float) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        pass
