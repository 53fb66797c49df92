"""schemathesis hooks for `make fuzz`: a generated request names one of the models the server serves (else
nearly every request would be a 404 for a random name and the routes behind it would go untested)."""
import os
import random

import schemathesis

NAMES = os.environ['FUZZ_MODEL_NAMES'].split(',')


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and 'model' in body:
        body['model'] = random.choice(NAMES)
    return body
