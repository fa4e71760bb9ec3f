"""Human-readable units in config and profiles: "10m", "90s", "30MB"."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
# Regulations say "MB"; a mail client's "30 MB" is a binary megabyte (30 MiB),
# which is the stricter reading for senders and the one Outlook/Thunderbird show.
_SIZE_FACTORS = {
    None: 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from "10m", "90s", "1.5h", "250ms" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"10m\", got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"expected a duration like \"10m\" or \"30s\", got {value!r}")
        seconds = float(m.group(1)) * _DURATION_FACTORS[m.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from "30MB", "512KiB" or a bare number of bytes (MB = 1024*1024)."""
    if isinstance(value, bool):
        raise ValueError("expected a size like \"30MB\", got a boolean")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"expected a size like \"30MB\", got {value!r}")
        n = int(float(m.group(1)) * _SIZE_FACTORS[m.group(2)])
    if n < 0:
        raise ValueError("a size cannot be negative")
    return n


def format_duration(seconds: float) -> str:
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


def format_size(n: int) -> str:
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"
