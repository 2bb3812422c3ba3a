"""The run's blob store (pipelines/blobstore.py, schemas/blobs.py): media bytes leave the rows after
the media stage, come back intact or reject their row, and never come from outside the store."""
from __future__ import annotations

import hashlib
import os
import pickle

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.blobstore import BlobStore, CheckBlobs, offload, store_root, unreadable_members
from pipelines.common import KEPT, REJECTED, step_error
from schemas.blobs import BlobUnreadable, StoredBlobs, blob_size, renamed_blobs, total_blob_bytes
from schemas.config import load_config
from schemas.input import RowContext, normalize_row
from shards.writer import payload_bytes, wds_writer


def _row(text="a caption", ref="r:1", frames=3, size=20_000):
    ctx = RowContext(source="s", source_ref=ref, base_dir="/m", max_field_chars=1000, max_media_per_row=2,
                     max_messages=4)
    s = normalize_row({"text": text}, ctx)
    s.blobs = {f"{s.id}.0.{j:03d}.jpg": hashlib.sha256(f"{ref}{j}".encode()).digest() * (size // 32)
               for j in range(frames)}
    return s


class CountingStore(BlobStore):
    def __init__(self, root):
        super().__init__(root)
        self.reads = 0

    def get(self, digest, size):
        self.reads += 1
        return super().get(digest, size)


def test_offloaded_row_pickles_without_its_media_and_reads_it_back(tmp_path):
    s = _row()
    inline = dict(s.blobs)
    before = len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL))
    offload(s, BlobStore(str(tmp_path)))
    assert isinstance(s.blobs, StoredBlobs)
    after = pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)
    assert before > 60_000 and len(after) < 2_000, (before, len(after))     # what a shuffle moves
    back = pickle.loads(after)
    assert dict(back.blobs) == inline and sorted(back.blobs) == sorted(inline)
    assert total_blob_bytes(back.blobs) == sum(map(len, inline.values()))
    assert payload_bytes(back) == payload_bytes(_row())                       # shard cutting unchanged
    # content-addressed: one file per distinct member, two levels of folders
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert len(files) == 3 and all(os.path.basename(f) == hashlib.sha256(open(f, "rb").read()).hexdigest()
                                   for f in files)


def test_members_set_after_the_media_stage_are_offloaded_too(tmp_path):
    store = BlobStore(str(tmp_path))
    s = offload(_row(frames=2), store)
    s.blobs[f"{s.id}.1.000.png"] = b"a rendered image"          # e.g. think-with-image, a video variant
    offload(s, store)
    assert not s.blobs.inline and len(s.blobs.refs) == 3 and s.blobs[f"{s.id}.1.000.png"] == b"a rendered image"


def test_membership_sizes_and_renames_do_not_read(tmp_path):
    store = CountingStore(str(tmp_path))
    s = offload(_row(frames=2), store)
    name = sorted(s.blobs)[0]
    assert name in s.blobs and "other.jpg" not in s.blobs and len(s.blobs) == 2
    assert blob_size(s.blobs, name) == 20_000 and payload_bytes(s) > 0
    new = renamed_blobs(s.blobs, {name: "new.0.000.jpg"})
    assert isinstance(new, StoredBlobs) and "new.0.000.jpg" in new and name not in new
    assert store.reads == 0
    new["new.0.001.png"] = b"rendered"                 # set after the media stage: held inline
    assert new["new.0.001.png"] == b"rendered" and len(new) == 3
    assert new["new.0.000.jpg"] == s.blobs[name] and store.reads == 2


def test_wds_shard_bytes_are_the_same_from_the_store(tmp_path):
    import io

    inline_rows = [_row(ref=f"r:{i}") for i in range(3)]
    stored_rows = [offload(_row(ref=f"r:{i}"), BlobStore(str(tmp_path))) for i in range(3)]
    shards = []
    for rows in (inline_rows, stored_rows):
        buf = io.BytesIO()
        wds_writer(rows)(buf)
        shards.append(buf.getvalue())
    assert shards[0] == shards[1]


@pytest.mark.parametrize("damage", ["missing", "cut", "changed", "symlink_out"])
def test_a_damaged_member_raises_blob_unreadable(tmp_path, damage):
    root = tmp_path / "store"
    s = offload(_row(frames=2), BlobStore(str(root)))
    name = sorted(s.blobs)[0]
    digest, size = s.blobs.refs[name]
    path = BlobStore(str(root)).path(digest)
    if damage == "missing":
        os.remove(path)
    elif damage == "cut":
        open(path, "r+b").truncate(size - 1)
    elif damage == "changed":
        data = bytearray(open(path, "rb").read())
        data[100] ^= 1
        open(path, "wb").write(bytes(data))
    else:
        outside = tmp_path / "secret"
        outside.write_bytes(open(path, "rb").read())        # the right bytes, but not in the store
        os.remove(path)
        os.symlink(outside, path)
    with pytest.raises(BlobUnreadable):
        s.blobs[name]
    assert [b.split(":")[0] for b in unreadable_members(s)] == [name]
    r = step_error("score", s, BlobUnreadable("x"))
    assert (r.stage, r.reason, r.id) == ("score", "blob_unreadable", s.id) and r.payload


def test_put_keeps_a_complete_blob_and_replaces_a_partial_one(tmp_path):
    store = BlobStore(str(tmp_path))
    digest, size = store.put(b"x" * 100)
    path = store.path(digest)
    assert store.put(b"x" * 100) == (digest, size) and open(path, "rb").read() == b"x" * 100
    open(path, "wb").write(b"x" * 10)                      # a file of another size is no copy of the blob
    store.put(b"x" * 100)
    assert store.get(digest, size) == b"x" * 100
    with pytest.raises(BlobUnreadable):
        store.path(b"../../etc/passwd")                   # only 32-byte digests name blobs
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp-")]


def test_check_blobs_rejects_only_the_damaged_row(tmp_path):
    store = BlobStore(str(tmp_path))
    rows = [offload(_row(ref=f"r:{i}"), store) for i in range(3)] + [_row(text="inline media", ref="r:9")]
    lost = rows[1]
    os.remove(store.path(next(iter(lost.blobs.refs.values()))[0]))
    with beam.Pipeline() as p:
        out = p | beam.Create(rows) | CheckBlobs()
        assert_that(out[KEPT] | "k" >> beam.Map(lambda s: s.id), equal_to([r.id for r in rows if r is not lost]),
                    label="kept")
        assert_that(out[REJECTED] | "r" >> beam.Map(lambda r: (r.stage, r.reason, r.id)),
                    equal_to([("blobs", "blob_unreadable", lost.id)]), label="rejected")


def test_store_root_follows_the_recipe():
    cfg = load_config(None, [])
    assert cfg.output.blob_store and store_root(cfg, "/out") == "/out/_blobs"
    other = load_config(None, ["output.blob_root=gs://bucket/tmp"])
    a, b = store_root(other, "gs://x/out1"), store_root(other, "gs://x/out2")
    assert a.startswith("gs://bucket/tmp/") and a != b          # runs sharing a root never share a store
    assert store_root(load_config(None, ["output.blob_store=false"]), "/out") is None
    # where media waits is no rule: the recipe hash (in every row) is the same either way
    assert other.hash() == cfg.hash() == load_config(None, ["output.blob_store=false"]).hash()


@pytest.mark.parametrize("spread", [False, True])     # True: a bucket's way, over 256 digest prefixes
def test_drop_blobs_deletes_the_whole_store(tmp_path, spread):
    from pipelines.blobstore import DropBlobs

    root = tmp_path / "out" / "_blobs"
    store = BlobStore(str(root))
    for i in range(20):
        store.put(f"member {i}".encode())
    (tmp_path / "out" / "parquet").mkdir()
    with beam.Pipeline() as p:
        p | beam.Create(["manifest.json"]) | DropBlobs(str(root), spread=spread)
    assert not root.exists() and (tmp_path / "out" / "parquet").is_dir()


@pytest.mark.parametrize("overrides, offloads, drops", [
    ([], True, True), (["output.keep_blobs=true"], True, False), (["output.blob_store=false"], False, False)])
def test_the_recipe_decides_whether_media_leaves_the_rows_and_the_store_goes(tmp_path, overrides, offloads, drops):
    from pipelines.curate import build_curate

    cfg = load_config(None, overrides)
    p = beam.Pipeline()
    build_curate(p, cfg, str(tmp_path / "out"))
    names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
    assert any(n.endswith("Media/Offload") for n in names) == offloads
    assert any(n.endswith("Curate/Blobs") for n in names) == offloads
    assert any(n == "DropBlobs" for n in names) == drops
