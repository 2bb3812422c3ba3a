"""Strings that reach an output are clean (schemas/strings.py), and the manifest's accounting
says when input was left unread."""
from __future__ import annotations

import io
import os

import pyarrow.parquet as pq

from schemas.manifest import Manifest, Totals
from schemas.reasons import Reason, Stage
from schemas.rejected import REJECTED_SCHEMA, reject
from schemas.strings import display_text, lone_surrogate
from shards.writer import HashingWriter, parquet_writer


def test_display_text_escapes_what_utf8_cannot_hold():
    assert display_text("plain é") == "plain é" and lone_surrogate("plain 😀") is None
    assert display_text(os.fsdecode(b"bad\xffname.jsonl")) == "bad\\xffname.jsonl"
    assert display_text("x-\ud83d") == "x-\\ud83d" and lone_surrogate("x-\ud83d") == 2
    assert display_text("x-\ud83d").encode("utf-8")


def test_rejected_rows_with_unclean_names_are_written():
    """Regression: a manifest file name that is not UTF-8 killed the run in the rejected writer."""
    name = os.fsdecode(b"odd/bad\xffname.jsonl")
    r = reject(Stage.INGEST, Reason.MALFORMED_JSON, name.split("/")[0], f"{name}:2",
               f"cannot parse {name}: \ud800", id="x-\udc00", payload=b"{broken")
    buf = io.BytesIO()
    parquet_writer([r.to_row()], REJECTED_SCHEMA, "zstd", 100)(HashingWriter(buf))
    (row,) = pq.read_table(io.BytesIO(buf.getvalue())).to_pylist()
    assert row["source_ref"] == "odd/bad\\xffname.jsonl:2" and row["id"] == "x-\\udc00"
    assert row["detail"].endswith("\\ud800") and row["payload"] == b"{broken"


def test_file_names_that_are_not_utf8_are_listed_escaped(tmp_path, cfg):
    from ingest.inputs import file_tasks
    from schemas.config import InputConfig

    folder = os.fsencode(tmp_path / "in")
    os.makedirs(folder + b"/sub\xfe")
    with open(folder + b"/sub\xfe/r\xff.jsonl", "wb") as f:
        f.write(b'{"text": "t"}\n')
    (task,) = file_tasks(InputConfig(path=str(tmp_path / "in"), source=None, format="auto"), cfg)
    assert task.relpath == "sub\\xfe/r\\xff.jsonl" and task.source == "sub\\xfe"
    assert os.path.exists(task.path) and task.size == 14 and task.root == str(tmp_path / "in")


def test_unread_input_is_never_balanced():
    t = Totals(input_rows=3, kept=2, rejected=1, rejected_by_reason={"ingest/unreadable_file": 1})
    assert t.rows_add_up and t.balanced
    t.unread_bytes, t.unread_files = 120, 1
    assert t.rows_add_up and not t.balanced
    m = Manifest(pipeline="curate", pipeline_version="v", config_name="c", config_hash="h", config={},
                 inputs=[], totals=t, shards={}, versions={})
    back = Manifest.from_json(m.to_json())
    assert back.totals.unread_bytes == 120 and '"balanced": false' in m.to_json()
    from pipelines.launch import summary

    text = summary(back, "out")
    assert "NO: input left unread" in text and "120" in text
