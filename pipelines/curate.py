"""The curation pipeline: ingest -> validate -> text -> media -> exact dedupe -> near dedupe (text)
-> score (CLIP) -> semantic dedupe (media) -> decontaminate -> recaption -> tokens -> write.

`curation_stages` is the single ordered list of stages. Each entry is a PTransform returning
{KEPT, REJECTED}; `RunStages` threads the kept rows through and flattens every rejected
output, so the manifest can account for every input row.

Cheap before expensive: dedupe runs exact (one hash) before near (MinHash) before semantic
(embeddings), so each stage sees fewer rows; scoring runs before semantic dedupe and
decontamination so they can use its CLIP embeddings; recaptioning, the most expensive step,
runs last, on rows that survived everything else.
"""
from __future__ import annotations

from typing import Optional

import apache_beam as beam

from pipelines.common import KEPT, REJECTED
from pipelines.decontaminate import Decontaminate
from pipelines.dedupe import ExactDedupe
from pipelines.ingest import Ingest, Validate
from pipelines.manifest import Fanout, WriteManifest
from pipelines.media import Media
from pipelines.near_dedupe import NearDedupe
from pipelines.semantic_dedupe import SemanticDedupe
from pipelines.text import TextFilters
from pipelines.tokens import Tokens
from pipelines.write import WriteEmbeddings, WriteRejected, WriteSamples
from schemas.config import Config


def curation_stages(cfg: Config) -> list[tuple[str, beam.PTransform]]:
    """(label, stage) in pipeline order. Cheap filters run before media I/O."""
    stages = [
        ("Validate", Validate(cfg)),
        ("Text", TextFilters(cfg)),
        ("Media", Media(cfg)),
    ]
    if cfg.dedupe.exact.enabled:
        stages.append(("ExactDedupe", ExactDedupe(cfg)))
    if cfg.dedupe.near.enabled:
        stages.append(("NearDedupe", NearDedupe(cfg)))
    if cfg.score.enabled:
        from pipelines.score import Score   # imported here: RunInference pulls in torch
        stages.append(("Score", Score(cfg)))            # fills Sample.embeddings["clip_image"/"clip_text"]
    if cfg.dedupe.semantic.enabled:
        stages.append(("SemanticDedupe", SemanticDedupe(cfg)))
    if cfg.decontaminate.enabled and cfg.decontaminate.benchmarks:
        stages.append(("Decontaminate", Decontaminate(cfg)))
    if cfg.score.enabled and cfg.recaption.enabled:
        from pipelines.recaption import Recaption
        stages.append(("Recaption", Recaption(cfg)))    # re-scores with the score stage's model
    stages.append(("Tokens", Tokens(cfg)))
    return stages


class RunStages(beam.PTransform):
    def __init__(self, stages: list[tuple[str, beam.PTransform]]) -> None:
        super().__init__()
        self.stages = stages

    def expand(self, pcoll):
        rejected = []
        for label, stage in self.stages:
            out = pcoll | label >> stage
            pcoll = out[KEPT]
            rejected.append(out[REJECTED])
        return {KEPT: pcoll, REJECTED: tuple(rejected) | "AllRejected" >> beam.Flatten()}


def write_outputs(raw_rows, kept, rejected, cfg: Config, out_dir: str, pipeline_name: str,
                  fanout: Optional[Fanout] = None, pending=None):
    """Shards for kept and rejected rows, then the manifest over all of them (and over derived
    rows, for a pipeline that fans rows out; `pending`: input rows handed on to a later pass)."""
    sample_shards = kept | "WriteSamples" >> WriteSamples(out_dir, cfg.output)
    rejected_shards = rejected | "WriteRejected" >> WriteRejected(out_dir, cfg.output, cfg.ingest.max_payload_bytes)
    parts = [sample_shards, rejected_shards]
    if cfg.score.enabled and cfg.score.write_embeddings:
        parts.append(kept | "WriteEmbeddings" >> WriteEmbeddings(out_dir, cfg.output))
    shards = tuple(parts) | "AllShards" >> beam.Flatten()
    return (raw_rows, kept, rejected, shards) | "Manifest" >> WriteManifest(out_dir, pipeline_name, cfg, fanout, pending)


def curate(p: beam.Pipeline, cfg: Config):
    """Ingest and every curation stage: (raw rows, kept samples, rejected rows), nothing written."""
    raw = p | "Ingest" >> Ingest(cfg)
    result = raw | "Curate" >> RunStages(curation_stages(cfg))
    return raw, result[KEPT], result[REJECTED]


def build_curate(p: beam.Pipeline, cfg: Config, out_dir: str, pipeline_name: str = "curate"):
    raw, kept, rejected = curate(p, cfg)
    return write_outputs(raw, kept, rejected, cfg, out_dir, pipeline_name)


if __name__ == "__main__":
    import sys

    from pipelines.launch import main

    sys.exit(main("curate"))
