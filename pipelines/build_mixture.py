"""`python -m pipelines.build_mixture`: Keye-VL's Phase II cold-start mixture from raw sources.

    ingest -> the curation stages (pipelines/curate.py) -> Mixture (pipelines/mixture.py: mode
    builders, video variants at 16 and 32 frames, quality gates, shares) -> write

Every kept row is a `task: cold_start` sample with its `mode`; the manifest balances input rows
(`input == kept + rejected`, an input row being kept when one of its derived rows is), balances
derived rows (`derived.made == kept + rejected`), and reports target and achieved shares per
category (`mixture`). `python -m pipelines.export --format swift|llava OUT_DIR` turns the
output into trainer layouts.

A partitioned (resumable) run, `output.partition_files > 0`, mixes once over the whole input, not
per partition: the shares are targets for the mixture, and input files are often one source each
(a partition of video files alone would otherwise be a mixture of video alone). Two passes:

    each partition (one pipeline, pipelines/resume.py):
        ingest -> curation -> Prepare (builders, variants, gates)
            -> rejected/ : curation rejections, no_mode             (final: never revisited)
            -> staged/   : candidates, derived rejections so far,   (Avro records of pickled
                           ids of rows that entered, made counts      values; nothing chosen yet;
                                                                      deleted once the global pass
                                                                      is committed)
            -> manifest.json: input == kept (0) + rejected + pending (rows that entered the mixture)
    the global pass (one pipeline, after every partition's marker):
        staged/ of every partition -> Finish (Mix: histogram combiner, quotas, exact cutoff;
            Upsample; Settle by input id) -> DIR/global/{parquet, wds, rejected, manifest.json}
            (input rows here: the pending rows; the derived and mixture blocks of the whole run)

What one worker holds is what the one-pass Mixture's workers hold (a row; a category's rank
histogram; one cutoff bin's (rank, id, weight); one input row's derived ids). With no duplicates
across partitions the global pass keeps exactly the rows a one-pass run keeps (tested).
"""
from __future__ import annotations

import pickle
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import KEPT, REJECTED
from pipelines.curate import curate, write_outputs
from pipelines.manifest import Fanout
from pipelines.mixture import (CANDIDATES, DERIVED_REJECTED, ENTERED, INPUT_REJECTED, KEPT_INPUTS, MADE, SHARES, Finish,
                               HandedOn, Mixture, Prepare)
from pipelines.resume import STAGED_DIR

STAGED_KINDS = (CANDIDATES, DERIVED_REJECTED, ENTERED, MADE)
STAGED_SCHEMA = {"type": "record", "name": "Staged", "namespace": "keye.mixture",
                 "fields": [{"name": "kind", "type": "string"}, {"name": "value", "type": "bytes"}]}


def build_mixture(p, cfg, out_dir, pipeline_name: str = "build_mixture"):
    raw, curated, curation_rejected = curate(p, cfg)
    mixed = curated | "Mixture" >> Mixture(cfg)
    rejected = (curation_rejected, mixed[REJECTED]) | "AllRejected" >> beam.Flatten()
    fanout = Fanout(kept_inputs=mixed[KEPT_INPUTS], made=mixed[MADE], shares=mixed[SHARES])
    return write_outputs(raw, mixed[KEPT], rejected, cfg, out_dir, pipeline_name, fanout=fanout)


def build_partition(p, cfg, out_dir, pipeline_name: str = "build_mixture"):
    """One partition of a partitioned run: curation and the mixture up to the shares. Final
    rejections are written; what the global pass needs is staged under `out_dir/staged/`."""
    raw, curated, curation_rejected = curate(p, cfg)
    prepared = curated | "Mixture" >> Prepare(cfg)
    _ = {k: prepared[k] for k in STAGED_KINDS} | "Stage" >> WriteStaged(FileSystems.join(out_dir, STAGED_DIR, "part"))
    rejected = (curation_rejected, prepared[INPUT_REJECTED]) | "AllRejected" >> beam.Flatten()
    nothing_kept = p | "NothingKeptYet" >> beam.Create([])
    return write_outputs(raw, nothing_kept, rejected, cfg, out_dir, pipeline_name, pending=prepared[ENTERED])


def build_global(p, cfg, out_dir, partition_dirs, pipeline_name: str = "build_mixture"):
    """The global pass of a partitioned run: the shares over every partition's staged candidates."""
    patterns = [FileSystems.join(d, STAGED_DIR, "part-*.avro") for d in partition_dirs]
    missing = [pattern for pattern, found in zip(patterns, FileSystems.match(patterns)) if not found.metadata_list]
    if missing:     # every partition stages at least one file, even with nothing to hand on
        raise RuntimeError(f"{len(missing)} partitions have no staged rows for the global pass: {missing[:3]}")
    staged = p | "ReadStaged" >> ReadStaged(patterns)
    out = staged | "Mixture" >> Finish(cfg)
    handed_on = staged[ENTERED] | "HandedOn" >> beam.Map(HandedOn)
    fanout = Fanout(kept_inputs=out[KEPT_INPUTS], made=out[MADE], shares=out[SHARES])
    return write_outputs(handed_on, out[KEPT], out[REJECTED], cfg, out_dir, pipeline_name, fanout=fanout)


# A partitioned run of this pipeline: partitions stop before the shares, one global pass mixes
# (pipelines/launch.py and pipelines/resume.py read these).
build_mixture.partition = build_partition
build_mixture.global_pass = build_global


class WriteStaged(beam.PTransform):
    """{kind: PCollection} -> Avro files `<prefix>-*.avro` of (kind, pickled value) records. Beam writes
    them under temporary names and renames them when the pipeline finishes; the partition's
    completion marker, written after that, is what makes them count. They are the run's own
    intermediate files (read back only by its global pass), not an interchange format."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def expand(self, pcolls):
        from apache_beam.io.avroio import WriteToAvro

        records = [pcoll | f"Encode{kind.title().replace('_', '')}" >> beam.Map(
                       lambda v, k=kind: {"kind": k, "value": pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)})
                   for kind, pcoll in sorted(pcolls.items())]
        return (tuple(records)
                | "AllStaged" >> beam.Flatten()
                | "Write" >> WriteToAvro(self.prefix, schema=STAGED_SCHEMA, codec="null", file_name_suffix=".avro"))


class ReadStaged(beam.PTransform):
    """File patterns -> {kind: PCollection} of the values WriteStaged wrote."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = patterns

    def expand(self, pbegin):
        from apache_beam.io.avroio import ReadAllFromAvro

        records = (pbegin
                   | "Patterns" >> beam.Create(self.patterns)
                   | "Read" >> ReadAllFromAvro()
                   | "ByKind" >> beam.Partition(lambda r, _: STAGED_KINDS.index(r["kind"]), len(STAGED_KINDS)))
        return {kind: records[i] | f"Decode{kind.title().replace('_', '')}" >> beam.Map(lambda r: pickle.loads(r["value"]))
                for i, kind in enumerate(STAGED_KINDS)}


if __name__ == "__main__":
    from pipelines.launch import main

    sys.exit(main("build_mixture"))
