"""/openapi.json that says what the server answers, so a schema fuzzer (schemathesis, `make fuzz`) checks something.

vLLM's routes (and FastAPI's defaults in the pt app) declare every 200 JSON answer as `{}` and a 422 that
neither server sends. Both apps take this: the main answers are declared as the `openai` package's types
(the ones clients parse them into), and every route declares the errors RequestGuard, the key check and the
error table send (400, 401, 404, 413, 503), in OpenAI's error JSON (or Anthropic's, for the app's own errors
under vLLM's /v1/messages).
"""
from typing import Optional

from fastapi import FastAPI
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

PREFIX = 'openai.'  # the openai types' names in components, apart from vLLM's own


class ModelList(BaseModel):
    object: str
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    """vLLM's Anthropic Messages API (/v1/messages) answers most of its errors in Anthropic's shape."""
    type: str
    error: AnthropicErrorDetail


ANSWERS = {('/v1/chat/completions', 'post'): ChatCompletion, ('/v1/completions', 'post'): Completion,
           ('/v1/models', 'get'): ModelList}
STREAMED = {'/v1/chat/completions', '/v1/completions'}
OTHER_ANSWERS = {'/health': {'description': 'The engine answers'},  # no body
                 '/metrics': {'description': "Prometheus' text format", 'content': {'text/plain': {}}}}
APP_ERRORS = {'400': 'Bad Request', '404': 'Not Found'}  # the app's own: Anthropic's shape under /v1/messages
SERVER_ERRORS = {'401': 'Missing or wrong API key', '413': 'Request body too large',  # auth.py's and guard.py's
                 '503': 'Engine stopped, dead or the server stopping'}


def _component(components: dict, model: type[BaseModel]) -> dict:
    schema = model.model_json_schema(ref_template=f'#/components/schemas/{PREFIX}{{model}}')
    for name, definition in schema.pop('$defs', {}).items():
        components[PREFIX + name] = definition
    components[PREFIX + model.__name__] = schema
    return {'$ref': f'#/components/schemas/{PREFIX}{model.__name__}'}


def declare_responses(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault('components', {}).setdefault('schemas', {})
        openai_error = _component(components, ErrorResponse)
        anthropic_error = _component(components, AnthropicErrorResponse)
        for path, operations in schema['paths'].items():
            # vLLM's /v1/messages answers its own errors in Anthropic's shape, a malformed request in OpenAI's
            app_error = {'anyOf': [anthropic_error, openai_error]} if path.startswith('/v1/messages') else openai_error
            for method, operation in operations.items():
                responses = operation.setdefault('responses', {})
                responses.pop('422', None)
                for errors, error in ((APP_ERRORS, app_error), (SERVER_ERRORS, openai_error)):
                    for status, description in errors.items():
                        responses[status] = {'description': description,
                                             'content': {'application/json': {'schema': error}}}
                if path in OTHER_ANSWERS:
                    responses['200'] = OTHER_ANSWERS[path]
                answer = ANSWERS.get((path, method))
                if answer is not None:
                    content = {'application/json': {'schema': _component(components, answer)}}
                    if path in STREAMED:
                        content['text/event-stream'] = {}
                    responses['200'] = {'description': 'Successful Response', 'content': content}
        app.openapi_schema = schema
        return schema
    app.openapi = openapi
