"""`python -m bench.ingest`: what the readers' safety checks cost.

Every parsed row is walked once (`payload_problem`: nesting depth and lone surrogates) and
compressed files are fed to their decompressor in 8 KiB steps (so rows before a corrupt
block survive). This reads the same JSONL corpus (own-layout rows with an image and a few
turns, plain and gzip) with and without those, in the same run, and reports the ratios.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import tempfile

from bench.common import best_of, emit, ratio


def corpus_lines(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(10**5)}" for _ in range(k))

    rows = []
    for i in range(n):
        rows.append({"id": f"r{i}", "task": "vqa", "meta": {"source": "bench", "tags": [words(2), words(2)]},
                     "messages": [{"role": "user", "content": [{"type": "image", "image": f"img/{i}.jpg"},
                                                               {"type": "text", "text": words(20)}]},
                                  {"role": "assistant", "content": words(60)},
                                  {"role": "user", "content": words(15)},
                                  {"role": "assistant", "content": words(40), "reasoning": words(40)}]})
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def read_all(path: str) -> int:
    from ingest.readers import FileTask, detect_format, read_file

    task = FileTask(path=path, relpath=os.path.basename(path), source="bench", format=detect_format(path),
                    base_dir=os.path.dirname(path), max_row_bytes=1 << 22, max_payload_bytes=1 << 16,
                    max_media_bytes=1 << 30)
    return sum(1 for r in read_file(task) if r.error is None)


def main() -> None:
    import ingest.files as files

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = corpus_lines(args.rows)
    results = {"rows": args.rows, "bytes": len(data)}
    with tempfile.TemporaryDirectory() as d:
        plain, packed = os.path.join(d, "rows.jsonl"), os.path.join(d, "rows.jsonl.gz")
        with open(plain, "wb") as f:
            f.write(data)
        with open(packed, "wb") as f:
            f.write(gzip.compress(data, mtime=0))
        checked = {name: best_of(lambda p=p: read_all(p), args.repeat) for name, p in
                   (("jsonl", plain), ("jsonl_gz", packed))}
        check, step = files.payload_problem, files.COMPRESSED_STEP
        files.payload_problem = lambda *args: None      # the baseline: no walk, large reads
        files.COMPRESSED_STEP = 1 << 20
        try:
            unchecked = {name: best_of(lambda p=p: read_all(p), args.repeat) for name, p in
                         (("jsonl", plain), ("jsonl_gz", packed))}
        finally:
            files.payload_problem, files.COMPRESSED_STEP = check, step
    for name in checked:
        (t_on, n_on), (t_off, n_off) = checked[name], unchecked[name]
        assert n_on == n_off == args.rows, (n_on, n_off)
        results[name] = {"checked_s": round(t_on, 3), "baseline_s": round(t_off, 3),
                         "rows_per_s_checked": round(args.rows / t_on), "overhead_ratio": ratio(t_on, t_off)}
    emit("ingest", results)


if __name__ == "__main__":
    main()
