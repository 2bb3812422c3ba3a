"""Derived rows, Beam-free: copying a curated row under a derived id, and the cold-start video
builders that emit every video QA row at each of `media.sampling.fixed_frame_counts` (Keye-VL
uses each cold-start video at 16 and 32 frames: `<id>@16f`, `<id>@32f`).

After curation with `media.output.keep: frames` a row holds the frames the curation recipe
sampled, not the video: each variant fetches the original bytes again from the item's `uri`
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
from mixture.base import BuildResult, derived_id
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import ContentPart, Message, Sample

MODE_SUFFIX = {"think": "/think", "no_think": "/no_think", "agentic_think": "/agentic_think", "auto_think": ""}


# --- rows of a QA shape ------------------------------------------------------------------------------
def answer_message(sample: Sample) -> Optional[Message]:
    """The final assistant turn when it holds a text answer after a user turn with text, else None."""
    if len(sample.messages) < 2 or sample.messages[-1].role != "assistant":
        return None
    last = sample.messages[-1]
    if not any(p.type == "text" and p.text and p.text.strip() for p in last.content):
        return None
    users = [m for m in sample.messages if m.role == "user"]
    if not users or not any(p.type == "text" and p.text and p.text.strip() for p in users[-1].content):
        return None      # a caption pair: no question
    return last


def with_mode_suffix(messages: list[Message], mode: str) -> None:
    """Append the mode's suffix to the last user turn's last text part (Keye: `...?/think`)."""
    suffix = MODE_SUFFIX[mode]
    if not suffix:
        return
    user = next(m for m in reversed(messages) if m.role == "user")
    texts = [p for p in user.content if p.type == "text"]
    if texts:
        texts[-1].text = (texts[-1].text or "").rstrip() + suffix
    else:
        user.content.append(ContentPart(type="text", text=suffix))


def derive(sample: Sample, tag: str, mode: str) -> Sample:
    """A copy of a curated row under `<id>@<tag>`: task cold_start, the mode set and its suffix on
    the last user turn; media members renamed to the new key (the WebDataset key is the id)."""
    new_id = derived_id(sample.id, tag)
    row = copy.deepcopy(dataclasses.replace(sample, blobs={}, embeddings={}))
    row.id, row.task, row.mode = new_id, "cold_start", mode
    rename = {name: new_id + name[len(sample.id):] for name in sample.blobs if name.startswith(sample.id + ".")}
    row.blobs = {rename.get(k, k): v for k, v in sample.blobs.items()}
    row.embeddings = dict(sample.embeddings)
    for item in row.media:
        item.members = [rename.get(m, m) for m in item.members]
        if item.source_member:
            item.source_member = rename.get(item.source_member, item.source_member)
    with_mode_suffix(row.messages, mode)
    return row


# --- fetching the original bytes again ---------------------------------------------------------------------
def refetch(uri: str, max_bytes: int) -> Union[bytes, tuple[Reason, str]]:
    """The bytes at uri, including a member of a tar archive (`path.tar#member`)."""
    if "#" not in uri:
        return read_media(uri, max_bytes)
    path, member = uri.split("#", 1)
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
    """The recipe with `media.sampling.mode: fixed` (the frame count is given per variant)."""
    sampling = dataclasses.replace(cfg.media.sampling, mode="fixed")
    return dataclasses.replace(cfg, media=dataclasses.replace(cfg.media, sampling=sampling))


class VideoBuilder:
    """Video QA rows -> one row per fixed frame count. `video_think` takes rows whose answer carries
    a reasoning trace (rendered `<think>..</think>`, the answer wrapped in `<answer>`), `video_no_think`
    rows without one (the plain answer)."""

    def __init__(self, cfg: Config, category: str) -> None:
        if category not in ("video_think", "video_no_think"):
            raise ValueError(f"not a video category: {category}")
        self.category = category
        self.mode = "think" if category == "video_think" else "no_think"
        self.counts = list(cfg.media.sampling.fixed_frame_counts)
        self.max_bytes = cfg.media.max_bytes
        self.max_payload_bytes = cfg.ingest.max_payload_bytes
        fixed = fixed_sampling(cfg)
        self.filters = {n: MediaFilter(fixed, fixed_frames=n) for n in self.counts}

    def setup(self) -> None:
        for f in self.filters.values():
            f.setup()

    def wants(self, sample: Sample) -> bool:
        answer = answer_message(sample)
        if answer is None or not any(m.kind == "video" for m in sample.media):
            return False
        if sample.mode not in (None, self.mode):
            return False
        return bool(answer.reasoning) == (self.mode == "think")

    def __call__(self, sample: Sample) -> BuildResult:
        originals = []
        for i, item in enumerate(sample.media):
            data = refetch(item.uri, self.max_bytes)
            if isinstance(data, tuple):
                return self._reject(sample, Stage.MEDIA, data[0], f"media[{i}] {data[1]}")
            originals.append(data)
        out = []
        for n in self.counts:
            row = derive(sample, f"{n}f", self.mode)
            row.blobs = {}
            for i, item in enumerate(row.media):
                name = member_name(row.id, i, item)
                row.blobs[name] = originals[i]
                item.members, item.source_member = [name], None
            if self.mode == "think":
                _wrap_answer(row.messages[-1])
            made = self.filters[n](row)
            if isinstance(made, Rejected):
                made.id = sample.id          # the input row is what fails: its variants share the bytes
                return made
            out.append(made)
        return out

    def _reject(self, sample: Sample, stage: Stage, reason: Reason, detail: str) -> Rejected:
        return reject_sample(sample, stage, reason, detail, max_payload_bytes=self.max_payload_bytes)


def _wrap_answer(message: Message) -> None:
    """Thinking format: the answer text inside `<answer>...</answer>` (the trace is `reasoning`)."""
    texts = [p for p in message.content if p.type == "text" and p.text]
    if texts and not texts[0].text.lstrip().startswith("<answer>"):
        texts[0].text = "<answer>" + texts[0].text.strip()
        texts[-1].text = texts[-1].text.rstrip() + "</answer>"
