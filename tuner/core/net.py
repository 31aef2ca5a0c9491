"""Network helpers every layer may use."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host_problem(host: str) -> str | None:
    """Why ``host`` is not a usable bind address (an IPv4/IPv6 literal or a DNS name), or ``None``."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if host.count(".") == 3 and all(part.isdigit() for part in host.split(".")):
        return f"{host!r} is not an IPv4 address (each part 0-255)"
    if (
        not host
        or len(host) > 253
        or not all(_LABEL.fullmatch(label) for label in host.rstrip(".").split("."))
    ):
        return f"{host!r} is neither an IP address nor a host name"
    return None


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def tcp_socket(host: str, port: int) -> tuple[socket.socket, tuple[Any, ...]]:
    """A TCP socket of ``host``'s own address family (IPv4, IPv6 or a resolved name) and the address."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return socket.socket(family, kind, proto), address


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, on ``host``."""
    s, address = tcp_socket(host, 0)
    with s:
        s.bind(address)
        return int(s.getsockname()[1])
