"""How often a streamed answer is redrawn: at most `PER_SECOND` times, whatever the token rate.

A model can produce hundreds of tokens a second; one frontend update per token floods the kernel's
IOPub channel and the browser. The widgets and %%chat both ask `due()` before a redraw, and always
redraw once more at the end, so the final text is exactly the answer.
"""
import time

PER_SECOND = 20


class Redraws:
    def __init__(self, per_second: float = PER_SECOND):
        self.interval = 1 / per_second
        self._last = float('-inf')

    def due(self) -> bool:
        """Whether a redraw may happen now (and, if so, that one happens)."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True
