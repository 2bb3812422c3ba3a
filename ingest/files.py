"""Opening a stored input file and making its rows: what every reader (ingest/readers.py,
ingest/json_array.py) shares.

- `open_stored` opens through Beam's FileSystems (local, gs://, s3://...) and decompresses
  .gz/.bz2/.xz with Python's strict codecs; a local manifest that is no regular file, or
  leads into /proc, /sys, /dev, is never opened (`Unreadable`).
- `ReadState` counts the stored bytes handed to the reader (a decompressor is fed
  COMPRESSED_STEP bytes at a time), so a reader that stops early can say how many bytes it
  never delimited into rows (`RawRow.unread_bytes`).
- `payload_problem` clears a parsed row before it travels: nesting deeper than
  `ingest.max_json_depth` (`too_deeply_nested`) and lone surrogates (`invalid_unicode`).
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Optional

from schemas.reasons import Reason
from schemas.strings import display_text, lone_surrogate

CHUNK = 1 << 20
BOM = b"\xef\xbb\xbf"
COMPRESSED_STEP = 1 << 13


@dataclass
class RawRow:
    source: str
    source_ref: str                      # "relative/path:locator"
    base_dir: str                        # relative media paths resolve against this folder
    payload: Any = None                  # the parsed row (usually a dict)
    error: Optional[tuple[Reason, str]] = None
    raw: Optional[bytes] = None          # original bytes, kept when small (for rejected/)
    raw_size: int = 0
    inline: dict[str, bytes] = field(default_factory=dict, repr=False)  # media bytes keyed by URI
    root: str = ""                       # the input's root folder: media may be read under it
    unread_bytes: int = 0                # bytes of the file left undelimited after this row (reader stopped)


@dataclass(frozen=True)
class FileTask:
    """One file to read, with what is needed to name its rows."""

    path: str
    relpath: str
    source: str
    format: str
    base_dir: str
    max_row_bytes: int
    max_payload_bytes: int
    max_media_bytes: int
    max_json_depth: int = 32
    root: str = ""      # the input's root folder (relpath is relative to it); "" means base_dir
    size: int = -1      # stored size in bytes, when the listing knew it


class Unreadable(Exception):
    """The file cannot be opened at all: it becomes one `unreadable_file` row."""


class ReadState:
    """How far into the stored file a reader got: the bytes handed to it (or to its
    decompressor) by the filesystem, against the file's size."""

    def __init__(self, task: FileTask) -> None:
        self.task = task
        self.size = task.size
        self.consumed = 0
        self.compressed = task.path.lower().endswith((".gz", ".bz2", ".xz"))

    def unread(self, buffered: int = 0) -> int:
        """Bytes of the stored file not delimited into rows; `buffered`: bytes read but not
        parsed (counted only when the file is not compressed, where they are stored bytes)."""
        if self.size < 0:
            self.size = _stored_size(self.task.path)
        if self.size < 0:
            return max(1, buffered)  # the size is unknown: something was certainly left
        left = max(0, self.size - self.consumed)
        if not self.compressed:
            left += buffered
        elif buffered and not left:
            left = 1   # decompressed text was left over, the compressed bytes were all consumed
        return min(left, self.size) if self.size else left

    def clean(self, detail: str) -> str:
        """Error text without the file's absolute location (the rejected row names it by relpath)."""
        return detail.replace(self.task.path, self.task.relpath)


def _stored_size(path: str) -> int:
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.get_filesystem(path).metadata(path).size_in_bytes
    except Exception:  # noqa: BLE001 - unknown size: the caller says so
        return -1


class _Counting(io.RawIOBase):
    """A read-only file that counts the bytes it hands on (into ReadState.consumed). Under a
    decompressor it hands on at most COMPRESSED_STEP bytes a call: the decompressor then
    decodes (and the reader delivers) the rows before a corrupt block instead of losing them
    with a large read, and `consumed` is exact to one step."""

    def __init__(self, f, state: ReadState) -> None:
        super().__init__()
        self._f, self._state = f, state
        self._step = COMPRESSED_STEP if state.compressed else None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._f.read(min(len(b), self._step or len(b)))
        n = len(data)
        b[:n] = data
        self._state.consumed += n
        return n

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def open_stored(path: str, state: Optional[ReadState] = None) -> BinaryIO:
    """Open through Beam's FileSystems; decompress with Python's strict codecs (Beam's own
    gzip reader treats a truncated stream as a clean end of file, which would lose rows)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if "://" not in path:
        _check_local_manifest(path)
    try:
        f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # noqa: BLE001 - any filesystem error means the same thing here
        raise Unreadable(f"{type(e).__name__}: {e}") from None
    if state is not None:
        f = _Counting(f, state)
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if lower.endswith(".bz2"):
        return bz2.BZ2File(f, mode="rb")
    if lower.endswith(".xz"):
        return lzma.LZMAFile(f, mode="rb")
    return f


def _check_local_manifest(path: str) -> None:
    """A listed manifest is opened only if it is a regular file outside /proc, /sys and /dev:
    a FIFO would block the reader forever, a link into /proc would copy its bytes into rejected/.
    (Links elsewhere are followed: dataset caches are farms of links.)"""
    import stat

    from media.fetch import never_read

    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, ValueError) as e:
        raise Unreadable(f"{type(e).__name__}: {e}") from None
    if never_read(real):
        raise Unreadable("it leads into /proc, /sys or /dev, which are never read")
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable("not a regular file (a FIFO, socket, device or folder); not opened")


def make_row(task: FileTask, ref: str, *, payload: Any = None, error=None, raw: Optional[bytes] = None,
         raw_size: Optional[int] = None, inline: Optional[dict] = None, unread: int = 0) -> RawRow:
    size = raw_size if raw_size is not None else (len(raw) if raw is not None else 0)
    keep = raw if raw is not None and len(raw) <= task.max_payload_bytes else None
    return RawRow(source=task.source, source_ref=ref, base_dir=task.base_dir, payload=payload,
                  error=error, raw=keep, raw_size=size, inline=inline or {}, root=task.root or task.base_dir,
                  unread_bytes=unread)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def payload_problem(payload: Any, max_depth: int, raw: Optional[bytes] = None) -> Optional[tuple[Reason, str]]:
    """(reason, detail) when a parsed row nests deeper than max_depth or holds a string (key or
    value) with a lone surrogate; None when it may travel. Iterative: depth cannot overflow it.

    With the row's JSON text (`raw`) most rows are cleared without a walk: a surrogate can only
    come from a `\\uD800`-`\\uDFFF` escape (strict UTF-8 decoding rejects encoded ones), and
    no row nests deeper than it has brackets."""
    if raw is not None and (raw.count(b"[") + raw.count(b"{") <= max_depth
                            and _SURROGATE_ESCAPE.search(raw) is None):
        return None
    stack = [(payload, 1, "$")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            at = lone_surrogate(value)
            if at is not None:
                return Reason.INVALID_UNICODE, f"{where}: lone surrogate U+{ord(value[at]):04X} at character {at}"
            continue
        if not isinstance(value, (dict, list, tuple)):
            continue
        if depth > max_depth:
            return Reason.TOO_DEEPLY_NESTED, (f"{where}: nesting deeper than ingest.max_json_depth={max_depth}")
        if isinstance(value, dict):
            for k, v in value.items():
                key = k if isinstance(k, str) else str(k)
                if lone_surrogate(key) is not None:
                    return Reason.INVALID_UNICODE, f"{where}: a key holds a lone surrogate"
                stack.append((v, depth + 1, f"{where}.{display_text(key)[:40]}"))
        else:
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
    return None


def parsed_row(task: FileTask, ref: str, payload: Any, raw: bytes, **kw) -> RawRow:
    """A parsed row, or its error row when payload_problem finds one (the payload is dropped)."""
    problem = payload_problem(payload, task.max_json_depth, raw)
    if problem is not None:
        return make_row(task, ref, error=problem, raw=raw, **kw)
    return make_row(task, ref, payload=payload, raw=raw, **kw)


def loads_row(data: str):
    """json.loads, with nesting too deep for the parser reported like a parse error (RecursionError)."""
    try:
        return json.loads(data), None
    except RecursionError:
        return None, (Reason.TOO_DEEPLY_NESTED, "nesting too deep for the JSON parser (RecursionError)")
    except ValueError as e:
        return None, (Reason.MALFORMED_JSON, str(e))


def read_step(f: BinaryIO):
    """f.read1 where the stream has it (decompressors): it returns what one step decoded, so the
    rows before a corrupt block are delivered before the error, not lost with the block."""
    return getattr(f, "read1", f.read)
