"""`%load_ext swiftnb`: the engine, a chat, adapters and the server from cell magics.

    %swiftnb engine [--model_type T | --model PATH] [--infer_backend vllm|pt] [--enable_lora] ...
    %%chat [--lora NAME] [--system S] [--max_tokens N] [--temperature T] [--seed S] [--new]
    %%compare [--variants base NAME ... | --run DIR] [--system S] [--max_tokens N] [--temperature T] [--seed S]
    %swiftnb lora add NAME PATH | lora list | lora remove NAME
    %swiftnb deploy [--port P] [--api_key K] | %swiftnb stop
    %swiftnb sleep [--level 1|2] | %swiftnb wake
    %swiftnb status | %swiftnb reset | %swiftnb shutdown

Each takes --help. A user's mistake prints one line, not a traceback.
"""
import argparse
import shlex

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from swiftnb import settings
from swiftnb.engine import registry
from swiftnb.engine.options import VllmOptions, add_flags, add_model_flags
from swiftnb.engine.interrupts import stopped
from swiftnb.errors import SwiftnbError, UsageError
from swiftnb.redraw import Redraws
from swiftnb.server import background


class _Parser(argparse.ArgumentParser):
    """argparse that reports to the cell instead of exiting the kernel."""

    def error(self, message):
        raise UsageError(f'{message} (see {self.prog} --help)')

    def exit(self, status=0, message=None):
        if message:
            print(message)
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def _parsers():
    main = _Parser(prog='%swiftnb', description='swiftnb magics; %%chat and %%compare are cell magics')
    sub = main.add_subparsers(dest='command', required=True, parser_class=_Parser)
    engine = sub.add_parser('engine', help='create or reuse the kernel\'s engine (as get_vllm_engine does)')
    add_model_flags(engine)
    add_flags(engine, VllmOptions, ('enable_lora', 'max_model_len'))
    lora = sub.add_parser('lora', help='add, list or remove adapters served by name')
    lora.add_argument('action', choices=['add', 'list', 'remove'])
    lora.add_argument('name', nargs='?')
    lora.add_argument('path', nargs='?')
    deploy = sub.add_parser('deploy', help='serve the kernel\'s engine (OpenAI-compatible) in the background')
    deploy.add_argument('--port', type=int, default=8000)
    deploy.add_argument('--api_key')
    sub.add_parser('stop', help='stop the server')
    sub.add_parser('shutdown', help="shut the kernel's engine down, freeing its memory")
    sleep = sub.add_parser('sleep', help="free the GPU's memory and keep the engine (enable_sleep_mode=True)")
    sleep.add_argument('--level', type=int, choices=[1, 2], default=1,
                       help='1: weights kept in CPU memory (waking takes seconds); 2: weights dropped (read again)')
    sub.add_parser('wake', help='take the GPU memory back after %%swiftnb sleep')
    sub.add_parser('status', help='engine, backend, adapters, server, running requests, memory')
    sub.add_parser('reset', help='forget the %%chat conversation')
    chat = _Parser(prog='%%chat', description='the cell is your message; the answer streams below it')
    chat.add_argument('--lora', help='an adapter name (see %swiftnb lora list)')
    _generation_args(chat)
    chat.add_argument('--new', action='store_true', help='start a new conversation')
    compare = _Parser(prog='%%compare', description='the cell goes to every variant; answers stream side by side')
    compare.add_argument('--variants', nargs='+', default=['base'], metavar='NAME',
                         help="'base' (the base model) and adapter names")
    compare.add_argument('--run', metavar='DIR', help="a fine-tuning run's folder: the base beside each of its "
                                                      'checkpoint-* adapters (instead of --variants)')
    _generation_args(compare)
    return main, chat, compare


def _generation_args(parser):
    parser.add_argument('--system')
    settings.add_flags(parser)


class _ShownAlready:
    """A cell's value (`_` holds it) that is not shown twice: it already streamed above."""

    def _ipython_display_(self):
        pass


class ChatReply(_ShownAlready, str):
    """%%chat's answer."""


class CompareReplies(_ShownAlready, dict):
    """%%compare's {variant: answer}."""


@magics_class
class SwiftnbMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.parser, self.chat_parser, self.compare_parser = _parsers()
        self.history: list[list[str]] = []

    def _run(self, parser, line, action, *extra):
        try:
            return action(parser.parse_args(shlex.split(line)), *extra)
        except _HelpShown:
            return None
        except SwiftnbError as error:
            print(f'swiftnb: {error}')
            return None

    @line_magic
    def swiftnb(self, line):
        """swiftnb's magics (each takes --help):

        %swiftnb engine [--model_type T | --model PATH] [--infer_backend vllm|pt] [--enable_lora]
        %swiftnb lora add NAME PATH | lora list | lora remove NAME
        %swiftnb deploy [--port P] [--api_key K]  /  %swiftnb stop
        %swiftnb sleep [--level 1|2]  /  %swiftnb wake
        %swiftnb status  /  %swiftnb reset  /  %swiftnb shutdown
        %%chat [--lora NAME] [--system S] [--max_tokens N] [--temperature T] [--seed S] [--new]
        %%compare [--variants base NAME ... | --run DIR] [--system S] [--max_tokens N] [--temperature T] [--seed S]
        """
        return self._run(self.parser, line, lambda args: getattr(self, f'_{args.command}')(args))

    @cell_magic
    def chat(self, line, cell):
        """The cell is the user message; the answer streams as Markdown and the conversation goes on."""
        return self._run(self.chat_parser, line, self._chat, cell)

    @cell_magic
    def compare(self, line, cell):
        """The cell goes to every variant (base, adapters) at once, shown side by side by CompareWidget."""
        return self._run(self.compare_parser, line, self._compare, cell)

    # -- the commands --

    @staticmethod
    def _engine_or_say():
        engine = registry.live_engine()
        if engine is None:
            raise UsageError('no engine yet; create one with %swiftnb engine')
        return engine

    def _engine(self, args):
        from swiftnb import get_engine
        kwargs = dict(model_id_or_path=args.model_id_or_path, enable_lora=args.enable_lora,
                      max_model_len=args.max_model_len)
        engine = get_engine(args.model_type, infer_backend=args.infer_backend, **kwargs)
        print(f'{engine.model_type} on {engine.backend}; adapters: {", ".join(engine.adapters) or "none"}')

    def _lora(self, args):
        engine = self._engine_or_say()
        if args.action == 'add':
            if not (args.name and args.path):
                raise UsageError('usage: %swiftnb lora add NAME PATH')
            engine.add_lora(args.name, args.path)
        elif args.action == 'remove':
            engine.remove_lora(args.name)
        print(f'adapters: {", ".join(engine.adapters) or "none"}')

    def _deploy(self, args):
        engine = self._engine_or_say()
        server = background.serve(engine, port=args.port, api_key=args.api_key)
        key = f" -H 'Authorization: Bearer {args.api_key}'" if args.api_key else ''
        print(f'serving at {server.url}\n'
              f"curl {server.url}/chat/completions -H 'Content-Type: application/json'{key} "
              f"""-d '{{"model": "{server.served_model_name}", "messages": [{{"role": "user", """
              f""""content": "Hello!"}}]}}'""")
        return server  # `server = %swiftnb deploy` keeps it at hand

    def _stop(self, args):
        if not background.stop_live_server():
            raise UsageError('no server is running; start one with %swiftnb deploy')
        print('server stopped')

    def _shutdown(self, args):
        engine = self._engine_or_say()
        background.stop_live_server()
        engine.shutdown()
        print('engine shut down')

    def _sleep(self, args):
        self._engine_or_say().sleep(args.level)

    def _wake(self, args):
        self._engine_or_say().wake_up()

    def _status(self, args):
        engine = registry.live_engine()
        if engine is None:
            print('engine: none (create one with %swiftnb engine)')
            return
        server = background.live_server().url if background.live_server() else 'not running'
        state = f', asleep (level {engine.asleep})' if engine.asleep else ''
        if engine.layout:
            state += f', {engine.layout}'
            try:
                replicas = engine.requests_per_replica()
            except UsageError:  # vLLM's stats are off: no counts to show
                replicas = {}
            if len(replicas) > 1:
                state += f'; requests finished per replica: {replicas}'
        print(f'engine: {engine.model_type} ({engine.backend}{state}) at {engine.model_dir}\n'
              f'adapters: {", ".join(engine.adapters) or "none"}\nserver: {server}\n'
              f'running requests: {engine.num_running}\nmemory: {_memory()}')

    def _reset(self, args):
        self.history = []
        print('conversation cleared')

    def _chat(self, args, cell):
        from IPython.display import Markdown, display
        from swiftnb import inference_stream_vllm
        engine = self._engine_or_say()
        lora = engine.adapter(args.lora)
        if args.new:
            self.history = []
        request = [{'query': cell.strip(), 'history': self.history, 'system': args.system}]
        handle, redraws, result = display(Markdown(''), display_id=True), Redraws(), None
        stream = inference_stream_vllm(engine, engine.template, request,
                                       generation_config=settings.from_flags(args), lora_request=lora)
        try:
            for results in stream:
                result = results[0]
                if redraws.due():
                    handle.update(Markdown(result['response']))
        except KeyboardInterrupt as interrupt:  # in the redraw, between two parts: the stream did not see it
            stream.close()  # aborts the answer's request and waits for that
            if interrupt.args:  # the stream's own, which says so
                raise
            raise KeyboardInterrupt(stopped('the answer')) from None
        handle.update(Markdown(result['response']))  # the final text, whatever the last redraw showed
        self.history = result['history']
        return ChatReply(result['response'])


    def _compare(self, args, cell):
        from IPython.display import display
        from swiftnb.widgets import CompareWidget
        engine = self._engine_or_say()
        options = dict(system=args.system, **settings.from_flags(args).given())
        if args.run:
            widget = CompareWidget.from_run(engine, args.run, **options)
        else:
            variants = [None if name == 'base' else engine.adapter(name).lora_name for name in args.variants]
            widget = CompareWidget(engine, variants=variants, **options)
        display(widget)
        return CompareReplies(widget.send(cell.strip()))  # like %%chat, the cell ends when the answers have


def _memory() -> str:
    """The kernel's memory and its engine processes' (vLLM's engine core and workers hold the model)."""
    import psutil
    kernel = psutil.Process()
    children = []
    for child in kernel.children(recursive=True):
        try:
            children.append((child.name(), child.memory_info().rss))
        except psutil.Error:  # it ended meanwhile
            pass
    total = kernel.memory_info().rss + sum(rss for _, rss in children)
    text = f'RSS {total / 2**30:.1f} GiB (kernel {kernel.memory_info().rss / 2**30:.1f} GiB'
    text += ''.join(f', {name} {rss / 2**30:.1f} GiB' for name, rss in children if rss > 2**26) + ')'
    try:
        import torch
        if torch.cuda.is_available():
            text += f', CUDA allocated {torch.cuda.memory_allocated() / 2**30:.1f} GiB'
    except ImportError:
        pass
    return text
