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

Shared machinery (opening, byte counting, row checks) is in ingest/files.py; the LLaVA JSON
list reader in ingest/json_array.py. Every parsed row is checked before it leaves the reader
(`payload_problem`): nesting deeper
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

import json
import lzma
import posixpath
import tarfile
import zlib
from typing import Any, BinaryIO, Iterator, Optional

from ingest import files
from ingest.files import (BOM, COMPRESSED_STEP, FileTask, RawRow, ReadState, Unreadable, loads_row,
                          make_row, open_stored, parsed_row, payload_problem, read_step)
from ingest.json_array import read_json_array
from schemas.reasons import Reason
from schemas.sample import member_order
from schemas.strings import display_text

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "ts")
TEXT_EXTS = ("txt", "caption", "cap")
FORMAT_BY_SUFFIX = (
    (".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".jsonl.bz2", "jsonl"), (".jsonl.xz", "jsonl"),
    (".ndjson", "jsonl"), (".json", "json"), (".json.gz", "json"),
    (".parquet", "parquet"), (".tar", "wds"), (".tar.gz", "wds"),
)
__all__ = ["BOM", "COMPRESSED_STEP", "FileTask", "RawRow", "detect_format", "folder_source",
           "payload_problem", "read_file", "read_json_array", "read_jsonl", "read_parquet", "read_wds"]


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
    state = ReadState(task)
    last = None
    try:
        for row in reader(task, state):
            last = row.source_ref
            yield row
    except Unreadable as e:
        unread = max(1, state.unread())
        yield make_row(task, task.relpath, error=(Reason.UNREADABLE_FILE, state.clean(
                   f"{e}; the file is not read ({unread} bytes)")), unread=unread)
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # gzip.BadGzipFile is an OSError
        # The bytes stop making sense mid-file (a corrupt gzip block, a dropped connection):
        # what was read stands, and the rest of the file is one rejected row. A compressed
        # stream cut short (EOFError) was read to its end: nothing is unread, as for a cut tar.
        where = f"after {last}" if last else "before the first row"
        unread = state.unread() if isinstance(e, EOFError) else max(1, state.unread())
        yield make_row(task, f"{task.relpath}:rest", error=(Reason.UNREADABLE_FILE, state.clean(
                   f"read failed {where}: {type(e).__name__}: {e}; the rest of the file "
                   f"({unread} bytes) is not read")), unread=unread)
    except Exception as e:  # noqa: BLE001 - a reader bug on odd bytes: report it, keep the job alive
        where = f"after {last}" if last else "before the first row"
        unread = max(1, state.unread())
        yield make_row(task, f"{task.relpath}:rest", error=(Reason.STEP_ERROR, state.clean(
                   f"reader raised {where}: {type(e).__name__}: {e}; the rest of the file "
                   f"({unread} bytes) is not read")), unread=unread)


# --- JSONL ------------------------------------------------------------------------------------
def read_jsonl(task: FileTask, state: Optional[ReadState] = None) -> Iterator[RawRow]:
    """One row per non-blank line; ref is `relpath:LINE` (1-based)."""
    with open_stored(task.path, state) as f:
        for line_no, line, size in _bounded_lines(f, task.max_row_bytes):
            ref = f"{task.relpath}:{line_no}"
            if line is None:
                yield make_row(task, ref, error=(Reason.ROW_TOO_LARGE,
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
                yield make_row(task, ref, error=(Reason.INVALID_UTF8, f"byte {e.start}: {e.reason}"), raw=line)
                continue
            payload, error = loads_row(text)
            if error is not None:
                yield make_row(task, ref, error=error, raw=line)
                continue
            yield parsed_row(task, ref, payload, line)


def _bounded_lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, Optional[bytes], int]]:
    """(line number, line or None if longer than max_bytes, size in bytes), reading fixed-size
    blocks, so an oversized line is skipped without ever being held in memory."""
    line_no, buf, dropped = 0, bytearray(), -1   # dropped >= 0: inside an oversized line
    read = read_step(f)
    while True:
        block = read(files.CHUNK)   # a module attribute: tests shrink it
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


# --- Parquet ---------------------------------------------------------------------------------
def read_parquet(task: FileTask, state: Optional[ReadState] = None) -> Iterator[RawRow]:
    """One row per Parquet row; ref `relpath:ROW`. Embedded media bytes (HF Image/Video
    features: {"bytes": ..., "path": ...}) become inline media."""
    import pyarrow.parquet as pq

    state = state or ReadState(task)
    with open_stored(task.path) as f:     # Parquet seeks: the stream is not counted, nothing is read past a failure
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # noqa: BLE001 - a broken footer: the file cannot be delimited
            unread = state.unread()
            yield make_row(task, task.relpath, error=(Reason.MALFORMED_PARQUET, state.clean(
                f"{type(e).__name__}: {e}; its rows cannot be delimited ({unread} bytes not read)")), unread=unread)
            return
        row = 0
        for rg in range(pf.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            try:
                records = pf.read_row_group(rg).to_pylist()
            except Exception as e:  # noqa: BLE001 - the group is lost; every row in it is reported
                for i in range(n):
                    yield make_row(task, f"{task.relpath}:{row + i}",
                               error=(Reason.MALFORMED_PARQUET, f"row group {rg}: {type(e).__name__}: {e}"))
                row += n
                continue
            for rec in records:
                ref = f"{task.relpath}:{row}"
                row += 1
                problem = payload_problem(rec, task.max_json_depth)
                if problem is not None:   # checked before json.dumps, which would recurse as deep
                    yield make_row(task, ref, error=problem)
                    continue
                inline = _lift_embedded_media(rec, f"{task.relpath}#{row - 1}")
                raw = json.dumps(rec, default=str, ensure_ascii=False).encode("utf-8", "backslashreplace")
                yield make_row(task, ref, payload=rec, raw=raw, inline=inline)


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
def read_wds(task: FileTask, state: Optional[ReadState] = None) -> Iterator[RawRow]:
    """One row per sample (members sharing a key), as img2dataset / video2dataset write them:
    KEY.jpg|png|mp4..., KEY.txt (caption), KEY.json (metadata or a full row). Ref `relpath#KEY`.
    Member names that are not valid UTF-8 are shown escaped (schemas/strings.py)."""
    state = state or ReadState(task)
    with open_stored(task.path, state) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r|*")
        except (tarfile.TarError, EOFError, OSError) as e:
            state.consumed = 0    # nothing was delimited
            unread = state.unread()
            yield make_row(task, task.relpath, error=(Reason.TRUNCATED_ARCHIVE, state.clean(
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
            yield make_row(task, f"{task.relpath}#{key or '?'}", error=(Reason.TRUNCATED_ARCHIVE, state.clean(
                       f"archive breaks off in or after sample {key!r}: {e}; nothing after it is read "
                       f"({unread} bytes)")), unread=unread)
            return
        if key is not None:
            yield _wds_row(task, key, members, errors)


def _wds_row(task: FileTask, key: str, members: dict, errors: list) -> RawRow:
    ref = f"{task.relpath}#{key}"
    if errors:
        return make_row(task, ref, error=errors[0])
    meta: dict[str, Any] = {}
    raw = b""
    if "json" in members:
        raw = members["json"][1]
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return make_row(task, ref, error=(Reason.INVALID_UTF8, f"{key}.json: {e}"), raw=raw)
        meta, error = loads_row(text)
        if error is None:
            error = payload_problem(meta, task.max_json_depth, raw)
        if error is not None:
            return make_row(task, ref, error=(error[0], f"{key}.json: {error[1]}"), raw=raw)
        if not isinstance(meta, dict):
            return make_row(task, ref, error=(Reason.NOT_AN_OBJECT, f"{key}.json is not an object"), raw=raw)
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
                    return make_row(task, ref, error=(Reason.INVALID_UTF8, f"{key}.{ext}: {e}"),
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
    return make_row(task, ref, payload=payload, raw=raw,
                raw_size=len(raw) + sum(len(d) for _, d in members.values()), inline=inline)
