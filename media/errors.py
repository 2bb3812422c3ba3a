"""The one error type of the decoding modules: an item that cannot be used, with its reason."""
from __future__ import annotations

from schemas.reasons import Reason


class MediaError(Exception):
    """An item that cannot be used; reason is a schemas.reasons.Reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail[:500]
