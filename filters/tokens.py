"""The tokens stage: exact text and visual token counts, and the sequence-length bound."""
from __future__ import annotations

from typing import Optional

from filters.base import StepResult, reject_sample
from keye.chat import count_tokens
from keye.tokenizer import TokenCounter, load_tokenizer
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.sample import Sample


class TokenAccounting:
    stage = Stage.TOKENS

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg.tokens
        self._tok: Optional[TokenCounter] = None

    def setup(self) -> None:
        self._tok = load_tokenizer(self.cfg.tokenizer)

    def __call__(self, sample: Sample) -> StepResult:
        if self._tok is None:
            self.setup()
        sample.text_tokens, sample.visual_tokens = count_tokens(
            sample.messages, sample.media, self._tok, self.cfg.system_prompt, self.cfg.chat_layout)
        total = sample.text_tokens + sample.visual_tokens
        if self.cfg.max_total_tokens and total > self.cfg.max_total_tokens:
            return reject_sample(sample, self.stage, Reason.TOO_MANY_TOKENS,
                                 f"{sample.text_tokens} text + {sample.visual_tokens} visual tokens "
                                 f"> {self.cfg.max_total_tokens}")
        return sample
