"""`python -m pipelines.make_sample --output DIR [--seed N] [--scale K] [--video-scale V] | [--primer-clips N]`:
write the synthetic corpus (or, with --primer-clips, a curriculum's first one: one-shape motion clips).

The corpus (synthetic/corpus.py) is the input every stage is tested and demonstrated on:
run a pipeline with `--input DIR/manifests` and compare its output with DIR/truth.jsonl.
Prints the summary counts as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from synthetic.corpus import generate, generate_primer


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.make_sample", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="folder to write the corpus into")
    ap.add_argument("--seed", type=int, default=0, help="RNG seed (same seed, same bytes)")
    ap.add_argument("--scale", type=int, default=1, help="multiplies the number of ordinary rows")
    ap.add_argument("--video-scale", type=int, default=None,
                    help="multiplies the caption and QA videos alone (default: --scale)")
    ap.add_argument("--primer-clips", type=int, default=None,
                    help="instead: only this many one-shape motion clips with correct captions (trainer.evidence's "
                         "curriculum) and the benchmark")
    args = ap.parse_args(argv)
    if args.scale < 1 or (args.video_scale is not None and args.video_scale < 1):
        ap.error("--scale and --video-scale must be at least 1")
    if args.primer_clips is not None:
        if args.primer_clips < 1:
            ap.error("--primer-clips must be at least 1")
        summary = generate_primer(args.output, seed=args.seed, clips=args.primer_clips)
    else:
        summary = generate(args.output, seed=args.seed, scale=args.scale, video_scale=args.video_scale)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
