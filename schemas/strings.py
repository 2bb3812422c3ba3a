"""String hygiene: what may reach an output, and how names that are not clean text are shown.

One rule, applied where strings enter the pipeline and where error text leaves it:

- A row whose parsed strings (keys or values) hold a lone surrogate (JSON allows
  `"\\ud83d"`; UTF-8 cannot encode it) is rejected at ingest with `invalid_unicode`: its
  text cannot be written, and silently changing it would change the data.
- Names the pipeline did not choose (file names that are not valid UTF-8, tar member names,
  exception messages that quote them) are shown with `display_text`: undecodable bytes and
  lone surrogates become backslash escapes (`\\xff`, `\\ud83d`), so every writer can encode
  them and the same name always shows the same way.
"""
from __future__ import annotations

import re
from typing import Any, Optional

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> Optional[int]:
    """Index of the first lone surrogate in text, or None when text encodes as UTF-8."""
    m = _SURROGATE.search(text)
    return None if m is None else m.start()


def display_text(text: Any) -> str:
    """text as a string any UTF-8 writer accepts: surrogate-escaped bytes (from os / tarfile
    names) become `\\xNN`, other lone surrogates `\\udNNN`. Clean text is returned unchanged."""
    text = text if isinstance(text, str) else str(text)
    if lone_surrogate(text) is None:
        return text
    raw = text.encode("utf-8", "surrogateescape") if _only_escaped_bytes(text) else None
    if raw is not None:
        return raw.decode("utf-8", "backslashreplace")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _only_escaped_bytes(text: str) -> bool:
    """True when every surrogate is one `surrogateescape` made for an undecodable byte (U+DC80-U+DCFF)."""
    return all("\udc80" <= m.group() <= "\udcff" for m in _SURROGATE.finditer(text))
