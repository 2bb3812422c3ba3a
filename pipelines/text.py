"""Text stage: normalisation, text stats and text filters (filters/text.py)."""
from __future__ import annotations

from filters.text import TextFilter
from pipelines.common import ApplyStep
from schemas.config import Config


class TextFilters(ApplyStep):
    def __init__(self, cfg: Config) -> None:
        super().__init__(TextFilter(cfg))
