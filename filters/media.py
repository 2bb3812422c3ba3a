"""The media stage as a step: fetch, decode, sample, resize, encode, measure, then decide.

Like the text filters it computes stats first and stores them whether the row passes or not
(`MediaItem.stats` per item, `scores.media_*` per row), so thresholds can be retuned from the
Parquet output (kept and rejected rows) without decoding again. `frame_stats` (media/stats.py)
measures in the decode worker, `item_verdict` judges one item against the thresholds of
`media.quality` for the row's source and task (`media.quality.rules`, first match wins); the
row is rejected with the first failing item's reason.

Per item, in a decode worker (media/process.py, isolated by media/worker.py): the original
bytes become, by `media.output.keep`,
  frames   - video: the sampled frames as JPEG members KEY.<item>.<frame:03d>.jpg, one per
             frame_timestamps entry; image: the resized image as KEY.<item>.000.jpg (.png when
             the source format is lossless, so text in screenshots stays sharp);
  original - the source bytes only, under KEY.<item>.<ext> (`source_member`);
  both     - the frames, plus the source bytes under `source_member`.
`MediaItem.members` lists the members holding the visual content (media/frames.py).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from filters.base import StepResult, reject_sample
from media.fetch import MediaFetch
from media.process import ItemResult, ItemTask
from schemas.config import Config, MediaQualityConfig
from schemas.reasons import Reason, Stage
from schemas.sample import MediaItem, Sample

FAULT_ENV = "KEYE_MEDIA_TEST_FAULTS"     # tests only: lets "KEYE-FAULT:<kind>" bytes misbehave in a worker
FAULT_PREFIX = b"KEYE-FAULT:"


def item_verdict(item: MediaItem, q: MediaQualityConfig, max_aspect_ratio: float) -> Optional[tuple[Reason, str]]:
    """The reason this measured item fails the thresholds q (media.quality for the row's source
    and task: `MediaQualityConfig.for_row`) or the aspect-ratio rule, or None."""
    st = item.stats
    if item.source_width and item.source_height:
        short = min(item.source_width, item.source_height)
        if short < q.min_side_px:
            return Reason.TOO_SMALL, f"{item.source_width}x{item.source_height}: short side {short} < {q.min_side_px}"
    ar = st.get("aspect_ratio")
    if ar is not None and ar > max_aspect_ratio:
        return Reason.ASPECT_RATIO, f"aspect ratio {ar:.1f} > {max_aspect_ratio:g}"
    video = item.kind == "video"
    if video and item.duration_s is not None and item.duration_s < q.min_duration_s:
        return Reason.TOO_SHORT, f"{item.duration_s:.3f} s < {q.min_duration_s:g} s"
    b = st.get("brightness")
    if b is not None and b < q.min_brightness:
        return Reason.TOO_DARK, f"brightness {b:.4f} < {q.min_brightness:g}"
    if b is not None and b > q.max_brightness:
        return Reason.TOO_BRIGHT, f"brightness {b:.4f} > {q.max_brightness:g}"
    m, peak = st.get("motion"), st.get("motion_peak")
    if video and m is not None and m < q.min_motion and (peak is None or peak < q.min_motion_peak):
        # static only when nothing moves anywhere: a still slide with a moving pointer is a screen recording
        return Reason.STATIC, (f"motion {m:.5f} < {q.min_motion:g}" +
                               (f", peak tile {peak:.4f} < {q.min_motion_peak:g}" if peak is not None else ""))
    s = st.get("sharpness")
    if s is not None and s < q.min_sharpness:
        return Reason.BLURRY, f"sharpness {s:.3f} < {q.min_sharpness:g}"
    sc = st.get("scene_changes")
    if video and q.max_scene_changes_per_min > 0 and sc is not None and item.duration_s:
        rate = sc / (item.duration_s / 60.0)
        if rate > q.max_scene_changes_per_min:
            return Reason.TOO_MANY_SCENE_CHANGES, (f"{sc:.0f} scene changes in {item.duration_s:.1f} s = "
                                                   f"{rate:.1f}/min > {q.max_scene_changes_per_min:g}")
    return None


def row_scores(media: list[MediaItem]) -> dict[str, float]:
    """Row aggregates of the items' stats (schemas/scores.py media_*); absent when no item has one."""
    def pick(fn, values):
        values = [v for v in values if v is not None]
        return fn(values) if values else None

    videos = [m for m in media if m.kind == "video"]
    out = {
        "media_min_duration_s": pick(min, [m.duration_s for m in videos]),
        "media_min_side_px": pick(min, [min(m.source_width, m.source_height) for m in media
                                        if m.source_width and m.source_height]),
        "media_max_aspect_ratio": pick(max, [m.stats.get("aspect_ratio") for m in media]),
        "media_min_brightness": pick(min, [m.stats.get("brightness") for m in media]),
        "media_max_brightness": pick(max, [m.stats.get("brightness") for m in media]),
        "media_min_sharpness": pick(min, [m.stats.get("sharpness") for m in media]),
        "media_min_motion": pick(min, [m.stats.get("motion") for m in videos]),
        "media_scene_changes": pick(sum, [m.stats.get("scene_changes") for m in videos]),
        "media_max_timestamp_error_s": pick(max, [m.stats.get("timestamp_error_s") for m in videos]),
    }
    return {k: float(v) for k, v in out.items() if v is not None}


# --- the step ---------------------------------------------------------------------------------
class MediaFilter:
    """fetch bytes -> decode/sample/resize/encode in a worker -> stats -> verdict. Beam-free:
    the stage (pipelines/media.py) passes `on_item` to count frames and time phases."""

    stage = Stage.MEDIA

    def __init__(self, cfg: Config, fixed_frames: Optional[int] = None,
                 on_item: Optional[Callable[[ItemResult], None]] = None) -> None:
        self.cfg = cfg
        self.fixed_frames = fixed_frames
        self.on_item = on_item           # called with each item's result (pipelines/media.py: Beam metrics)
        self.fetch = MediaFetch(cfg)
        self._runner = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_runner"] = None          # worker processes stay with the process that made them
        return state

    def setup(self) -> None:
        from media.worker import make_runner

        if self._runner is None:
            self._runner = make_runner(self.cfg.media.decode)

    def teardown(self) -> None:
        self._runner = None              # pools are shared per process and outlive one step

    def __call__(self, sample: Sample) -> StepResult:
        fetched = self.fetch(sample)
        if not isinstance(fetched, Sample) or not sample.media:
            return fetched
        if self._runner is None:
            self.setup()
        mc = self.cfg.media
        keep = mc.output.keep
        thresholds = mc.quality.for_row(sample.source, sample.task)
        failure: Optional[tuple[Reason, str]] = None
        for i, item in enumerate(sample.media):
            source = item.members[0]
            data = sample.blobs[source]
            fault = None
            if data.startswith(FAULT_PREFIX) and os.environ.get(FAULT_ENV) == "1":
                fault = data[len(FAULT_PREFIX):].split(b"\n", 1)[0].decode("ascii", "replace")
            task = ItemTask(kind=item.kind, data=data, cfg=mc, fixed_frames=self.fixed_frames,
                            encode=keep != "original", fault=fault)
            res = self._runner.run(task)
            if self.on_item is not None:
                self.on_item(res)
            _apply(item, res)
            if res.reason is None:
                self._attach(sample, i, item, res, source, keep)
            verdict = (Reason(res.reason), res.detail) if res.reason else \
                item_verdict(item, thresholds, mc.sampling.max_aspect_ratio)
            if verdict is not None and failure is None:
                failure = (verdict[0], f"media[{i}] {item.uri}: {verdict[1]}")
        sample.scores.update(row_scores(sample.media))
        if failure is not None:
            sample.blobs = {}
            for item in sample.media:        # nothing is stored for a rejected row
                item.members, item.source_member = [], None
            return reject_sample(sample, self.stage, *failure)
        return sample

    @staticmethod
    def _attach(sample: Sample, i: int, item: MediaItem, res, source: str, keep: str) -> None:
        """Frames (or the resized image) as members; the source bytes kept or dropped."""
        names = [f"{sample.id}.{i}.{j:03d}.{res.ext}" for j in range(len(res.encoded))]
        for name, data in zip(names, res.encoded):
            sample.blobs[name] = data
        if keep == "frames":
            sample.blobs.pop(source, None)
            item.members, item.source_member = names, None
        elif keep == "original":
            item.members, item.source_member = [source], source
        else:
            item.members, item.source_member = names, source


def _apply(item: MediaItem, res) -> None:
    for name in ("codec", "source_width", "source_height", "width", "height", "fast_width", "fast_height",
                 "duration_s", "fps", "visual_tokens"):
        setattr(item, name, getattr(res, name))
    item.frame_timestamps = list(res.frame_timestamps)
    item.frame_types = list(res.frame_types)
    item.stats = {k: (None if v is None else float(v)) for k, v in res.stats.items()}
