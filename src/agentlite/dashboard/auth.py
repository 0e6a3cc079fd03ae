"""The dashboard's login: one token, printed at start, required by every page and stream.

A browser brings it once as ``?token=…`` and gets it back as an HttpOnly, SameSite=Strict cookie
(the address bar then drops it); programs send ``Authorization: Bearer …`` or
``X-Agentlite-Token: …``. Forms that change something also carry a value derived from the token, so
another site cannot post them with the operator's cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from agentlite.core.errors import ConfigError

COOKIE = "agentlite_dashboard"
HEADER = "x-agentlite-token"
#: A token of the operator's own (else one is generated at start).
TOKEN_ENV = "AGENTLITE_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16

#: On every answer: only this origin's own scripts and styles, never in a frame, no referrer (the
#: first address carries the token), nothing cached.
GUARD_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]

Scope = dict[str, Any]
Receive = Any
Send = Any


def new_token() -> str:
    return secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError(
            f"{TOKEN_ENV}: the dashboard token must be at least {MIN_TOKEN_LENGTH} printable characters without spaces"
        )
    return token


def form_key(token: str) -> str:
    """What forms carry to prove they came from a page of this dashboard."""
    return hmac.new(token.encode(), b"agentlite-dashboard-form", hashlib.sha256).hexdigest()[:32]


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenGate:
    """ASGI middleware: 401 for anything without the token; ``?token=`` becomes a cookie."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), None)
        if _same(from_query, self.token):
            # Keep the rest of the query; drop the token from the address (and from history).
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope.get("path", "/") + (f"?{rest}" if rest else "")
            await _respond(
                send, 303, b"", [(b"location", location.encode()), (b"set-cookie", self._cookie())]
            )
            return
        bearer = headers.get("authorization", "")
        by_header = _same(bearer[7:] if bearer.lower().startswith("bearer ") else None, self.token) or _same(
            headers.get(HEADER), self.token
        )
        by_cookie = False
        if not by_header and "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:
                jar = SimpleCookie()
            morsel = jar.get(COOKIE)
            by_cookie = _same(None if morsel is None else morsel.value, self.token)
        if not (by_header or by_cookie):
            body = (
                b"401 Unauthorized: open the address the dashboard printed at start (it ends in ?token=...), "
                b"or send the token in an Authorization: Bearer header.\n"
            )
            await _respond(send, 401, body, [(b"content-type", b"text/plain; charset=utf-8"),
                                             (b"www-authenticate", b'Bearer realm="agentlite-dashboard"')])  # fmt: skip
            return
        # Forms posted with only the cookie must also carry the form key (see module doc).
        scope.setdefault("state", {})["needs_form_key"] = not by_header

        async def send_guarded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *GUARD_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_guarded)

    def _cookie(self) -> bytes:
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
                            *GUARD_HEADERS]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
