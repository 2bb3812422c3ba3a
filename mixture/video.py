"""Video rows in the thinking and non-thinking formats (keye.md 4.6); `pipelines/mixture.py` then
materialises each at 16 and 32 frames (`media.sampling.fixed_frame_counts`).

    video QA row ─▶ video_no_think: the answer, plain (`<id>@vnothink`)
                 ─▶ video_think: its trace, or N generated paths over up to video.max_frames frames,
                    verified and selected as for images (mixture/thinking.py) (`<id>@vthink`)
"""
from __future__ import annotations

from mixture.common import QA, Builder, media_kinds
from mixture.thinking import ThinkingBuilder
from schemas.sample import ContentPart, Sample


def _video_row(sample: Sample) -> bool:
    return "video" in media_kinds(sample)


class VideoThinkBuilder(ThinkingBuilder):
    category = "video_think"

    def section(self):
        return self.b.video

    def material(self, sample: Sample) -> bool:
        return _video_row(sample)

    def prompt_values(self, sample: Sample, images: list[bytes]) -> dict:
        return {"num_frames": len(images)}


class VideoNoThinkBuilder(Builder):
    category = "video_no_think"

    def section(self):
        return self.b.video

    def material(self, sample: Sample) -> bool:
        return _video_row(sample)

    def build(self, sample: Sample, qa: QA):
        return self.finish(sample, self.derive(sample, qa, [ContentPart("text", text=qa.answer)]))
