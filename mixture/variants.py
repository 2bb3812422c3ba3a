"""Video variants, Beam-free: every built video row (mixture/video.py) at each of
`media.sampling.fixed_frame_counts` (Keye-VL uses each cold-start video at 16 and 32 frames:
`<id>@16f`, `<id>@32f`).

After curation with `media.output.keep: frames` a row holds the frames the curation recipe
sampled, not the video (with `original` or `both` its bytes are still there and are used): each
variant fetches the original bytes again from where the item's `uri` was resolved (`location`)
(a file, any Beam filesystem, or a member of a tar: `path.tar#member`) and runs the media
stage's own step (decode in an isolated worker, `fixed` sampling at N frames, smart_resize,
stats, JPEG members), so a variant's visual tokens are exact for its frame count. The variants
are built after dedupe (the mixture runs after curation), so two copies of one video never
meet as duplicates. A variant whose media fails is no variant: the row is rejected with the
media stage's reason.
"""
from __future__ import annotations

import copy
import dataclasses
import tarfile
from typing import Optional, Union

from filters.base import reject_sample
from filters.media import MediaFilter
from media.fetch import member_name, read_media
from mixture.base import derived_id
from schemas.config import QUALITY_THRESHOLDS, Config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample


# --- fetching the original bytes again ---------------------------------------------------------------------
def refetch(location: str, max_bytes: int, shown: Optional[str] = None) -> Union[bytes, tuple[Reason, str]]:
    """The bytes at an item's location (`MediaItem.location`: where validate resolved its uri),
    including a member of a tar archive (`path.tar#member`); details name it by `shown` (its uri)."""
    uri = shown or location
    if "#" not in location:
        return read_media(location, max_bytes, shown=uri)
    path, member = location.split("#", 1)
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f, \
                tarfile.open(fileobj=f, mode="r|*") as tar:
            for info in tar:
                if info.name == member and info.isfile():
                    if info.size > max_bytes:
                        return Reason.MEDIA_TOO_LARGE, f"{uri}: {info.size} bytes > media.max_bytes={max_bytes}"
                    data = tar.extractfile(info).read()
                    return data if data else (Reason.EMPTY_MEDIA, f"{uri}: 0 bytes")
    except Exception as e:  # noqa: BLE001 - a cut or unreadable archive costs this row only
        return Reason.MISSING_MEDIA, f"{uri}: {type(e).__name__}: {e}"[:500]
    return Reason.MISSING_MEDIA, f"{uri}: no such member"


def fixed_sampling(cfg: Config) -> Config:
    """The recipe with `media.sampling.mode: fixed` (the frame count is given per variant) and no
    quality verdict: curation judged the video already, and stats such as motion (the difference
    between consecutive sampled frames) change with the sampling density, so a denser variant of a
    kept video must not fail them. Decoding failures still reject."""
    sampling = dataclasses.replace(cfg.media.sampling, mode="fixed")
    off = {name: (1.0 if name == "max_brightness" else 0) for name in QUALITY_THRESHOLDS}   # 0: a bound is off
    quality = dataclasses.replace(cfg.media.quality, rules=[], **off)
    return dataclasses.replace(cfg, media=dataclasses.replace(cfg.media, sampling=sampling, quality=quality))


class VideoVariants:
    """A built video row -> one row per fixed frame count (`<id>@16f`, `<id>@32f`), or the row
    rejected with the media stage's reason when its source cannot be fetched or decoded again."""

    def __init__(self, cfg: Config) -> None:
        self.counts = list(cfg.media.sampling.fixed_frame_counts)
        self.max_bytes = cfg.media.max_bytes
        fixed = fixed_sampling(cfg)
        self.filters = {n: MediaFilter(fixed, fixed_frames=n) for n in self.counts}

    def setup(self) -> None:
        for f in self.filters.values():
            f.setup()

    @staticmethod
    def wants(row: Sample) -> bool:
        return any(m.kind == "video" for m in row.media)

    def __call__(self, row: Sample) -> Union[list[Sample], Rejected]:
        originals = []
        for i, item in enumerate(row.media):
            if item.source_member and item.source_member in row.blobs:   # keep: original | both
                originals.append(row.blobs[item.source_member])
                continue
            data = refetch(item.location or item.uri, self.max_bytes, shown=item.uri)
            if isinstance(data, tuple):
                return reject_sample(row, Stage.MEDIA, data[0], f"media[{i}] {data[1]}")
            originals.append(data)
        out = []
        for n in self.counts:
            variant = copy.deepcopy(dataclasses.replace(row, blobs={}, embeddings={}))
            variant.id = derived_id(row.id, f"{n}f")
            variant.embeddings = dict(row.embeddings)
            for i, item in enumerate(variant.media):
                name = member_name(variant.id, i, item)
                variant.blobs[name] = originals[i]
                item.members, item.source_member = [name], None
            made = self.filters[n](variant)
            if isinstance(made, Rejected):
                made.id = row.id              # the row's source fails: none of its variants can be made
                return made
            out.append(made)
        return out
