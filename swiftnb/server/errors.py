"""swiftnb's errors as HTTP responses: one table of status codes, OpenAI's error JSON (as vLLM sends it)."""
from http import HTTPStatus
from typing import Optional

from fastapi.responses import JSONResponse

from swiftnb.errors import (EngineAsleepError, EngineClosedError, SettingsError, SwiftnbError, UnknownModelError,
                            UsageError)

STATUS = [  # the first class an error is an instance of decides
    (UnknownModelError, HTTPStatus.NOT_FOUND),
    (UsageError, HTTPStatus.BAD_REQUEST),
    (EngineClosedError, HTTPStatus.SERVICE_UNAVAILABLE),
    (EngineAsleepError, HTTPStatus.SERVICE_UNAVAILABLE),
]


def status_of(error: SwiftnbError) -> int:
    return next((status for kind, status in STATUS if isinstance(error, kind)), HTTPStatus.INTERNAL_SERVER_ERROR)


def error_body(status: int, message: str, param: Optional[str] = None) -> dict:
    kind = HTTPStatus(status).phrase.replace(' ', '') + 'Error'  # 'BadRequestError', as vLLM names them
    return {'error': {'message': message, 'type': kind, 'param': param, 'code': status}}


def error_json(status: int, message: str, param: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status)


def swiftnb_error_json(error: SwiftnbError) -> JSONResponse:
    return error_json(status_of(error), str(error), getattr(error, 'param', None) if isinstance(error, SettingsError)
                      else 'model' if isinstance(error, UnknownModelError) else None)

