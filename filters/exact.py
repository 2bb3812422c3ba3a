"""Content keys for exact-duplicate removal.

Two rows are exact duplicates when their normalised conversation text (roles, text,
reasoning, media positions) and the bytes of their media are equal. The key is a SHA-256
over a canonical encoding of exactly that, so the id, source and file name of a row do
not matter: the same caption pair ingested from two manifests collapses to one row.
"""
from __future__ import annotations

import hashlib

from schemas.sample import Sample


def content_key(sample: Sample) -> str:
    h = hashlib.sha256()
    for m in sample.messages:
        h.update(b"\x1erole\x1f" + m.role.encode())
        if m.reasoning:
            h.update(b"\x1ereasoning\x1f" + m.reasoning.encode("utf-8", "surrogatepass"))
        for p in m.content:
            if p.type == "text":
                h.update(b"\x1etext\x1f" + (p.text or "").encode("utf-8", "surrogatepass"))
            else:
                item = sample.media[p.media_index]
                if item.sha256 is None:
                    raise ValueError(f"{sample.id}: media {p.media_index} has no sha256 yet; "
                                     "exact dedupe must run after the media stage")
                h.update(b"\x1e" + p.type.encode() + b"\x1f" + item.sha256.encode())
    return h.hexdigest()


def pick_representative(ids: list[str]) -> str:
    """Deterministic choice among duplicates: the smallest id."""
    return min(ids)
