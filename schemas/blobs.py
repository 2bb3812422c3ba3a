"""Media bytes held by reference: `Sample.blobs` after the media stage, when the run has a blob store.

The media stage writes each member's bytes (sampled JPEG frames, re-encoded images, kept
originals) once to the run's content-addressed blob store and leaves the row a `StoredBlobs`:
member name -> (sha256, size). The mapping reads a member's bytes from the store when it is
indexed and checks them against the digest, so every stage that reads pixels (`media.frames`,
the writer) works unchanged, while a pickled row, which is what crosses a shuffle, holds ~100
bytes per member instead of the member. Beam-free: the store is any object with
`get(digest: bytes, size: int) -> bytes` (pipelines/blobstore.py, on Beam's FileSystems).

A member whose bytes are missing, cut or changed raises `BlobUnreadable`; the stage that reads
it rejects the row with reason `blob_unreadable` (pipelines.common.step_error) and the run goes on.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping
from typing import Iterator, Protocol


class BlobUnreadable(Exception):
    """A stored member's bytes are missing or do not match their sha256 or size."""


class BlobReader(Protocol):
    def get(self, digest: bytes, size: int) -> bytes: ...


def check_blob(data: bytes, digest: bytes, size: int, where: str) -> bytes:
    """data, if it is the blob named (digest, size); else BlobUnreadable naming what differs."""
    if len(data) != size:
        raise BlobUnreadable(f"{where}: {len(data)} bytes, expected {size}")
    if hashlib.sha256(data).digest() != digest:
        raise BlobUnreadable(f"{where}: sha256 differs from the stored digest {digest.hex()[:16]}")
    return data


class StoredBlobs(MutableMapping):
    """member name -> bytes, the bytes read from `store` on access (never cached: a row is read by
    one stage at a time, and holding the bytes would put them back into the next shuffle).
    Members set after the media stage (a mixture's rendered image) are held inline."""

    __slots__ = ("store", "refs", "inline")

    def __init__(self, store: BlobReader, refs: dict[str, tuple[bytes, int]],
                 inline: dict[str, bytes] | None = None) -> None:
        self.store, self.refs, self.inline = store, dict(refs), dict(inline or {})

    def __getitem__(self, name: str) -> bytes:
        if name in self.inline:
            return self.inline[name]
        digest, size = self.refs[name]
        return check_blob(self.store.get(digest, size), digest, size, name)

    def __setitem__(self, name: str, data: bytes) -> None:
        self.refs.pop(name, None)
        self.inline[name] = data

    def __delitem__(self, name: str) -> None:
        if name in self.inline:
            del self.inline[name]
        else:
            del self.refs[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.refs
        yield from (n for n in self.inline if n not in self.refs)

    def __contains__(self, name: object) -> bool:     # without reading the bytes
        return name in self.refs or name in self.inline

    def __len__(self) -> int:
        return len(self.refs) + len(self.inline)

    def size(self, name: str) -> int:
        """A member's byte count without reading it."""
        return len(self.inline[name]) if name in self.inline else self.refs[name][1]

    def renamed(self, rename: Mapping[str, str]) -> "StoredBlobs":
        """The same bytes under new member names (a derived row's); unnamed members keep theirs."""
        return StoredBlobs(self.store, {rename.get(k, k): v for k, v in self.refs.items()},
                           {rename.get(k, k): v for k, v in self.inline.items()})

    def __getstate__(self):
        return self.store, self.refs, self.inline

    def __setstate__(self, state) -> None:
        self.store, self.refs, self.inline = state

    def __repr__(self) -> str:
        return f"StoredBlobs({len(self.refs)} stored, {len(self.inline)} inline)"


def blob_size(blobs: Mapping[str, bytes], name: str) -> int:
    """A member's byte count; a stored member is not read."""
    return blobs.size(name) if isinstance(blobs, StoredBlobs) else len(blobs[name])


def total_blob_bytes(blobs: Mapping[str, bytes]) -> int:
    return sum(blob_size(blobs, n) for n in blobs)


def renamed_blobs(blobs: Mapping[str, bytes], rename: Mapping[str, str]) -> MutableMapping:
    """blobs under new member names, stored members still stored (not read)."""
    if isinstance(blobs, StoredBlobs):
        return blobs.renamed(rename)
    return {rename.get(k, k): v for k, v in blobs.items()}
