"""The API key: every route but /health needs `Authorization: Bearer KEY`.

vLLM's own AuthenticationMiddleware guards only the /v1 routes (its /tokenize, /metrics and
/openapi.json stay open), so both of swiftnb's apps take this one instead: the same comparison
(SHA-256 digests compared in constant time, the scheme in any case), over every path but /health.
"""
import hashlib
import secrets

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from swiftnb.server.errors import error_json

OPEN_PATHS = ('/health',)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self._digest = hashlib.sha256(api_key.encode()).digest()

    def _allowed(self, headers: Headers) -> bool:
        scheme, _, token = headers.get('authorization', '').partition(' ')
        return scheme.lower() == 'bearer' and secrets.compare_digest(
            hashlib.sha256(token.strip().encode()).digest(), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] == 'http' and scope.get('method') != 'OPTIONS' and scope['path'] not in OPEN_PATHS \
                and not self._allowed(Headers(scope=scope)):
            await error_json(401, 'missing or wrong API key: send Authorization: Bearer KEY')(scope, receive, send)
            return
        await self.app(scope, receive, send)
