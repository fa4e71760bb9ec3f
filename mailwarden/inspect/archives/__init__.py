"""Archives and files: name and content checks, nested, within a budget.

`inspect_blob` classifies one seekable file (a decoded MIME part, or an
archive member copied out) and walks the archives in it: zip, 7z, RAR4/RAR5,
tar, gzip/bzip2/xz and TNEF, nested up to `max_archive_depth`, at offset 0
and further in. One module per format, each registering its walker with
`blob.walker`:

    budget.py      Budget, Context (findings, fail-closed caps), LimitReached
    streams.py     bounded readers and streaming decompressors
    blob.py        sniff + dispatch, archives past offset 0, members
    zip.py         central directories and local headers, compared
    sevenzip.py    7z headers (budgeted records), LZMA/LZMA2/BCJ via liblzma
    rar.py         RAR 2.x-4.x and RAR 5 header walks
    tar.py         ustar/pax/GNU, pax size and sparse members
    compressed.py  gzip, bzip2, xz (and .tar.*)
    tnef.py        winmail.dat

Everything inflated is counted against one per-message `Budget`; so are
declared sizes, entry counts and header records. Running out gives an
UNINSPECTABLE finding ("expanded-limit", "entry-limit", "object-limit",
"depth-limit"), and an expired deadline raises `LimitReached("time-limit")`
up to `inspect_message`. Why the listers are our own and not libarchive's:
docs/decisions/archive-listing.md.
"""

from __future__ import annotations

from mailwarden.inspect.archives import (  # noqa: F401 - each registers its walker
    compressed,
    rar,
    sevenzip,
    tar,
    tnef,
    zip,
)
from mailwarden.inspect.archives.blob import inspect_blob
from mailwarden.inspect.archives.budget import (
    CORRUPT_ERRORS,
    Budget,
    Context,
    CorruptArchive,
    LimitReached,
    check_name,
    describe,
)
from mailwarden.inspect.archives.rar import RarEntry, RarHeaderEncrypted, rar4_entries, rar5_entries

__all__ = [
    "CORRUPT_ERRORS",
    "Budget",
    "Context",
    "CorruptArchive",
    "LimitReached",
    "RarEntry",
    "RarHeaderEncrypted",
    "check_name",
    "describe",
    "inspect_blob",
    "rar4_entries",
    "rar5_entries",
]
