"""The run's blob store: media bytes leave the rows once the media stage has made them.

    media stage --Offload--> each member's bytes written once to ROOT/ab/<sha256>;
        |                    the row keeps member -> (sha256, size) (schemas/blobs.py)
    exact dedupe, near dedupe, semantic dedupe (its JoinById), the writer's GroupBucket, the
        |   mixture's shuffles: rows without their media (~100 bytes a member instead of 20-60 KB;
        |   the mixture stores the frames it makes, rendered pictures and video variants, as it makes them)
    score, semantic dedupe's perceptual vectors, decontamination's pHash, recaption, the
        |   mixture's generation: read the bytes they decode from the store, row by row
    CheckBlobs (stage `blobs`, the last curation stage): every kept row's members read back and
        |   checked against their sha256; a missing or changed member rejects that row only
        |   (`blob_unreadable`), so the writer never meets one
    writer --WriteBucket--> reads each member into the tar as it writes it
    manifest written --DropBlobs--> ROOT deleted (a bucket's over 256 digest prefixes in parallel),
                                    unless output.keep_blobs

Why a store rather than splitting rows into (id, metadata) and (id, media) and rejoining
before the writer: the stages that decode pixels sit between the dedupe shuffles (score before
semantic dedupe, decontamination and recaption after it), so a split would rejoin media before
each of them; with the store no shuffle carries media at all, the only extra cost is one write
and a few reads of each kept member (bench.pipeline measures both paths).

Where: `output.blob_root` (any Beam filesystem every worker sees: a bucket beside
`--temp_location` on Dataflow) or, by default, `DIR/_blobs`, one store per pipeline (a partition of a resumable run has its
own under `partitions/pNNNNNN/`, deleted with it when it is rerun, so a completion marker
never points at blobs). Members are content-addressed, so the same bytes are written once per
store and a retried bundle finds them in place; nothing in the shards depends on the store's
location (the output is byte-identical with the store on or off). A blob is only ever read
from under the store's root: the path is made from a 32-byte digest, and a local path that
resolves (symlinks) outside the root is refused.

What one worker holds: Offload and CheckBlobs one row's members at a time; the writer one
bucket of rows without media, plus the member it is copying.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.common import KEPT, REJECTED, count_kept, rejected_output, stage_counter
from schemas.blobs import BlobUnreadable, StoredBlobs
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import reject_sample
from schemas.sample import Sample

BLOB_DIR = "_blobs"
RAW = CompressionTypes.UNCOMPRESSED


def store_root(cfg: Config, out_dir: str) -> Optional[str]:
    """The run's blob store folder, or None when the recipe keeps media in the rows."""
    o = cfg.output
    if not o.blob_store:
        return None
    if not o.blob_root:
        return FileSystems.join(out_dir, BLOB_DIR)
    # one store per output folder under a shared root, so concurrent runs never delete each other's
    return o.blob_root.rstrip("/") + "/" + hashlib.sha1(out_dir.encode("utf-8")).hexdigest()[:16]


class BlobStore:
    """Content-addressed files on Beam's FileSystems: ROOT/ab/<sha256 hex> (256 folders: local
    filesystems cope; object stores have no folders). Pickles as its root."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self._local = "://" not in self.root

    def path(self, digest: bytes) -> str:
        if len(digest) != 32:
            raise BlobUnreadable(f"not a sha256 digest: {digest!r}")
        h = digest.hex()
        if self._local:
            return os.path.join(self.root, h[:2], h)
        return FileSystems.join(self.root, h[:2], h)

    def _size(self, path: str) -> Optional[int]:
        if self._local:
            try:
                return os.stat(path).st_size
            except OSError:
                return None
        found = FileSystems.match([path])[0].metadata_list
        return found[0].size_in_bytes if found else None

    def put(self, data: bytes) -> tuple[bytes, int]:
        """Store data (unless a file of its size is already there); its (digest, size)."""
        digest = hashlib.sha256(data).digest()
        final = self.path(digest)
        if self._size(final) == len(data):
            return digest, len(data)
        folder, name = final.rsplit("/", 1)
        tmp = f"{folder}/.tmp-{name}-{uuid.uuid4().hex}"
        if self._local:                  # the common case, without FileSystems' per-call lookups
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        else:
            with FileSystems.create(tmp, compression_type=RAW) as f:
                f.write(data)
            FileSystems.rename([tmp], [final])
        return digest, len(data)

    def get(self, digest: bytes, size: int) -> bytes:
        """The stored file's bytes (at most size + 1 of them, so a longer file shows), unchecked."""
        path = self.path(digest)
        if self._local:
            real, root = os.path.realpath(path), os.path.realpath(self.root)
            if not real.startswith(root + os.sep):
                raise BlobUnreadable(f"{digest.hex()[:16]}: resolves outside the blob store")
        try:
            with (open(path, "rb") if self._local else FileSystems.open(path, compression_type=RAW)) as f:
                data = f.read(size + 1)
        except Exception as e:  # noqa: BLE001 - each filesystem raises its own error for a missing object
            raise BlobUnreadable(f"{digest.hex()[:16]}: cannot read: {type(e).__name__}") from None
        return data       # checked against (digest, size) by StoredBlobs, the one path every reader takes

    def __getstate__(self):
        return self.root

    def __setstate__(self, root) -> None:
        self.__init__(root)


def offload(sample: Sample, store: BlobStore) -> Sample:
    """The row with its members' bytes in the store and references in `blobs` (members set inline
    after the media stage, such as a mixture's video variants and rendered images, too)."""
    blobs = sample.blobs
    if isinstance(blobs, StoredBlobs):
        if blobs.inline:
            sample.blobs = StoredBlobs(blobs.store, {**blobs.refs, **{n: store.put(d) for n, d in blobs.inline.items()}})
    elif blobs:
        sample.blobs = StoredBlobs(store, {name: store.put(data) for name, data in blobs.items()})
    return sample


class _Offload(beam.DoFn):
    def __init__(self, root: str) -> None:
        self.root = root

    def setup(self) -> None:
        self.store = BlobStore(self.root)
        self.written = stage_counter(Stage.BLOBS.value, "bytes_stored")

    def process(self, sample: Sample):
        blobs = sample.blobs
        self.written.inc(sum(map(len, (blobs.inline if isinstance(blobs, StoredBlobs) else blobs).values())))
        yield offload(sample, self.store)


class Offload(beam.PTransform):
    """Rows -> the same rows with their media bytes in the store at `root`."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root

    def expand(self, samples):
        return samples | "Offload" >> beam.ParDo(_Offload(self.root))


def unreadable_members(sample: Sample) -> list[str]:
    """'<member>: why' for each stored member that cannot be read back intact."""
    blobs = sample.blobs
    if not isinstance(blobs, StoredBlobs):
        return []
    bad = []
    for name in sorted(blobs.refs):
        try:
            blobs[name]
        except BlobUnreadable as e:
            bad.append(f"{name}: {e}")
    return bad


class _Check(beam.DoFn):
    def process(self, sample: Sample):
        bad = unreadable_members(sample)
        if bad:
            yield rejected_output(reject_sample(sample, Stage.BLOBS, Reason.BLOB_UNREADABLE,
                                                f"{len(bad)} media member(s) unreadable: " + "; ".join(bad[:3])))
        else:
            count_kept(Stage.BLOBS.value)
            yield sample


class CheckBlobs(beam.PTransform):
    """The last curation stage with a blob store: rows whose stored media cannot be read back
    intact are rejected here (`blobs/blob_unreadable`), so the mixture and the writer never meet one."""

    def expand(self, samples):
        out = samples | "Check" >> beam.ParDo(_Check()).with_outputs(REJECTED, main=KEPT)
        return {KEPT: out[KEPT], REJECTED: out[REJECTED]}


def _drop(path: str) -> int:
    from pipelines.resume import delete_tree

    delete_tree(path)
    return 1


class DropBlobs(beam.PTransform):
    """After the manifest (which waits for every shard): delete the store. A remote store (a bucket)
    is deleted spread over workers by the first byte of the digest (256 prefixes, reshuffled), then
    the emptied root: at corpus scale it holds billions of members, and no worker lists or deletes
    more than its prefixes. A local store is one machine's disk: one delete."""

    def __init__(self, root: str, spread: Optional[bool] = None) -> None:
        super().__init__()
        self.root = root
        self.spread = "://" in root if spread is None else spread

    def expand(self, manifest_written):
        root = self.root
        if not self.spread:      # a local store is one machine's disk (every worker of a local run sees it)
            return manifest_written | "DropRoot" >> beam.Map(lambda _: _drop(root))
        done = (manifest_written
                | "Prefixes" >> beam.FlatMap(lambda _: [f"{b:02x}" for b in range(256)])
                | "Spread" >> beam.Reshuffle()
                | "DropPrefix" >> beam.Map(lambda prefix: _drop(FileSystems.join(root, prefix)))
                | "AllDropped" >> beam.CombineGlobally(sum))
        return done | "DropRoot" >> beam.Map(lambda _: _drop(root))
