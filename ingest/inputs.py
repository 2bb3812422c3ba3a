"""Input specs -> the files to read (`FileTask`s): globbing, folder walks, source names.

Beam-free (paths go through Beam's FileSystems, so gs://, s3:// work): `pipelines/ingest.py`
runs `file_tasks` on workers; tools that read a corpus without a pipeline (the tiny CLIP
trainer, benchmarks) call it directly.
"""
from __future__ import annotations

import os
import posixpath
import re
from typing import Callable, Iterator, Optional

from apache_beam.io.filesystems import FileSystems

from ingest.readers import FileTask, detect_format, folder_source
from schemas.config import Config, InputConfig
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


def file_tasks(spec: InputConfig, cfg: Config, on_skip: Optional[Callable[[str], None]] = None) -> Iterator[FileTask]:
    """The files one input names, in path order; files that are no manifest (media beside the
    manifests) are passed to `on_skip`."""
    pattern, root = input_pattern(spec)
    # spec.files: one partition of a resumable run (pipelines/resume.py) matches its own files only
    found = [m for r in FileSystems.match(list(spec.files) if spec.files else [pattern]) for m in r.metadata_list]
    for meta in sorted(found, key=lambda m: m.path):
        fmt = spec.format if spec.format != "auto" else detect_format(meta.path)
        if fmt is None:
            if on_skip is not None:
                on_skip(meta.path)
            continue
        # a file name that is not UTF-8 is shown escaped (schemas/strings.py); path stays the real one
        rel = display_text(meta.path[len(root):].lstrip("/") if meta.path.startswith(root) else meta.path)
        yield FileTask(path=meta.path, relpath=rel, source=source_name(spec, rel), format=fmt,
                       base_dir=posixpath.dirname(meta.path),
                       max_row_bytes=cfg.ingest.max_row_bytes,
                       max_payload_bytes=cfg.ingest.max_payload_bytes,
                       max_media_bytes=cfg.media.max_bytes,
                       max_json_depth=cfg.ingest.max_json_depth,
                       root=root, size=meta.size_in_bytes)
