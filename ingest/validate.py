"""The validate step: a `RawRow` becomes a `Sample`, or a `Rejected` row with a reason.

Rows that ingest could not parse are rejected at stage `ingest` with the reader's reason;
rows that parse but do not fit the input layouts are rejected at stage `validate`.
Media bytes that came inside the row's archive are attached as WebDataset blobs here so
the media stage does not read them again.
"""
from __future__ import annotations

from typing import Union

from ingest.readers import RawRow
from media.fetch import member_name
from schemas.config import Config
from schemas.input import Invalid, RowContext, normalize_row
from schemas.reasons import Stage
from schemas.rejected import Rejected, reject
from schemas.sample import Sample
from schemas.version import PIPELINE_VERSION


class ValidateRows:
    stage = Stage.VALIDATE

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.config_hash = cfg.hash()

    def setup(self) -> None:
        pass

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
            inline_uris=frozenset(row.inline),
        )
        result = normalize_row(row.payload, ctx)
        if isinstance(result, Invalid):
            return reject(self.stage, result.reason, row.source, row.source_ref, result.detail,
                          payload=row.raw, payload_size=row.raw_size or None)
        for i, item in enumerate(result.media):
            if item.uri in row.inline:
                name = member_name(result.id, i, item)
                result.blobs[name] = row.inline[item.uri]
                item.members = [name]
        return result
