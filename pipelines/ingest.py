"""Ingest and validate stages: input specs -> files -> raw rows -> samples.

File globbing runs on workers (`ExpandInputs`), files are spread before reading, and rows
are spread again after the fan-out so one large file does not pin the rest of the
pipeline to one worker.
"""
from __future__ import annotations

import posixpath
import re

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ingest.readers import FileTask, RawRow, detect_format, folder_source, read_file
from ingest.validate import ValidateRows
from pipelines import progress
from pipelines.common import ApplyStep, stage_counter
from schemas.config import Config, InputConfig
from schemas.reasons import Stage
from schemas.strings import display_text

_GLOB = re.compile(r"[*?\[]")


def input_pattern(spec: InputConfig) -> tuple[str, str]:
    """(glob pattern, root folder) for an input path: a file, a folder or a glob."""
    path = spec.path
    m = _GLOB.search(path)
    if m:
        root = path[:m.start()].rsplit("/", 1)[0] if "/" in path[:m.start()] else "."
        return path, root
    if path.endswith("/") or _is_local_dir(path):
        return path.rstrip("/") + "/**", path.rstrip("/")
    return path, posixpath.dirname(path) or "."


def source_name(spec: InputConfig, relpath: str) -> str:
    """The `source` of rows from one file: the recipe's name if given; else a file input is
    named by its stem, a glob by its root folder, and a folder by each top-level entry
    (`captions.jsonl` -> captions, `laion/part-1.parquet` -> laion)."""
    if spec.source:
        return display_text(spec.source)
    pattern, root = input_pattern(spec)
    if pattern.endswith("/**") and pattern[:-3] == spec.path.rstrip("/"):
        return folder_source(relpath)
    if not _GLOB.search(spec.path):
        base = display_text(posixpath.basename(spec.path))
        return base.split(".", 1)[0] or base
    return display_text(posixpath.basename(root.rstrip("/"))) or "input"


def _is_local_dir(path: str) -> bool:
    import os

    return "://" not in path and os.path.isdir(path)


def check_inputs(inputs: list[InputConfig]) -> None:
    """Fail before the pipeline starts if an input matches nothing (a typo, not data)."""
    if not inputs:
        raise ValueError("no inputs: pass --input PATH (or list inputs in the recipe)")
    for spec in inputs:
        pattern, _ = input_pattern(spec)
        found = FileSystems.match([pattern], limits=[1])[0].metadata_list
        if not found:
            raise FileNotFoundError(f"input {spec.path!r} matches no file")


class ExpandInputs(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def process(self, spec: InputConfig):
        pattern, root = input_pattern(spec)
        for meta in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
            fmt = spec.format if spec.format != "auto" else detect_format(meta.path)
            if fmt is None:
                stage_counter(Stage.INGEST.value, "skipped_files").inc()
                continue  # media and other files beside the manifests
            rel = display_text(meta.path[len(root):].lstrip("/") if meta.path.startswith(root) else meta.path)
            yield FileTask(path=meta.path, relpath=rel, source=source_name(spec, rel), format=fmt,
                           base_dir=posixpath.dirname(meta.path),
                           max_row_bytes=self.cfg.ingest.max_row_bytes,
                           max_payload_bytes=self.cfg.ingest.max_payload_bytes,
                           max_media_bytes=self.cfg.media.max_bytes,
                           max_json_depth=self.cfg.ingest.max_json_depth,
                           root=root, size=meta.size_in_bytes)


class ReadFiles(beam.DoFn):
    def process(self, task: FileTask):
        stage_counter(Stage.INGEST.value, "files").inc()
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
