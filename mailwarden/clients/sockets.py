"""Opening a stream socket to a Postfix-notation address (the clamd client, the health
check's probes of our daemons): one place, so a unix socket that fails to connect is
always closed."""

from __future__ import annotations

import socket

from mailwarden.addresses import ListenAddress


def connect(addr: ListenAddress, timeout_s: float) -> socket.socket:
    """A connected socket with `timeout_s` as its timeout; OSError/TimeoutError as raised."""
    if addr.family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.connect(addr.path)
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((addr.host, addr.port), timeout=timeout_s)
