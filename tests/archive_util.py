"""Tar archives for reader tests: WebDataset members, optionally cut off mid-stream."""
from __future__ import annotations

import io
import tarfile
from typing import Optional


def make_tar(members: list[tuple[str, bytes]], cut: Optional[int] = None) -> bytes:
    """A tar of (name, data) members; with cut, only its first `cut` bytes (a truncated archive)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return data[:cut] if cut else data
