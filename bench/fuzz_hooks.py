"""schemathesis hooks for `make fuzz`: a generated request names one of the models the server serves (else
nearly every request would be a 404 for a random name and the routes behind it would go untested), and an unload
names the base model or one never loaded (the adapters the other requests use stay)."""
import os
import random

import schemathesis

NAMES = os.environ['FUZZ_MODEL_NAMES'].split(',')


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and 'model' in body:
        body['model'] = random.choice(NAMES)
    return body


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.operation.path == '/v1/unload_lora_adapter' and isinstance(case.body, dict):
        name = case.body.get('lora_name')
        case.body['lora_name'] = random.choice([NAMES[0], 'never-loaded', name if name not in NAMES else ''])
