import io
import os

import pyarrow.parquet as pq
import webdataset as wds

from schemas.rejected import REJECTED_SCHEMA, reject
from schemas.sample import SAMPLE_SCHEMA, ContentPart, MediaItem, Message, Sample
from shards.writer import (HashingWriter, atomic_write, bucket_of, cut, num_buckets, parquet_writer,
                           payload_bytes, wds_writer)


def sample(i: int) -> Sample:
    sid = f"{i:024x}"
    s = Sample(id=sid, source="s", source_ref=f"f:{i}", task="caption",
               messages=[Message("user", [ContentPart("image", media_index=0)]),
                         Message("assistant", [ContentPart("text", text=f"caption {i}")])],
               media=[MediaItem(kind="image", uri=f"/m/{i}.png", members=[f"{sid}.0.png"])],
               scores={"text_chars": 9.0})
    s.blobs = {f"{sid}.0.png": bytes([i % 256]) * (10 + i)}
    return s


def render(write) -> bytes:
    buf = io.BytesIO()
    write(HashingWriter(buf))
    return buf.getvalue()


def test_wds_bytes_are_deterministic_and_readable(tmp_path):
    samples = [sample(i) for i in range(5)]
    a, b = render(wds_writer(samples)), render(wds_writer(samples))
    assert a == b
    p = tmp_path / "s.tar"
    p.write_bytes(a)
    got = list(wds.WebDataset(str(p), shardshuffle=False))
    assert [g["__key__"] for g in got] == [s.id for s in samples]
    assert got[2]["0.png"] == samples[2].blobs[f"{samples[2].id}.0.png"]
    assert Sample.from_row(__import__("json").loads(got[2]["json"])).messages[1].content[0].text == "caption 2"


def test_parquet_roundtrip_and_determinism():
    rows = [sample(i).to_row() for i in range(3)]
    a = render(parquet_writer(rows, SAMPLE_SCHEMA, "zstd", 2))
    assert a == render(parquet_writer(rows, SAMPLE_SCHEMA, "zstd", 2))
    table = pq.read_table(io.BytesIO(a))
    assert table.schema.equals(SAMPLE_SCHEMA)
    back = [Sample.from_row(r) for r in table.to_pylist()]
    assert back[1].messages[1].content[0].text == "caption 1" and back[1].scores == {"text_chars": 9.0}
    rej = [reject("ingest", "malformed_json", "s", "f:1", "bad", payload=b"{x")]
    assert pq.read_table(io.BytesIO(render(parquet_writer([r.to_row() for r in rej], REJECTED_SCHEMA,
                                                          "none", 10)))).num_rows == 1


def test_unregistered_score_is_an_error():
    s = sample(0)
    s.scores["made_up"] = 1.0
    try:
        s.to_row()
    except KeyError as e:
        assert "schemas/scores.py" in str(e)
    else:
        raise AssertionError("unregistered score accepted")


def test_cut_and_buckets():
    assert cut(range(10), lambda x: 1, max_rows=4, max_bytes=100) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert cut([5, 5, 50, 5], lambda x: x, max_rows=10, max_bytes=20) == [[5, 5], [50], [5]]
    assert num_buckets(0, 0, 10, 100) == 1
    assert num_buckets(95, 10, 10, 100) == 10 and num_buckets(5, 1000, 10, 100) == 10
    assert all(0 <= bucket_of(str(i), 7) < 7 for i in range(100))
    assert bucket_of("abc", 7) == bucket_of("abc", 7)
    assert payload_bytes(sample(3)) > 13


def test_atomic_write_leaves_only_the_shard(tmp_path):
    info = atomic_write(str(tmp_path), "wds/part-00000-000.tar", "wds", 1, wds_writer([sample(1)]))
    assert os.listdir(tmp_path / "wds") == ["part-00000-000.tar"]
    data = (tmp_path / "wds" / "part-00000-000.tar").read_bytes()
    assert info.bytes == len(data) and info.sha256 == __import__("hashlib").sha256(data).hexdigest()
    again = atomic_write(str(tmp_path), "wds/part-00000-000.tar", "wds", 1, wds_writer([sample(1)]))
    assert again == info and os.listdir(tmp_path / "wds") == ["part-00000-000.tar"]
