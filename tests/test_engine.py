"""The local engine is chosen by the launcher, not by whether Prism can be downloaded."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.launch import local_engine, parse_args


def test_engine_choices_name_the_runner_that_runs():
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert type(local_engine("fnapi", options)).__name__ == "FnApiRunner"
    assert type(local_engine("prism", options)).__name__ == "PrismRunner"
    assert type(local_engine("beam", options)).__name__ == "SwitchingDirectRunner"   # Beam: Prism, else fallback
    args, beam_args = parse_args("curate", ["--output", "o", "--direct_num_workers=2"])
    assert args.engine == "fnapi" and beam_args == ["--direct_num_workers=2"]
