"""`python -m bench.generation`: the mode builders over HTTP against the synthetic reasoner.

Builds the synthetic corpus (scale 1), serves the reasoner on loopback, and runs every image builder
over the corpus's image QA rows (qa.jsonl, agentic.jsonl; validated, not curated): outcome counts per
mode (kept, and each rejection reason), the mean pass rate and path score of kept thinking rows, and
the thinking builder's rows/s with `generator.openai.concurrency` 1 against 8, measured in the same run
(the ratio is what the client's concurrency buys against one server; a vLLM server batches far more).
The reasoner is a test double: absolute speeds say nothing about a real model.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time

from bench.common import emit, ratio
from mixture.builders import make_builders
from mixture.reasoner import server
from schemas.config import load_config
from schemas.input import RowContext, normalize_row
from synthetic.corpus import generate


def corpus_rows(root: str) -> list:
    rows = []
    for name in ("qa.jsonl", "agentic.jsonl"):
        with open(os.path.join(root, "manifests", name), encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                ctx = RowContext(source=name[:-6], source_ref=f"{name}:{i}", base_dir=os.path.join(root, "manifests"),
                                 max_field_chars=10**6, max_media_per_row=8, max_messages=16)
                s = normalize_row(json.loads(line), ctx)
                if not hasattr(s, "reason"):
                    rows.append(s)
    return rows


def run(builder, rows) -> tuple[float, collections.Counter, list]:
    builder.setup()
    t0 = time.perf_counter()
    outcomes, kept = collections.Counter(), []
    for s in rows:
        if not builder.wants(s):
            continue
        out = builder(s)
        if isinstance(out, list):
            outcomes["kept"] += 1
            kept.extend(out)
        else:
            outcomes[out.reason] += 1
    return time.perf_counter() - t0, outcomes, kept


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="bench_generation_")
    generate(tmp, seed=0, scale=1)
    rows = corpus_rows(tmp)
    report: dict = {"rows": len(rows), "modes": {}}
    with server(tmp) as s:
        base = [f"mixture.builders.generator.openai.base_url={s.base_url}",
                "mixture.builders.generator.openai.model=synthetic-reasoner"]
        cfg = load_config(None, base)
        try:
            from mixture.sandbox import Sandbox

            Sandbox.check()
            sandbox = None
        except Exception as e:  # noqa: BLE001 - no isolation here: think-with-image is left out, said so
            report["think_with_image"] = f"skipped: {e}"
            sandbox = False
        for b in make_builders(cfg):
            if b.category.startswith("video") or (b.category == "think_with_image" and sandbox is False):
                continue
            wall, outcomes, kept = run(b, rows)
            entry = {"wall_s": round(wall, 2), "outcomes": dict(sorted(outcomes.items()))}
            generated = [r for r in kept if "gen_path_score" in r.scores]     # not the rows that came with a trace
            if generated:
                entry["kept_generated"] = len(generated)
                for score in ("gen_pass_rate", "gen_path_score"):
                    entry[f"kept_mean_{score}"] = round(sum(r.scores[score] for r in generated) / len(generated), 3)
            report["modes"][b.category] = entry
        speed = {}
        for conc in (1, 8):
            c = load_config(None, base + [f"mixture.builders.generator.openai.concurrency={conc}",
                                          "mixture.builders.thinking.generate=true"])
            thinking = next(b for b in make_builders(c) if b.category == "thinking")
            wall, _, _ = run(thinking, rows)
            speed[conc] = sum(thinking.wants(r) for r in rows) / wall
        report["thinking_rows_per_s"] = {"concurrency_1": round(speed[1], 2), "concurrency_8": round(speed[8], 2),
                                         "ratio_8_over_1": ratio(speed[8], speed[1])}
    emit("generation", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
