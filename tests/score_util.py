"""Rows for the scoring and recaption tests, built directly as Samples.

Video items follow the media stage's contract (media/frames.py): the sampled frames as JPEG
members, one per `frame_timestamps` entry; the decoder that produces them is another issue.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from schemas.sample import ContentPart, MediaItem, Message, Provenance, Sample, sample_id
from tests.media_util import image_bytes


def scene(seed: int, width: int = 160, height: int = 120, shapes: int = 2):
    """(RGB array, correct caption, wrong caption) from the corpus's own generator."""
    from synthetic import language as lang
    from synthetic.scenes import draw, random_scene

    rng = np.random.default_rng([seed, 99])
    s = random_scene(rng, width, height, shapes)
    return np.asarray(draw(s).convert("RGB")), lang.caption(s), lang.wrong_caption(s, rng)


def _sample(ref: str, source: str, task: str, messages, media, blobs) -> Sample:
    sid = sample_id(source, ref)
    s = Sample(id=sid, source=source, source_ref=ref, task=task, messages=messages, media=media,
               provenance=Provenance(pipeline_version="test", config_hash="test"))
    for item in s.media:   # member names follow KEY.INDEX[.FRAME].EXT
        item.members = [m.replace("KEY", sid) for m in item.members]
    s.blobs = {k.replace("KEY", sid): v for k, v in blobs.items()}
    return s


def image_row(ref: str, caption: str, rgb: np.ndarray, source: str = "src", task: str = "caption") -> Sample:
    return _sample(ref, source, task,
                   [Message("user", [ContentPart("image", media_index=0)]),
                    Message("assistant", [ContentPart("text", text=caption)])],
                   [MediaItem("image", f"mem://{ref}.png", members=["KEY.0.png"])], {"KEY.0.png": image_bytes(rgb)})


def video_row(ref: str, caption: str, frames: list[np.ndarray], timestamps: list[float],
              asr: Optional[str] = None, source: str = "src", question: Optional[str] = None) -> Sample:
    names = [f"KEY.0.{k}.jpg" for k in range(len(frames))]
    user = [ContentPart("video", media_index=0)] + ([ContentPart("text", text=question)] if question else [])
    return _sample(ref, source, "video",
                   [Message("user", user), Message("assistant", [ContentPart("text", text=caption)])],
                   [MediaItem("video", f"mem://{ref}.mp4", members=names, frame_timestamps=list(timestamps),
                              duration_s=timestamps[-1] + (timestamps[1] - timestamps[0] if len(timestamps) > 1 else 1),
                              asr=asr)],
                   {n: image_bytes(f, "JPEG", quality=95) for n, f in zip(names, frames)})


def grounding_row(ref: str, rgb: np.ndarray, user_text: str, answer: str, source: str = "src") -> Sample:
    return _sample(ref, source, "grounding",
                   [Message("user", [ContentPart("image", media_index=0), ContentPart("text", text=user_text)]),
                    Message("assistant", [ContentPart("text", text=answer)])],
                   [MediaItem("image", f"mem://{ref}.png", members=["KEY.0.png"])], {"KEY.0.png": image_bytes(rgb)})


def interleaved_row(ref: str, parts: list, images: list[np.ndarray], answer: str = "ok",
                    source: str = "src") -> Sample:
    """parts: strings (text) and ints (image index) in reading order, all in one user turn."""
    content = [ContentPart("text", text=p) if isinstance(p, str) else ContentPart("image", media_index=p)
               for p in parts]
    return _sample(ref, source, "interleaved",
                   [Message("user", content), Message("assistant", [ContentPart("text", text=answer)])],
                   [MediaItem("image", f"mem://{ref}.{i}.png", members=[f"KEY.{i}.png"]) for i in range(len(images))],
                   {f"KEY.{i}.png": image_bytes(im) for i, im in enumerate(images)})


# --- running stages in tests ------------------------------------------------------------------
def run_stages(stages, samples):
    """(kept, rejected) after running [(label, stage), ...] over samples on the DirectRunner."""
    from pipelines.curate import RunStages
    from tests.beam_util import run_collect, stage_outputs

    out = run_collect(samples, stage_outputs(RunStages(stages)))
    return out["kept"], out["rejected"]
