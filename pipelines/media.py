"""Media stage: fetch, decode, Keye-VL frame sampling, visual tokens, media quality.

One composite transform between validation/text and the later stages. The rows are
reshuffled first (cheap: media bytes are fetched after it, except archive members that came
inline), so the expensive decode work spreads across workers instead of following input
files; the step (filters/media.py) runs each item in an isolated decode worker
(media/worker.py). Counters: `media/kept`, `media/rejected/<reason>` (pipelines.common) and
`media/frames_sampled`, `media/backend/<name>`, `media/<phase>_ms` distributions. Resource
hints from `media.resources` (e.g. `accelerator` for GPU workers on Dataflow) apply to this
stage only.

With a blob store (`output.blob_store`, the default), the kept rows leave this stage with their
media bytes written to the store and references in `Sample.blobs` (pipelines/blobstore.py):
from here on no shuffle moves media bytes.
"""
from __future__ import annotations

from typing import Optional

from apache_beam.metrics import Metrics

from filters.media import MediaFilter
from media.process import ItemResult
from pipelines.common import KEPT, METRICS_NAMESPACE, REJECTED, ApplyStep
from schemas.config import Config


def record_item_metrics(res: ItemResult) -> None:
    """Beam Metrics of one decoded item: items per kind, frames, backend, time per phase."""
    Metrics.counter(METRICS_NAMESPACE, f"media/{res.kind}s").inc()
    if res.frame_timestamps:
        Metrics.counter(METRICS_NAMESPACE, "media/frames_sampled").inc(len(res.frame_timestamps))
    if res.backend:
        Metrics.counter(METRICS_NAMESPACE, f"media/backend/{res.backend}").inc()
    for phase, seconds in res.timings.items():
        Metrics.distribution(METRICS_NAMESPACE, f"media/{phase}_ms").update(int(seconds * 1000))


class Media(ApplyStep):
    def __init__(self, cfg: Config, fixed_frames: Optional[int] = None, blob_root: Optional[str] = None) -> None:
        super().__init__(MediaFilter(cfg, fixed_frames=fixed_frames, on_item=record_item_metrics), reshuffle=True,
                         hints=cfg.media.resources.hints())
        self.blob_root = blob_root

    def expand(self, pcoll):
        out = super().expand(pcoll)
        if self.blob_root is None:
            return out
        from pipelines.blobstore import Offload

        return {KEPT: out[KEPT] | "Offload" >> Offload(self.blob_root), REJECTED: out[REJECTED]}
