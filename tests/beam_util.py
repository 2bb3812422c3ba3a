"""Run a composite stage on in-memory inputs with the DirectRunner and read its outputs back.

Inputs and outputs cross the runner boundary as files (pickles), so the helper works
whatever process the runner executes bundles in; inputs are not put in a `beam.Create`,
which would pickle and bz2-compress them into the pipeline graph (slow for thousands of rows).
"""
from __future__ import annotations

import base64
import glob
import os
import pickle
import tempfile
from typing import Any, Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def _load(path: str):
    with open(path, "rb") as f:
        yield from pickle.load(f)


def _encode(x: Any) -> str:
    return base64.b64encode(pickle.dumps(x)).decode("ascii")


def run_collect(inputs: list, build: Callable[[Any], dict], options: list[str] | None = None) -> dict[str, list]:
    """build(pcoll) returns {name: PCollection}; the result maps each name to its elements,
    and "counters" to the pipeline's counters by name."""
    with tempfile.TemporaryDirectory() as tmp:
        shards = [inputs[i:i + 500] for i in range(0, len(inputs), 500)]
        paths = []
        for n, shard in enumerate(shards):
            paths.append(os.path.join(tmp, f"input-{n}.pkl"))
            with open(paths[-1], "wb") as f:
                pickle.dump(shard, f)
        p = beam.Pipeline(options=PipelineOptions(options or ["--direct_running_mode=in_memory"]))
        outs = build(p
                     | "Shards" >> beam.Create(paths, reshuffle=False)
                     | "Input" >> beam.FlatMap(_load))
        for name, pcoll in outs.items():
            (pcoll
             | f"Encode_{name}" >> beam.Map(_encode)
             | f"Write_{name}" >> beam.io.WriteToText(os.path.join(tmp, name), shard_name_template="-SSSSS"))
        run = p.run()
        run.wait_until_finish()
        result = {"counters": {c.key.metric.name: c.committed
                               for c in run.metrics().query()["counters"]}}
        for name in outs:
            items = []
            for path in sorted(glob.glob(os.path.join(tmp, name) + "-*")):
                with open(path, encoding="ascii") as f:
                    items.extend(pickle.loads(base64.b64decode(line)) for line in f if line.strip())
            result[name] = items
        return result


def stage_outputs(stage) -> Callable[[Any], dict]:
    """A builder for run_collect that applies a {KEPT, REJECTED} stage."""
    from pipelines.common import KEPT, REJECTED

    def build(pcoll):
        out = pcoll | "Stage" >> stage
        return {"kept": out[KEPT], "rejected": out[REJECTED]}

    return build
