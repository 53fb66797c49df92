"""The text of one pt-backend choice, grown a token at a time as vLLM's detokenizer does it.

transformers' TextStreamer prints to a queue for one sequence and knows no stop
strings, so this follows vLLM's incremental scheme instead: decode a short
window, emit what it adds once it no longer ends in a partial UTF-8 character,
skip special tokens, and hold back the text that might be the start of a stop
string until it is known not to be one. Decoding a window keeps each step's
cost flat however long the answer grows.
"""
from typing import Optional

_CONTEXT_TOKENS = 5  # prompt tokens decoded ahead of the answer, so its first word keeps its leading space


class TextStream:
    def __init__(self, tokenizer, prompt_ids: list[int], stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix, self._read = 0, len(self._ids)
        self._hold = max(map(len, stops), default=1) - 1
        self.text = ''  # the answer so far, without any stop string
        self._sent = 0
        self.stop_reason: Optional[str] = None

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> bool:
        """Take the next token; True once the text holds a stop string (the text is cut before it)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix:self._read])
        full = self._decode(self._ids[self._prefix:])
        if len(full) > len(prefix) and not full.endswith('\ufffd'):
            self.text += full[len(prefix):]
            self._prefix, self._read = self._read, len(self._ids)
        return self._cut_at_stop()

    def _cut_at_stop(self) -> bool:
        # Text already sent cannot hold the start of a stop string: it was held back until it could not.
        found = [(at, stop) for stop in self.stops if (at := self.text.find(stop, self._sent)) >= 0]
        if not found:
            return False
        at, self.stop_reason = min(found)
        self.text = self.text[:at]
        return True

    def delta(self, finished: bool) -> str:
        """The text not sent yet, less what may still turn into a stop string."""
        end = len(self.text) if finished else max(self._sent, len(self.text) - self._hold)
        new, self._sent = self.text[self._sent:end], end
        return new
