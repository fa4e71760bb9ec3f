"""TNEF (winmail.dat): the attachments Outlook packs into one application/ms-tnef part.

Our own bounded reader, after [MS-OXTNEF] 2.1 (stream layout, attributes)
and [MS-OXCDATA] 2.11 (property values). `tnefparse` (PyPI) was evaluated
and not used: its MAPI decoder loops `num_properties` times (a 32-bit count
from the file) even past the end of the data, so a 40-byte winmail.dat costs
billions of iterations, and it holds every attachment in memory at once.

What is read, per attachment (an attAttachRendData attribute starts one):
  * names: attAttachTitle, and from the attAttachment property list
    PR_ATTACH_LONG_FILENAME, PR_ATTACH_FILENAME, PR_DISPLAY_NAME, PR_ATTACH_EXTENSION
    (appended to a name): every one is checked, since Outlook shows one and
    saves another;
  * data: attAttachData, and PR_ATTACH_DATA_BIN / PR_ATTACH_DATA_OBJ (an
    embedded message is itself TNEF after its 16-byte IID: sniffing finds it
    and recurses).
The data is never copied out here: members are views of the part's file.
Every attribute and property charges the budget's object count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO

from mailwarden.inspect.archives.blob import given, member_safely, walker
from mailwarden.inspect.archives.budget import (
    Context,
    CorruptArchive,
    declared_ok,
    entries_ok,
)
from mailwarden.inspect.archives.streams import FileView

TNEF_SIGNATURE = 0x223E9F78
_ATT_RENDDATA = 0x00069002
_ATT_TITLE = 0x00018010
_ATT_DATA = 0x0006800F
_ATT_ATTACHMENT = 0x00069005
_NAME_PROPS = {0x3707, 0x3704, 0x3001}  # long filename, filename, display name
_EXTENSION_PROP = 0x3703
_DATA_PROP = 0x3701  # PR_ATTACH_DATA_BIN (binary) / PR_ATTACH_DATA_OBJ (object)
_MAX_PROPS_BLOCK = 64 * 1024 * 1024
_FIXED = {0x0001: 0, 0x0002: 4, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8,
          0x000A: 4, 0x000B: 4, 0x0014: 8, 0x0040: 8, 0x0048: 16}
_VARIABLE = {0x000D, 0x001E, 0x001F, 0x0102}


@dataclass
class _Attachment:
    names: list[str] = field(default_factory=list)
    extension: str = ""
    data: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) in the file


def _text(raw: bytes, unicode: bool) -> str:
    if unicode:
        return raw.decode("utf-16-le", "replace").split("\0", 1)[0]
    return raw.split(b"\0", 1)[0].decode("cp1252", "replace")


def _props(ctx: Context, block: bytes, base: int, att: _Attachment) -> None:
    """An attAttachment property list ([MS-OXTNEF] 2.1.3.4): names and data."""
    pos = 4
    if len(block) < 4:
        raise CorruptArchive("TNEF property list too short")
    (count,) = struct.unpack_from("<I", block, 0)
    for _ in range(count):
        ctx.budget.tick()
        if pos + 4 > len(block):
            raise CorruptArchive("TNEF property list truncated")
        ptype, pid = struct.unpack_from("<HH", block, pos)
        pos += 4
        if pid >= 0x8000:  # named property: GUID, kind, id or name
            pos += 16
            (kind,) = struct.unpack_from("<I", block, pos)
            pos += 4
            if kind == 0:
                pos += 4
            else:
                (n,) = struct.unpack_from("<I", block, pos)
                pos += 4 + n + (-n % 4)
        multi = bool(ptype & 0x1000)
        base_type = ptype & 0x0FFF
        values = 1
        if multi or base_type in _VARIABLE:
            (values,) = struct.unpack_from("<I", block, pos)
            pos += 4
        for _ in range(values):
            ctx.budget.tick()
            if base_type in _FIXED:
                pos += _FIXED[base_type]
                continue
            if base_type not in _VARIABLE:
                raise CorruptArchive(f"TNEF property type 0x{base_type:x}")
            (n,) = struct.unpack_from("<I", block, pos)
            pos += 4
            if pos + n > len(block):
                raise CorruptArchive("TNEF property value past the end")
            value = block[pos : pos + n]
            if pid in _NAME_PROPS and base_type in (0x001E, 0x001F):
                att.names.append(_text(value, base_type == 0x001F))
            elif pid == _EXTENSION_PROP and base_type in (0x001E, 0x001F):
                att.extension = _text(value, base_type == 0x001F)
            elif pid == _DATA_PROP:
                skip = 16 if base_type == 0x000D else 0  # an object starts with its IID
                att.data.append((base + pos + skip, max(0, n - skip)))
            pos += n + (-n % 4)


@walker("tnef")
def walk_tnef(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    f.seek(0)
    head = f.read(6)
    if len(head) < 6 or struct.unpack_from("<I", head)[0] != TNEF_SIGNATURE:
        raise CorruptArchive("no TNEF signature")
    pos = 6
    attachments: list[_Attachment] = []
    while pos + 9 <= size:
        ctx.budget.tick()
        f.seek(pos)
        level, attr_id, length = struct.unpack("<BII", f.read(9))
        start = pos + 9
        if start + length + 2 > size:
            raise CorruptArchive("TNEF attribute runs past the end")
        if level == 2 or attr_id == _ATT_RENDDATA:
            if attr_id == _ATT_RENDDATA or not attachments:
                attachments.append(_Attachment())
            att = attachments[-1]
            if attr_id == _ATT_TITLE:
                f.seek(start)
                att.names.append(_text(f.read(min(length, 4096)), False))
            elif attr_id == _ATT_DATA:
                att.data.append((start, length))
            elif attr_id == _ATT_ATTACHMENT:
                if length > _MAX_PROPS_BLOCK:
                    raise CorruptArchive("TNEF attachment properties too large")
                f.seek(start)
                _props(ctx, f.read(length), start, att)
        pos = start + length + 2  # the attribute's checksum follows its data
    for att in attachments:
        names = [n for n in att.names if n]
        if att.extension:
            names += [n + att.extension for n in names if not n.lower().endswith(
                att.extension.lower())] or [att.extension]
        names = list(dict.fromkeys(names)) or ["(tnef attachment)"]
        if not entries_ok(ctx, path, 1):
            break
        if not att.data:
            member_safely(ctx, path, names[0], depth, given(None), tuple(names[1:]))
        for offset, length in att.data:
            opener = given(FileView(f, offset, length) if declared_ok(ctx, path, length)
                           else None)
            member_safely(ctx, path, names[0], depth, opener, tuple(names[1:]))
    return "tnef"
