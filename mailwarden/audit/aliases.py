"""Alias and .forward right-hand sides, in Postfix's table syntax. Pure: an
`:include:` file is read through the `read_include` function the caller passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_INCLUDE_DEPTH = 3

# path -> the file's text, or None when it cannot be read
ReadInclude = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Names:
    """How bare names become addresses: Postfix appends $myorigin."""

    myorigin: str

    def full(self, name: str) -> str:
        name = name.strip().strip('"').lstrip("\\")
        return name if "@" in name else f"{name}@{self.myorigin}"


def split_targets(value: str) -> list[str]:
    """Alias/.forward right-hand side -> entries (commas or spaces; quotes kept whole)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for c in value:
        if c == '"':
            quoted = not quoted
            cur.append(c)
        elif not quoted and (c == "," or c.isspace()):
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if cur:
        out.append("".join(cur))
    return [e for e in out if e]


def logical_lines(text: str) -> Iterator[str]:
    """Postfix table syntax: '#' comment lines, leading whitespace continues a line."""
    cur = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and cur:
            cur += " " + line.strip()
            continue
        if cur:
            yield cur
        cur = line.strip()
    if cur:
        yield cur


def expand_targets(value: str, names: Names, read_include: ReadInclude,
                   depth: int = 0) -> Iterator[tuple[str, str]]:
    """(address, note) for every address a right-hand side sends to; commands and files
    are delivered here and skipped; `:include:` files are expanded (an unreadable one,
    or one nested deeper than MAX_INCLUDE_DEPTH, contributes nothing)."""
    for entry in split_targets(value):
        if entry.startswith(("|", '"|')) or entry.startswith(("/", '"/')):
            continue  # a command or a file: delivered here
        if entry.lower().startswith(":include:"):
            path = entry[len(":include:"):]
            if depth >= MAX_INCLUDE_DEPTH:
                continue
            text = read_include(path)
            if text is None:
                continue
            for line in logical_lines(text):
                for addr, note in expand_targets(line, names, read_include, depth + 1):
                    yield addr, note or f"via :include:{path}"
            continue
        yield names.full(entry), ""
