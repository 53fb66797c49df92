"""The API key: every route but /health needs `Authorization: Bearer KEY`.

vLLM's own AuthenticationMiddleware guards only the /v1 routes (its /tokenize, /metrics and
/openapi.json stay open), so both of swiftnb's apps take this one instead: the same comparison
(SHA-256 digests compared in constant time, the scheme in any case, one space before the key), over every
method of every path but /health. Without the key only a browser's CORS preflight from an allowed origin passes
(CORS is off unless allowed_origins names some); any other OPTIONS is a 401 too (it used to pass, and /metrics
answered it with the whole Prometheus text).
"""
import hashlib
import secrets

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from swiftnb.server.errors import error_json

OPEN_PATHS = ('/health',)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str, allowed_origins=()):
        self.app = app
        self._digest = hashlib.sha256(api_key.encode()).digest()
        self._origins = set(allowed_origins)

    def _allowed(self, headers: Headers) -> bool:
        """RFC 7235's credentials, as vLLM reads them: the scheme in any case, one space, the key."""
        scheme, _, token = headers.get('authorization', '').partition(' ')
        return scheme.lower() == 'bearer' and secrets.compare_digest(hashlib.sha256(token.encode()).digest(),
                                                                     self._digest)

    def _preflight(self, scope: Scope, headers: Headers) -> bool:
        """A browser's CORS preflight from an allowed origin (the CORS middleware answers it, with no body)."""
        return scope.get('method') == 'OPTIONS' and 'access-control-request-method' in headers and \
            ('*' in self._origins or headers.get('origin') in self._origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] == 'http' and scope['path'] not in OPEN_PATHS:
            headers = Headers(scope=scope)
            if not self._allowed(headers) and not self._preflight(scope, headers):
                await error_json(401, 'missing or wrong API key: send Authorization: Bearer KEY')(scope, receive, send)
                return
        await self.app(scope, receive, send)
