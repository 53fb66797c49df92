"""OpenAI's chat completion over any swiftnb engine: messages (and tools) in, the `openai` package's
ChatCompletion and ChatCompletionChunk objects out, built as vLLM's server builds them.

Two doors run through it: the pt server's /v1/chat/completions (server/pt_app.py) and ms-swift 3.x/4.x's
`engine.infer(...)` (infer_engine.py), on either backend. It runs on the engine's loop and iterates
`engine.stream` directly.
"""
import asyncio
import functools
import time
import uuid
from typing import AsyncIterator, Callable, Optional

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from swiftnb import tools as tool_calls
from swiftnb.engine.base import Choice, Engine, LoRARequest
from swiftnb.engine.streams import interleave
from swiftnb.errors import UsageError
from swiftnb.settings import GenerationConfig
from swiftnb.template import Template

# Rendering and tokenising run in a worker thread, not on the loop that streams everyone's answers; a text too
# long for the context is refused before it is tokenised, by vLLM's rule (renderers/params.py): no text longer
# than max_model_len times the longest token in the vocabulary fits.


async def encode_messages(engine: Engine, template: Template, messages: list[dict], tools) -> list[int]:
    dumped = [t.model_dump(exclude_none=True) for t in tools] if tools else None
    text = await asyncio.to_thread(template.render, messages, dumped)
    check_length(engine, text)
    return await asyncio.to_thread(template.encode_text, text)


def check_length(engine: Engine, text: str, which: str = 'the prompt') -> None:
    limit = engine.max_model_len * _max_chars_per_token(engine.hf_tokenizer)
    if len(text) > limit:
        raise UsageError(f'{which} has {len(text)} characters, more than {engine.max_model_len} tokens '
                         f'(max_model_len) can hold ({limit}); shorten it')


@functools.lru_cache(maxsize=4)
def _max_chars_per_token(tokenizer) -> int:
    return max(len(token) for token in tokenizer.get_vocab())


class Generation:
    """One request's generation: its prompts, settings and adapter, its `n` choices built up from engine Deltas.
    `on_finish(prompt tokens, choices)` is called once it ends, however it ends (the pt server's /metrics)."""

    def __init__(self, engine: Engine, prompts: list[list[int]], config: GenerationConfig,
                 lora: Optional[LoRARequest], model: str, on_finish: Optional[Callable] = None):
        self.engine, self.prompts, self.config, self.lora, self.model = engine, prompts, config, lora, model
        self.on_finish = on_finish
        self.n = config.n
        self.id = uuid.uuid4().hex
        self.created = int(time.time())
        self.choices = [Choice(index=i) for i in range(len(prompts) * self.n)]

    async def deltas(self):
        """(choice index, delta) from every prompt at once; leaving early aborts them all."""
        try:
            async for batch in interleave([self.engine.stream(ids, self.config, self.lora) for ids in self.prompts]):
                for i, delta in batch:
                    index = i * self.n + delta.index
                    self.choices[index].add(delta)
                    if delta.prompt_logprobs is not None:  # sent once per prompt: every choice of it shows them
                        for choice in self.choices[i * self.n:(i + 1) * self.n]:
                            choice.prompt_logprobs = delta.prompt_logprobs
                    yield index, delta
        finally:
            if self.on_finish is not None:
                self.on_finish(sum(map(len, self.prompts)), self.choices)

    async def collect(self) -> list[Choice]:
        async for _ in self.deltas():
            pass
        return self.choices

    def usage(self) -> CompletionUsage:
        prompt = sum(len(p) for p in self.prompts)
        generated = sum(len(c.token_ids) for c in self.choices)
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated)

    def token(self, token_id: int) -> str:
        return self.engine.hf_tokenizer.decode([token_id])


class ChatRun(Generation):
    """One chat completion: `await ChatRun.start(...)`, then `await run.response()` or `async for chunk in
    run.chunks()`."""

    def __init__(self, *args, tools: tuple = (None, 'none', None, True), **kwargs):
        super().__init__(*args, **kwargs)
        self.tools = tools  # (tools, tool_choice, vLLM tool parser name, parallel tool calls)

    @classmethod
    async def start(cls, engine: Engine, messages: list[dict], config: GenerationConfig, lora: Optional[LoRARequest],
                    model: str, tools=None, tool_choice=None, tool_parser: Optional[str] = None,
                    on_finish: Optional[Callable] = None, template: Optional[Template] = None,
                    parallel_tool_calls: Optional[bool] = None) -> 'ChatRun':
        """Checked and encoded, not yet running: `config` complete (the engine's defaults under the request's);
        a tool_choice that forces a call constrains the answer to the call's format. `template`: the engine's;
        `parallel_tool_calls` False: one call at most (OpenAI's and vLLM's reading: only False says so)."""
        tools, tool_choice = tool_calls.check(tools, tool_choice)
        parallel = parallel_tool_calls is not False
        forced = tool_calls.constraint(tools, tool_choice, tool_parser, parallel)
        if forced is not None:
            config = config.model_copy(update={'structured_outputs': forced, 'response_format': None})
        ids = await encode_messages(engine, template or engine.template, messages, tools)
        engine.admit(ids, config)
        return cls(engine, [ids], config, lora, model, on_finish, tools=(tools, tool_choice, tool_parser, parallel))

    def message(self, choice: Choice) -> tuple[dict, Optional[str]]:
        """(the assistant message, its finish_reason), with tool calls read out as vLLM's server does."""
        tools, tool_choice, parser, parallel = self.tools
        finish = finish_reason(choice.finish_reason)
        if not tools or tool_choice == 'none':
            return {'role': 'assistant', 'content': choice.text}, finish
        content, calls = tool_calls.read_calls(choice.text, tools, tool_choice, self.engine.hf_tokenizer, parser)
        forced = tool_choice == 'required' or isinstance(tool_choice, tool_calls.NamedToolChoice)
        message = {'role': 'assistant', 'content': (content or '') if forced else content}
        if calls:
            message['tool_calls'] = calls if parallel else calls[:1]  # as vLLM's maybe_filter_parallel_tool_calls
        if (calls and tool_choice == 'auto') or (tool_choice == 'required' and finish == 'stop'):
            finish = 'tool_calls'  # OpenAI's: 'tool_calls' for auto and required, 'stop' for a named tool
        return message, finish

    async def response(self) -> ChatCompletion:
        choices = []
        for choice in await self.collect():
            message, finish = self.message(choice)
            choices.append({'index': choice.index, 'message': message, 'finish_reason': finish,
                            'logprobs': self.logprobs(choice.token_ids, choice.logprobs)})
        return ChatCompletion(id=f'chatcmpl-{self.id}', object='chat.completion', created=self.created,
                              model=self.model, choices=choices, usage=self.usage())

    async def chunks(self, include_usage: bool = False) -> AsyncIterator[ChatCompletionChunk]:
        for i in range(len(self.choices)):
            yield self.chunk({'index': i, 'delta': {'role': 'assistant', 'content': ''}})
        if self.tools[1] != 'none':  # tool calls are read from the whole answer: one chunk per choice at the end
            for choice in await self.collect():
                message, finish = self.message(choice)
                message.pop('role')
                if 'tool_calls' in message:  # a streamed call says which of the choice's calls it is
                    message['tool_calls'] = [{'index': i, **call} for i, call in enumerate(message['tool_calls'])]
                yield self.chunk({'index': choice.index, 'delta': message, 'finish_reason': finish,
                                  'logprobs': self.logprobs(choice.token_ids, choice.logprobs)})
        else:
            async for index, delta in self.deltas():
                yield self.chunk({'index': index, 'delta': {'content': delta.text},
                                  'finish_reason': finish_reason(delta.finish_reason),
                                  'logprobs': self.logprobs(delta.token_ids, delta.logprobs)})
        if include_usage:
            yield self.chunk(None, usage=self.usage())

    def chunk(self, choice: Optional[dict], usage=None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=f'chatcmpl-{self.id}', object='chat.completion.chunk', created=self.created,
                                   model=self.model, choices=[choice] if choice else [], usage=usage)

    def logprobs(self, token_ids, logprobs) -> Optional[dict]:
        if self.config.num_logprobs is None or not logprobs:
            return None
        content = []
        for token_id, top_k in zip(token_ids, logprobs):
            entry = self._logprob(token_id, top_k[token_id])
            entry['top_logprobs'] = [self._logprob(t, lp) for t, lp in top(top_k, self.config.num_logprobs)]
            content.append(entry)
        return {'content': content}

    def _logprob(self, token_id: int, logprob: float) -> dict:
        token = self.token(token_id)
        return {'token': token, 'bytes': list(token.encode()), 'logprob': logprob}


def top(logprobs: dict, k: int) -> list:
    return sorted(logprobs.items(), key=lambda item: -item[1])[:k]


def finish_reason(reason: Optional[str]) -> Optional[str]:
    return 'stop' if reason == 'abort' else reason  # OpenAI knows no 'abort'
