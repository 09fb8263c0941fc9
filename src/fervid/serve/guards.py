"""Who may use the server: which Host names it answers, and which pages may send it photos and frames.

The server runs on the user's own machine, usually on 127.0.0.1, while the same browser visits other
sites. A page elsewhere can POST a form to 127.0.0.1 without asking (no CORS preflight for a
multipart form), and with DNS rebinding (its own name resolving to 127.0.0.1) it can read the replies
too. So requests must name this machine in ``Host`` (the rebinding page's name is refused), and a
browser request from another page (its ``Origin``) is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from fervid.errors import FervidError

LOOPBACK = ("127.0.0.1", "::1", "localhost")  # addresses that serve this machine only
LOCAL_HOSTS = (*LOOPBACK, "[::1]")  # the Host names a browser uses for them
ANY_HOST = ("*",)


HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def checked_host(name: str) -> str:
    """An ``--allow-host`` value as the Host check compares it (lower case, as browsers send it), or
    a FervidError: a name with a port, a scheme or a space was accepted and matched no request
    (the check drops the Host's port before comparing), so every request was refused with 400."""
    lowered = name.strip().lower()
    if HOST_NAME.fullmatch(lowered):
        return lowered
    try:  # an IPv6 address, as a browser writes it in Host: in brackets
        return f"[{ipaddress.IPv6Address(lowered.removeprefix('[').removesuffix(']'))}]"
    except ValueError:
        pass
    if ":" in lowered and "://" not in lowered and HOST_NAME.fullmatch(lowered.rsplit(":", 1)[0]):
        raise FervidError(f"--allow-host {name!r}: give the name without its port ({lowered.rsplit(':', 1)[0]}); "
                          "the Host check compares names only")
    raise FervidError(f"--allow-host {name!r}: give a host name such as fervid.example.com (or *.example.com)")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` serves this machine only: ``localhost`` or any loopback address
    (all of 127.0.0.0/8, and ::1), so ``--host 127.0.0.2`` keeps the Host check too."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind_host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The Host names to answer when listening on ``bind_host``: this machine's own names on loopback,
    and ``extra`` (the public name a TLS reverse proxy on this machine passes on); any name once the
    user opens the server to the network (clients then reach it by names of their own), unless
    ``extra`` names them: then only those, which keeps DNS rebinding out there too. A name may
    start with ``*.`` (every subdomain); a ``*`` anywhere else is refused, as Starlette would at start-up."""
    extra = [checked_host(name) for name in extra]
    if not is_loopback(bind_host) and not extra:
        return ANY_HOST
    own: tuple[str, ...] = (bind_host, f"[{bind_host}]") if ":" in bind_host else (bind_host,)  # as a browser sends it
    if bind_host in ("0.0.0.0", "::", ""):  # every address: none of them is a name a browser sends
        own = ()
    return tuple(dict.fromkeys((*LOCAL_HOSTS, *own, *extra)))


def same_origin(headers: Mapping[str, str], allowed: Sequence[str] = ()) -> bool:
    """Whether a request comes from this server's own page, from no page (curl and scripts send no
    Origin), or from a page whose origin the user allowed (``--allow-origin``: their own front end).
    An allowed origin is compared whole, as the CORS answer compares it: ``http://localhost:3000/``
    (browsers never send the slash) passing here would reach the model and get no CORS header back."""
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == headers.get("host") or origin in allowed


DEFAULT_PORTS = {"http": 80, "https": 443}


def checked_origins(origins: Sequence[str]) -> tuple[str, ...]:
    """``--allow-origin`` values written as browsers send them, or a FervidError: scheme://host[:port],
    no path, in lower case, without the scheme's default port (``http://LocalHost:80`` is sent as
    ``http://localhost``; compared as typed, it would never match)."""
    checked = []
    for origin in origins:
        try:
            parts = urlsplit(origin.strip())
            port = parts.port
        except ValueError:  # a port out of range, or a broken IPv6 address ("http://[::1")
            parts, port = urlsplit(""), -1
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query \
                or parts.username or port == -1:
            raise FervidError(f"--allow-origin {origin!r}: give a page's origin such as http://localhost:3000 (scheme, host, port)")
        if "*" in parts.hostname:  # origins are compared whole: a pattern would be accepted and match nothing
            raise FervidError(f"--allow-origin {origin!r}: name each page's origin in full (give --allow-origin once per origin); "
                              "wildcards are for --allow-host")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        checked.append(f"{scheme}://{host}" + (f":{port}" if port is not None and port != DEFAULT_PORTS[scheme] else ""))
    return tuple(checked)


class OneHostMiddleware(TrustedHostMiddleware):
    """Starlette's Host check, refusing also a request with two ``Host`` headers (RFC 9112: 400).
    The check read the first; a proxy in front that routes by the last would send through a request
    whose other name passed."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and sum(name == b"host" for name, _ in scope["headers"]) > 1:
            await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
