"""Command line for every pipeline: recipe, inputs, output, and pass-through Beam options.

    python -m pipelines.build_mixture --config configs/demo.yaml --input DATA --output DIR \\
        [--set text.min_chars=5] [Beam options: --runner, --direct_num_workers, ...]

Flags this module does not know are handed to Beam unchanged, so the same command runs on
the DirectRunner, Dataflow, Flink or a portable job service.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import time
from typing import Callable, Optional, Sequence

from pipelines.manifest import write_manifest
from schemas.config import CONFIG_DIR, Config, ConfigError, InputConfig, load_config
from schemas.manifest import Manifest

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_RUNNERS = {"directrunner", "fnapirunner", "bundlebaseddirectrunner", "switchingdirectrunner"}
ENGINES = ("fnapi", "prism", "beam")
OUTPUT_PARTS = ("parquet", "wds", "rejected", "embeddings", "manifest.json", "shards.parquet", "report.html",
                "run.json", "partitions", "completions", "global")


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
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted partitioned run (output.partition_files > 0) in --output: "
                         "completed partitions are kept, a changed recipe is refused")
    ap.add_argument("--partitions_in_flight", type=int, default=1,
                    help="partitioned runs: how many partition pipelines run at once (Dataflow/Flink: jobs)")
    ap.add_argument("--engine", choices=ENGINES, default="fnapi",
                    help="which engine runs a local (DirectRunner) run: fnapi (default: Beam's FnApiRunner, the engine "
                         "the tests use), prism (Beam's Go runner, downloaded on first use) or beam (Beam's own "
                         "choice: Prism where it supports the pipeline and can be downloaded, else the FnApiRunner)")
    ap.add_argument("--progress_s", type=float, default=5.0,
                    help="local runs on a terminal: per-stage rows, rows/s and time left every N seconds "
                         "(0: off; always off when stderr is not a terminal or CI is set)")
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
        from pipelines.resume import delete_tree

        for part in existing:
            path = FileSystems.join(out_dir, part)
            if part.endswith((".json", ".parquet", ".html")):
                FileSystems.delete([path])
            else:
                delete_tree(path)
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)


def run(pipeline: str, builder: Callable, argv: Sequence[str]) -> Manifest:
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

    options = PipelineOptions(beam_argv)
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]
    # Local worker subprocesses must import this project even when it is not pip-installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, os.environ.get("PYTHONPATH")]))
    if runner.lower() in LOCAL_RUNNERS and progress.wanted(args.progress_s):
        from pipelines.resume import list_input_files

        progress.enable(args.progress_s, total_files=len(list_input_files(cfg)))

    started = time.time()
    # --engine decides what "DirectRunner" means; a runner named explicitly (FnApiRunner,
    # BundleBasedDirectRunner, PrismRunner, Dataflow, ...) is used as named. One runner object per
    # pipeline: partitions in flight do not share one.
    local = runner.lower() in ("directrunner", "switchingdirectrunner")
    engine_name = type(local_engine(args.engine, options)).__name__ if local else runner
    run_with = lambda b, run_cfg, run_dir: run_pipeline(b, run_cfg, run_dir, options,
                                                        local_engine(args.engine, options) if local else None)
    try:
        if cfg.output.partition_files > 0:
            from pipelines.resume import run_partitions, stderr_say

            if not args.resume:
                prepare_output(out_dir, args.overwrite or args.demo)
            # A pipeline with a global pass (build_mixture: the shares are chosen over the whole input)
            # runs its partition builder per partition, then that pass once over their output.
            part_builder, global_builder = getattr(builder, "partition", builder), getattr(builder, "global_pass", None)
            run_global = None if global_builder is None else (
                lambda all_cfg, global_dir, part_dirs: run_with(functools.partial(global_builder, partition_dirs=part_dirs),
                                                                all_cfg, global_dir))
            manifest = run_partitions(pipeline, cfg, out_dir, args.resume, functools.partial(run_with, part_builder),
                                      stderr_say, args.partitions_in_flight, global_pass=run_global)
        else:
            if args.resume:
                raise SystemExit("--resume needs a partitioned run: set output.partition_files > 0 "
                                 "(README, 'Resume')")
            prepare_output(out_dir, args.overwrite or args.demo)
            manifest = run_with(builder, cfg, out_dir)
    finally:
        if reasoner is not None:
            reasoner.stop()
    manifest.run = {"runner": runner, "engine": engine_name,
                    "wall_s": round(time.time() - started, 3), "beam_args": list(beam_argv),
                    "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_manifest(out_dir, manifest)
    try:
        from pipelines.report import write_report

        write_report(out_dir)
    except Exception as e:  # noqa: BLE001 - the data is written and accounted; a report bug must not fail the run
        print(f"report.html not written ({type(e).__name__}: {e}); "
              f"rerun `python -m pipelines.report {out_dir}`", file=sys.stderr)
    print(summary(manifest, out_dir), file=sys.stderr)
    return manifest


def local_engine(engine: str, options):
    """The runner object of a local run. Beam's DirectRunner tries to download and start Prism and
    falls back to the FnApiRunner when that fails, so without this the same command would run on
    different engines on machines with and without network."""
    if engine == "prism":
        from apache_beam.runners.portability.prism_runner import PrismRunner

        return PrismRunner()
    if engine == "beam":
        from apache_beam.runners.direct.direct_runner import DirectRunner

        return DirectRunner()
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def run_pipeline(builder: Callable, cfg: Config, out_dir: str, options, engine=None) -> Manifest:
    """One Beam pipeline into out_dir; its manifest with the run's Beam counters added."""
    import apache_beam as beam

    p = beam.Pipeline(runner=engine, options=options)
    builder(p, cfg, out_dir)
    result = p.run()
    state = result.wait_until_finish()
    if str(state).rsplit(".", 1)[-1] != "DONE":
        raise SystemExit(f"pipeline ended in state {state}")
    manifest = Manifest.load(out_dir)
    manifest.counters, manifest.distributions = beam_metrics(result)
    manifest.shuffles = shuffle_bytes(p, result)
    write_manifest(out_dir, manifest)
    return manifest


GBK_URN = "beam:transform:group_by_key:v1"
COMBINE_URN = "beam:transform:combine_per_key:v1"


def shuffle_bytes(p, result) -> dict[str, dict[str, int]]:
    """Elements and bytes into every shuffle (GroupByKey, Reshuffle, CoGroupByKey; not combines) of a run, from the
    runner's per-PCollection element counts and sampled encoded sizes (bytes = mean sampled size x
    elements). The FnApiRunner reports them; other runners show theirs in their own UI: {} here."""
    try:
        infos = result.monitoring_metrics().monitoring_infos()
    except Exception:  # noqa: BLE001 - not every runner has monitoring infos
        return {}
    transforms = p.to_runner_api().components.transforms
    lifted = {sub for t in transforms.values() if t.spec.urn == COMBINE_URN for sub in t.subtransforms}
    feeds: dict[str, str] = {}
    for tid, t in transforms.items():
        # a combine's GroupByKey moves accumulators (runners lift the combine), not its input: skipped
        if t.spec.urn == GBK_URN and len(t.inputs) == 1 and tid not in lifted:
            feeds[next(iter(t.inputs.values()))] = t.unique_name
    elements: dict[str, int] = {}
    mean_size: dict[str, float] = {}
    for mi in infos:
        name = feeds.get(mi.labels.get("PCOLLECTION", ""))
        if name is None:
            continue
        if mi.urn == "beam:metric:element_count:v1":
            from apache_beam.metrics.monitoring_infos import extract_counter_value

            elements[name] = elements.get(name, 0) + int(extract_counter_value(mi))
        elif mi.urn == "beam:metric:sampled_byte_size:v1":
            from apache_beam.metrics.monitoring_infos import extract_distribution

            count, total, _, _ = extract_distribution(mi)
            if count:
                mean_size[name] = total / count
    return {name: {"elements": n, "bytes": round(n * mean_size.get(name, 0.0))}
            for name, n in sorted(elements.items()) if n}


def beam_metrics(result) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    """Counters and distributions a run kept ("namespace:name", summed over steps); committed values
    where the runner has them, else attempted."""
    counters: dict[str, int] = {}
    dists: dict[str, dict[str, float]] = {}
    try:
        found = result.metrics().query()
    except Exception:  # noqa: BLE001 - a runner without metrics support must not fail a finished run
        return counters, dists
    for c in found.get("counters", []):
        key = f"{c.key.metric.namespace}:{c.key.metric.name}"
        value = c.committed if c.committed is not None else c.attempted
        counters[key] = counters.get(key, 0) + int(value or 0)
    for d in found.get("distributions", []):
        v = d.committed if d.committed is not None else d.attempted
        if v is None or not v.count:
            continue
        key = f"{d.key.metric.namespace}:{d.key.metric.name}"
        acc = dists.setdefault(key, {"count": 0, "sum": 0, "min": v.min, "max": v.max})
        acc["count"] += v.count
        acc["sum"] += v.sum
        acc["min"], acc["max"] = min(acc["min"], v.min), max(acc["max"], v.max)
    return dict(sorted(counters.items())), dict(sorted(dists.items()))


def summary(m: Manifest, out_dir: str) -> str:
    t = m.totals
    lines = [f"{m.pipeline} ({m.config_name}, config {m.config_hash}) on "
             f"{(m.run or {}).get('runner', '?')} in {(m.run or {}).get('wall_s', 0):.1f} s",
             f"  {'rows in':<18}{t.input_rows:>10,}",
             f"  {'kept':<18}{t.kept:>10,}   text tokens {t.text_tokens:,}, visual tokens {t.visual_tokens:,}",
             f"  {'rejected':<18}{t.rejected:>10,}"]
    for key, n in sorted(t.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"    {key:<36}{n:>10,}")
    for kind, info in m.summary().items():
        lines.append(f"  {kind + ' shards':<18}{info['shards']:>10,}   {info['bytes'] / 1e6:,.1f} MB")
    if m.derived is not None:
        d = m.derived
        lines.append(f"  {'derived rows':<18}{d.made:>10,}   kept {d.kept:,}, rejected {d.rejected:,}, "
                     f"replaced by variants {d.replaced:,} ({'balanced' if d.balanced else 'NOT balanced'})")
    unit = (m.mixture or {}).get("unit", "samples")
    for name, c in sorted(((m.mixture or {}).get("categories") or {}).items()):
        if c["missing"] or not c["target_weight"]:
            lines.append(f"    {name:<22}{'missing: no rows' if c['missing'] else 'no target'}")
            continue
        lines.append(f"    {name:<22}{c['achieved_samples']:>6,} samples {c['achieved_tokens']:>10,} tokens   "
                     f"share {c['achieved_share_' + unit]:.4f} of {unit} (target {c['target_share']:.4f}, "
                     f"{c['target_' + unit]:,.1f})")
    if t.unread_bytes or t.unread_files:
        lines.append(f"  {'unread input':<18}{t.unread_bytes:>10,}   bytes in {t.unread_files} file(s) no reader "
                     f"could delimit into rows (see rejected/)")
    state = ("yes" if t.balanced else "NO: input left unread" if t.rows_add_up and not t.pending
             else f"NO: {t.pending:,} rows pending" if t.rows_add_up else "NO")
    lines.append(f"  {'balanced':<18}{state:>10}   -> {out_dir}/manifest.json")
    return "\n".join(lines)


def main(pipeline: str, argv: Optional[Sequence[str]] = None) -> int:
    from pipelines.registry import builder

    run(pipeline, builder(pipeline), sys.argv[1:] if argv is None else argv)
    return 0
