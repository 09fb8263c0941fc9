"""Who may use the server: which Host names it answers, and which pages may send it photos and frames.

The server runs on the user's own machine, usually on 127.0.0.1, while the same browser visits other
sites. A page elsewhere can POST a form to 127.0.0.1 without asking (no CORS preflight for a
multipart form), and with DNS rebinding (its own name resolving to 127.0.0.1) it can read the replies
too. So requests must name this machine in ``Host`` (the rebinding page's name is refused), and a
browser request from another page (its ``Origin``) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from fervid.errors import FervidError

LOOPBACK = ("127.0.0.1", "::1", "localhost")  # addresses that serve this machine only
LOCAL_HOSTS = (*LOOPBACK, "[::1]")  # the Host names a browser uses for them
ANY_HOST = ("*",)


def allowed_hosts_for(bind_host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The Host names to answer when listening on ``bind_host``: this machine's own names on loopback,
    and ``extra`` (the public name a TLS reverse proxy on this machine passes on); any name once the
    user opens the server to the network (clients then reach it by names of their own). A name may
    start with ``*.`` (every subdomain); a ``*`` anywhere else is refused, as Starlette would at start-up."""
    for name in extra:
        if not name or "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")):
            raise FervidError(f"--allow-host {name!r}: give a host name such as fervid.example.com (or *.example.com)")
    return (*LOCAL_HOSTS, *extra) if bind_host in LOOPBACK else ANY_HOST


def same_origin(headers: Mapping[str, str], allowed: Sequence[str] = ()) -> bool:
    """Whether a request comes from this server's own page, from no page (curl and scripts send no
    Origin), or from a page whose origin the user allowed (``--allow-origin``: their own front end)."""
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == headers.get("host") or origin.rstrip("/") in allowed


def checked_origins(origins: Sequence[str]) -> tuple[str, ...]:
    """``--allow-origin`` values as browsers send them (scheme://host[:port], no path), or a FervidError."""
    checked = []
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise FervidError(f"--allow-origin {origin!r}: give a page's origin such as http://localhost:3000 (scheme, host, port)")
        checked.append(origin.rstrip("/"))
    return tuple(checked)
