import bz2
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingest.files as files
import ingest.readers as readers
from tests.archive_util import make_tar
from ingest.readers import FileTask, detect_format, read_file
from schemas.reasons import Reason


def task(path, fmt=None, **kw):
    base = dict(path=str(path), relpath=path.name, source="s", format=fmt or detect_format(str(path)),
                base_dir=str(path.parent), max_row_bytes=1000, max_payload_bytes=100,
                max_media_bytes=10_000)
    base.update(kw)
    return FileTask(**base)


def rows(path, **kw):
    return list(read_file(task(path, **kw)))


def test_detect_format():
    assert detect_format("a/b.jsonl") == "jsonl" and detect_format("x.JSONL.GZ") == "jsonl"
    assert detect_format("x.json") == "json" and detect_format("x.parquet") == "parquet"
    assert detect_format("x.tar") == "wds" and detect_format("x.png") is None


@pytest.mark.parametrize("chunk", [3, 7, 1 << 20])
def test_jsonl_lines_refs_and_errors(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(files, "CHUNK", chunk)   # lines straddle block boundaries
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "one"}\r\n\n   \n{bad\n{"text": "\xff"}\n' + b'{"text": "' + b"x" * 2000 + b'"}\n'
                  + b'{"text": "last, no newline"}')
    out = rows(p)
    assert [r.source_ref for r in out] == ["a.jsonl:1", "a.jsonl:4", "a.jsonl:5", "a.jsonl:6", "a.jsonl:7"]
    assert out[0].payload == {"text": "one"} and out[0].error is None
    assert out[1].error[0] == Reason.MALFORMED_JSON and out[1].raw == b"{bad"
    assert out[2].error[0] == Reason.INVALID_UTF8
    assert out[3].error[0] == Reason.ROW_TOO_LARGE and out[3].raw is None and out[3].raw_size > 2000
    assert out[4].payload == {"text": "last, no newline"}


def test_jsonl_gzip_and_large_payload_not_kept(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps({"text": "y" * 300}) + "\n")
    (r,) = rows(p)
    assert r.payload["text"] == "y" * 300
    assert r.raw is None and r.raw_size > 300   # over max_payload_bytes: size kept, bytes not


def test_json_array_streams_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 7)  # force elements to straddle read boundaries
    items = [{"id": i, "conversations": [{"from": "human", "value": "é" * i}]} for i in range(20)]
    p = tmp_path / "l.json"
    p.write_text(json.dumps(items, ensure_ascii=False, indent=1))
    out = rows(p)
    assert [r.payload for r in out] == items
    assert [r.source_ref for r in out] == [f"l.json:{i}" for i in range(20)]


def test_json_array_numbers_at_chunk_end(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 3)
    p = tmp_path / "n.json"
    p.write_text("[12345, 678]")
    assert [r.payload for r in rows(p)] == [12345, 678]


@pytest.mark.parametrize("text, good, reason", [
    ('[{"a": 1}, {"b": 2}, {"c": ', 2, Reason.MALFORMED_JSON),
    ('[{"a": 1} {"b": 2}]', 1, Reason.MALFORMED_JSON),
    ('[{"a": 1}, ', 1, Reason.MALFORMED_JSON),
    ('[{"a": "' + "z" * 5000 + '"}]', 0, Reason.ROW_TOO_LARGE),
])
def test_json_array_broken_remainder_is_one_row(tmp_path, text, good, reason):
    p = tmp_path / "b.json"
    p.write_text(text)
    out = rows(p)
    assert len(out) == good + 1
    assert all(r.error is None for r in out[:good])
    assert out[-1].error[0] == reason and "not read" in out[-1].error[1] or out[-1].error[0] == reason


def test_json_single_object_and_empty(tmp_path):
    p = tmp_path / "o.json"
    p.write_text('{"text": "solo"}')
    (r,) = rows(p)
    assert r.payload == {"text": "solo"} and r.source_ref == "o.json:0"
    p.write_text("  \n")
    assert rows(p) == []
    p.write_text("[]")
    assert rows(p) == []


def test_parquet_rows_and_embedded_media(tmp_path):
    p = tmp_path / "t.parquet"
    table = pa.table({"caption": ["a", "b", "c"],
                      "image": [{"bytes": b"PNGDATA", "path": "x.png"}, {"bytes": b"JPG", "path": "y.jpg"},
                                {"bytes": None, "path": "on/disk.png"}]})
    pq.write_table(table, p, row_group_size=1)
    out = rows(p)
    assert [r.source_ref for r in out] == ["t.parquet:0", "t.parquet:1", "t.parquet:2"]
    assert out[2].payload["image"] == "on/disk.png" and not out[2].inline
    uri0 = out[0].payload["image"]
    assert uri0.endswith(".png") and out[0].inline[uri0] == b"PNGDATA"


def test_parquet_broken_file_is_one_row(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    (r,) = rows(p)
    assert r.error[0] == Reason.MALFORMED_PARQUET and r.source_ref == "bad.parquet"


def _tar(path, members, cut=None):
    path.write_bytes(make_tar(members, cut))


def test_wds_img2dataset_layout(tmp_path):
    p = tmp_path / "00000.tar"
    _tar(p, [("000.jpg", b"J0"), ("000.txt", b"a red circle"), ("000.json", b'{"key": "000", "status": "success"}'),
             ("001.0.jpg", b"A"), ("001.10.jpg", b"C"), ("001.2.jpg", b"B"), ("001.txt", b"three images"),
             ("002.mp4", b"VID"), ("002.json", b'{"caption": "a dog"}')])
    out = rows(p)
    assert [r.source_ref for r in out] == ["00000.tar#000", "00000.tar#001", "00000.tar#002"]
    assert out[0].payload["caption"] == "a red circle" and out[0].payload["id"] == "000"
    assert out[0].inline[out[0].payload["image"]] == b"J0"
    assert [out[1].inline[u] for u in out[1].payload["images"]] == [b"A", b"B", b"C"]  # natural order
    assert out[2].payload["caption"] == "a dog" and out[2].payload["video"].endswith("002.mp4")


def test_wds_truncated_archive(tmp_path):
    p = tmp_path / "cut.tar"
    _tar(p, [("a.jpg", b"x" * 600), ("a.txt", b"ok"), ("b.jpg", b"y" * 4000), ("b.txt", b"lost")], cut=5000)
    out = rows(p)
    assert out[0].payload["caption"] == "ok"
    assert out[-1].error[0] == Reason.TRUNCATED_ARCHIVE and len(out) == 2


def test_wds_oversized_member(tmp_path):
    p = tmp_path / "big.tar"
    _tar(p, [("a.mp4", b"v" * 20_000), ("a.txt", b"cap"), ("b.txt", b"fine"), ("b.jpg", b"j")])
    out = rows(p)
    assert out[0].error[0] == Reason.MEDIA_TOO_LARGE and out[1].payload["caption"] == "fine"


def test_unreadable_file(tmp_path):
    out = list(read_file(task(tmp_path / "missing.jsonl")))
    assert len(out) == 1 and out[0].error[0] == Reason.UNREADABLE_FILE


def test_corrupt_compressed_file_keeps_rows_before_the_break(tmp_path):
    good = gzip.compress(b"".join(json.dumps({"text": f"row {i}"}).encode() + b"\n" for i in range(3)))
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(good[:-12] + b"\x00" * 12)   # corrupt the trailer (CRC and size)
    out = rows(p)   # rows decoded before the break stand (block granularity); the rest is one row
    assert [r.payload["text"] for r in out if r.error is None] == ["row 0", "row 1", "row 2"][:len(out) - 1]
    assert out[-1].error[0] == Reason.UNREADABLE_FILE and out[-1].source_ref == "c.jsonl.gz:rest"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    (r,) = rows(p)
    assert r.error[0] == Reason.UNREADABLE_FILE and "before the first row" in r.error[1]


# --- hostile bytes: each one costs its own row, never the rest of the file -----------------------
BOM = b"\xef\xbb\xbf"


def deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("name, opener", [("b.jsonl", None), ("b.jsonl.gz", gzip.compress),
                                          ("b.jsonl.bz2", bz2.compress)])
def test_bom_is_skipped_in_jsonl(tmp_path, name, opener):
    data = BOM + b'{"text": "first"}\n' + BOM + b'{"text": "second"}\n'     # the second: files joined with cat
    p = tmp_path / name
    p.write_bytes(opener(data) if opener else data)
    assert [r.payload for r in rows(p)] == [{"text": "first"}, {"text": "second"}]


@pytest.mark.parametrize("name, opener", [("l.json", None), ("l.json.gz", gzip.compress)])
def test_bom_is_skipped_in_json_lists_and_objects(tmp_path, name, opener):
    p = tmp_path / name
    for data, want in ((BOM + b'[{"a": 1}, {"b": 2}]', [{"a": 1}, {"b": 2}]), (BOM + b'{"a": 1}', [{"a": 1}]),
                       (BOM + b'[{"a": 1},' + BOM + b' {"b": 2}]', [{"a": 1}, {"b": 2}])):
        p.write_bytes(opener(data) if opener else data)
        assert [r.payload for r in rows(p)] == want


def test_bom_is_skipped_in_tar_text_members(tmp_path):
    p = tmp_path / "s.tar"
    _tar(p, [("a.jpg", b"J"), ("a.txt", BOM + b"caption"), ("b.jpg", b"K"), ("b.json", BOM + b'{"caption": "c"}')])
    out = rows(p)
    assert [r.payload["caption"] for r in out] == ["caption", "c"]


def test_nesting_costs_one_line_at_any_depth(tmp_path):
    """Regression: depth >= ~1000 raised RecursionError in the reader, whose catch-all then
    dropped every later line of the file as one `:rest` row."""
    p = tmp_path / "d.jsonl"
    lines = ['{"text": "before"}', '{"text": "x", "unread": %s}' % deep(40), '{"k": %s}' % deep(700),
             deep(1500), deep(100_000), '{"text": "after"}']
    p.write_text("\n".join(lines) + "\n")
    out = rows(p, max_row_bytes=10**6)
    assert [r.source_ref for r in out] == [f"d.jsonl:{i}" for i in range(1, 7)]
    assert [r.error[0] if r.error else None for r in out] == [None] + [Reason.TOO_DEEPLY_NESTED] * 4 + [None]
    assert all(r.payload is None for r in out[1:5])
    assert sum(r.unread_bytes for r in out) == 0


def test_json_list_deep_and_malformed_elements_cost_one_row_each(tmp_path):
    p = tmp_path / "d.json"
    tricky = '{"s": "a \\" ] } [ {", "d": %s}' % deep(2000)      # brackets inside strings do not count
    p.write_text('[{"a": 1}, %s, {"b": oops [1]}, {"c": "\\udc80"}, {"d": 4}]' % tricky)
    out = rows(p, max_row_bytes=10**6, max_payload_bytes=10**6)
    assert [r.error[0] if r.error else r.payload for r in out] == [
        {"a": 1}, Reason.TOO_DEEPLY_NESTED, Reason.MALFORMED_JSON, Reason.INVALID_UNICODE, {"d": 4}]
    assert out[1].raw.decode() == tricky


def test_lone_surrogates_are_rejected_where_they_are_read(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"id": "x-\\ud83d", "text": "a"}\n{"t": "ok \\ud83d\\ude00"}\n{"m": {"k\\udfff": 1}}\n')
    out = rows(p)
    assert [r.error[0] if r.error else r.payload for r in out] == [
        Reason.INVALID_UNICODE, {"t": "ok \U0001F600"}, Reason.INVALID_UNICODE]


def test_parquet_and_tar_metadata_nesting_is_bounded(tmp_path):
    v = "leaf"
    for _ in range(40):
        v = [v]
    pq.write_table(pa.table({"text": ["a", "b"], "meta": [v, None]}), tmp_path / "d.parquet")
    assert [r.error[0] if r.error else None for r in rows(tmp_path / "d.parquet")] == [Reason.TOO_DEEPLY_NESTED, None]
    _tar(tmp_path / "d.tar", [("a.jpg", b"J"), ("a.json", ('{"m": %s}' % deep(1200)).encode()),
                              ("b.jpg", b"K"), ("b.txt", b"fine")])
    out = rows(tmp_path / "d.tar", max_row_bytes=10**5)
    assert out[0].error[0] == Reason.TOO_DEEPLY_NESTED and out[1].payload["caption"] == "fine"


def test_tar_member_names_that_are_not_utf8_are_shown_escaped(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tar:
        for name, data in ((b"e\xffz.jpg", b"J"), (b"e\xffz.txt", b"cap")):
            info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "n.tar").write_bytes(buf.getvalue())
    (r,) = rows(tmp_path / "n.tar")
    assert r.source_ref == "n.tar#e\\xffz" and r.payload["id"] == "e\\xffz"
    assert r.source_ref.encode("utf-8") and all(u.encode("utf-8") for u in r.inline)


def test_unread_bytes_are_counted_where_a_reader_stops(tmp_path):
    p = tmp_path / "g.json"
    tail = 'oops {"c": 3}]\n'
    p.write_text('[{"a": 1}, {"b": 2} ' + tail)
    out = rows(p)
    assert [r.payload for r in out[:2]] == [{"a": 1}, {"b": 2}]
    assert out[-1].error[0] == Reason.MALFORMED_JSON and out[-1].unread_bytes == len(tail.encode())
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    assert rows(p)[0].unread_bytes == p.stat().st_size
    p = tmp_path / "t.json"
    p.write_text('[{"a": 1}, {"b": ')             # a last element cut by the end of the file: all was read
    assert sum(r.unread_bytes for r in rows(p)) == 0
    p = tmp_path / "cut.jsonl.gz"                  # so is a compressed stream cut short
    p.write_bytes(gzip.compress(b'{"a": 1}\n{"b": 2}\n' * 50, mtime=0)[:-30])
    out = rows(p)
    assert out[-1].source_ref == "cut.jsonl.gz:rest" and sum(r.unread_bytes for r in out) == 0


def test_rows_before_a_corrupt_gzip_block_are_delivered_and_the_rest_is_unread(tmp_path):
    import random

    rng = random.Random(3)
    data = b"".join(json.dumps({"t": " ".join(str(rng.random()) for _ in range(8))}).encode() + b"\n"
                    for _ in range(3000))
    gz = gzip.compress(data, mtime=0)
    mid = len(gz) // 2
    for seed in range(100):       # a pattern zlib rejects in the middle (not a CRC error at the end)
        blob = gz[:mid] + random.Random(seed).randbytes(64) + gz[mid + 64:]
        try:
            gzip.decompress(blob)
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ == "error":
                break
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(blob)
    out = rows(p)
    assert out[-1].source_ref == "c.jsonl.gz:rest" and out[-1].error[0] == Reason.UNREADABLE_FILE
    assert len(out) > 100, "rows decoded before the corrupt block are not lost with it"
    assert 0 < out[-1].unread_bytes <= len(blob) - mid + readers.COMPRESSED_STEP


def test_manifests_that_are_no_regular_file_are_never_opened(tmp_path):
    import os
    import time

    os.mkfifo(tmp_path / "pipe.jsonl")                      # opening it would block the reader forever
    (tmp_path / "env.jsonl").symlink_to("/proc/self/environ")
    started = time.monotonic()
    for name in ("pipe.jsonl", "env.jsonl"):
        (r,) = rows(tmp_path / name)
        assert r.error[0] == Reason.UNREADABLE_FILE and r.unread_bytes >= 1 and r.raw is None
    assert time.monotonic() - started < 10
