"""A hostile-input corpus, generated (never committed): every way a third-party manifest has
been seen to crash a run, lose rows silently or read outside its folder, in every format.

`build(root)` writes `root/in/` (the input), `root/media/` (an allowed media root) and
`root/outside/` (a folder no recipe allows), and returns a `Plan`: the outcome each input row
must get, by source_ref. `None` means kept; a (stage, reason) pair means rejected. Files a
reader cannot read to the end are listed in `partial` with the refs that must come before
their `:rest` row (the rows in the unread part have no refs to expect: their bytes are
counted as unread instead).
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests import media_util as mu

BOM = b"\xef\xbb\xbf"
INGEST, VALIDATE, MEDIA = "ingest", "validate", "media"


@dataclass
class Plan:
    expect: dict[str, Optional[tuple[str, str]]] = field(default_factory=dict)
    partial: dict[str, int] = field(default_factory=dict)   # file relpath -> rows that precede its :rest row at least
    unread_files: set = field(default_factory=set)


def nested(depth: int, leaf="x") -> str:
    """JSON text of `depth` nested arrays (and one object level every 7) around leaf."""
    opens = "".join('{"k":' if i % 7 == 6 else "[" for i in range(depth))
    closes = "".join("}" if i % 7 == 6 else "]" for i in reversed(range(depth)))
    return f"{opens}{json.dumps(leaf)}{closes}"


class _Words:
    """Distinct sentences, so no row is a (near) duplicate of another."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def __call__(self, k: int = 8) -> str:
        self.n += 1
        return f"row {self.n} " + " ".join(f"w{self.rng.randrange(10**6)}" for _ in range(k))


def _png(seed: int) -> bytes:
    tex = np.clip(128 + mu.texture(48, 64, seed), 0, 255).astype(np.uint8)
    return mu.image_bytes(np.repeat(tex[..., None], 3, axis=2))


def _tar(members: list[tuple[bytes, bytes]]) -> bytes:
    """A tar of (raw name bytes, data): names need not be valid UTF-8."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _corrupt_mid_stream(gz: bytes) -> bytes:
    """gz with 64 bytes overwritten half-way, by a pattern zlib rejects there (not just a CRC error
    at the end), so the reader stops with the second half of the file unread."""
    mid = len(gz) // 2
    for seed in range(200):
        blob = gz[:mid] + random.Random(seed).randbytes(64) + gz[mid + 64:]
        try:
            gzip.decompress(blob)
        except zlib.error:
            return blob
        except (OSError, EOFError):
            continue
    raise AssertionError("no corruption pattern found")


def build(root) -> Plan:
    inp, media, outside = root / "in", root / "media", root / "outside"
    for d in (inp, media, outside):
        d.mkdir()
    plan, words = Plan(), _Words()
    (media / "ok.png").write_bytes(_png(1))
    (media / "new\nline.png").write_bytes(_png(2))      # a name with a newline is still a name
    (outside / "secret.png").write_bytes(_png(3))
    (media / "escape.png").symlink_to(outside / "secret.png")
    (media / "inside_link.png").symlink_to(media / "ok.png")
    (media / "null.png").symlink_to("/dev/null")
    os.mkfifo(media / "fifo.png")
    (media / "folder.png").mkdir()

    def jsonl(name: str, rows: list, opener=None, prefix: bytes = b"") -> None:
        """rows: (raw line bytes or a JSON value, expected outcome)."""
        lines = []
        for i, (row, outcome) in enumerate(rows, 1):
            lines.append(row if isinstance(row, bytes) else json.dumps(row).encode())
            plan.expect[f"{name}:{i}"] = outcome
        data = prefix + b"\n".join(lines) + b"\n"
        (inp / name).write_bytes(opener(data) if opener else data)

    ok = lambda: {"text": words()}           # noqa: E731 - a kept text row
    m = "../media/"
    # --- strings that no UTF-8 writer can hold, anywhere in the row --------------------------
    surrogates = [
        (b'{"id": "x-\\ud83d", "text": "a b c d"}', (INGEST, "invalid_unicode")),
        (b'{"text": "lone \\udc00 surrogate"}', (INGEST, "invalid_unicode")),
        (b'{"text": "fine words", "meta": {"k\\udfff": 1}}', (INGEST, "invalid_unicode")),
        (b'{"image": "../media/ok\\ud800.png", "caption": "c"}', (INGEST, "invalid_unicode")),
        (b'{"text": "paired \\ud83d\\ude00 emoji is fine"}', None),
        (b'{"text": "cesu \xed\xa0\xbd bytes"}', (INGEST, "invalid_utf8")),
        (b'{"text": "overlong \xc0\xaf"}', (INGEST, "invalid_utf8")),
        ('{"text": "noncharacters \ufffe\uffff and \u2028 separators are text"}'.encode(), None),
    ]
    # --- nesting: read-or-not keys, below and above the parser's own limit --------------------
    deep = [
        (('{"text": "%s", "unread": %s}' % (words(), nested(40))).encode(), (INGEST, "too_deeply_nested")),
        (('{"text": "%s", "unread": %s}' % (words(), nested(700))).encode(), (INGEST, "too_deeply_nested")),
        (('{"text": "%s", "unread": %s}' % (words(), nested(1500))).encode(), (INGEST, "too_deeply_nested")),
        (nested(5000).encode(), (INGEST, "too_deeply_nested")),
        (ok(), None),                                               # reading goes on after them
    ]
    # --- types and numbers --------------------------------------------------------------------
    types = [
        ({"id": True, "text": words()}, (VALIDATE, "wrong_type")),
        ({"id": False, "text": words()}, (VALIDATE, "wrong_type")),
        ({"id": 1.5, "text": words()}, (VALIDATE, "wrong_type")),
        (('{"id": 1e400, "text": "%s"}' % words()).encode(), (VALIDATE, "wrong_type")),   # inf
        (('{"id": NaN, "text": "%s"}' % words()).encode(), (VALIDATE, "wrong_type")),
        (('{"id": %s, "text": "%s"}' % ("9" * 4000, words())).encode(), None),        # a huge integer id
        (('{"id": %s, "text": "%s"}' % ("9" * 5000, words())).encode(), (INGEST, "malformed_json")),
        (('{"text": "%s", "score": Infinity, "p": -Infinity, "q": NaN}' % words()).encode(), None),
        (('{"text": "first", "text": "%s"}' % words()).encode(), None),             # duplicate keys: last wins
        ({"text": words(), "task": True}, (VALIDATE, "wrong_type")),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, (VALIDATE, "wrong_type")),
    ]
    # --- media references from an untrusted manifest -------------------------------------------
    refs = [
        ({"image": m + "ok.png", "caption": words()}, None),
        ({"image": m + "inside_link.png", "caption": words()}, None),               # a link inside the root
        ({"image": m + "new\nline.png", "caption": words()}, None),
        ({"image": "../outside/secret.png", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": m + "../outside/secret.png", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": m + "escape.png", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": m + "null.png", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "/etc/passwd", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "file:///etc/passwd", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "file://localhost/etc/hostname", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "/proc/self/environ", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"video": "/dev/zero", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "../../../../../../../../etc/shadow", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "gs://someone-elses-bucket/a.png", "caption": words()}, (VALIDATE, "media_outside_root")),
        ({"image": "file://otherhost/etc/passwd", "caption": words()}, (VALIDATE, "unsupported_uri")),
        ({"image": m + "ok\u0000.png", "caption": words()}, (VALIDATE, "unsupported_uri")),
        ({"image": m + "fifo.png", "caption": words()}, (MEDIA, "not_a_regular_file")),
        ({"image": m + "folder.png", "caption": words()}, (MEDIA, "not_a_regular_file")),
    ]
    jsonl("strings.jsonl", surrogates, prefix=BOM)                         # and a BOM before row 1
    jsonl("deep.jsonl", deep)
    jsonl("types.jsonl", types)
    jsonl("refs.jsonl", refs)
    # --- a BOM in every format, and compressed ---------------------------------------------------
    jsonl("bom.jsonl.gz", [(ok(), None), (ok(), None)], opener=_gz, prefix=BOM)
    jsonl("bom.jsonl.bz2", [(ok(), None)], opener=bz2.compress, prefix=BOM)
    jsonl("bom.jsonl.xz", [(ok(), None), (b'{"t": "\\udc80"}', (INGEST, "invalid_unicode"))], opener=lzma.compress,
          prefix=BOM)
    jsonl("deep.jsonl.gz", [(ok(), None), (nested(3000).encode(), (INGEST, "too_deeply_nested")), (ok(), None)],
          opener=_gz)
    (inp / "only_bom.jsonl").write_bytes(BOM)                               # holds no rows
    for name, opener in (("bom.json", None), ("bom.json.gz", _gz)):
        llava = [{"id": f"l{i}", "conversations": [{"from": "human", "value": words()},
                                                    {"from": "gpt", "value": words()}]} for i in range(3)]
        data = BOM + json.dumps(llava).encode()
        (inp / name).write_bytes(opener(data) if opener else data)
        plan.expect.update({f"{name}:{i}": None for i in range(3)})
    # a LLaVA list with one element too deep for the parser and one with a lone surrogate
    text = "[" + ", ".join([json.dumps({"text": words()}),
                            '{"text": "x", "deep": %s}' % nested(2000, leaf="a \\\" ] } [ {"),
                            '{"text": "\\ud800"}', json.dumps({"text": words()})]) + "]"
    (inp / "deep.json").write_text(text)
    plan.expect.update({"deep.json:0": None, "deep.json:1": (INGEST, "too_deeply_nested"),
                        "deep.json:2": (INGEST, "invalid_unicode"), "deep.json:3": None})
    # a bracketed element that is not JSON costs one row; a last element cut off by the end of the file too
    (inp / "bad_element.json").write_text("[%s, {\"text\": oops [1, 2]}, %s, {\"text\": \"cut" % (
        json.dumps({"text": words()}), json.dumps({"text": words()})))
    plan.expect.update({"bad_element.json:0": None, "bad_element.json:1": (INGEST, "malformed_json"),
                        "bad_element.json:2": None, "bad_element.json:3": (INGEST, "malformed_json")})
    # garbage between elements: what follows cannot be delimited and is counted as unread
    (inp / "garbage.json").write_text("[%s, %s oops %s]" % (json.dumps({"text": words()}),
                                                            json.dumps({"text": words()}), json.dumps({"text": "x"})))
    plan.expect.update({"garbage.json:0": None, "garbage.json:1": None, "garbage.json:2": (INGEST, "malformed_json")})
    plan.unread_files.add("garbage.json")
    # --- Parquet: nesting in a column, NaN, huge numbers --------------------------------------------
    v = "leaf"
    for _ in range(40):
        v = [v]
    pq.write_table(pa.table({"text": [words()], "meta": [v]}), inp / "deep.parquet")
    plan.expect["deep.parquet:0"] = (INGEST, "too_deeply_nested")
    pq.write_table(pa.table({"text": [words(), words()], "score": [float("nan"), float("inf")],
                             "id": [2**63 - 1, -(2**63)]}), inp / "numbers.parquet")
    plan.expect.update({"numbers.parquet:0": None, "numbers.parquet:1": None})
    # --- WebDataset: BOMs, deep / surrogate metadata, odd member names, a cut archive ---------------
    png = _png(4)
    members = [
        (b"a.png", png), (b"a.txt", BOM + words().encode()),
        (b"b.png", _png(5)), (b"b.json", BOM + json.dumps({"caption": words()}).encode()),
        (b"c.png", _png(6)), (b"c.json", ('{"caption": "x", "m": %s}' % nested(1200)).encode()),
        (b"d.png", _png(7)), (b"d.json", b'{"caption": "\\udbff"}'),
        (b"e\xffz.png", _png(8)), (b"e\xffz.txt", words().encode()),             # not UTF-8
        (b"f\nline.png", _png(9)), (b"f\nline.txt", words().encode()),
    ]
    (inp / "shards.tar").write_bytes(_tar(members))
    plan.expect.update({"shards.tar#a": None, "shards.tar#b": None, "shards.tar#c": (INGEST, "too_deeply_nested"),
                        "shards.tar#d": (INGEST, "invalid_unicode"), "shards.tar#e\\xffz": None,
                        "shards.tar#f\nline": None})
    cut = _tar([(b"g.png", _png(10)), (b"g.txt", words().encode()), (b"h.png", b"Q" * 4000), (b"h.txt", b"lost")])
    (inp / "cut.tar").write_bytes(cut[:cut.index(b"Q" * 4000) + 2000])     # ends inside h.png
    plan.expect.update({"cut.tar#g": None, "cut.tar#h": (INGEST, "truncated_archive")})
    # --- file names that are not valid UTF-8, or hold a newline -----------------------------------
    os.makedirs(os.fsencode(inp / "odd"), exist_ok=True)
    with open(os.fsencode(inp / "odd") + b"/bad\xffname.jsonl", "wb") as f:
        f.write(json.dumps({"text": words()}).encode() + b"\n" + b"{broken\n")
    plan.expect.update({"odd/bad\\xffname.jsonl:1": None, "odd/bad\\xffname.jsonl:2": (INGEST, "malformed_json")})
    (inp / "odd" / "new\nline.jsonl").write_text(json.dumps({"text": words()}) + "\n")
    plan.expect["odd/new\nline.jsonl:1"] = None
    odd_dir = os.fsencode(inp / "odd") + b"/dir\xfe"                  # media beside a manifest in such a folder
    os.makedirs(odd_dir)
    with open(odd_dir + b"/img.png", "wb") as f:
        f.write(_png(11))
    with open(odd_dir + b"/rows.jsonl", "wb") as f:
        f.write(json.dumps({"image": "img.png", "caption": words()}).encode() + b"\n")
    plan.expect["odd/dir\\xfe/rows.jsonl:1"] = None
    # --- a gzip corrupted mid-stream: rows before it stand, the rest is counted as unread ------------
    # (rows the validate step rejects, missing_field: cheap; the file must span many 8 KiB steps)
    many = b"".join(json.dumps({"url": words()}).encode() + b"\n" for _ in range(2000))
    (inp / "corrupt.jsonl.gz").write_bytes(_corrupt_mid_stream(_gz(many)))
    plan.partial["corrupt.jsonl.gz"] = 1
    plan.unread_files.add("corrupt.jsonl.gz")
    # manifests that are no regular file, or lead into /proc: never opened
    os.mkfifo(inp / "pipe.jsonl")
    (inp / "env.jsonl").symlink_to("/proc/self/environ")
    plan.expect.update({"pipe.jsonl": (INGEST, "unreadable_file"), "env.jsonl": (INGEST, "unreadable_file")})
    plan.unread_files |= {"pipe.jsonl", "env.jsonl"}
    (inp / "not_parquet.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    plan.expect["not_parquet.parquet"] = (INGEST, "malformed_parquet")
    plan.unread_files.add("not_parquet.parquet")
    return plan
