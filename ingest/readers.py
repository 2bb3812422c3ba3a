"""Readers: one input file to a stream of `RawRow`s, never raising on bad data.

Each reader yields exactly one `RawRow` per input row it can delimit (a JSONL line, a
JSON-array element, a Parquet row, a tar sample); a row that cannot be parsed carries an
`error` (reason, detail) instead of a payload, so the pipeline rejects it with a reason
rather than losing it. Where the rest of a file cannot be delimited any more (a JSON array
broken mid-way, a truncated tar), the remainder becomes one rejected row that says so.

Files are opened through Beam's `FileSystems`, so local paths, gs://, s3:// and the other
registered schemes all work; .gz, .bz2 and .xz files are decompressed by extension.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Optional

from schemas.reasons import Reason
from schemas.sample import member_order

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "ts")
TEXT_EXTS = ("txt", "caption", "cap")
FORMAT_BY_SUFFIX = (
    (".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".jsonl.bz2", "jsonl"), (".jsonl.xz", "jsonl"),
    (".ndjson", "jsonl"), (".json", "json"), (".json.gz", "json"),
    (".parquet", "parquet"), (".tar", "wds"), (".tar.gz", "wds"),
)
_CHUNK = 1 << 20


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
    last = None
    try:
        for row in reader(task):
            last = row.source_ref
            yield row
    except _Unreadable as e:
        yield _row(task, task.relpath, error=(Reason.UNREADABLE_FILE, str(e)))
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # gzip.BadGzipFile is an OSError
        # The bytes stop making sense mid-file (a corrupt gzip block, a dropped connection):
        # what was read stands, and the rest of the file is one rejected row.
        where = f"after {last}" if last else "before the first row"
        yield _row(task, f"{task.relpath}:rest", error=(Reason.UNREADABLE_FILE,
                   f"read failed {where}: {type(e).__name__}: {e}; the rest of the file is not read"))
    except Exception as e:  # noqa: BLE001 - a reader bug on odd bytes: report it, keep the job alive
        where = f"after {last}" if last else "before the first row"
        yield _row(task, f"{task.relpath}:rest", error=(Reason.STEP_ERROR,
                   f"reader raised {where}: {type(e).__name__}: {e}; the rest of the file is not read"))


class _Unreadable(Exception):
    pass


def _open(path: str) -> BinaryIO:
    """Open through Beam's FileSystems; decompress with Python's strict codecs (Beam's own
    gzip reader treats a truncated stream as a clean end of file, which would lose rows)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # noqa: BLE001 - any filesystem error means the same thing here
        raise _Unreadable(f"{type(e).__name__}: {e}") from None
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if lower.endswith(".bz2"):
        return bz2.BZ2File(f, mode="rb")
    if lower.endswith(".xz"):
        return lzma.LZMAFile(f, mode="rb")
    return f


def _row(task: FileTask, ref: str, *, payload: Any = None, error=None, raw: Optional[bytes] = None,
         raw_size: Optional[int] = None, inline: Optional[dict] = None) -> RawRow:
    size = raw_size if raw_size is not None else (len(raw) if raw is not None else 0)
    keep = raw if raw is not None and len(raw) <= task.max_payload_bytes else None
    return RawRow(source=task.source, source_ref=ref, base_dir=task.base_dir, payload=payload,
                  error=error, raw=keep, raw_size=size, inline=inline or {})


# --- JSONL ------------------------------------------------------------------------------------
def read_jsonl(task: FileTask) -> Iterator[RawRow]:
    """One row per non-blank line; ref is `relpath:LINE` (1-based)."""
    with _open(task.path) as f:
        for line_no, line, size in _bounded_lines(f, task.max_row_bytes):
            ref = f"{task.relpath}:{line_no}"
            if line is None:
                yield _row(task, ref, error=(Reason.ROW_TOO_LARGE,
                                             f"line is {size} bytes, more than ingest.max_row_bytes="
                                             f"{task.max_row_bytes}"), raw_size=size)
                continue
            if not line.strip():
                continue  # blank lines (and the final newline) are layout, not rows
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield _row(task, ref, error=(Reason.INVALID_UTF8, f"byte {e.start}: {e.reason}"), raw=line)
                continue
            try:
                payload = json.loads(text)
            except ValueError as e:
                yield _row(task, ref, error=(Reason.MALFORMED_JSON, str(e)), raw=line)
                continue
            yield _row(task, ref, payload=payload, raw=line)


def _bounded_lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, Optional[bytes], int]]:
    """(line number, line or None if longer than max_bytes, size in bytes), reading fixed-size
    blocks, so an oversized line is skipped without ever being held in memory."""
    line_no, buf, dropped = 0, bytearray(), -1   # dropped >= 0: inside an oversized line
    while True:
        block = f.read(_CHUNK)
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
def read_json_array(task: FileTask) -> Iterator[RawRow]:
    """Stream the elements of a top-level JSON array (a lone object is one row); ref `relpath:INDEX`."""
    decoder = json.JSONDecoder()
    with _open(task.path) as f:
        stream = _Utf8Stream(f)
        try:
            first = stream.peek_non_ws()
        except UnicodeDecodeError as e:
            yield _row(task, f"{task.relpath}:0", error=(Reason.INVALID_UTF8, str(e)))
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
            try:
                payload = json.loads(data)
            except ValueError as e:
                yield _row(task, f"{task.relpath}:0", error=(Reason.MALFORMED_JSON, str(e)), raw=data.encode())
                return
            yield _row(task, f"{task.relpath}:0", payload=payload, raw=data.encode())
            return
        stream.advance(1)
        index = 0
        expect_value = True
        while True:
            try:
                ch = stream.peek_non_ws()
            except UnicodeDecodeError as e:
                yield _row(task, f"{task.relpath}:{index}", error=(Reason.INVALID_UTF8,
                           f"{e}; elements from {index} on are not read"))
                return
            if ch is None:
                yield _row(task, f"{task.relpath}:{index}", error=(Reason.MALFORMED_JSON,
                           "file ends inside the array (no closing ']')"))
                return
            if ch == "]" and (index == 0 or not expect_value):
                return
            if not expect_value:
                if ch != ",":
                    yield _row(task, f"{task.relpath}:{index}", error=(Reason.MALFORMED_JSON,
                               f"expected ',' or ']' after element {index - 1}, found {ch!r}; "
                               f"elements from {index} on are not read"))
                    return
                stream.advance(1)
                expect_value = True
                continue
            value, raw, err = stream.decode_value(decoder, task.max_row_bytes)
            if err is not None:
                reason = Reason.ROW_TOO_LARGE if err == "too_large" else Reason.MALFORMED_JSON
                detail = (f"element {index} is larger than ingest.max_row_bytes={task.max_row_bytes}"
                          if err == "too_large" else err)
                yield _row(task, f"{task.relpath}:{index}", error=(reason, f"{detail}; elements from "
                           f"{index} on are not read"))
                return
            yield _row(task, f"{task.relpath}:{index}", payload=value, raw=raw.encode())
            index += 1
            expect_value = False


class _Utf8Stream:
    """A growing text buffer over a binary file, for incremental JSON decoding."""

    def __init__(self, f: BinaryIO) -> None:
        import codecs

        self._f = f
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")
        self._buf = ""
        self._pos = 0
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._f.read(_CHUNK)
        if not chunk:
            self._eof = True
            self._buf += self._dec.decode(b"", final=True)
            return False
        if self._pos > _CHUNK:
            self._buf, self._pos = self._buf[self._pos:], 0
        self._buf += self._dec.decode(chunk)
        return True

    def peek_non_ws(self) -> Optional[str]:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
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
        """(value, raw text, None) or (None, None, error) where error is 'too_large' or a message."""
        while True:
            try:
                value, end = decoder.raw_decode(self._buf, self._pos)
            except ValueError as e:
                if len(self._buf) - self._pos > limit:
                    return None, None, "too_large"
                try:
                    more = self._fill()
                except UnicodeDecodeError as ue:
                    return None, None, f"invalid UTF-8: {ue}"
                if more:
                    continue
                return None, None, str(e)
            # A value that ends exactly at the buffer's end may be a number cut mid-way.
            if end == len(self._buf) and not self._eof:
                if self._fill():
                    continue
            if end - self._pos > limit:
                return None, None, "too_large"
            raw = self._buf[self._pos:end]
            self._pos = end
            return value, raw, None


# --- Parquet ---------------------------------------------------------------------------------
def read_parquet(task: FileTask) -> Iterator[RawRow]:
    """One row per Parquet row; ref `relpath:ROW`. Embedded media bytes (HF Image/Video
    features: {"bytes": ..., "path": ...}) become inline media."""
    import pyarrow.parquet as pq

    with _open(task.path) as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # noqa: BLE001 - a broken footer: the file cannot be delimited
            yield _row(task, task.relpath, error=(Reason.MALFORMED_PARQUET, f"{type(e).__name__}: {e}"))
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
                inline = _lift_embedded_media(rec, f"{task.path}#{row}")
                raw = json.dumps(rec, default=str, ensure_ascii=False).encode("utf-8")
                yield _row(task, ref, payload=rec, raw=raw, inline=inline)
                row += 1


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
def read_wds(task: FileTask) -> Iterator[RawRow]:
    """One row per sample (members sharing a key), as img2dataset / video2dataset write them:
    KEY.jpg|png|mp4..., KEY.txt (caption), KEY.json (metadata or a full row). Ref `relpath#KEY`."""
    with _open(task.path) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r|*")
        except (tarfile.TarError, EOFError, OSError) as e:
            yield _row(task, task.relpath, error=(Reason.TRUNCATED_ARCHIVE, f"not a readable tar: {e}"))
            return
        key, members, errors = None, {}, []
        try:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name
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
            yield _row(task, f"{task.relpath}#{key or '?'}", error=(Reason.TRUNCATED_ARCHIVE,
                       f"archive breaks off in or after sample {key!r}: {e}; nothing after it is read"))
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
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return _row(task, ref, error=(Reason.MALFORMED_JSON, f"{key}.json: {e}"), raw=raw)
        if not isinstance(meta, dict):
            return _row(task, ref, error=(Reason.NOT_AN_OBJECT, f"{key}.json is not an object"), raw=raw)
    inline, images, videos = {}, [], []
    for ext, (name, data) in sorted(members.items(), key=lambda kv: member_order(kv[0])):
        kind = ext.rsplit(".", 1)[-1]
        if kind in IMAGE_EXTS or kind in VIDEO_EXTS:
            uri = f"{task.path}#{name}"
            inline[uri] = data
            (images if kind in IMAGE_EXTS else videos).append(uri)
    payload = dict(meta)
    has_row = any(k in payload for k in ("messages", "conversations", "question"))
    if not has_row:
        # img2dataset / video2dataset: the caption is KEY.txt, or "caption" in KEY.json
        for ext in TEXT_EXTS:
            if ext in members:
                try:
                    payload["caption"] = members[ext][1].decode("utf-8")
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

