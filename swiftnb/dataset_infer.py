"""`swiftnb infer --val_dataset FILE.jsonl`: every row in one batch, results to a jsonl.

Rows are ms-swift's: 2.x's `query`, and optionally `history`, `system`, `response` (the
reference answer, written back as `label`), or 3.x/4.x's `messages` (a last assistant
message is the reference). quantize's calibration rows are read here too. All rows are read and checked
before anything runs, so a bad line stops the run with its line number and no
work is wasted; each result is written as soon as its answer finishes, so an
interrupted run keeps what it computed.
"""
import json
import time
from pathlib import Path
from typing import Optional

from swiftnb.engine.base import Engine, LoRARequest
from swiftnb.errors import DatasetError
from swiftnb.infer import prepare, settings_for, stream_choices
from swiftnb.settings import GenerationConfig
from swiftnb.template import Template


def read_rows(path: str, limit: int = -1) -> list[dict]:
    """The first `limit` rows (-1: all), each checked, as {'query', 'history', 'system', 'label'}."""
    if not Path(path).is_file():
        raise DatasetError(f'{path}: no such file; give a .jsonl of {{"query", "response"}} or {{"messages"}} rows')
    rows = []
    with open(path, encoding='utf-8') as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if 0 <= limit <= len(rows):
                break
            rows.append(_row(path, number, line))
    return rows


def _row(path: str, number: int, line: str) -> dict:
    where = f'{path}, line {number}'
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(f'{where}: not JSON ({error.msg})') from None
    return check_row(row, where)


def check_row(row, where: str) -> dict:
    """A row of the seed's dataset format ({'query', 'history', 'system', 'response'}) or ms-swift 3.x/4.x's
    ({'messages'}) as {'query', 'history', 'system', 'label'}, or a DatasetError that says what is wrong `where`."""
    if isinstance(row, dict) and 'messages' in row:
        row = _from_messages(row['messages'], where)
    if not isinstance(row, dict) or not isinstance(row.get('query'), str):
        raise DatasetError(f"{where}: needs a 'query' string (and a 'response'), or 'messages'")
    history = row.get('history') or []
    if not all(isinstance(turn, (list, tuple)) and len(turn) == 2 for turn in history):
        raise DatasetError(f"{where}: 'history' must be a list of [query, response] pairs")
    return {'query': row['query'], 'history': [list(t) for t in history], 'system': row.get('system'),
            'label': row.get('response')}


def _from_messages(messages, where: str) -> dict:
    """{'messages': [system?, user, assistant, ..., user, assistant?]} as the seed's row."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get('content'), str)
                                                 for m in messages):
        raise DatasetError(f"{where}: 'messages' must be a list of {{'role', 'content'}} with text content")
    system = messages[0]['content'] if messages and messages[0].get('role') == 'system' else None
    turns = messages[system is not None:]
    roles = [m.get('role') for m in turns]
    if not turns or roles != ['user', 'assistant'] * (len(roles) // 2) + ['user'] * (len(roles) % 2):
        raise DatasetError(f"{where}: 'messages' must be a system message (optional), then user and assistant "
                           f"turns, ending with a user message or its answer; got the roles {roles}")
    *history, last = [[m['content'] for m in turns[i:i + 2]] for i in range(0, len(turns), 2)]
    return {'query': last[0], 'history': history, 'system': system, 'response': last[1] if len(last) == 2 else None}


def default_result_path(ckpt_dir: Optional[str]) -> Path:
    """Beside the checkpoint (ms-swift's infer_result/), or in the current folder without one."""
    folder = Path(ckpt_dir) if ckpt_dir else Path('.')
    return folder / 'infer_result' / f'{time.strftime("%Y%m%d-%H%M%S")}.jsonl'


def run(engine: Engine, template: Template, rows: list[dict], config: GenerationConfig,
        lora: Optional[LoRARequest], result_path: Path, progress: bool = True) -> Path:
    prepared = prepare(engine, template, rows, settings_for(engine, config), lora)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    lines: dict[int, str] = {}
    from tqdm.auto import tqdm
    with open(result_path, 'w', encoding='utf-8') as out, tqdm(total=len(rows), disable=not progress) as bar:
        for choices in engine.loop.iterate(lambda: stream_choices(engine, prepared, lora, final_only=True)):
            for i, choice in enumerate(choices):
                if choice.finish_reason and i not in lines:  # written at once: an interrupt keeps it
                    lines[i] = json.dumps({**rows[i], 'response': choice.text}, ensure_ascii=False) + '\n'
                    out.write(lines[i])
                    out.flush()
                    bar.update(1)
    result_path.write_text(''.join(lines[i] for i in sorted(lines)), encoding='utf-8')  # in the dataset's order
    return result_path
