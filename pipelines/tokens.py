"""Tokens stage: exact text and visual token counts with Keye's tokenizer (filters/tokens.py)."""
from __future__ import annotations

from filters.tokens import TokenAccounting
from pipelines.common import ApplyStep
from schemas.config import Config


class Tokens(ApplyStep):
    def __init__(self, cfg: Config) -> None:
        super().__init__(TokenAccounting(cfg))
