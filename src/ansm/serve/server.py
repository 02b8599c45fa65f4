"""Binding and running: the socket is bound before the server starts, so a port in use or a host that does not
exist is a one-line ``error:`` from the CLI (an ``OSError`` naming the address), not a uvicorn log and exit 1."""

from __future__ import annotations

import socket
from typing import Any

from ansm.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free port the OS picks; read it from the socket)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen ({exc.strerror or exc})") from None
    sock.listen(64)
    return sock


def make_server(app: Any, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app`` (run it with ``server.run(sockets=[sock])``; stop it with
    ``server.should_exit = True``)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off"))


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
