"""Who may ask: the token (header, ?token=, login cookie) and its throttle, the Host check
without a token, the login call, and the security headers on every response (Guard)."""
from __future__ import annotations

import hmac
import ipaddress
import json
import re
from urllib.parse import parse_qs

import anyio
from starlette.requests import Request, cookie_parser
from starlette.responses import Response

from .params import ApiError, error_response
from .throttle import AuthThrottle

COOKIE = "mediaindex_token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

LOGIN_BODY_MAX = 4096
LOGIN_BODY_TIMEOUT = 10.0  # seconds: anyone may call /api/login; a slow body must not hold a connection


async def small_body(request: Request, limit: int, what: str) -> bytes:
    """A short request body, read with a size cap (413) and a deadline (408), so a slow or
    endless body cannot hold a connection."""
    body = b""
    with anyio.move_on_after(LOGIN_BODY_TIMEOUT) as scope:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"{what} is too large (at most {limit} bytes)")
    if scope.cancelled_caught:
        raise ApiError(408, f"{what} did not arrive in time")
    return body


async def login_token(request: Request) -> str:
    """The token sent to /api/login: JSON ``{"token": ...}`` or a form field ``token=...``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "application/x-www-form-urlencoded"):
        raise ApiError(415, "send {\"token\": \"...\"} as JSON or token=... as a form "
                            "(application/x-www-form-urlencoded)")
    body = await small_body(request, LOGIN_BODY_MAX, "the login body")
    token = None
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, "send {\"token\": \"...\"} as JSON") from None
        token = data.get("token") if isinstance(data, dict) else None
    else:
        token = (parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get("token") or [None])[0]
    if not isinstance(token, str) or not token:
        raise ApiError(400, "token is required")
    return token


ACTION_BODY_MAX = 4096


async def action_body(request: Request) -> dict:
    """The JSON body of a request that changes something (retry, re-transcribe), checked against
    cross-site request forgery: it must be JSON (a page elsewhere cannot send that without a CORS
    preflight, which this server never grants) and, when the browser says where it comes from
    (``Origin``, ``Sec-Fetch-Site``), from this very origin. Scripts (no such headers) pass."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send this request as JSON (Content-Type: application/json), e.g. {}")
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    host = request.headers.get("host", "").lower()
    if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and origin.lower() not in (f"http://{host}", f"https://{host}")):
        raise ApiError(403, "this request came from another site: only this server's own page may send it")
    body = await small_body(request, ACTION_BODY_MAX, "the body")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "send a JSON object, e.g. {}")
    return data


def cookie_value(token: str) -> str:
    """What the login cookie holds: a key derived from the token (hex), not the token itself, so
    any token (spaces, quotes, non-ASCII) makes a valid cookie, and the cookie jar never holds
    the token that the API and media URLs accept."""
    return hmac.new(token.encode(), b"mediaindex web login cookie", "sha256").hexdigest()


def set_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", path="/",
                        max_age=30 * 24 * 3600)


def is_loopback(host: str) -> bool:
    """localhost, or any loopback address (127.0.0.2 and the like: the server may be bound to
    any of them). An address, unlike other names, cannot be re-pointed by DNS."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# A Host header: a name or an IPv4 address, or an IPv6 address in brackets; an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*)(?::[0-9]{1,5})?")


def host_name(header: str) -> str | None:
    """The name in a Host header, lower case, or None when it is not a well-formed Host."""
    m = _HOST.fullmatch(header)
    return m.group(1).lower() if m else None


def client_address(scope) -> str:
    return (scope.get("client") or ("?", 0))[0]


def is_public(path: str) -> bool:
    """Answered without the token: the page (it holds no data, and it is where one logs in),
    its static files, and the login call itself."""
    return path == "/" or path == "/api/login" or path.startswith("/static/") or bool(_PAGE.fullmatch(path))


_PAGE = re.compile(r"/m/[^/]+")


def login_cookie(headers: dict[bytes, bytes]) -> str | None:
    cookie = headers.get(b"cookie", b"")
    if COOKIE.encode() not in cookie:
        return None
    # Starlette's lenient parser: cookies that other apps on this host name set (they are
    # shared across ports) may be malformed; http.cookies stops at the first one.
    return cookie_parser(cookie.decode("latin-1")).get(COOKIE)


class Guard:
    """Pure ASGI middleware: security headers on every response; the token (on every route but
    the page, its static files and the login) or, without a token, a loopback Host."""

    def __init__(self, app, token: str | None, allowed_hosts: set[str] | None, throttle: AuthThrottle | None = None):
        self.app = app
        self.token = token.encode() if token else None
        self.cookie = cookie_value(token).encode() if token else None
        self.allowed_hosts = allowed_hosts
        self.throttle = throttle or AuthThrottle()

    def _credentials(self, scope) -> tuple[list[bytes], str | None]:
        """(tokens from the Authorization header and ?token=, the login cookie's value)."""
        headers = dict(scope.get("headers") or [])
        candidates = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            candidates.append(auth[7:].strip())
        qs = scope.get("query_string", b"")
        if b"token=" in qs:
            candidates += [v.encode() for v in parse_qs(qs.decode("latin-1")).get("token", [])]
        return candidates, login_cookie(headers)

    def _check(self, scope) -> tuple[int, int | None]:
        """(200: let it through, 401: no or a wrong credential, 429: blocked; Retry-After)."""
        candidates, cookie = self._credentials(scope)
        if not candidates and cookie is None:
            return 401, None  # nothing presented: not a guess
        client = client_address(scope)
        level = self.throttle.level(client)
        wait = self.throttle.retry_after(client, level)
        if wait is not None:  # before any comparison: a 429 says nothing about the token
            return 429, wait
        if any(hmac.compare_digest(c, self.token) for c in candidates) or (
                cookie is not None and hmac.compare_digest(cookie.encode("latin-1", "replace"), self.cookie)):
            if level > 0:
                self.throttle.succeeded(client)
            return 200, None
        if candidates:
            self.throttle.failed(client)
        else:
            self.throttle.failed_cookie(client, cookie)
        return 401, None

    def _host_ok(self, scope) -> bool:
        if self.allowed_hosts is None:
            return True
        host = host_name(dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1"))
        return host is not None and (host in self.allowed_hosts or is_loopback(host))

    def _blocked(self, scope) -> int | None:
        """Retry-After for a public route that carries a token (login, a page link), else None."""
        path = scope.get("path", "")
        if path == "/api/login" or b"token=" in scope.get("query_string", b""):
            return self.throttle.retry_after(client_address(scope))
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        if not self._host_ok(scope):
            resp = error_response(421, "this server only answers requests to a loopback host name "
                                       "(127.0.0.1, localhost, ::1); start it with --token to serve other names")
            return await resp(scope, receive, send_with_headers)
        if self.token is not None:
            if is_public(scope.get("path", "")):
                status, wait = (429, w) if (w := self._blocked(scope)) is not None else (200, None)
            else:
                status, wait = self._check(scope)
            if status == 429:
                resp = error_response(429, f"too many wrong tokens from this address; try again in {wait} s",
                                      {"retry-after": str(wait)})
                return await resp(scope, receive, send_with_headers)
            if status == 401:
                resp = error_response(401, "this server needs a token: send 'Authorization: Bearer <token>', "
                                           "add ?token=<token>, or log in from the web page",
                                      {"www-authenticate": 'Bearer realm="mediaindex"'})
                return await resp(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)
