"""The validate step: a `RawRow` becomes a `Sample`, or a `Rejected` row with a reason.

Rows that ingest could not parse are rejected at stage `ingest` with the reader's reason;
rows that parse but do not fit the input layouts are rejected at stage `validate`.
Media bytes that came inside the row's archive are attached as WebDataset blobs here so
the media stage does not read them again. Every other media location must lie under the
row's input folder, `ingest.media_root` or `ingest.media_roots` (media/fetch.py:MediaRoots),
else the row is `media_outside_root` before anything is opened.
"""
from __future__ import annotations

from typing import Union

from ingest.readers import RawRow
from media.fetch import MediaRoots, member_name
from schemas.config import Config
from schemas.input import Invalid, RowContext, normalize_row
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected, reject
from schemas.sample import Sample
from schemas.version import PIPELINE_VERSION


class ValidateRows:
    stage = Stage.VALIDATE

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.config_hash = cfg.hash()
        self._roots: dict[str, MediaRoots] = {}

    def setup(self) -> None:
        pass

    def roots(self, input_root: str) -> MediaRoots:
        """The allowed media prefixes for rows of one input (built once per input root)."""
        if input_root not in self._roots:
            ing = self.cfg.ingest
            self._roots[input_root] = MediaRoots([input_root, *ing.media_roots]
                                                 + ([ing.media_root] if ing.media_root else []))
        return self._roots[input_root]

    def __call__(self, row: RawRow) -> Union[Sample, Rejected]:
        if row.error is not None:
            reason, detail = row.error
            return reject(Stage.INGEST, reason, row.source, row.source_ref, detail, payload=row.raw,
                          payload_size=row.raw_size or None)
        v = self.cfg.validate
        ctx = RowContext(
            source=row.source, source_ref=row.source_ref,
            base_dir=self.cfg.ingest.media_root or row.base_dir,
            max_field_chars=v.max_field_chars, max_media_per_row=v.max_media_per_row,
            max_messages=v.max_messages, default_caption_prompt=v.default_caption_prompt,
            pipeline_version=PIPELINE_VERSION, config_hash=self.config_hash,
            inline_uris=frozenset(row.inline), input_root=row.root or row.base_dir,
        )
        result = normalize_row(row.payload, ctx)
        if isinstance(result, Invalid):
            return reject(self.stage, result.reason, row.source, row.source_ref, result.detail,
                          payload=row.raw, payload_size=row.raw_size or None)
        roots = None
        for i, item in enumerate(result.media):
            if item.uri in row.inline:
                name = member_name(result.id, i, item)
                result.blobs[name] = row.inline[item.uri]
                item.members = [name]
                continue
            roots = roots or self.roots(row.root or row.base_dir)
            where, why = roots.resolve(item.location or item.uri)
            if where is None:
                return reject(self.stage, Reason.MEDIA_OUTSIDE_ROOT, row.source, row.source_ref,
                              f"media[{i}] {item.uri}: {why}", id=result.id, payload=row.raw,
                              payload_size=row.raw_size or None)
            item.location = where
        return result
