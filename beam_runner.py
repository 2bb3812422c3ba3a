"""Generic entry point: `python beam_runner.py PIPELINE [options]`, e.g.

    python beam_runner.py curate --input data/ --output out/ --runner=DataflowRunner ...

PIPELINE is a name from pipelines/registry.py; every other flag is the pipeline's own
(`--config`, `--input`, `--output`, `--set`) or a Beam pipeline option.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from pipelines.registry import PIPELINES

    if not argv or argv[0] in ("-h", "--help") or argv[0] not in PIPELINES:
        print(__doc__ + "\npipelines: " + ", ".join(sorted(PIPELINES)), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from pipelines.launch import main as launch

    return launch(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
