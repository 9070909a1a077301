"""ASGI guards in front of the whole app (`rag-bot serve`): who may send the sign-in header, who may read
/metrics and the API docs.

Pure ASGI (not Starlette's BaseHTTPMiddleware), so SSE streams and websockets pass untouched:

- `ProxyHeaderGuard` removes the header-auth user header (`RAG_BOT_AUTH_HEADER`) from every HTTP or
  websocket request that neither comes from a trusted proxy address (`RAG_BOT_AUTH_TRUSTED_PROXIES`,
  CIDRs) nor carries the proxy's shared secret. A client talking to the bot directly cannot sign in as
  anyone by sending the header itself. The proxy must still overwrite the header for its own clients
  (deploy/nginx.conf does).
- `OpsTokenGuard` answers 401 on /metrics, the docs page and the OpenAPI schema unless the request
  carries `RAG_BOT_OPS_TOKEN` (Bearer, or as a Basic password); serving adds it only when a token is set.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """CIDRs (or single addresses) as networks; a typo is an error naming the setting."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"RAG_BOT_AUTH_TRUSTED_PROXIES: {cidr!r} is not an address or CIDR ({exc})") from exc
    return networks


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value)
    return None


class ProxyHeaderGuard:
    """Drops `user_header` (and the secret header) unless the peer is a trusted proxy or knows the secret."""

    def __init__(self, app: ASGIApp, *, user_header: str, trusted: Iterable[str],
                 secret: str | None = None, secret_header: str = "X-Proxy-Secret") -> None:
        self.app = app
        self.user_header = user_header.lower().encode("latin-1")
        self.secret_header = secret_header.lower().encode("latin-1")
        self.networks = parse_networks(trusted)
        self.secret = secret.encode() if secret else None

    def trusted(self, scope: Scope) -> bool:
        if self.secret is not None:
            # With a secret configured, the secret decides (the proxy's address may change).
            return hmac.compare_digest(_header(scope, self.secret_header) or b"", self.secret)
        client = scope.get("client")
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _header(scope, self.user_header) is not None \
                and not self.trusted(scope):
            logger.warning("dropped %s from untrusted client %s", self.user_header.decode(),
                           (scope.get("client") or ("?",))[0])
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"]
                                if k.lower() not in (self.user_header, self.secret_header)]
        await self.app(scope, receive, send)


class OpsTokenGuard:
    """401 on `paths` (exact, or prefix when ending in '/') unless the request carries the token.

    Accepted as `Authorization: Bearer <token>` (Prometheus' `authorization` or curl) or as the password
    of HTTP Basic auth, any user name: a browser asks for it once and then also sends it with the docs
    page's own request for the schema.
    """

    def __init__(self, app: ASGIApp, *, token: str, paths: Iterable[str]) -> None:
        self.app = app
        self.token = token.encode()
        self.paths = tuple(paths)

    def guarded(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.paths)

    def authorized(self, header: bytes) -> bool:
        scheme, _, value = header.partition(b" ")
        if scheme.lower() == b"bearer":
            return hmac.compare_digest(value.strip(), self.token)
        if scheme.lower() == b"basic":
            try:
                _, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(password, self.token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.guarded(scope.get("path", "")) \
                and not self.authorized(_header(scope, b"authorization") or b""):
            body = json.dumps({"error": "unauthorized", "message": "This page needs the operator's token "
                               "(RAG_BOT_OPS_TOKEN): send Authorization: Bearer <token>, or enter it as the "
                               "password when the browser asks."}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Basic realm="rag_bot operations"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
