"""`swiftnb infer` without a dataset: ms-swift's chat in the terminal.

`<<< ` asks for a message, the answer streams below it, and the history carries
on to the next turn. Commands, as in ms-swift: `multi-line` (end a message with
`#` on its own line's end), `single-line`, `reset-history` or `clear`, `exit`.
"""
import sys
from typing import Callable, Optional

from swiftnb.engine.base import Engine, LoRARequest
from swiftnb.errors import SwiftnbError
from swiftnb.infer import inference_stream_vllm, inference_vllm
from swiftnb.settings import GenerationConfig
from swiftnb.template import Template

COMMANDS = {'exit', 'quit', 'multi-line', 'single-line', 'reset-history', 'clear'}
HELP = ('Input `exit` or `quit` to leave, `multi-line` / `single-line` to switch the input mode, '
        '`reset-history` or `clear` to forget the conversation.')


class TerminalChat:
    def __init__(self, engine: Engine, template: Template, config: GenerationConfig,
                 lora: Optional[LoRARequest] = None, system: Optional[str] = None, stream: bool = True,
                 read: Callable[[str], str] = input, write=sys.stdout):
        self.engine, self.template, self.config, self.lora = engine, template, config, lora
        self.system, self.stream, self.read, self.out = system, stream, read, write
        self.history: list[list[str]] = []
        self.multi_line = False

    def _message(self) -> Optional[str]:
        """The next message; None at end of input. In multi-line mode a message ends with '#', and a
        command on the first line acts at once."""
        try:
            if not self.multi_line:
                return self.read('<<< ')
            lines = [self.read('<<<[M] ')]
            if lines[0].strip().rstrip('#') in COMMANDS:
                return lines[0].strip().rstrip('#')
            while not lines[-1].endswith('#'):
                lines.append(self.read(''))
            return '\n'.join(lines)[:-1]
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt leaves
            return None

    def run(self) -> None:
        print(HELP, file=self.out, flush=True)
        while (message := self._message()) is not None:
            command = message.strip()
            if command in ('exit', 'quit'):
                break
            if command in ('multi-line', 'single-line'):
                self.multi_line = command == 'multi-line'
                print(f'now in {command} mode' + (' (end a message with #)' if self.multi_line else ''),
                      file=self.out, flush=True)
            elif command in ('reset-history', 'clear'):
                self.history = []
                print('history cleared', file=self.out, flush=True)
            elif command:
                self._answer(message)

    def _answer(self, query: str) -> None:
        request = [{'query': query, 'history': self.history, 'system': self.system}]
        kwargs = dict(generation_config=self.config, lora_request=self.lora)
        try:
            if self.stream:
                shown = ''
                for results in inference_stream_vllm(self.engine, self.template, request, **kwargs):
                    text = results[0]['response']
                    print(text[len(shown):], end='', file=self.out, flush=True)
                    shown = text
                result = results[0]
            else:
                result = inference_vllm(self.engine, self.template, request, **kwargs)[0]
                print(result['response'], end='', file=self.out)
        except SwiftnbError as error:  # e.g. the conversation outgrew max_model_len: say so, keep going
            print(f'error: {error}', file=self.out, flush=True)
            return
        except KeyboardInterrupt:  # Ctrl-C during an answer stops it (the request is aborted), not the chat
            print('\n(stopped; this turn is not kept)', file=self.out, flush=True)
            return
        print(file=self.out, flush=True)
        self.history = result['history']
