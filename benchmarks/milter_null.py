# mypy: allow-untyped-decorators, no-warn-return-any
"""A pymilter milter that does nothing, for benchmarks/milter_load.py.

It registers the same callbacks with the same decorators as mailwarden's
WardenMilter (mailwarden/milter/app.py) and accepts everything, so its CPU per
message is the floor of the pymilter route: libmilter's thread per
connection, the protocol, and one Python call per callback.

    python -m benchmarks.milter_null unix:/path/to/socket   (or inet:PORT@127.0.0.1)

Run it with -m from the repository root (POSTFIX-FACTS.md: never run a file
next to pymilter's top-level `milter` module as a script). SIGTERM stops it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import Milter


@Milter.header_leading_space
class NullMilter(Milter.Base):  # type: ignore[misc]
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return Milter.CONTINUE

    def envfrom(self, mailfrom: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.decode("bytes")
    @Milter.noreply
    def header(self, name: str, value: bytes) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE

    def eom(self) -> int:
        return Milter.CONTINUE


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    os.umask(0o000)  # the socket must be writable by Postfix's smtpd (user postfix)
    Milter.factory = NullMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS)  # as mailwarden asks
    Milter.runmilter("null", argv[0], 240)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
