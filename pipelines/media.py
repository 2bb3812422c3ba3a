"""Media stage: fetch media bytes and hash them (media/fetch.py)."""
from __future__ import annotations

from media.fetch import MediaFetch
from pipelines.common import ApplyStep
from schemas.config import Config


class Media(ApplyStep):
    def __init__(self, cfg: Config) -> None:
        super().__init__(MediaFetch(cfg))
