"""Readers: one input file to a stream of `RawRow`s, never raising on bad data.

Each reader yields exactly one `RawRow` per input row it can delimit (a JSONL line, a
JSON-array element, a Parquet row, a tar sample); a row that cannot be parsed carries an
`error` (reason, detail) instead of a payload, so the pipeline rejects it with a reason
rather than losing it. Where the rest of a file cannot be delimited any more (a JSON array
broken mid-way, a truncated tar), the remainder becomes one rejected row that says so.

Files are opened through Beam's `FileSystems`, so local paths, gs://, s3:// and the other
registered schemes all work; .gz, .bz2 and .xz files are decompressed by extension. A UTF-8
byte-order mark at the start of a text file (or tar text member) is skipped, as is one at
the start of a JSONL line or between JSON elements (files joined with `cat`).

Every parsed row is checked before it leaves the reader (`payload_problem`): nesting deeper
than `ingest.max_json_depth` (`too_deeply_nested`; deeper still, json itself raises
RecursionError, caught per row) and strings holding lone surrogates (`invalid_unicode`)
become error rows carrying only their raw bytes, so no later step (nor Beam's pickler) sees them.

A reader that stops before the end of its file (garbage between JSON elements, a corrupt
compressed block, a broken tar header, a Parquet footer that cannot be read) records on its
last row how many bytes of the stored file it never delimited into rows (`unread_bytes`:
the stored bytes it never received, plus, for uncompressed files, those received but not
parsed; at least 1 whenever corrupt bytes stopped it, since a decompressor reads ahead; a
file that merely ends early, a cut gzip or tar, was read to its end);
the manifest sums them, and a run with unread input is never reported balanced.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Optional

from schemas.reasons import Reason
from schemas.sample import member_order
from schemas.strings import display_text, lone_surrogate

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "ts")
TEXT_EXTS = ("txt", "caption", "cap")
FORMAT_BY_SUFFIX = (
    (".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".jsonl.bz2", "jsonl"), (".jsonl.xz", "jsonl"),
    (".ndjson", "jsonl"), (".json", "json"), (".json.gz", "json"),
    (".parquet", "parquet"), (".tar", "wds"), (".tar.gz", "wds"),
)
_CHUNK = 1 << 20
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


def detect_format(path: str) -> Optional[str]:
    lower = path.lower()
    for suffix, fmt in sorted(FORMAT_BY_SUFFIX, key=lambda x: -len(x[0])):
        if lower.endswith(suffix):
            return fmt
    return None


def folder_source(relpath: str) -> str:
    """The source of a file inside a folder input: its top-level entry without extensions
    (`captions.jsonl` -> captions, `laion/part-1.parquet` -> laion)."""
    return relpath.split("/", 1)[0].split(".", 1)[0] or "input"


def read_file(task: FileTask) -> Iterator[RawRow]:
    """Dispatch on format; an unopenable file becomes one `unreadable_file` row."""
    reader = {"jsonl": read_jsonl, "json": read_json_array, "parquet": read_parquet,
              "wds": read_wds}[task.format]
    state = _ReadState(task)
    last = None
    try:
        for row in reader(task, state):
            last = row.source_ref
            yield row
    except _Unreadable as e:
        unread = max(1, state.unread())
        yield _row(task, task.relpath, error=(Reason.UNREADABLE_FILE, state.clean(
                   f"{e}; the file is not read ({unread} bytes)")), unread=unread)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # gzip.BadGzipFile is an OSError
        # The bytes stop making sense mid-file (a corrupt gzip block, a dropped connection):
        # what was read stands, and the rest of the file is one rejected row. A compressed
        # stream cut short (EOFError) was read to its end: nothing is unread, as for a cut tar.
        where = f"after {last}" if last else "before the first row"
        unread = state.unread() if isinstance(e, EOFError) else max(1, state.unread())
        yield _row(task, f"{task.relpath}:rest", error=(Reason.UNREADABLE_FILE, state.clean(
                   f"read failed {where}: {type(e).__name__}: {e}; the rest of the file "
                   f"({unread} bytes) is not read")), unread=unread)
    except Exception as e:  # noqa: BLE001 - a reader bug on odd bytes: report it, keep the job alive
        where = f"after {last}" if last else "before the first row"
        unread = max(1, state.unread())
        yield _row(task, f"{task.relpath}:rest", error=(Reason.STEP_ERROR, state.clean(
                   f"reader raised {where}: {type(e).__name__}: {e}; the rest of the file "
                   f"({unread} bytes) is not read")), unread=unread)


class _Unreadable(Exception):
    pass


class _ReadState:
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
    """A read-only file that counts the bytes it hands on (into _ReadState.consumed). Under a
    decompressor it hands on at most COMPRESSED_STEP bytes a call: the decompressor then
    decodes (and the reader delivers) the rows before a corrupt block instead of losing them
    with a large read, and `consumed` is exact to one step."""

    def __init__(self, f, state: _ReadState) -> None:
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


def _open(path: str, state: Optional[_ReadState] = None) -> BinaryIO:
    """Open through Beam's FileSystems; decompress with Python's strict codecs (Beam's own
    gzip reader treats a truncated stream as a clean end of file, which would lose rows)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if "://" not in path:
        _check_local_manifest(path)
    try:
        f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # noqa: BLE001 - any filesystem error means the same thing here
        raise _Unreadable(f"{type(e).__name__}: {e}") from None
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
        raise _Unreadable(f"{type(e).__name__}: {e}") from None
    if never_read(real):
        raise _Unreadable("it leads into /proc, /sys or /dev, which are never read")
    if not stat.S_ISREG(st.st_mode):
        raise _Unreadable("not a regular file (a FIFO, socket, device or folder); not opened")


def _row(task: FileTask, ref: str, *, payload: Any = None, error=None, raw: Optional[bytes] = None,
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


def _parsed(task: FileTask, ref: str, payload: Any, raw: bytes, **kw) -> RawRow:
    """A parsed row, or its error row when payload_problem finds one (the payload is dropped)."""
    problem = payload_problem(payload, task.max_json_depth, raw)
    if problem is not None:
        return _row(task, ref, error=problem, raw=raw, **kw)
    return _row(task, ref, payload=payload, raw=raw, **kw)


def _loads(data: str):
    """json.loads, with nesting too deep for the parser reported like a parse error (RecursionError)."""
    try:
        return json.loads(data), None
    except RecursionError:
        return None, (Reason.TOO_DEEPLY_NESTED, "nesting too deep for the JSON parser (RecursionError)")
    except ValueError as e:
        return None, (Reason.MALFORMED_JSON, str(e))


# --- JSONL ------------------------------------------------------------------------------------
def read_jsonl(task: FileTask, state: Optional[_ReadState] = None) -> Iterator[RawRow]:
    """One row per non-blank line; ref is `relpath:LINE` (1-based)."""
    with _open(task.path, state) as f:
        for line_no, line, size in _bounded_lines(f, task.max_row_bytes):
            ref = f"{task.relpath}:{line_no}"
            if line is None:
                yield _row(task, ref, error=(Reason.ROW_TOO_LARGE,
                                             f"line is {size} bytes, more than ingest.max_row_bytes="
                                             f"{task.max_row_bytes}"), raw_size=size)
                continue
            if line.startswith(BOM):   # a file's first line, or files concatenated with `cat`
                line = line[len(BOM):]
            if not line.strip():
                continue  # blank lines (and the final newline) are layout, not rows
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield _row(task, ref, error=(Reason.INVALID_UTF8, f"byte {e.start}: {e.reason}"), raw=line)
                continue
            payload, error = _loads(text)
            if error is not None:
                yield _row(task, ref, error=error, raw=line)
                continue
            yield _parsed(task, ref, payload, line)


def _reader(f: BinaryIO):
    """f.read1 where the stream has it (decompressors): it returns what one step decoded, so the
    rows before a corrupt block are delivered before the error, not lost with the block."""
    return getattr(f, "read1", f.read)


def _bounded_lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, Optional[bytes], int]]:
    """(line number, line or None if longer than max_bytes, size in bytes), reading fixed-size
    blocks, so an oversized line is skipped without ever being held in memory."""
    line_no, buf, dropped = 0, bytearray(), -1   # dropped >= 0: inside an oversized line
    read = _reader(f)
    while True:
        block = read(_CHUNK)
        if not block:
            break
        start = 0
        while start <= len(block):
            nl = block.find(b"\n", start)
            piece = block[start:] if nl < 0 else block[start:nl]
            if dropped >= 0:
                dropped += len(piece)
            else:
                buf += piece
                if len(buf) > max_bytes:
                    dropped, buf = len(buf), bytearray()
            if nl < 0:
                break
            line_no += 1
            if dropped >= 0:
                yield line_no, None, dropped + 1
                dropped = -1
            else:
                yield line_no, bytes(buf).rstrip(b"\r"), len(buf) + 1
                buf = bytearray()
            start = nl + 1
    if dropped >= 0:
        yield line_no + 1, None, dropped
    elif buf:
        yield line_no + 1, bytes(buf).rstrip(b"\r"), len(buf)


# --- JSON array (LLaVA) ------------------------------------------------------------------------
def read_json_array(task: FileTask, state: Optional[_ReadState] = None) -> Iterator[RawRow]:
    """Stream the elements of a top-level JSON array (a lone object is one row); ref `relpath:INDEX`."""
    state = state or _ReadState(task)
    decoder = json.JSONDecoder()
    with _open(task.path, state) as f:
        stream = _Utf8Stream(f)

        def stop(index: int, reason: Reason, detail: str) -> RawRow:
            unread = state.unread(stream.buffered_bytes())
            return _row(task, f"{task.relpath}:{index}", error=(reason, f"{detail}; elements from {index} on "
                        f"are not read ({unread} bytes)"), unread=unread)

        try:
            first = stream.peek_non_ws()
        except UnicodeDecodeError as e:
            yield stop(0, Reason.INVALID_UTF8, str(e))
            return
        if first is None:
            return  # an empty file holds no rows
        if first != "[":
            # A single JSON object file is one row.
            data = stream.read_all(task.max_row_bytes)
            if data is None:
                yield _row(task, f"{task.relpath}:0", error=(Reason.ROW_TOO_LARGE, "file is one value "
                           f"larger than ingest.max_row_bytes={task.max_row_bytes}"))
                return
            raw = data.encode("utf-8", "surrogatepass")
            payload, error = _loads(data)
            yield (_row(task, f"{task.relpath}:0", error=error, raw=raw) if error is not None
                   else _parsed(task, f"{task.relpath}:0", payload, raw))
            return
        stream.advance(1)
        index = 0
        expect_value = True
        while True:
            try:
                ch = stream.peek_non_ws()
            except UnicodeDecodeError as e:
                yield stop(index, Reason.INVALID_UTF8, str(e))
                return
            if ch is None:
                yield _row(task, f"{task.relpath}:{index}", error=(Reason.MALFORMED_JSON,
                           "file ends inside the array (no closing ']')"))
                return
            if ch == "]" and (index == 0 or not expect_value):
                return
            if not expect_value:
                if ch != ",":
                    yield stop(index, Reason.MALFORMED_JSON, f"expected ',' or ']' after element {index - 1}, "
                               f"found {ch!r}")
                    return
                stream.advance(1)
                expect_value = True
                continue
            value, raw, err = stream.decode_value(decoder, task.max_row_bytes)
            ref = f"{task.relpath}:{index}"
            raw_bytes = None if raw is None else raw.encode("utf-8", "surrogatepass")
            if err is None:
                yield _parsed(task, ref, value, raw_bytes)
            elif err[0] == "too_deep":
                # Delimited by counting brackets outside strings, but too deep to parse.
                yield _row(task, ref, error=(Reason.TOO_DEEPLY_NESTED, err[1]), raw=raw_bytes)
            elif err[0] == "malformed":
                # A bracketed element that is not valid JSON: it costs one row, reading goes on.
                yield _row(task, ref, error=(Reason.MALFORMED_JSON, err[1]), raw=raw_bytes)
            elif err[0] == "truncated":
                yield _row(task, ref, error=(Reason.MALFORMED_JSON, f"the file ends inside element {index}: "
                           f"{err[1]}"), raw=raw_bytes, raw_size=len(raw_bytes))
                return
            else:
                reason = Reason.ROW_TOO_LARGE if err[0] == "too_large" else Reason.MALFORMED_JSON
                detail = (f"element {index} is larger than ingest.max_row_bytes={task.max_row_bytes}"
                          if err[0] == "too_large" else err[1])
                yield stop(index, reason, detail)
                return
            index += 1
            expect_value = False


_JSON_SPECIAL = re.compile(r'["\\\[\]{}]')


class _Utf8Stream:
    """A growing text buffer over a binary file, for incremental JSON decoding (a leading
    byte-order mark is skipped: the utf-8-sig codec)."""

    def __init__(self, f: BinaryIO) -> None:
        import codecs

        self._read = _reader(f)
        self._dec = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._buf = ""
        self._pos = 0
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._read(_CHUNK)
        if not chunk:
            self._eof = True
            self._buf += self._dec.decode(b"", final=True)
            return False
        if self._pos > _CHUNK:
            self._buf, self._pos = self._buf[self._pos:], 0
        self._buf += self._dec.decode(chunk)
        return True

    def buffered_bytes(self) -> int:
        """UTF-8 bytes read from the file but not yet parsed."""
        return len(self._buf[self._pos:].encode("utf-8", "surrogatepass"))

    def peek_non_ws(self) -> Optional[str]:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n\ufeff":   # BOMs of joined files
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return None

    def advance(self, n: int) -> None:
        self._pos += n

    def read_all(self, limit: int) -> Optional[str]:
        while self._fill():
            if len(self._buf) - self._pos > limit:
                return None
        return self._buf[self._pos:]

    def decode_value(self, decoder: json.JSONDecoder, limit: int):
        """(value, raw text, None), or (None, raw text or None, (kind, message)) where kind is
        'too_deep' or 'malformed' (an array / object delimited by its brackets: one bad row,
        reading goes on), 'truncated' (it runs to the end of the file), 'too_large' or 'stop'
        (nothing after it can be delimited)."""
        while True:
            try:
                value, end = decoder.raw_decode(self._buf, self._pos)
            except (ValueError, RecursionError) as e:
                if self._buf[self._pos] in "[{":
                    return self._bracketed(decoder, limit, e)
                if len(self._buf) - self._pos > limit:
                    return None, None, ("too_large", "")
                try:
                    more = self._fill()
                except UnicodeDecodeError as ue:
                    return None, None, ("stop", f"invalid UTF-8: {ue}")
                if more:
                    continue
                return None, None, ("stop", str(e))
            # A value that ends exactly at the buffer's end may be a number cut mid-way.
            if end == len(self._buf) and not self._eof:
                if self._fill():
                    continue
            if end - self._pos > limit:
                return None, None, ("too_large", "")
            raw = self._buf[self._pos:end]
            self._pos = end
            return value, raw, None

    def _bracketed(self, decoder: json.JSONDecoder, limit: int, first: Exception):
        """An array / object the decoder rejected (or that needs more text): delimit it by its
        brackets, then parse exactly that text."""
        try:
            end = self._container_end(limit)
        except UnicodeDecodeError as ue:
            return None, None, ("stop", f"invalid UTF-8: {ue}")
        if end is None:
            if self._eof and len(self._buf) - self._pos <= limit:
                raw = self._buf[self._pos:]
                self._pos = len(self._buf)
                return None, raw, ("truncated", str(first))
            return None, None, ("too_large", "")
        raw = self._buf[self._pos:end]
        self._pos = end
        try:
            value, stop = decoder.raw_decode(raw)
        except RecursionError:
            return None, raw, ("too_deep", "nesting too deep for the JSON parser (RecursionError)")
        except ValueError as e:
            return None, raw, ("malformed", str(e))
        if stop != len(raw):
            return None, raw, ("malformed", f"extra data inside the element at character {stop}")
        return value, raw, None

    def _container_end(self, limit: int) -> Optional[int]:
        """End of the array / object starting at the cursor, by counting brackets outside
        strings (no recursion); None if it runs past `limit` characters or the file."""
        depth, in_string, rel = 0, False, 0    # rel: offset from the cursor (_fill may move the buffer)
        while True:
            m = _JSON_SPECIAL.search(self._buf, self._pos + rel)
            if m is None or (m.group() == "\\" and m.end() >= len(self._buf) and not self._eof):
                if len(self._buf) - self._pos > limit:
                    return None
                if self._fill():
                    continue
                if m is None:
                    return None
            ch, rel = m.group(), m.end() - self._pos
            if in_string:
                if ch == "\\":
                    rel += 1        # the escaped character
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return self._pos + rel if rel <= limit else None


# --- Parquet ---------------------------------------------------------------------------------
def read_parquet(task: FileTask, state: Optional[_ReadState] = None) -> Iterator[RawRow]:
    """One row per Parquet row; ref `relpath:ROW`. Embedded media bytes (HF Image/Video
    features: {"bytes": ..., "path": ...}) become inline media."""
    import pyarrow.parquet as pq

    state = state or _ReadState(task)
    with _open(task.path) as f:     # Parquet seeks: the stream is not counted, nothing is read past a failure
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # noqa: BLE001 - a broken footer: the file cannot be delimited
            unread = state.unread()
            yield _row(task, task.relpath, error=(Reason.MALFORMED_PARQUET, state.clean(
                f"{type(e).__name__}: {e}; its rows cannot be delimited ({unread} bytes not read)")), unread=unread)
            return
        row = 0
        for rg in range(pf.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            try:
                records = pf.read_row_group(rg).to_pylist()
            except Exception as e:  # noqa: BLE001 - the group is lost; every row in it is reported
                for i in range(n):
                    yield _row(task, f"{task.relpath}:{row + i}",
                               error=(Reason.MALFORMED_PARQUET, f"row group {rg}: {type(e).__name__}: {e}"))
                row += n
                continue
            for rec in records:
                ref = f"{task.relpath}:{row}"
                row += 1
                problem = payload_problem(rec, task.max_json_depth)
                if problem is not None:   # checked before json.dumps, which would recurse as deep
                    yield _row(task, ref, error=problem)
                    continue
                inline = _lift_embedded_media(rec, f"{task.relpath}#{row - 1}")
                raw = json.dumps(rec, default=str, ensure_ascii=False).encode("utf-8", "backslashreplace")
                yield _row(task, ref, payload=rec, raw=raw, inline=inline)


def _lift_embedded_media(rec: dict, uri_prefix: str) -> dict[str, bytes]:
    """Replace {"bytes": b"...", "path": ...} media values with URIs; return the bytes by URI."""
    inline = {}
    for key in ("image", "images", "video", "videos"):
        value = rec.get(key)
        values = value if isinstance(value, list) else [value]
        out = []
        for i, v in enumerate(values):
            if isinstance(v, dict) and isinstance(v.get("bytes"), (bytes, bytearray)):
                ext = posixpath.splitext(v.get("path") or "")[1] or (".jpg" if key.startswith("image") else ".mp4")
                uri = f"{uri_prefix}.{key}.{i}{ext}"
                inline[uri] = bytes(v["bytes"])
                out.append(uri)
            elif isinstance(v, dict) and v.get("bytes") is None and isinstance(v.get("path"), str):
                out.append(v["path"])   # datasets stores images kept on disk as {"bytes": None, "path": ...}
            elif isinstance(v, (bytes, bytearray)):
                uri = f"{uri_prefix}.{key}.{i}" + (".jpg" if key.startswith("image") else ".mp4")
                inline[uri] = bytes(v)
                out.append(uri)
            else:
                out.append(v)
        if out != values:
            rec[key] = out if isinstance(value, list) else out[0]
    return inline


# --- WebDataset tar ----------------------------------------------------------------------------
def read_wds(task: FileTask, state: Optional[_ReadState] = None) -> Iterator[RawRow]:
    """One row per sample (members sharing a key), as img2dataset / video2dataset write them:
    KEY.jpg|png|mp4..., KEY.txt (caption), KEY.json (metadata or a full row). Ref `relpath#KEY`.
    Member names that are not valid UTF-8 are shown escaped (schemas/strings.py)."""
    state = state or _ReadState(task)
    with _open(task.path, state) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r|*")
        except (tarfile.TarError, EOFError, OSError) as e:
            state.consumed = 0    # nothing was delimited
            unread = state.unread()
            yield _row(task, task.relpath, error=(Reason.TRUNCATED_ARCHIVE, state.clean(
                f"not a readable tar: {e} ({unread} bytes not read)")), unread=unread)
            return
        key, members, errors = None, {}, []
        try:
            for info in tar:
                if not info.isfile():
                    continue
                name = display_text(info.name)
                dirname, base = posixpath.split(name)
                if "." not in base or base.startswith("."):
                    continue  # not a sample member (webdataset skips these too)
                k, ext = base.split(".", 1)
                k = posixpath.join(dirname, k)
                if key is not None and k != key:
                    yield _wds_row(task, key, members, errors)
                    members, errors = {}, []
                key = k
                limit = task.max_media_bytes if ext.lower() in IMAGE_EXTS + VIDEO_EXTS else task.max_row_bytes
                if info.size > limit:
                    errors.append((Reason.MEDIA_TOO_LARGE if limit == task.max_media_bytes else Reason.ROW_TOO_LARGE,
                                   f"member {name} is {info.size} bytes, more than {limit}"))
                    continue
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise EOFError(f"member {name} is cut short")
                members[ext.lower()] = (name, data)
        except (tarfile.TarError, EOFError, OSError) as e:
            unread = state.unread()
            yield _row(task, f"{task.relpath}#{key or '?'}", error=(Reason.TRUNCATED_ARCHIVE, state.clean(
                       f"archive breaks off in or after sample {key!r}: {e}; nothing after it is read "
                       f"({unread} bytes)")), unread=unread)
            return
        if key is not None:
            yield _wds_row(task, key, members, errors)


def _wds_row(task: FileTask, key: str, members: dict, errors: list) -> RawRow:
    ref = f"{task.relpath}#{key}"
    if errors:
        return _row(task, ref, error=errors[0])
    meta: dict[str, Any] = {}
    raw = b""
    if "json" in members:
        raw = members["json"][1]
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return _row(task, ref, error=(Reason.INVALID_UTF8, f"{key}.json: {e}"), raw=raw)
        meta, error = _loads(text)
        if error is None:
            error = payload_problem(meta, task.max_json_depth, raw)
        if error is not None:
            return _row(task, ref, error=(error[0], f"{key}.json: {error[1]}"), raw=raw)
        if not isinstance(meta, dict):
            return _row(task, ref, error=(Reason.NOT_AN_OBJECT, f"{key}.json is not an object"), raw=raw)
    inline, images, videos = {}, [], []
    for ext, (name, data) in sorted(members.items(), key=lambda kv: member_order(kv[0])):
        kind = ext.rsplit(".", 1)[-1]
        if kind in IMAGE_EXTS or kind in VIDEO_EXTS:
            uri = f"{task.relpath}#{name}"
            inline[uri] = data
            (images if kind in IMAGE_EXTS else videos).append(uri)
    payload = dict(meta)
    has_row = any(k in payload for k in ("messages", "conversations", "question"))
    if not has_row:
        # img2dataset / video2dataset: the caption is KEY.txt, or "caption" in KEY.json
        for ext in TEXT_EXTS:
            if ext in members:
                try:
                    payload["caption"] = members[ext][1].decode("utf-8-sig")
                except UnicodeDecodeError as e:
                    return _row(task, ref, error=(Reason.INVALID_UTF8, f"{key}.{ext}: {e}"),
                                raw=members[ext][1])
                raw += members[ext][1]
                break
        if "caption" not in payload and isinstance(meta.get("text"), str) and (images or videos):
            payload["caption"] = meta["text"]
        if "caption" in payload:
            payload.pop("text", None)
    for k in ("image", "images", "video", "videos"):
        if k in payload and not has_row:
            payload.pop(k)  # metadata fields such as "video" urls; the members are the media
    if not any(k in payload for k in ("image", "images", "video", "videos")):
        if len(images) == 1:
            payload["image"] = images[0]
        elif images:
            payload["images"] = images
        if len(videos) == 1:
            payload["video"] = videos[0]
        elif videos:
            payload["videos"] = videos
    payload.setdefault("id", payload.get("key", key))
    payload.pop("key", None)
    return _row(task, ref, payload=payload, raw=raw,
                raw_size=len(raw) + sum(len(d) for _, d in members.values()), inline=inline)

