"""Fetching media bytes: the first half of the media stage, and the rule for which media may be read.

Each media item gets its bytes (from the row's archive, or read through Beam's
FileSystems with a size cap checked before reading), its SHA-256 and size, and a
WebDataset member name (`KEY.INDEX.EXT`) under which the bytes travel in `Sample.blobs`.
Decoding, frame sampling and media quality filters build on this.

Manifests are often third-party, so a media reference is data, not a command:

- `MediaRoots` (used by the validate step) allows a location only under an allowed prefix:
  the input's own folder tree, `ingest.media_root` and `ingest.media_roots` (local folders
  or remote prefixes such as `gs://bucket/media`). Local paths are compared after `..` and
  symlinks are resolved (`os.path.realpath`), so a link out of the root is outside it.
  `/proc`, `/sys` and `/dev` are never read, whatever the roots say.
- `read_media` opens a local file only after `stat` says it is a regular file, without
  following a final symlink and without blocking (a FIFO swapped in cannot hang the
  worker), then checks the opened descriptor again: devices, FIFOs, sockets and folders
  are `not_a_regular_file`, never opened for reading.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from typing import Optional, Union

from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import StepResult, reject_sample
from schemas.sample import MediaItem, Sample

DEFAULT_EXT = {"image": "jpg", "video": "mp4"}
NEVER_READ = ("/proc", "/sys", "/dev")


def member_name(sample_id: str, index: int, item: MediaItem) -> str:
    """WebDataset member for an item's original bytes: KEY.INDEX.EXT (EXT from the URI)."""
    path = item.uri.split("#", 1)[-1]
    ext = posixpath.splitext(path)[1].lstrip(".").lower()
    if not ext or not ext.isalnum() or len(ext) > 5:
        ext = DEFAULT_EXT[item.kind]
    return f"{sample_id}.{index}.{ext}"


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def never_read(path: str) -> bool:
    """A local path inside a pseudo filesystem (/proc, /sys, /dev)."""
    return any(_under(path, p) for p in NEVER_READ)


class MediaRoots:
    """The prefixes media may be read under; `resolve` says where a location really is, or why not."""

    def __init__(self, roots: list[str]) -> None:
        self.remote = sorted({r.rstrip("/") for r in roots if "://" in r and not r.startswith("file://")})
        local = [r[len("file://"):] if r.startswith("file://") else r for r in roots if "://" not in r
                 or r.startswith("file://")]
        self.local = sorted({os.path.realpath(os.path.abspath(r)) for r in local})

    def resolve(self, location: str) -> tuple[Optional[str], Optional[str]]:
        """(where to read, None) when allowed; (None, why not) otherwise. Local locations come
        back absolute with symlinks resolved."""
        if "://" in location:
            if any(_under(location, r) for r in self.remote):
                return location, None
            return None, "outside ingest.media_roots"
        real = os.path.realpath(os.path.abspath(location))
        if never_read(os.path.abspath(location)) or never_read(real):
            return None, "inside /proc, /sys or /dev, which are never read"
        if any(_under(real, r) for r in self.local):
            return real, None
        why = "a symlink leads outside" if real != os.path.abspath(location) else "outside"
        return None, f"{why} ingest.media_roots (the input's folder, media_root, media_roots)"


def read_media(location: str, max_bytes: int, shown: Optional[str] = None) -> Union[bytes, tuple[Reason, str]]:
    """The bytes at location, or (reason, detail): missing, empty, too large, not a regular
    file, unreadable. Details name the item by `shown` (its uri), never by its absolute location."""
    shown = shown or location
    if "://" not in location:
        return _read_local(location, max_bytes, shown)
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    def detail(text: str) -> str:
        return text.replace(location, shown)[:500]

    try:
        size = FileSystems.get_filesystem(location).metadata(location).size_in_bytes
    except Exception as e:  # noqa: BLE001 - Beam raises BeamIOError or the backend's own errors
        return Reason.MISSING_MEDIA, detail(f"{shown}: {type(e).__name__}: {e}")
    if size == 0:
        return Reason.EMPTY_MEDIA, f"{shown}: 0 bytes"
    if size > max_bytes:
        return Reason.MEDIA_TOO_LARGE, f"{shown}: {size} bytes > media.max_bytes={max_bytes}"
    try:
        with FileSystems.open(location, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read(max_bytes + 1)
    except Exception as e:  # noqa: BLE001
        return Reason.MISSING_MEDIA, detail(f"{shown}: cannot read: {type(e).__name__}: {e}")
    return _sized(data, max_bytes, shown)


def _sized(data: bytes, max_bytes: int, shown: str) -> Union[bytes, tuple[Reason, str]]:
    if len(data) > max_bytes:
        return Reason.MEDIA_TOO_LARGE, f"{shown}: more than media.max_bytes={max_bytes}"
    if not data:
        return Reason.EMPTY_MEDIA, f"{shown}: 0 bytes"
    return data


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISLNK, "a symlink"))


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _read_local(path: str, max_bytes: int, shown: str) -> Union[bytes, tuple[Reason, str]]:
    try:
        real = os.path.realpath(path)
        if never_read(os.path.abspath(path)) or never_read(real):
            return Reason.MEDIA_OUTSIDE_ROOT, f"{shown}: inside /proc, /sys or /dev, which are never read"
        st = os.stat(real, follow_symlinks=False)
    except (OSError, ValueError) as e:
        return Reason.MISSING_MEDIA, f"{shown}: {type(e).__name__}: {e.strerror if isinstance(e, OSError) else e}"
    if not stat.S_ISREG(st.st_mode):
        return Reason.NOT_A_REGULAR_FILE, f"{shown}: {_kind(st.st_mode)}, not a regular file; not opened"
    if st.st_size == 0:
        return Reason.EMPTY_MEDIA, f"{shown}: 0 bytes"
    if st.st_size > max_bytes:
        return Reason.MEDIA_TOO_LARGE, f"{shown}: {st.st_size} bytes > media.max_bytes={max_bytes}"
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as e:
        return Reason.MISSING_MEDIA, f"{shown}: cannot open: {type(e).__name__}: {e.strerror}"
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(f.fileno())
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return Reason.NOT_A_REGULAR_FILE, f"{shown}: replaced by {_kind(now.st_mode)} while opening"
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            return Reason.MISSING_MEDIA, f"{shown}: cannot read: {type(e).__name__}: {e.strerror}"
    return _sized(data, max_bytes, shown)


class MediaFetch:
    stage = Stage.MEDIA

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg.media

    def _reject(self, sample: Sample, reason: Reason, detail: str) -> StepResult:
        return reject_sample(sample, self.stage, reason, detail)

    def setup(self) -> None:
        pass

    def __call__(self, sample: Sample) -> StepResult:
        for i, item in enumerate(sample.media):
            if not item.members:
                data = read_media(item.location or item.uri, self.cfg.max_bytes, shown=item.uri)
                if isinstance(data, tuple):
                    return self._reject(sample, data[0], f"media[{i}] {data[1]}")
                name = member_name(sample.id, i, item)
                sample.blobs[name] = data
                item.members = [name]
            data = sample.blobs[item.members[0]]
            if not data:
                return self._reject(sample, Reason.EMPTY_MEDIA, f"media[{i}] {item.uri}: 0 bytes")
            if len(data) > self.cfg.max_bytes:
                return self._reject(sample, Reason.MEDIA_TOO_LARGE,
                                    f"media[{i}] {item.uri}: {len(data)} bytes > media.max_bytes")
            item.sha256 = hashlib.sha256(data).hexdigest()
            item.num_bytes = len(data)
        return sample
