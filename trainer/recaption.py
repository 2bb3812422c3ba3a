"""The third recaptioning backend (`recaption.backend: trainer`): a bundled-trainer checkpoint.

captioners/backends.py imports this module only when a recipe names the backend, so curation
workers that use the other backends never import the trainer (or torch's model code).
Each request's pictures (one image, or a video's frames at `req.fps`) are sized by the
checkpoint's media recipe and captioned with the request's prompt; requests run one at a time
under a lock (the pipeline's threads share one backend per process). Never raises: a failure
or an empty caption comes back as a `CaptionResult` with an error.
"""
from __future__ import annotations

import threading
from typing import Sequence

from captioners.backends import CaptionRequest, CaptionResult, default_captioner_id, register_backend
from schemas.config import RecaptionConfig


class TrainerBackend:
    def __init__(self, cfg: RecaptionConfig) -> None:
        if not cfg.trainer.checkpoint:
            raise ValueError("recaption.trainer.checkpoint is not set")
        self.cfg = cfg
        self.captioner_id = default_captioner_id(cfg)
        self.generator = None
        self._lock = threading.Lock()
        self.stats = {"errors": 0, "empty": 0}

    def setup(self) -> None:
        if self.generator is not None:
            return
        from captioners.clip import resolve_device
        from trainer.generate import Generator

        self.generator = Generator(self.cfg.trainer.checkpoint, resolve_device(self.cfg.trainer.device))

    def close(self) -> None:
        pass

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        with self._lock:
            self.setup()
            return [self._one(r) for r in requests]

    def _one(self, req: CaptionRequest) -> CaptionResult:
        from trainer.generate import decode_jpeg

        try:
            item, blobs = self.generator.frames_item([decode_jpeg(b) for b in req.images], req.fps)
            text = self.generator.answer(item, blobs, req.prompt, max_new_tokens=self.cfg.max_new_tokens,
                                         temperature=self.cfg.temperature, seed=req.seed)
        except Exception as e:  # noqa: BLE001 - one bad request fails that request, never the worker
            self.stats["errors"] += 1
            return CaptionResult(None, f"{type(e).__name__}: {e}"[:300], 1)
        if not text:
            self.stats["empty"] += 1
            return CaptionResult(None, "empty generation", 1)
        return CaptionResult(text, None, 1)


@register_backend("trainer")
def _trainer(cfg: RecaptionConfig) -> TrainerBackend:
    return TrainerBackend(cfg)
