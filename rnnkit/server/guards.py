"""Request guards of ``rnnkit serve``, as ASGI middleware that answers before the app reads anything.

* :class:`BodyLimit`: a request body over ``max_body_bytes`` is answered 413, from its Content-Length or by
  counting the bytes of a chunked upload as they arrive.
* :class:`HostCheck`: a request whose ``Host`` is not one of this server's names is answered 400. A web page the
  user visits can point its own domain name at 127.0.0.1 (DNS rebinding) and then talk to the server as if it
  were its own origin; the browser still sends that domain in ``Host``, so checking it closes the hole (as
  Jupyter, Django and the Vite dev server do).

Example::

    app.add_middleware(BodyLimit, limit=1_000_000)
    app.add_middleware(HostCheck, bound="127.0.0.1", allow=("my-box.local",))   # the outermost: checked first
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException

__all__ = ["BodyLimit", "HostCheck", "host_name"]


async def _answer(send: Any, status: int, detail: str) -> None:
    """Send a complete JSON response ``{"detail": detail}`` with ``status``, as FastAPI words its errors."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(HTTPException):
    """Raised while the app reads the body; FastAPI passes an HTTPException from a middleware on as it is."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app parses it, from its
    Content-Length when it has one, else by counting the bytes as they arrive (chunked uploads)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(send, declared.decode("latin-1")[:30])
        received, started = 0, False

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(413, self._message(f"more than {self.limit}"))
            return message

        async def watching_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(send, f"more than {self.limit}")

    def _message(self, size: str) -> str:
        return f"limit max_body_bytes exceeded: got {size} bytes, the server allows at most {self.limit}"

    async def _refuse(self, send: Any, size: str) -> None:
        await _answer(send, 413, self._message(size))


def host_name(header: str) -> str:
    """The host part of a ``Host`` header: without the port, IPv6 brackets and a trailing dot, lower case."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1:header.find("]")] if "]" in header else header
    name, colon, port = header.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        header = name
    return header.rstrip(".")


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not one of this server's names is answered 400 unread.

    Allowed: ``localhost`` and ``*.localhost`` (browsers resolve them to loopback themselves), loopback
    addresses (127.0.0.0/8, ::1), the address the server is bound to (when bound to every interface, 0.0.0.0
    or ::, any IP address: a rebinding page always sends a name, never an address), and the names in
    ``allow`` (``.example.org`` also allows its subdomains; ``*`` turns the check off, e.g. behind a proxy
    that checks Host itself).
    """

    def __init__(self, app: Any, bound: str = "127.0.0.1", allow: Iterable[str] = ()) -> None:
        self.app = app
        self.bound = host_name(bound)
        self.allow = tuple(host_name(name) if not name.startswith(".") else name.lower() for name in allow)

    def allows(self, host: str) -> bool:
        if "*" in self.allow or host == self.bound or host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(host == name or (name.startswith(".") and (host.endswith(name) or host == name[1:]))
                       for name in self.allow)
        bound_everywhere = self.bound in ("0.0.0.0", "::")
        return address.is_loopback or bound_everywhere or host in self.allow

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if self.allows(host_name(header)):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        shown = header[:100] if header else "none"
        await _answer(send, 400, f"Host {shown!r} is not a name of this server; it answers to localhost, loopback "
                                 "addresses and the address it is bound to. Add names with "
                                 "`rnnkit serve --allow-host NAME`")
