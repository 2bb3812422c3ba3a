"""Ingest and validate stages: input specs -> files -> raw rows -> samples.

File globbing runs on workers (`ExpandInputs`), files are spread before reading, and rows
are spread again after the fan-out so one large file does not pin the rest of the
pipeline to one worker.
"""
from __future__ import annotations

import apache_beam as beam

from ingest.inputs import check_inputs, file_tasks, input_pattern, source_name
from ingest.readers import FileTask, RawRow, read_file
from ingest.validate import ValidateRows
from pipelines import progress
from pipelines.common import ApplyStep, stage_counter
from schemas.config import Config, InputConfig
from schemas.reasons import Stage


class ExpandInputs(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def process(self, spec: InputConfig):
        skipped = stage_counter(Stage.INGEST.value, "skipped_files")
        yield from file_tasks(spec, self.cfg, on_skip=lambda _: skipped.inc())


class ReadFiles(beam.DoFn):
    def process(self, task: FileTask):
        stage_counter(Stage.INGEST.value, "files").inc()
        progress.count(Stage.INGEST.value, progress.FILES)
        for row in read_file(task):
            stage_counter(Stage.INGEST.value, "rows").inc()
            progress.count(Stage.INGEST.value, "kept")
            yield row


class Ingest(beam.PTransform):
    """PBegin -> PCollection[RawRow], one per input row (parsed or carrying its error)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, pbegin):
        return (pbegin
                | "Inputs" >> beam.Create(self.cfg.inputs)
                | "ExpandInputs" >> beam.ParDo(ExpandInputs(self.cfg))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadFiles" >> beam.ParDo(ReadFiles())
                | "SpreadRows" >> beam.Reshuffle())


def Validate(cfg: Config) -> ApplyStep:
    """RawRow -> Sample; ingest errors and layout errors go to REJECTED."""
    return ApplyStep(ValidateRows(cfg))


__all__ = ["Ingest", "Validate", "RawRow", "check_inputs", "input_pattern", "source_name"]
