"""Media references from untrusted manifests: what may be read (media/fetch.py:MediaRoots) and
how a local file is opened (read_media: regular files only, never blocking)."""
from __future__ import annotations

import os
import time

import pytest

from media.fetch import MediaRoots, read_media
from schemas.reasons import Reason


@pytest.fixture
def tree(tmp_path):
    root, media, outside = tmp_path / "in", tmp_path / "media", tmp_path / "outside"
    for d in (root, media, outside):
        d.mkdir()
    (media / "a.png").write_bytes(b"PNG")
    (outside / "s.png").write_bytes(b"SECRET")
    (media / "out.png").symlink_to(outside / "s.png")
    (media / "in.png").symlink_to(media / "a.png")
    (media / "dev.png").symlink_to("/dev/zero")
    return tmp_path


def test_roots_allow_their_tree_only(tree):
    roots = MediaRoots([str(tree / "in"), str(tree / "media"), "gs://bucket/media/"])
    allowed = lambda p: roots.resolve(p)[0] is not None    # noqa: E731
    assert allowed(str(tree / "media" / "a.png")) and allowed(str(tree / "in" / "new" / "x.png"))
    assert roots.resolve(str(tree / "media" / "in.png"))[0] == str(tree / "media" / "a.png")
    assert not allowed(str(tree / "outside" / "s.png"))
    assert "symlink" in roots.resolve(str(tree / "media" / "out.png"))[1]
    assert "never read" in roots.resolve(str(tree / "media" / "dev.png"))[1]
    for path in ("/etc/passwd", "/proc/self/environ", "/sys/kernel", "/dev/null", str(tree / "media2" / "a.png")):
        assert not allowed(path), path
    assert allowed("gs://bucket/media/x/y.png") and allowed("gs://bucket/media")
    assert not allowed("gs://bucket/media2/x.png") and not allowed("s3://bucket/media/x.png")
    assert not MediaRoots(["/"]).resolve("/proc/self/environ")[0]      # even when a recipe allows /
    assert MediaRoots([f"file://{tree / 'media'}"]).resolve(str(tree / "media" / "a.png"))[0]


def test_read_media_opens_regular_files_only_and_never_blocks(tree):
    fifo = tree / "media" / "fifo.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    reason, detail = read_media(str(fifo), 1000, shown="../media/fifo.png")
    assert reason == Reason.NOT_A_REGULAR_FILE and "FIFO" in detail and time.monotonic() - started < 5
    assert read_media(str(tree / "media"), 1000)[0] == Reason.NOT_A_REGULAR_FILE
    assert read_media("/dev/zero", 1000)[0] == Reason.MEDIA_OUTSIDE_ROOT
    assert read_media(str(tree / "media" / "dev.png"), 1000)[0] == Reason.MEDIA_OUTSIDE_ROOT
    assert read_media(str(tree / "media" / "a.png"), 1000) == b"PNG"
    assert read_media(str(tree / "media" / "a.png"), 2)[0] == Reason.MEDIA_TOO_LARGE
    reason, detail = read_media(str(tree / "media" / "nope.png"), 1000, shown="../media/nope.png")
    assert reason == Reason.MISSING_MEDIA and str(tree) not in detail     # details name the uri, not the location
