"""What a request must pass before a route sees it: the access token beyond loopback (`TokenGate`),
the per-client upload rate (`UploadRate`) and the upload size (`UploadLimit`), all pure ASGI
middleware that answer with the API's error shape."""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
import urllib.parse

from fastapi.responses import JSONResponse

from carsearch.core.errors import CarsearchError
from carsearch.core.schema import Serve


class _TooLarge(Exception):
    pass


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# ------------------------------------------------------------------ the app
TOKEN_COOKIE = "carsearch_token"  # set by the page from its token field: <img> requests carry it, URLs never do
UPLOAD_PATHS = ("/api/v1/search/image",)


class ServeConfigError(CarsearchError, ValueError):
    """`carsearch serve` asked to do something unsafe: one line with the fix."""


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def access_token(cfg: Serve) -> str | None:
    """`serve.token`, else `$CARSEARCH_TOKEN` (None: no token, only allowed on loopback)."""
    return cfg.token or os.environ.get("CARSEARCH_TOKEN") or None


class TokenGate:
    """Pure ASGI middleware: with a token, every `/api/` request needs `Authorization: Bearer <token>`
    (or the page's cookie); compared in constant time. The page and its static files stay open, so
    the browser can show the token field."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    def _presented(self, headers: dict) -> bytes:
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip()
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode():
                return urllib.parse.unquote_to_bytes(value)
        return b""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            if not hmac.compare_digest(self._presented(dict(scope["headers"])), self.token):
                r = error_response(401, "unauthorized", "this server needs its access token (Authorization: Bearer …)")
                r.headers["WWW-Authenticate"] = "Bearer"
                return await r(scope, receive, send)
        return await self.app(scope, receive, send)


class UploadRate:
    """Pure ASGI middleware: at most `per_minute` image uploads a minute from one client address
    (429 past it, with Retry-After); 0 turns it off."""

    def __init__(self, app, per_minute: int):
        self.app, self.per_minute, self.seen, self.lock = app, per_minute, {}, threading.Lock()

    async def __call__(self, scope, receive, send):
        if self.per_minute and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
            client, now = (scope.get("client") or ("?", 0))[0], time.monotonic()
            with self.lock:
                recent = [t for t in self.seen.get(client, []) if now - t < 60.0]
                allowed = len(recent) < self.per_minute
                self.seen[client] = recent + [now] if allowed else recent
            if not allowed:
                wait = max(1, int(60.0 - (now - recent[0])) + 1)
                r = error_response(
                    429, "rate_limited", f"over {self.per_minute} uploads a minute (serve.upload_rate_per_minute)"
                )
                r.headers["Retry-After"] = str(wait)
                return await r(scope, receive, send)
        return await self.app(scope, receive, send)


class UploadLimit:
    """Pure ASGI middleware: refuse a request body over the upload limit with 413 before it is
    parsed (Content-Length), and stop reading a chunked body once it passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max = app, max_bytes + 64 * 1024  # room for the multipart envelope and form fields

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        msg = f"request body over the upload limit ({self.max - 64 * 1024} bytes, serve.max_upload_bytes)"
        cl = dict(scope["headers"]).get(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.max:
            return await error_response(413, "too_large", msg)(scope, receive, send)
        seen, started, over = 0, False, False

        async def limited():
            nonlocal seen, over
            m = await receive()
            seen += len(m.get("body", b""))
            if seen > self.max:
                over = True
                raise _TooLarge()
            return m

        async def guarded_send(m):
            nonlocal started
            if over:  # the body parser turned _TooLarge into its own error: answer 413 instead
                if m["type"] == "http.response.start" and not started:
                    started = True
                    await error_response(413, "too_large", msg)(scope, receive, send)
                return
            started = started or m["type"] == "http.response.start"
            await send(m)

        try:
            await self.app(scope, limited, guarded_send)
        except _TooLarge:
            if not started:
                started = True
                await error_response(413, "too_large", msg)(scope, receive, send)
