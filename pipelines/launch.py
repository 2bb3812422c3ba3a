"""Command line for every pipeline: recipe, inputs, output, and pass-through Beam options.

    python -m pipelines.build_mixture --config configs/demo.yaml --input DATA --output DIR \\
        [--set text.min_chars=5] [Beam options: --runner, --direct_num_workers, ...]

Flags this module does not know are handed to Beam unchanged, so the same command runs on
the DirectRunner, Dataflow, Flink or a portable job service.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Callable, Optional, Sequence

from schemas.config import CONFIG_DIR, Config, ConfigError, InputConfig, load_config
from schemas.manifest import Manifest

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_RUNNERS = {"directrunner", "fnapirunner", "bundlebaseddirectrunner", "switchingdirectrunner"}
OUTPUT_PARTS = ("parquet", "wds", "rejected", "embeddings", "manifest.json", "export")


def parse_args(pipeline: str, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(prog=f"python -m pipelines.{pipeline}", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML recipe (default configs/base.yaml; with --demo configs/demo.yaml)")
    ap.add_argument("--input", action="append", default=[], metavar="[SOURCE=]PATH",
                    help="manifest file, folder or glob (repeatable); any Beam FileSystems scheme")
    ap.add_argument("--output", required=True, help="output folder (local path or gs://...)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="override one recipe key, e.g. --set output.shard_max_rows=500")
    ap.add_argument("--demo", action="store_true",
                    help="without --input: build the synthetic sample corpus and run on it")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ap.add_argument("--progress_s", type=float, default=5.0,
                    help="local runs: print per-stage counts every N seconds (0: off)")
    return ap.parse_known_args(list(argv))


def parse_input(text: str) -> InputConfig:
    source, path = (text.split("=", 1) if "=" in text.split("/", 1)[0] else (None, text))
    return InputConfig(path=path, source=source, format="auto")


def with_generator(cfg: Config, base_url: str, model: str) -> Config:
    """The recipe with the mixture's generator pointed at an OpenAI-compatible endpoint."""
    import dataclasses

    b = cfg.mixture.builders
    openai = dataclasses.replace(b.generator.openai, base_url=base_url, model=model)
    builders = dataclasses.replace(b, generator=dataclasses.replace(b.generator, openai=openai))
    return dataclasses.replace(cfg, mixture=dataclasses.replace(cfg.mixture, builders=builders))


def prepare_output(out_dir: str, overwrite: bool) -> None:
    from apache_beam.io.filesystems import FileSystems

    existing = [p for p in OUTPUT_PARTS if FileSystems.exists(FileSystems.join(out_dir, p))]
    if existing and not overwrite:
        raise SystemExit(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace it")
    if existing:
        FileSystems.delete([FileSystems.join(out_dir, p) for p in existing])
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)


def run(pipeline: str, builder: Callable, argv: Sequence[str]) -> Manifest:
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from pipelines import progress
    from ingest.inputs import check_inputs

    args, beam_argv = parse_args(pipeline, argv)
    config_path = args.config or (os.path.join(CONFIG_DIR, "demo.yaml") if args.demo else None)
    try:
        cfg: Config = load_config(config_path, args.overrides)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    out_dir = args.output.rstrip("/")
    inputs = [parse_input(i) for i in args.input] or list(cfg.inputs)
    reasoner = None
    if not inputs and args.demo:
        from synthetic.corpus import corpus_recipe, generate

        # Generated under the output folder; the shards do not depend on where that is
        # (uris are relative to the input root, the recipe hash leaves locations out).
        sample_dir = os.path.join(out_dir, "sample_input")
        generate(sample_dir)
        cfg = corpus_recipe(cfg, sample_dir)
        if pipeline == "build_mixture" and cfg.mixture.builders.generator.backend == "openai":
            # No capable model runs here: the mixture's generator is the synthetic reasoner (a test
            # double that knows this corpus, mixture/reasoner.py), served on a free loopback port.
            from mixture.reasoner import server

            reasoner = server(sample_dir).start()
            cfg = with_generator(cfg, reasoner.base_url, reasoner.model_name)
            print(f"demo: synthetic reasoner (a test double, not a model) at {reasoner.base_url}", file=sys.stderr)
    else:
        cfg = cfg.with_inputs(inputs)
    check_inputs(cfg.inputs)
    prepare_output(out_dir, args.overwrite or args.demo)

    options = PipelineOptions(beam_argv)
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]
    # Local worker subprocesses must import this project even when it is not pip-installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, os.environ.get("PYTHONPATH")]))
    if args.progress_s > 0 and runner.lower() in LOCAL_RUNNERS:
        progress.enable(args.progress_s)

    started = time.time()
    try:
        p = beam.Pipeline(options=options)
        builder(p, cfg, out_dir)
        result = p.run()
        state = result.wait_until_finish()
    finally:
        if reasoner is not None:
            reasoner.stop()
    wall = time.time() - started
    if str(state).rsplit(".", 1)[-1] != "DONE":
        raise SystemExit(f"pipeline ended in state {state}")

    manifest_path = FileSystems.join(out_dir, "manifest.json")
    with FileSystems.open(manifest_path) as f:
        manifest = Manifest.from_json(f.read().decode("utf-8"))
    manifest.run = {"runner": runner, "wall_s": round(wall, 3), "beam_args": list(beam_argv),
                    "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with FileSystems.create(manifest_path) as f:
        f.write(manifest.to_json().encode("utf-8"))
    print(summary(manifest, out_dir), file=sys.stderr)
    return manifest


def summary(m: Manifest, out_dir: str) -> str:
    t = m.totals
    lines = [f"{m.pipeline} ({m.config_name}, config {m.config_hash}) on "
             f"{(m.run or {}).get('runner', '?')} in {(m.run or {}).get('wall_s', 0):.1f} s",
             f"  {'rows in':<18}{t.input_rows:>10,}",
             f"  {'kept':<18}{t.kept:>10,}   text tokens {t.text_tokens:,}, visual tokens {t.visual_tokens:,}",
             f"  {'rejected':<18}{t.rejected:>10,}"]
    for key, n in sorted(t.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"    {key:<36}{n:>10,}")
    for kind, shards in sorted(m.shards.items()):
        size = sum(s.bytes for s in shards)
        lines.append(f"  {kind + ' shards':<18}{len(shards):>10,}   {size / 1e6:,.1f} MB")
    if t.unread_bytes or t.unread_files:
        lines.append(f"  {'unread input':<18}{t.unread_bytes:>10,}   bytes in {t.unread_files} file(s) no reader "
                     f"could delimit into rows (see rejected/)")
    state = "yes" if t.balanced else ("NO: input left unread" if t.rows_add_up else "NO")
    lines.append(f"  {'balanced':<18}{state:>10}   -> {out_dir}/manifest.json")
    return "\n".join(lines)


def main(pipeline: str, argv: Optional[Sequence[str]] = None) -> int:
    from pipelines.registry import builder

    run(pipeline, builder(pipeline), sys.argv[1:] if argv is None else argv)
    return 0
