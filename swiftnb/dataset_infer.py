"""`swiftnb infer --val_dataset FILE.jsonl`: every row in one batch, results to a jsonl.

Rows are ms-swift's: `query`, and optionally `history`, `system`, `response`
(the reference answer, written back as `label`). All rows are read and checked
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
    """The first `limit` rows (-1: all), each checked."""
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
    """A row of the seed's dataset format ({'query', 'history', 'system', 'response'}) as
    {'query', 'history', 'system', 'label'}, or a DatasetError that says what is wrong `where`."""
    if not isinstance(row, dict) or not isinstance(row.get('query'), str):
        raise DatasetError(f"{where}: needs a 'query' string")
    history = row.get('history') or []
    if not all(isinstance(turn, (list, tuple)) and len(turn) == 2 for turn in history):
        raise DatasetError(f"{where}: 'history' must be a list of [query, response] pairs")
    return {'query': row['query'], 'history': [list(t) for t in history], 'system': row.get('system'),
            'label': row.get('response')}


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
