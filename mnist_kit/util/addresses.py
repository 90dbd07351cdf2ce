"""Addresses a server of mnist-kit (the board, serve) may listen on: checked before it starts, with one clear
error for a bad host or a port in use."""

from __future__ import annotations

import errno
import socket

from mnist_kit.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class PortInUse(UserError):
    """Another server or program listens on the port."""


def check_address(host: str, port: int) -> None:
    """UserError unless this process could listen on ``host:port`` right now (a bad host, or a port that
    another board or program holds)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise UserError(f"--host {host!r} is not an address of this machine; use 127.0.0.1 (the default), "
                        "0.0.0.0 or one of its addresses") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} is in use (another server or program listens there); "
                                "choose another with --port") from None
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; use 127.0.0.1 (the default) or "
                            "one of this machine's addresses") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host`` right now (the system's choice), for a server started next."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server bound to ``host:port`` (a wildcard host is
    reached at 127.0.0.1; an IPv6 address goes in brackets); no trailing slash."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"
