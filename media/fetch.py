"""Fetching media bytes: the first half of the media stage.

Each media item gets its bytes (from the row's archive, or read through Beam's
FileSystems with a size cap checked before reading), its SHA-256 and size, and a
WebDataset member name (`KEY.INDEX.EXT`) under which the bytes travel in `Sample.blobs`. Decoding, frame
sampling and media quality filters build on this.
"""
from __future__ import annotations

import hashlib
import posixpath
from typing import Union

from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import StepResult, reject_sample
from schemas.sample import MediaItem, Sample

DEFAULT_EXT = {"image": "jpg", "video": "mp4"}


def member_name(sample_id: str, index: int, item: MediaItem) -> str:
    """WebDataset member for an item's original bytes: KEY.INDEX.EXT (EXT from the URI)."""
    path = item.uri.split("#", 1)[-1]
    ext = posixpath.splitext(path)[1].lstrip(".").lower()
    if not ext or not ext.isalnum() or len(ext) > 5:
        ext = DEFAULT_EXT[item.kind]
    return f"{sample_id}.{index}.{ext}"


def read_media(uri: str, max_bytes: int) -> Union[bytes, tuple[Reason, str]]:
    """The bytes at uri, or (reason, detail): missing, empty, too large, unreadable."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        size = FileSystems.get_filesystem(uri).metadata(uri).size_in_bytes
    except Exception as e:  # noqa: BLE001 - Beam raises BeamIOError or the backend's own errors
        return Reason.MISSING_MEDIA, f"{uri}: {type(e).__name__}: {e}"[:500]
    if size == 0:
        return Reason.EMPTY_MEDIA, f"{uri}: 0 bytes"
    if size > max_bytes:
        return Reason.MEDIA_TOO_LARGE, f"{uri}: {size} bytes > media.max_bytes={max_bytes}"
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read(max_bytes + 1)
    except Exception as e:  # noqa: BLE001
        return Reason.MISSING_MEDIA, f"{uri}: cannot read: {type(e).__name__}: {e}"[:500]
    if len(data) > max_bytes:
        return Reason.MEDIA_TOO_LARGE, f"{uri}: more than media.max_bytes={max_bytes}"
    if not data:
        return Reason.EMPTY_MEDIA, f"{uri}: 0 bytes"
    return data


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
                data = read_media(item.uri, self.cfg.max_bytes)
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
